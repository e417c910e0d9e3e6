/**
 * The proxy in front of a real Mosquitto with real clients: everything a
 * client does directly must work the same through the proxy.
 */
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import { startMosquitto } from './helpers/mosquitto.ts';
import { startProxy } from './helpers/proxy.ts';
import { connectClient, connectFrame, nextMessages, RawClient, sleep } from './helpers/clients.ts';

const broker = await startMosquitto();
const proxy = await startProxy(broker.port);
t.teardown(async () => {
  await proxy.stop();
  await broker.stop();
});

for (const protocolVersion of [4, 5] as const) {
  const v = protocolVersion === 5 ? 'v5' : 'v3.1.1';

  t.test(`${v}: subscribe and publish QoS 0, 1 and 2, retained`, async (t) => {
    const sub = await connectClient(proxy.url, { protocolVersion, clientId: `sub-${v}` });
    const pub = await connectClient(proxy.url, { protocolVersion, clientId: `pub-${v}` });
    t.teardown(() => { sub.end(true); pub.end(true); });
    await sub.subscribeAsync(`qos/${v}/#`, { qos: 2 });
    const got = nextMessages(sub, 3);
    for (const qos of [0, 1, 2] as const) await pub.publishAsync(`qos/${v}/${qos}`, `m${qos}`, { qos });
    const messages = await got;
    t.same(messages.map((m) => [m.topic, m.payload.toString(), m.packet.qos]).sort(), [[`qos/${v}/0`, 'm0', 0], [`qos/${v}/1`, 'm1', 1], [`qos/${v}/2`, 'm2', 2]]);

    await pub.publishAsync(`retained/${v}`, 'kept', { qos: 1, retain: true });
    const late = await connectClient(proxy.url, { protocolVersion });
    t.teardown(() => late.end(true));
    const retained = nextMessages(late, 1);
    await late.subscribeAsync(`retained/${v}`);
    const [r] = await retained;
    t.equal(r.payload.toString(), 'kept');
    t.equal(r.packet.retain, true);
    await pub.publishAsync(`retained/${v}`, '', { qos: 1, retain: true });
  });

  t.test(`${v}: a 5 MB payload and 1,000 messages arrive byte-identical and in order`, async (t) => {
    const sub = await connectClient(proxy.url, { protocolVersion });
    const pub = await connectClient(proxy.url, { protocolVersion });
    t.teardown(() => { sub.end(true); pub.end(true); });
    await sub.subscribeAsync(`bulk/${v}/#`, { qos: 1 });
    const big = randomBytes(5 * 1024 * 1024);
    const gotBig = nextMessages(sub, 1, 60_000);
    await pub.publishAsync(`bulk/${v}/big`, big, { qos: 1 });
    const [b] = await gotBig;
    t.equal(createHash('sha256').update(b.payload).digest('hex'), createHash('sha256').update(big).digest('hex'), '5 MB payload identical');

    const sent = Array.from({ length: 1000 }, (_, i) => Buffer.concat([Buffer.from(`${i}:`), randomBytes(i % 200)]));
    const gotMany = nextMessages(sub, 1000, 60_000);
    // One QoS level: MQTT orders messages per QoS, and the broker may interleave QoS 0 with in-flight QoS 1.
    for (const payload of sent) pub.publish(`bulk/${v}/seq`, payload, { qos: 1 });
    const many = await gotMany;
    const mismatches = many.filter((m, i) => !m.payload.equals(sent[i])).length;
    t.equal(mismatches, 0, '1,000 messages in order, each byte-identical');
  });

  t.test(`${v}: the Will is published when the client's socket is destroyed`, async (t) => {
    const watcher = await connectClient(proxy.url, { protocolVersion });
    t.teardown(() => watcher.end(true));
    await watcher.subscribeAsync(`will/${v}`);
    const client = await connectClient(proxy.url, { protocolVersion, clientId: `dying-${v}`, will: { topic: `will/${v}`, payload: Buffer.from('gone'), qos: 1, retain: false } });
    const will = nextMessages(watcher, 1);
    client.stream.destroy();
    const [w] = await will;
    t.equal(w.payload.toString(), 'gone');
    const end = await proxy.nextClose((e) => e.clientId === `dying-${v}`);
    t.match(end.reason, /^client_(close|reset)$/);
  });

  t.test(`${v}: a persistent session survives a reconnect`, async (t) => {
    const clientId = `persistent-${v}`;
    const opts = protocolVersion === 5
      ? { protocolVersion, clientId, clean: false, properties: { sessionExpiryInterval: 300 } }
      : { protocolVersion, clientId, clean: false };
    const first = await connectClient(proxy.url, opts);
    await first.subscribeAsync(`persist/${v}`, { qos: 1 });
    await first.endAsync();
    const pub = await connectClient(proxy.url, { protocolVersion });
    t.teardown(() => pub.end(true));
    await pub.publishAsync(`persist/${v}`, 'while-away', { qos: 1 });
    // Listen for the queued message before the CONNACK arrives: the broker sends it right after.
    const second = mqtt.connect(proxy.url, { ...opts, reconnectPeriod: 0, manualConnect: true });
    t.teardown(() => second.end(true));
    const queued = nextMessages(second, 1);
    const connack = new Promise<{ sessionPresent: boolean }>((resolve) => second.once('connect', (p) => resolve(p as { sessionPresent: boolean })));
    second.connect();
    t.equal((await connack).sessionPresent, true);
    t.equal((await queued)[0].payload.toString(), 'while-away');
  });
}

