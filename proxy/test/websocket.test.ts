/**
 * The WebSocket listener on its own (no relay yet), each client piped to a real
 * Mosquitto over TCP: mqtt.js over ws:// and wss:// (MQTT 3.1.1 and 5)
 * subscribes and receives its own publish; MQTT packets split across and packed
 * within WebSocket messages; subprotocol choice and refusals (path, subprotocol,
 * plain HTTP, text frames, admission, handshake deadline); the TCP socket under
 * each client; PROXY headers in front of ws and wss from a trusted peer.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import mqttPacket from 'mqtt-packet';
import WebSocket from 'ws';
import { connectClient, connectFrame, eventually, nextMessages, RawClient } from './helpers/clients.ts';
import { startMosquitto } from './helpers/mosquitto.ts';
import { startWsBridge } from './helpers/ws-bridge.ts';
import { TrustedSources } from '../src/listeners/trusted-sources.ts';
import { sslFacts } from '../src/listeners/proxy-protocol-out.ts';
import { applyTcpLiveness, readTcpLiveness } from '../src/liveness/tcp-options.ts';

const mosquitto = await startMosquitto();
t.teardown(() => mosquitto.stop());

const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-ws-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', path.join(dir, 'k.pem'), '-out', path.join(dir, 'c.pem'), '-days', '2', '-subj', '/CN=localhost'], { stdio: ['ignore', 'ignore', 'pipe'] });
const tlsOptions = { key: readFileSync(path.join(dir, 'k.pem')), cert: readFileSync(path.join(dir, 'c.pem')) };

/** A raw ws client; resolves once open, collecting binary messages. */
async function rawWs(url: string, protocols?: string | string[], options: WebSocket.ClientOptions = {}): Promise<{ ws: WebSocket; received: () => Buffer; closed: Promise<number> }> {
  const ws = new WebSocket(url, protocols, options);
  const chunks: Buffer[] = [];
  ws.on('message', (d: Buffer) => chunks.push(d));
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject); });
  return { ws, received: () => Buffer.concat(chunks), closed };
}

/** The HTTP status a refused upgrade got. */
function upgradeStatus(url: string, protocols?: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols);
    ws.once('unexpected-response', (_req, res) => { resolve(res.statusCode ?? 0); ws.terminate(); });
    ws.once('open', () => reject(new Error('upgrade unexpectedly accepted')));
    ws.once('error', () => {});
  });
}

for (const protocolVersion of [4, 5] as const) {
  for (const secure of [false, true]) {
    t.test(`mqtt.js over ${secure ? 'wss' : 'ws'}, MQTT ${protocolVersion === 5 ? '5' : '3.1.1'}: subscribe, publish, receive`, async (t) => {
      const bridge = await startWsBridge(mosquitto, secure ? { tls: tlsOptions } : {});
      t.teardown(() => bridge.close());
      const client = await connectClient(bridge.url, { protocolVersion, clientId: `ws-${protocolVersion}-${secure}`, rejectUnauthorized: false });
      t.teardown(() => client.endAsync());
      await client.subscribeAsync('ws/test', { qos: 1 });
      const got = nextMessages(client, 2);
      await client.publishAsync('ws/test', 'over websocket', { qos: 1 });
      await client.publishAsync('ws/test', Buffer.alloc(200_000, 7), { qos: 0 });
      const [first, second] = await got;
      t.equal(first.payload.toString(), 'over websocket');
      t.equal(second.payload.length, 200_000, 'a 200 kB publish both ways');
      t.equal(bridge.clients.length, 1);
      const c = bridge.clients[0];
      t.equal(c.transport, secure ? 'wss' : 'ws');
      t.ok(c.tcpSocket instanceof net.Socket && !(c.tcpSocket instanceof tls.TLSSocket), 'tcpSocket is the plain TCP socket under it all');
      t.equal(c.remoteAddress, '127.0.0.1');
      t.equal(c.remotePort, c.tcpSocket!.remotePort);
      t.equal(c.localPort, bridge.port);
      const applied = applyTcpLiveness(c.tcpSocket!, { idleSeconds: 7, intervalSeconds: 2, count: 3, userTimeoutMs: 13_000 });
      t.equal(applied.mode, 'native', 'TCP keep-alive and user timeout set on the socket under the WebSocket');
      t.same(readTcpLiveness(c.tcpSocket!), { keepAlive: true, idleSeconds: 7, intervalSeconds: 2, count: 3, userTimeoutMs: 13_000 });
      if (secure) {
        t.ok(c.tlsSocket instanceof tls.TLSSocket, 'wss: the TLS session is exposed');
        t.match(sslFacts(c.tlsSocket!), { clientCertificate: false, version: /^TLSv1\.[23]$/, cn: null, cipher: /^TLS_/ }, 'sslFacts for PROXY out');
      } else {
        t.equal(c.tlsSocket, null);
      }
      t.equal(bridge.refusals.length, 0);
    });
  }
}

