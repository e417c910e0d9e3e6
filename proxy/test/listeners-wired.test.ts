/**
 * The WebSocket listener and the PROXY protocol wired into the running proxy
 * (issue 14), against real parts: Debian's Mosquitto and HAProxy, mqtt.js over
 * ws:// and wss://, raw sockets for what no library sends.
 * - ws/wss: MQTT exchanged through the proxy; /connections and the metrics name
 *   the transport; a silent WebSocket client (its pings still answered by ws)
 *   is ended by the MQTT keep-alive deadline and its Will arrives.
 * - PROXY in: HAProxy send-proxy-v2 in front of the proxy: /connections shows
 *   the client's own address (127.0.0.2, not HAProxy's 127.0.0.1) and the
 *   per-source limit counts that address; TLS behind a v1 header too.
 * - Bad headers from a trusted peer (not PROXY, malformed v1, oversized v2,
 *   truncated): each closed and counted, a client in session unaffected.
 * - PROXY out: HAProxy accept-proxy in front of Mosquitto logs the client's
 *   address from our header; the canary (LOCAL) is accepted too.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import mqtt from 'mqtt';
import WebSocket from 'ws';
import { startMosquitto, freePort } from './helpers/mosquitto.ts';
import { startProxy } from './helpers/proxy.ts';
import { startAcceptProxyFront, startHaproxy } from './helpers/haproxy.ts';
import { connectFrame, eventually, nextMessages, RawClient, sleep } from './helpers/clients.ts';
import { scrape, value } from './helpers/scrape.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-wired-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const cert = path.join(dir, 'cert.pem');
const key = path.join(dir, 'key.pem');
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost'], { stdio: ['ignore', 'ignore', 'pipe'] });

const mosquitto = await startMosquitto();
t.teardown(() => mosquitto.stop());

interface Row { clientId: string | null; remoteAddress: string; transport: string }
async function connections(adminUrl: string): Promise<Row[]> {
  const res = await fetch(`${adminUrl}/connections`);
  const body = (await res.json()) as { connections: Row[] };
  return body.connections;
}

/** mqtt.js from a given local address (127.0.0.2: a loopback alias), which its URL options cannot say. */
function boundClient(port: number, localAddress: string, clientId: string): Promise<mqtt.MqttClient> {
  return new Promise((resolve, reject) => {
    const client = new mqtt.MqttClient(() => net.connect({ host: '127.0.0.1', port, localAddress }), { clientId, reconnectPeriod: 0, protocolVersion: 4, keepalive: 30 });
    client.once('connect', () => resolve(client));
    client.once('error', reject);
    client.once('close', () => reject(new Error('closed before CONNACK')));
  });
}