t.test('v5: user properties and topic aliases pass through', async (t) => {
  const sub = await connectClient(proxy.url, { protocolVersion: 5 });
  const pub = await connectClient(proxy.url, { protocolVersion: 5, properties: { topicAliasMaximum: 10 } });
  t.teardown(() => { sub.end(true); pub.end(true); });
  await sub.subscribeAsync('alias/t');
  const got = nextMessages(sub, 2);
  await pub.publishAsync('alias/t', 'one', { properties: { topicAlias: 1, userProperties: { who: 'me', n: '1' } } });
  await pub.publishAsync('', 'two', { properties: { topicAlias: 1, userProperties: { n: '2' } } });
  const [a, b] = await got;
  t.equal(a.topic, 'alias/t');
  t.same(a.packet.properties?.userProperties, { who: 'me', n: '1' });
  t.equal(b.topic, 'alias/t', 'aliased publish resolved by the broker');
  t.same(b.packet.properties?.userProperties, { n: '2' });
});

t.test('MQTT 3.1 (MQIsdp) clients work', async (t) => {
  const c = await RawClient.connect(proxy.port);
  t.teardown(() => c.destroy());
  c.write(connectFrame({ clientId: 'old-timer', keepalive: 30, protocolVersion: 3 }));
  await c.waitForBytes(4);
  t.same([...c.received.subarray(0, 4)], [0x20, 0x02, 0x00, 0x00]);
});

t.test('the broker judges what it judges: a second CONNECT and an unknown protocol name', async (t) => {
  // Direct and through the proxy, byte for byte.
  const transcript = async (port: number, frames: Buffer[]): Promise<{ bytes: string; closed: boolean }> => {
    const c = await RawClient.connect(port);
    for (const f of frames) c.write(f);
    await c.until(() => c.closed, 5_000).catch(() => {});
    c.destroy();
    return { bytes: c.received.toString('hex'), closed: c.closed };
  };
  const twice = [connectFrame({ clientId: 'twice', keepalive: 30 }), connectFrame({ clientId: 'twice', keepalive: 30 })];
  t.same(await transcript(proxy.port, twice), await transcript(broker.port, twice), 'second CONNECT');
  const unknown = connectFrame({ clientId: 'u', keepalive: 30 });
  unknown.write('MQTX', 4); // protocol name
  t.same(await transcript(proxy.port, [unknown]), await transcript(broker.port, [unknown]), 'unknown protocol name');
  const level9 = connectFrame({ clientId: 'u', keepalive: 30 });
  level9[8] = 9; // protocol level
  t.same(await transcript(proxy.port, [level9]), await transcript(broker.port, [level9]), 'unknown protocol level');
});

t.test('half-close: a client FIN reaches the broker after everything before it', async (t) => {
  const watcher = await connectClient(proxy.url);
  t.teardown(() => watcher.end(true));
  await watcher.subscribeAsync('fin/t');
  const got = nextMessages(watcher, 1);
  const c = await RawClient.connect(proxy.port);
  c.socket.write(Buffer.concat([connectFrame({ clientId: 'fin', keepalive: 30 }), Buffer.from([0x30, 0x08, 0x00, 0x05, ...Buffer.from('fin/t'), 0x68])]));
  c.socket.end();
  t.equal((await got)[0].payload.toString(), 'h');
  await c.waitForClose();
  t.equal(c.received[0], 0x20, 'the CONNACK reached the half-closed client before the close');
});

t.test('a broker that dies: MQTT 5 clients get DISCONNECT 0x89; a broker that closes one connection: passed on untouched', async (t) => {
  const own = await startMosquitto();
  const p = await startProxy(own.port);
  t.teardown(async () => { await p.stop(); await own.stop(); });
  // Alive broker closing one connection (session takeover, v3.1.1: no DISCONNECT): nothing injected.
  const first = await RawClient.connect(p.port);
  first.write(connectFrame({ clientId: 'taken', keepalive: 30, protocolVersion: 5 }));
  await first.waitForBytes(5);
  const second = await RawClient.connect(p.port);
  t.teardown(() => second.destroy());
  second.write(connectFrame({ clientId: 'taken', keepalive: 30, protocolVersion: 5 }));
  await first.waitForClose();
  // Mosquitto 2.0.11 closes a taken-over MQTT 5 session without a DISCONNECT; the proxy adds none.
  t.equal(first.received.length, 2 + first.received[1], 'takeover: only the CONNACK, then the close, as the broker sent it');
  await sleep(50);

  const v5 = await RawClient.connect(p.port);
  v5.write(connectFrame({ clientId: 'orphan', keepalive: 30, protocolVersion: 5 }));
  await v5.waitForBytes(5);
  own.proc.kill('SIGKILL');
  await v5.waitForClose();
  t.same([...v5.received.subarray(-3)], [0xe0, 0x01, 0x89], 'broker death: DISCONNECT 0x89 (server busy)');
  const end = await p.nextClose((e) => e.clientId === 'orphan');
  t.equal(end.reason, 'broker_close');
});