t.test('MQTT packets split across and packed within WebSocket messages', async (t) => {
  const bridge = await startWsBridge(mosquitto);
  t.teardown(() => bridge.close());
  const { ws, received } = await rawWs(bridge.url, 'mqtt');
  t.equal(ws.protocol, 'mqtt');
  const connect = connectFrame({ clientId: 'ws-raw', keepalive: 30 });
  // CONNECT in three messages, cut inside the fixed header and inside the payload.
  ws.send(connect.subarray(0, 1));
  ws.send(connect.subarray(1, 9));
  ws.send(connect.subarray(9));
  await eventually(() => received().length >= 4, 10_000, 'CONNACK');
  t.same([...received().subarray(0, 4)], [0x20, 0x02, 0x00, 0x00], 'CONNACK 0');
  // SUBSCRIBE and PUBLISH (QoS 1 to our own subscription) packed in one message, then PINGREQ.
  const subscribe = mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'ws/packed', qos: 1 }] });
  const publish = mqttPacket.generate({ cmd: 'publish', topic: 'ws/packed', payload: Buffer.from('packed'), qos: 1, messageId: 2, dup: false, retain: false });
  ws.send(Buffer.concat([subscribe, publish, Buffer.from([0xc0, 0x00])]));
  const parser = mqttPacket.parser();
  const packets: string[] = [];
  parser.on('packet', (p) => packets.push(p.cmd === 'publish' ? `publish:${(p).payload.toString()}` : p.cmd));
  await eventually(() => { packets.length = 0; parser.parse(received()); return packets.includes('publish:packed') && packets.includes('pingresp'); }, 10_000, 'SUBACK, PUBACK, PUBLISH, PINGRESP');
  t.ok(packets.includes('suback') && packets.includes('puback'), `got ${packets.join(', ')}`);
  ws.close();
});

t.test('subprotocols: mqtt preferred, mqttv3.1 accepted, none accepted, others refused (400)', async (t) => {
  const bridge = await startWsBridge(mosquitto);
  t.teardown(() => bridge.close());
  for (const [offered, chosen] of [[['mqttv3.1', 'mqtt'], 'mqtt'], [['mqttv3.1'], 'mqttv3.1'], [undefined, '']] as const) {
    const { ws } = await rawWs(bridge.url, offered as string[] | undefined);
    t.equal(ws.protocol, chosen, `offered ${JSON.stringify(offered)} -> ${JSON.stringify(chosen)}`);
    ws.close();
  }
  t.equal(await upgradeStatus(bridge.url, ['wamp.2.json']), 400);
  t.match(bridge.refusals, [{ reason: 'bad_subprotocol', detail: /wamp/ }]);
});

t.test('refusals: wrong path 404, plain HTTP 426, text frame 1003, admission, handshake deadline', async (t) => {
  let admitNext = true;
  const bridge = await startWsBridge(mosquitto, { admit: () => admitNext, handshakeTimeoutMs: 400 });
  t.teardown(() => bridge.close());
  t.equal(await upgradeStatus(`ws://127.0.0.1:${bridge.port}/other`, ['mqtt']), 404);
  t.ok((await rawWs(`ws://127.0.0.1:${bridge.port}/mqtt?client=1`, 'mqtt')).ws, 'the query string is ignored');
  const res = await fetch(`http://127.0.0.1:${bridge.port}/mqtt`);
  t.equal(res.status, 426);

  const { ws, closed } = await rawWs(bridge.url, 'mqtt');
  ws.send('not binary');
  t.equal(await closed, 1003, 'a text frame closes with 1003');

  admitNext = false;
  await t.rejects(rawWs(bridge.url, 'mqtt'), 'not admitted: closed before the upgrade');
  admitNext = true;

  const silent = await RawClient.connect(bridge.port);
  const start = performance.now();
  await silent.waitForClose(5000);
  const waited = Math.round(performance.now() - start);
  t.ok(waited >= 350 && waited < 4000, `a silent connection is closed at the handshake deadline (${waited} ms)`);
  // An upgrade ws itself refuses (unsupported version), and bytes that are not HTTP at all.
  const badVersion = await RawClient.connect(bridge.port);
  badVersion.write(Buffer.from(`GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 7\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n`));
  await badVersion.waitForClose(5000);
  t.match(badVersion.received.toString(), /^HTTP\/1\.1 400/, 'bad WebSocket version: 400 from ws');
  const garbage = await RawClient.connect(bridge.port);
  garbage.write(connectFrame({ clientId: 'mqtt-on-the-ws-port', keepalive: 10 }));
  await garbage.waitForClose(5000);
  t.match(garbage.received.toString(), /^HTTP\/1\.1 400/, 'MQTT on the WebSocket port: 400, closed');
  const reasons = bridge.refusals.map((r) => r.reason);
  t.same(reasons.sort(), ['admission', 'bad_path', 'handshake_timeout', 'not_websocket', 'not_websocket', 'text_frame', 'upgrade_failed'].sort(), `counted: ${reasons.join(', ')}`);
});