t.test('ws and wss through the proxy: exchange, transport in /connections and metrics, keep-alive verdict and Will', async (t) => {
  for (const secure of [false, true]) {
    const proxy = await startProxy(mosquitto.port, {
      websocket: { listen: '127.0.0.1:0', tls: secure },
      ...(secure ? { tls: { cert, key } } : {}),
      keepAlive: { grace: 1 },
    });
    t.teardown(() => proxy.stop());
    const kind = secure ? 'wss' : 'ws';
    const url = `${kind}://127.0.0.1:${proxy.app.websocket!.address().port}/mqtt`;
    const options = { reconnectPeriod: 0, rejectUnauthorized: false, keepalive: 30 };
    const sub = await mqtt.connectAsync(url, { ...options, clientId: `${kind}-sub` });
    t.teardown(() => sub.end(true));
    const errors: string[] = [];
    sub.on('error', (err) => errors.push(err.message));
    await sub.subscribeAsync(`wired/${kind}/#`, { qos: 1 });
    const pub = await mqtt.connectAsync(url, { ...options, clientId: `${kind}-pub`, protocolVersion: 5 });
    const got = nextMessages(sub, 1);
    await pub.publishAsync(`wired/${kind}/hello`, 'over websocket', { qos: 1 });
    t.equal((await got)[0].payload.toString(), 'over websocket', `${kind}: published and received through the proxy`);

    const rows = await connections(proxy.adminUrl);
    t.same(rows.filter((r) => r.clientId?.startsWith(kind)).map((r) => r.transport).sort(), [kind, kind], `${kind}: /connections names the transport`);
    const m = (await scrape(proxy.adminUrl)).samples;
    t.equal(value(m, `mqtt_liveness_connections_open{transport="${kind}"}`), 2, `${kind}: connections_open{transport="${kind}"} 2`);
    t.equal(value(m, 'mqtt_liveness_connections_open{transport="tcp"}'), 0);

    // A client that goes silent at the MQTT level (ws still answers WebSocket pings): keep-alive 2 s.
    const willSeen = nextMessages(sub, 1, 20_000);
    const silent = new WebSocket(url, 'mqtt', { rejectUnauthorized: false });
    silent.on('error', () => {});
    await new Promise((resolve) => silent.once('open', resolve));
    silent.send(connectFrame({ clientId: `${kind}-silent`, keepalive: 2, will: { topic: `wired/${kind}/will`, payload: 'gone' } }));
    const pinger = setInterval(() => silent.ping(), 300); // WebSocket pings are no MQTT liveness evidence
    const started = performance.now();
    const end = await proxy.nextClose((e) => e.clientId === `${kind}-silent`, 20_000);
    clearInterval(pinger);
    t.equal(end.reason, 'keepalive_timeout', `${kind}: ended by the MQTT keep-alive deadline despite WebSocket pings`);
    t.equal(end.transport, kind);
    const will = await willSeen;
    t.equal(will[0].topic, `wired/${kind}/will`, `${kind}: the Will arrived ${Math.round(performance.now() - started)} ms after CONNECT (deadline 2 s + 1 s grace)`);
    t.ok(end.silenceMs >= 3_000, `silence at the verdict ${Math.round(end.silenceMs)} ms >= keep-alive + grace`);
    await pub.endAsync();
    t.same(errors, [], 'mqtt.js saw no error');
  }
});

t.test('PROXY in: HAProxy send-proxy-v2 in front; the real client address in /connections and per-source limits', async (t) => {
  const proxy = await startProxy(mosquitto.port, {
    proxyProtocol: { trusted: ['127.0.0.1/32'] },
    limits: { maxConnectionsPerSource: 1 },
    tls: { listen: '127.0.0.1:0', cert, key },
  });
  t.teardown(() => proxy.stop());
  const front = await freePort();
  const haproxy = await startHaproxy([
    `frontend mqtt\n  bind 127.0.0.1:${front}\n  default_backend proxy`,
    `backend proxy\n  server p 127.0.0.1:${proxy.port} send-proxy-v2`,
  ].join('\n'), [front]);
  t.teardown(() => haproxy.stop());

  // mqtt.js cannot bind a local address: raw clients from 127.0.0.2 and 127.0.0.3 (loopback aliases).
  const via = async (localAddress: string, clientId: string): Promise<{ socket: net.Socket; answer: Promise<Buffer | null> }> => {
    const socket = net.connect({ host: '127.0.0.1', port: front, localAddress, noDelay: true });
    socket.on('error', () => {});
    await new Promise((resolve) => socket.once('connect', resolve));
    t.teardown(() => socket.destroy());
    socket.write(connectFrame({ clientId, keepalive: 30 }));
    let received = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => { received = Buffer.concat([received, d]); });
    const answer = new Promise<Buffer | null>((resolve) => {
      const check = setInterval(() => { if (received.length >= 4) { clearInterval(check); resolve(received); } }, 20);
      socket.once('close', () => { clearInterval(check); resolve(received.length >= 4 ? received : null); });
    });
    return { socket, answer };
  };
  const a = await via('127.0.0.2', 'pp-a');
  t.same([...(await a.answer)!.subarray(0, 4)], [0x20, 0x02, 0x00, 0x00], 'CONNACK 0 through HAProxy and the proxy');
  const row = (await connections(proxy.adminUrl)).find((r) => r.clientId === 'pp-a');
  t.match(row, { remoteAddress: '127.0.0.2', transport: 'tcp' }, '/connections shows the client behind HAProxy, not 127.0.0.1');

  // A second client from 127.0.0.2: over the per-source limit (1). One from 127.0.0.3: its own source.
  const a2 = await via('127.0.0.2', 'pp-a2');
  t.equal(await a2.answer, null, 'same client address: closed without a CONNACK (maxConnectionsPerSource 1)');
  t.ok(proxy.logs.some((l) => l.reason === 'limit_per_source' && l.source === '127.0.0.2'), 'refusal logged for source 127.0.0.2');
  const b = await via('127.0.0.3', 'pp-b');
  t.same([...(await b.answer)!.subarray(0, 4)], [0x20, 0x02, 0x00, 0x00], 'another client address behind the same balancer is admitted');

  // TLS listener behind a v1 header (a balancer passing TLS through).
  const raw = net.connect({ host: '127.0.0.1', port: proxy.app.tls!.address().port });
  raw.write('PROXY TCP4 198.51.100.7 192.0.2.1 40001 8883\r\n');
  const secure = tls.connect({ socket: raw, rejectUnauthorized: false });
  await new Promise((resolve) => secure.once('secureConnect', resolve));
  let received = Buffer.alloc(0);
  secure.on('data', (d: Buffer) => { received = Buffer.concat([received, d]); });
  secure.write(connectFrame({ clientId: 'pp-tls', keepalive: 30 }));
  await eventually(() => received.length >= 4, 10_000, 'CONNACK over TLS');
  t.same([...received.subarray(0, 4)], [0x20, 0x02, 0x00, 0x00], 'TLS behind a PROXY v1 header: CONNACK 0');
  t.match((await connections(proxy.adminUrl)).find((r) => r.clientId === 'pp-tls'), { remoteAddress: '198.51.100.7', transport: 'tls' });
  secure.destroy();
});

