/**
 * Bad input closes only the connection that sent it, with a logged and
 * counted reason; everything else carries on.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { startMosquitto, closedPort } from './helpers/mosquitto.ts';
import { startProxy } from './helpers/proxy.ts';
import mqtt from 'mqtt';
import { connectClient, connectFrame, eventually, nextMessages, RawClient } from './helpers/clients.ts';

const broker = await startMosquitto();
const proxy = await startProxy(broker.port, { connectTimeout: 1, maxPacketSize: 64 * 1024 });
t.teardown(async () => {
  await proxy.stop();
  await broker.stop();
});

// A healthy client that must keep working through every bad connection.
const healthy = await connectClient(proxy.url, { clientId: 'healthy', keepalive: 30 });
await healthy.subscribeAsync('healthy/echo');
t.teardown(() => healthy.end(true));
async function healthyStillWorks(t: Tap): Promise<void> {
  const got = nextMessages(healthy, 1);
  await healthy.publishAsync('healthy/echo', 'still here');
  t.equal((await got)[0].payload.toString(), 'still here', 'the healthy client still exchanges messages');
}
type Tap = Test;

function logFor(id: number): Record<string, unknown> | undefined {
  return proxy.logs.find((l) => l.event === 'connection_end' && l.id === id);
}

async function badConnection(t: Tap, bytes: Buffer, expectedDetail: RegExp, reason = 'protocol_error'): Promise<void> {
  const c = await RawClient.connect(proxy.port);
  c.write(bytes);
  await c.waitForClose();
  const end = await proxy.nextClose((e) => e.remotePort === c.localPort);
  t.equal(end.reason, reason);
  t.match(end.detail ?? '', expectedDetail);
  const line = logFor(end.id);
  t.ok(line, 'the end is logged');
  t.equal(line?.reason, reason);
}

t.test('random bytes', async (t) => {
  // A PUBACK header with a valid one-byte length, then noise: refused for not being a CONNECT.
  const noise = randomBytes(64);
  await badConnection(t, Buffer.concat([Buffer.from([0x40, noise[0] & 0x7f]), noise]), /MLP_REJECTED: first packet is type 4, not CONNECT/);
  await healthyStillWorks(t);
});

t.test('a non-CONNECT first packet', async (t) => {
  await badConnection(t, Buffer.from([0x30, 0x03, 0x00, 0x01, 0x61]), /first packet is type 3, not CONNECT/);
  await healthyStillWorks(t);
});

t.test('a malformed Remaining Length', async (t) => {
  await badConnection(t, Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x01]), /MLP_MALFORMED_LENGTH/);
  await healthyStillWorks(t);
});

t.test('an oversize frame is refused from its header, after CONNECT too', async (t) => {
  await badConnection(t, Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]), /MLP_FRAME_TOO_LARGE: frame of 268435460 bytes exceeds the limit of 65536/);
  const c = await RawClient.connect(proxy.port);
  c.write(connectFrame({ clientId: 'big', keepalive: 30, protocolVersion: 5 }));
  await c.waitForBytes(4);
  c.write([0x30, 0x80, 0x80, 0x08]); // PUBLISH declaring 128 KiB
  await c.waitForClose();
  const end = await proxy.nextClose((e) => e.clientId === 'big');
  t.equal(end.reason, 'protocol_error');
  t.match(c.received.subarray(-3), Buffer.from([0xe0, 0x01, 0x95]), 'an MQTT 5 client is told: packet too large');
  await healthyStillWorks(t);
});

t.test('a reserved packet type after CONNECT (3.1.1)', async (t) => {
  const c = await RawClient.connect(proxy.port);
  c.write(connectFrame({ clientId: 'reserved', keepalive: 30 }));
  await c.waitForBytes(4);
  c.write([0xf0, 0x00]);
  await c.waitForClose();
  const end = await proxy.nextClose((e) => e.clientId === 'reserved');
  t.equal(end.reason, 'protocol_error');
  t.match(end.detail, /MLP_RESERVED_TYPE/);
});

t.test('a silent connection is closed at the CONNECT timeout', async (t) => {
  const c = await RawClient.connect(proxy.port);
  const started = performance.now();
  await c.waitForClose(10_000);
  const elapsed = Math.round(performance.now() - started);
  t.ok(elapsed >= 900 && elapsed < 5_000, `closed after ${elapsed} ms (timeout 1 s)`);
  const end = await proxy.nextClose((e) => e.remotePort === c.localPort);
  t.equal(end.reason, 'connect_timeout');
  t.equal(c.received.length, 0, 'nothing was sent to it');
  await healthyStillWorks(t);
});

t.test('the password never reaches logs or events', async (t) => {
  const c = await RawClient.connect(proxy.port);
  c.write(connectFrame({ clientId: 'secretive', keepalive: 30, username: 'alice', password: 'hunter2-do-not-log' }));
  await c.waitForBytes(4);
  c.destroy();
  const end = await proxy.nextClose((e) => e.clientId === 'secretive');
  t.notMatch(JSON.stringify(end), /hunter2/);
  t.notMatch(JSON.stringify(proxy.logs), /hunter2/);
  t.equal(end.username, 'alice');
});

t.test('an unreachable broker: brokerUnreachable close (default) closes without a CONNACK', async (t) => {
  const lonely = await startProxy(closedPort());
  t.teardown(() => lonely.stop());
  for (const protocolVersion of [4, 5] as const) {
    const c = await RawClient.connect(lonely.port);
    c.write(connectFrame({ clientId: `bare-${protocolVersion}`, keepalive: 30, protocolVersion }));
    await c.waitForClose();
    t.same([...c.received], [], `protocol ${protocolVersion}: closed, nothing written`);
  }
  await eventually(() => lonely.closes.filter((e) => e.reason === 'broker_unreachable').length >= 2, 5_000, 'two broker_unreachable closes');
  // mqtt.js sees a bare close and keeps retrying (it stops after a refusing CONNACK).
  const client = mqtt.connect(lonely.url, { protocolVersion: 5, reconnectPeriod: 100, connectTimeout: 2_000 });
  const errors: string[] = [];
  client.on('error', (err) => errors.push(err.message));
  let attempts = 0;
  client.on('close', () => { attempts++; });
  await eventually(() => attempts >= 3, 10_000, 'three attempts');
  client.end(true);
  t.same(errors, [], 'no error event (no "Server unavailable", no "Invalid disconnect reason code")');
});

t.test('an unreachable broker with brokerUnreachable connack gets a CONNACK saying server unavailable', async (t) => {
  // Bound and never listening for the life of this process: refused, whatever runs in parallel.
  const lonely = await startProxy(closedPort(), { brokerUnreachable: 'connack' });
  t.teardown(() => lonely.stop());
  for (const [protocolVersion, expected] of [[4, [0x20, 0x02, 0x00, 0x03]], [5, [0x20, 0x03, 0x00, 0x88, 0x00]], [3, [0x20, 0x02, 0x00, 0x03]]] as const) {
    const c = await RawClient.connect(lonely.port);
    c.write(connectFrame({ clientId: `lonely-${protocolVersion}`, keepalive: 30, protocolVersion }));
    await c.waitForClose();
    t.same([...c.received], expected, `protocol ${protocolVersion}`);
    const end = await lonely.nextClose((e) => e.clientId === `lonely-${protocolVersion}`);
    t.equal(end.reason, 'broker_unreachable');
  }
  // mqtt.js sees the refusal as an error, not a hang.
  await t.rejects(connectClient(lonely.url, { protocolVersion: 5 }), /Server unavailable/i);
});
