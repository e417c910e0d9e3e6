/**
 * The PROXY protocol against a real implementation, HAProxy (Debian's):
 * - in: HAProxy `send-proxy` (v1), `send-proxy-v2` and `send-proxy-v2-ssl-cn`
 *   in front of a small listener that uses our parser; a client bound to
 *   127.0.0.2 connects through HAProxy, and the parsed source is that client's
 *   address and port (not HAProxy's 127.0.0.1), its CONNECT bytes follow unchanged,
 *   and the TLS TLV carries the client certificate's CN;
 * - out: our v2 encoder in front of an HAProxy `accept-proxy` frontend that
 *   relays to a real Mosquitto: the MQTT session works through it and HAProxy
 *   logs (%ci:%cp) the address we put in the header.
 */
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { ProxyHeaderParser, type ProxyHeader } from '../src/listeners/proxy-protocol.ts';
import { encodeProxyV2, encodeProxyV2Local } from '../src/listeners/proxy-protocol-out.ts';
import { connectFrame, RawClient, sleep } from './helpers/clients.ts';
import { freePort, startMosquitto } from './helpers/mosquitto.ts';
import { startAcceptProxyFront, startHaproxy } from './helpers/haproxy.ts';

interface Received { header: ProxyHeader; bytes: Buffer; peer: string }