t.test('bad PROXY headers from a trusted peer: closed, counted, logged; a client in session unaffected', async (t) => {
  const proxy = await startProxy(mosquitto.port, { proxyProtocol: { trusted: ['127.0.0.1/32'] }, connectTimeout: 1 });
  t.teardown(() => proxy.stop());
  // The healthy client comes from 127.0.0.2 (not trusted): no header needed.
  const healthy = await boundClient(proxy.port, '127.0.0.2', 'pp-healthy');
  t.teardown(() => healthy.end(true));
  await healthy.subscribeAsync('pp/healthy');
  const before = (await scrape(proxy.adminUrl)).samples;
  const sig = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
  const cases: Array<[string, Buffer, string]> = [
    ['MQTT without a header', connectFrame({ clientId: 'no-header', keepalive: 30 }), 'not_proxy_protocol'],
    ['v1 without CRLF, 200 bytes', Buffer.from(`PROXY TCP4 ${'1'.repeat(190)}`), 'v1_too_long'],
    ['v1 malformed', Buffer.from('PROXY TCP4 300.1.1.1 10.0.0.1 1 2\r\n'), 'v1_malformed'],
    ['v2 oversized (length 65535)', Buffer.concat([sig, Buffer.from([0x21, 0x11, 0xff, 0xff])]), 'v2_too_long'],
    ['v2 bad version', Buffer.concat([sig, Buffer.from([0x31, 0x11, 0x00, 0x0c]), Buffer.alloc(12)]), 'v2_bad_version'],
    ['v2 truncated (12 of 28 bytes, then silence)', Buffer.concat([sig, Buffer.from([0x21, 0x11, 0x00, 0x0c])]), 'timeout'],
  ];
  for (const [name, bytes, code] of cases) {
    const c = await RawClient.connect(proxy.port);
    c.socket.write(bytes);
    await c.waitForClose();
    t.same([...c.received], [], `${name}: closed without an answer`);
    await eventually(() => proxy.logs.some((l) => l.event === 'connection_refused' && l.detail === code), 5_000, `${code} logged`);
    t.pass(`${name}: logged as ${code}`);
  }
  // Truncated and then closed by the peer: nothing to count (like a reset), still no harm.
  const gone = await RawClient.connect(proxy.port);
  gone.socket.end(sig.subarray(0, 6));
  await gone.waitForClose();
  const after = (await scrape(proxy.adminUrl)).samples;
  const key = 'mqtt_liveness_listener_refusals_total{transport="tcp",reason="proxy_header"}';
  t.equal(value(after, key) - value(before, key), cases.length, `${key} +${cases.length}`);
  const echoed = nextMessages(healthy, 1);
  await healthy.publishAsync('pp/healthy', 'still here');
  t.equal((await echoed)[0].payload.toString(), 'still here', 'the client in session carried on');
  t.equal(proxy.app.proxy.connections.size, 1, 'only the healthy connection is open');
});

