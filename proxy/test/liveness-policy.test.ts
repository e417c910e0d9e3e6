/**
 * Keep-alive policies against a real Mosquitto and real clients, and no false
 * positives: healthy clients are never cut.
 */
import t from 'tap';
import type { MqttClient } from 'mqtt';
import { startMosquitto } from './helpers/mosquitto.ts';
import { startProxy } from './helpers/proxy.ts';
import { connectClient, connectFrame, RawClient, sleep } from './helpers/clients.ts';

const broker = await startMosquitto();
const proxy = await startProxy(broker.port, {
  keepAlive: { max: 30 },
  rules: [{ match: { clientId: 'strict-*' }, keepAlive: { max: 60, aboveMax: 'reject' } }],
});
t.teardown(async () => {
  await proxy.stop();
  await broker.stop();
});

t.test('MQTT 3.1.1 above the maximum with reject: CONNACK return code 2, nothing reaches the broker', async (t) => {
  const c = await RawClient.connect(proxy.port);
  c.write(connectFrame({ clientId: 'strict-legacy', keepalive: 300 }));
  await c.waitForClose();
  t.same([...c.received], [0x20, 0x02, 0x00, 0x02]);
  const end = await proxy.nextClose((e) => e.clientId === 'strict-legacy');
  t.equal(end.reason, 'policy_reject');
  t.equal(end.detail, 'keepalive_too_large');
  t.notMatch(broker.log(), /strict-legacy/, 'the broker never saw the CONNECT');
  // mqtt.js reports it as a refusal.
  await t.rejects(connectClient(proxy.url, { clientId: 'strict-mqttjs', keepalive: 120 }), /Identifier rejected/i);
});

t.test('healthy clients: MQTT 5 keep-alive 600 clamped to 30 pings at 30 s; 20 idle clients with keep-alive 5 stay connected for 30 s', async (t) => {
  // The clamped client: its CONNACK carries Server Keep Alive 30 and mqtt.js obeys it.
  const clamped = await connectClient(proxy.url, { clientId: 'clamped-v5', protocolVersion: 5, keepalive: 600 });
  // mqtt.js keeps the CONNACK it acted on.
  const connack = (clamped as unknown as { connackPacket?: { properties?: { serverKeepAlive?: number } } }).connackPacket;
  const pings: number[] = [];
  const connectedAt = performance.now();
  clamped.on('packetsend', (p) => { if (p.cmd === 'pingreq') pings.push(performance.now() - connectedAt); });

  const healthy: MqttClient[] = [];
  for (let i = 0; i < 20; i++) healthy.push(await connectClient(proxy.url, { clientId: `healthy-${i}`, keepalive: 5, protocolVersion: i % 2 ? 5 : 4 }));
  let disconnects = 0;
  for (const c of [...healthy, clamped]) c.on('close', () => { disconnects++; });
  await sleep(33_000);

  t.equal(connack?.properties?.serverKeepAlive, 30, 'CONNACK carries Server Keep Alive 30');
  t.ok(pings.length >= 1 && pings[0] > 25_000 && pings[0] < 32_000, `first PINGREQ after ${Math.round(pings[0] ?? -1)} ms: mqtt.js obeys the Server Keep Alive, not its own 600`);
  t.equal(disconnects, 0, 'no healthy client was disconnected');
  t.equal(proxy.closes.filter((e) => e.liveness).length, 0, 'no liveness verdict at all');
  const open = [...proxy.app.proxy.connections].filter((c) => c.connect?.clientId.startsWith('healthy-')).length;
  t.equal(open, 20);
  const info = [...proxy.app.proxy.connections].find((c) => c.connect?.clientId === 'clamped-v5');
  t.equal(info?.effectiveKeepAlive, 30, 'the proxy enforces 30 s on it');
  for (const c of [...healthy, clamped]) c.end(true);
});