t.test('PROXY header in front of ws and wss from a trusted peer; missing header refused', async (t) => {
  for (const secure of [false, true]) {
    const bridge = await startWsBridge(mosquitto, { trusted: new TrustedSources(['127.0.0.0/8']), ...(secure ? { tls: tlsOptions } : {}) });
    t.teardown(() => bridge.close());
    const header = Buffer.from('PROXY TCP4 198.51.100.23 192.0.2.80 50123 443\r\n');
    const createConnection = (): net.Socket => {
      const socket = net.connect({ host: '127.0.0.1', port: bridge.port });
      socket.write(header); // queued before the TLS ClientHello / HTTP request
      return secure ? tls.connect({ socket, rejectUnauthorized: false }) : socket;
    };
    const { ws, received } = await rawWs(bridge.url, 'mqtt', { createConnection });
    ws.send(connectFrame({ clientId: `pp-ws-${secure}`, keepalive: 30 }));
    await eventually(() => received().length >= 4, 10_000, 'CONNACK');
    t.same([...received().subarray(0, 4)], [0x20, 0x02, 0x00, 0x00], `${secure ? 'wss' : 'ws'}: MQTT works behind the header`);
    const c = bridge.clients.at(-1)!;
    t.equal(c.remoteAddress, '198.51.100.23');
    t.equal(c.remotePort, 50123);
    t.equal(c.localAddress, '192.0.2.80');
    t.equal(c.tcpSocket!.remoteAddress, '127.0.0.1', 'the TCP peer is still the balancer');
    ws.close();

    const noHeader = new WebSocket(bridge.url, 'mqtt', { rejectUnauthorized: false });
    noHeader.on('error', () => {});
    await new Promise((resolve) => noHeader.once('close', resolve));
    await eventually(() => bridge.refusals.some((r) => r.reason === 'proxy_header'), 5000, 'proxy_header refusal');
    t.match(bridge.refusals.find((r) => r.reason === 'proxy_header'), { detail: 'not_proxy_protocol' });
  }
});


t.test('wss: a new certificate (setSecureContext) serves new connections; maxPayload closes with 1009', async (t) => {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', path.join(dir, 'k2.pem'), '-out', path.join(dir, 'c2.pem'), '-days', '2', '-subj', '/CN=rotated'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const bridge = await startWsBridge(mosquitto, { tls: tlsOptions, maxPayload: 1024 });
  t.teardown(() => bridge.close());
  const served = async (): Promise<string> => {
    const { ws } = await rawWs(bridge.url, 'mqtt', { rejectUnauthorized: false });
    const cn = String(((ws as unknown as { _socket: tls.TLSSocket })._socket).getPeerCertificate().subject.CN);
    ws.close();
    return cn;
  };
  t.equal(await served(), 'localhost');
  bridge.listener.setSecureContext({ key: readFileSync(path.join(dir, 'k2.pem')), cert: readFileSync(path.join(dir, 'c2.pem')) });
  t.equal(await served(), 'rotated');
  const { ws, closed } = await rawWs(bridge.url, 'mqtt', { rejectUnauthorized: false });
  ws.send(Buffer.alloc(2048));
  t.equal(await closed, 1009, 'a message above maxPayload closes with 1009 (message too big)');
});