t.test('PROXY out: HAProxy accept-proxy in front of Mosquitto sees the client address from our v2 header', async (t) => {
  const front = await freePort();
  const haproxy = await startAcceptProxyFront(mosquitto.port, front);
  t.teardown(() => haproxy.stop());
  const proxy = await startProxy(front, { proxyProtocol: { upstream: 'v2' }, probes: { enabled: true, interval: 0.5, timeout: 0.4 } });
  t.teardown(() => proxy.stop());
  const c = await boundClient(proxy.port, '127.0.0.2', 'pp-out');
  const localPort = (c.stream as net.Socket).localPort;
  await c.subscribeAsync('pp/out');
  const got = nextMessages(c, 1);
  await c.publishAsync('pp/out', 'through PROXY out');
  t.equal((await got)[0].payload.toString(), 'through PROXY out', 'the MQTT session works behind the header');
  await c.endAsync();
  const seen = await eventually(() => haproxy.log().split('\n').find((l) => l.startsWith(`MLP-SEEN 127.0.0.2:${localPort} ->`)), 10_000, 'HAProxy log line');
  t.match(seen, new RegExp(`^MLP-SEEN 127\\.0\\.0\\.2:${localPort} -> 127\\.0\\.0\\.1:${proxy.port}$`), `HAProxy saw the client, not the proxy: ${seen}`);
  // The canary goes through the same receiver with a LOCAL header and is up.
  const ready = await eventually(async () => (await fetch(`${proxy.adminUrl}/readyz`)).status === 200 || undefined, 10_000, 'readyz 200');
  t.ok(ready, 'canary (LOCAL header) accepted: /readyz 200');
  await sleep(0);
});

t.test('protocol edges at the running proxy: DISCONNECT then close 300 ms later is client_disconnect; maxConnectSize', async (t) => {
  const proxy = await startProxy(mosquitto.port, { maxConnectSize: 4096 });
  t.teardown(() => proxy.stop());
  const before = (await scrape(proxy.adminUrl)).samples;
  const c = await RawClient.connect(proxy.port);
  c.write(connectFrame({ clientId: 'edge-disconnect', keepalive: 30 }));
  await c.waitForBytes(4);
  c.write(Buffer.from([0xe0, 0x00])); // DISCONNECT; Mosquitto closes its side at once
  await sleep(300);
  c.socket.end();
  const end = await proxy.nextClose((e) => e.clientId === 'edge-disconnect');
  t.equal(end.reason, 'client_disconnect', 'classified client_disconnect although the broker closed first');
  // An oversized CONNECT (a 10 kB password) is refused before it is held.
  const big = await RawClient.connect(proxy.port);
  big.write(connectFrame({ clientId: 'edge-big', keepalive: 30, username: 'u', password: 'x'.repeat(10_000) }));
  await big.waitForClose();
  t.same([...big.received], [], 'closed without an answer');
  const after = (await scrape(proxy.adminUrl)).samples;
  const delta = (k: string): number => value(after, k) - value(before, k);
  t.equal(delta('mqtt_liveness_disconnects_total{reason="client_disconnect"}'), 1, 'disconnects_total{reason="client_disconnect"} +1');
  t.equal(delta('mqtt_liveness_disconnects_total{reason="broker_close"}'), 0, 'broker_close +0');
  t.equal(delta('mqtt_liveness_disconnects_total{reason="protocol_error"}'), 1, 'the oversized CONNECT: protocol_error +1');
  t.equal(delta('mqtt_liveness_frame_errors_total{kind="too_large"}'), 1, 'frame_errors_total{kind="too_large"} +1');
  t.notMatch(JSON.stringify(proxy.logs), /xxxxxxxxxx/, 'the password never reaches the log');
});