/** A listener that requires a PROXY header and records what followed it. */
async function recordingListener(t: Test): Promise<{ port: number; from(sourcePort: number): Promise<Received> }> {
  // By source port: HAProxy's own startup probes (waitForPort) arrive here too.
  const waiting = new Map<number, (r: Received) => void>();
  const done = new Map<number, Received>();
  const server = net.createServer((socket) => {
    const parser = new ProxyHeaderParser();
    let got: Received | null = null;
    socket.on('data', (chunk) => {
      if (got) { got.bytes = Buffer.concat([got.bytes, chunk]); return; }
      const step = parser.push(chunk);
      if (step.state === 'error') socket.destroy(new Error(step.code));
      if (step.state === 'done') got = { header: step.header, bytes: Buffer.from(step.rest), peer: `${socket.remoteAddress}:${socket.remotePort}` };
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      const port = got?.header.source?.port;
      if (!got || port === undefined) return;
      const w = waiting.get(port);
      if (w) w(got); else done.set(port, got);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return {
    port: (server.address() as net.AddressInfo).port,
    from: (sourcePort) => new Promise((resolve) => { const r = done.get(sourcePort); if (r) resolve(r); else waiting.set(sourcePort, resolve); }),
  };
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-pp-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string) => path.join(dir, name);
for (const name of ['server', 'sensor-7']) {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', file(`${name}.key`), '-out', file(`${name}.crt`), '-days', '2', '-subj', `/CN=${name}`], { stdio: ['ignore', 'ignore', 'pipe'] });
}
writeFileSync(file('server.pem'), readFileSync(file('server.crt'), 'utf8') + readFileSync(file('server.key'), 'utf8'));

const CONNECT = connectFrame({ clientId: 'pp-client', keepalive: 30 });

t.test('HAProxy send-proxy / send-proxy-v2 / send-proxy-v2-ssl-cn -> our parser sees the real client', async (t) => {
  const listener = await recordingListener(t);
  const [v1, v2, v2ssl] = [await freePort(), await freePort(), await freePort()];
  const haproxy = await startHaproxy([
    `frontend v1\n  bind 127.0.0.1:${v1}\n  default_backend v1`,
    `backend v1\n  server s 127.0.0.1:${listener.port} send-proxy`,
    `frontend v2\n  bind 127.0.0.1:${v2}\n  default_backend v2`,
    `backend v2\n  server s 127.0.0.1:${listener.port} send-proxy-v2`,
    `frontend v2ssl\n  bind 127.0.0.1:${v2ssl} ssl crt ${file('server.pem')} ca-file ${file('sensor-7.crt')} verify required`,
    `  default_backend v2ssl`,
    `backend v2ssl\n  server s 127.0.0.1:${listener.port} send-proxy-v2-ssl-cn`,
  ].join('\n'), [v1, v2, v2ssl]);
  t.teardown(() => haproxy.stop());

  for (const [name, port, version] of [['send-proxy', v1, 1], ['send-proxy-v2', v2, 2]] as const) {
    const client = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.2' }, () => resolve(s));
      s.once('error', reject);
    });
    const clientPort = client.localPort!;
    client.write(CONNECT.subarray(0, 5));
    await sleep(20);
    client.end(CONNECT.subarray(5));
    const got = await listener.from(clientPort);
    t.equal(got.header.version, version, `${name}: v${version} header`);
    t.same(got.header.source, { address: '127.0.0.2', port: clientPort }, `${name}: source is the real client, not HAProxy (${got.peer})`);
    t.same(got.header.destination, { address: '127.0.0.1', port }, `${name}: destination is HAProxy's frontend`);
    t.ok(got.bytes.equals(CONNECT), `${name}: the CONNECT after the header is forwarded unchanged`);
  }

  const secure = await new Promise<tls.TLSSocket>((resolve, reject) => {
    const s = tls.connect({
      socket: net.connect({ host: '127.0.0.1', port: v2ssl, localAddress: '127.0.0.2' }), rejectUnauthorized: false,
      cert: readFileSync(file('sensor-7.crt')), key: readFileSync(file('sensor-7.key')),
    }, () => resolve(s));
    s.once('error', reject);
  });
  const securePort = secure.localPort!;
  secure.end(CONNECT);
  const got = await listener.from(securePort);
  t.same(got.header.source, { address: '127.0.0.2', port: securePort }, 'ssl: source is the real client');
  t.match(got.header.ssl, { tls: true, clientCertificate: true, verified: true, cn: 'sensor-7', version: /^TLSv1\.[23]$/ }, 'ssl: HAProxy\'s PP2_TYPE_SSL decoded');
  t.ok(got.bytes.equals(CONNECT), 'ssl: decrypted CONNECT follows unchanged');
});

t.test('our v2 encoder -> HAProxy accept-proxy -> Mosquitto: HAProxy logs the address from our header', async (t) => {
  const mosquitto = await startMosquitto();
  t.teardown(() => mosquitto.stop());
  const front = await freePort();
  const haproxy = await startAcceptProxyFront(mosquitto.port, front);
  t.teardown(() => haproxy.stop());

  const cases = [
    { name: 'IPv4 with SSL TLV', header: encodeProxyV2({ source: { address: '203.0.113.9', port: 4242 }, destination: { address: '192.0.2.1', port: 8883 }, ssl: { clientCertificate: true, verified: true, version: 'TLSv1.3', cn: 'sensor-7', cipher: 'TLS_AES_128_GCM_SHA256' } }), seen: 'MLP-SEEN 203.0.113.9:4242 -> 192.0.2.1:8883' },
    { name: 'IPv6', header: encodeProxyV2({ source: { address: '2001:db8::7', port: 5151 }, destination: { address: '2001:db8::1', port: 1883 } }), seen: 'MLP-SEEN 2001:db8::7:5151 -> 2001:db8::1:1883' },
    { name: 'LOCAL (the proxy\'s own connection)', header: encodeProxyV2Local(), seen: /MLP-SEEN 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+/ },
  ];
  for (const c of cases) {
    const client = await RawClient.connect(front);
    client.socket.write(Buffer.concat([c.header, CONNECT]));
    await client.waitForBytes(4, 10_000);
    t.same([...client.received.subarray(0, 4)], [0x20, 0x02, 0x00, 0x00], `${c.name}: Mosquitto accepted the CONNECT behind the header (CONNACK 0)`);
    client.socket.end();
    const deadline = performance.now() + 10_000;
    const count = () => haproxy.log().split('\n').filter((l) => l.startsWith('MLP-SEEN')).length;
    const before = cases.indexOf(c);
    while (count() <= before && performance.now() < deadline) await sleep(50);
    const line = haproxy.log().split('\n').filter((l) => l.startsWith('MLP-SEEN'))[before];
    t.match(line, c.seen, `${c.name}: HAProxy saw ${line}`);
  }
});
