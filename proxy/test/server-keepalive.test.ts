/**
 * The broker's smaller Server Keep Alive is adopted and enforced. Mosquitto
 * with `max_keepalive 10` tells an MQTT 5 client asking for 60 s to use 10 s
 * (CONNACK property Server Keep Alive); the proxy must then hold that client
 * to 10 s + grace, not to the 60 s it asked for.
 */
import t from 'tap';
import mqttPacket from 'mqtt-packet';
import { startMosquitto } from './helpers/mosquitto.ts';
import { startProxy } from './helpers/proxy.ts';
import { connectClient, connectFrame, nextMessages, RawClient } from './helpers/clients.ts';

// Mosquitto 2.0 refuses max_keepalive below 10 ("Invalid max_keepalive value (5)").
const SERVER_KEEPALIVE_S = 10;
/** Grace 1 s (a rule): the verdict at 11 s stays clear of Mosquitto's own 1.5 x 10 = 15 s. */
const GRACE_S = 1;

const broker = await startMosquitto({ extraConfig: [`max_keepalive ${SERVER_KEEPALIVE_S}`] });
const proxy = await startProxy(broker.port, {
  probes: { enabled: false },
  rules: [{ match: { clientId: 'ska-*' }, keepAlive: { grace: GRACE_S } }],
});
const watcher = await connectClient(`mqtt://127.0.0.1:${broker.port}`, { clientId: 'ska-watcher', keepalive: 30 });
await watcher.subscribeAsync('ska/will/#', { qos: 1 });
t.teardown(async () => {
  watcher.end(true);
  await proxy.stop();
  await broker.stop();
});

t.test(`MQTT 5 client asking for 60 s, broker max_keepalive ${SERVER_KEEPALIVE_S}: verdict at ${SERVER_KEEPALIVE_S} + ${GRACE_S} s`, async (t) => {
  const will = nextMessages(watcher, 1, 20_000);
  const client = await RawClient.connect(proxy.port);
  t.teardown(() => client.destroy());
  client.write(connectFrame({ clientId: 'ska-frozen', keepalive: 60, protocolVersion: 5, will: { topic: 'ska/will/frozen', payload: 'gone', qos: 1 } }));
  const sentAt = performance.now();
  await client.waitForBytes(5);
  await client.until(() => client.received.length >= 2 + client.received[1], 5_000, 'whole CONNACK');
  const parser = mqttPacket.parser({ protocolVersion: 5 });
  let connack: mqttPacket.IConnackPacket | null = null;
  parser.on('packet', (p: mqttPacket.Packet) => { if (p.cmd === 'connack') connack ??= p; });
  parser.parse(client.received.subarray(0, 2 + client.received[1]));
  t.equal(connack!.reasonCode, 0);
  t.equal(connack!.properties?.serverKeepAlive, SERVER_KEEPALIVE_S, 'the client is told the broker\'s Server Keep Alive');

  // The client stays silent (frozen).
  const [w] = await will;
  const willAfter = performance.now() - sentAt;
  t.equal(w.payload.toString(), 'gone');
  const end = await proxy.nextClose((e) => e.clientId === 'ska-frozen', 10_000);
  t.equal(end.reason, 'keepalive_timeout', `the proxy's verdict, not the broker's own close (${end.detail ?? ''})`);
  const deadlineMs = (SERVER_KEEPALIVE_S + GRACE_S) * 1000;
  // Exact lower bound, measured by the proxy from the last byte it received.
  t.ok(end.silenceMs >= deadlineMs, `silence at the verdict ${Math.round(end.silenceMs)} ms, not before ${deadlineMs}`);
  // Upper bound with room for a loaded machine, still far below the 60 s + grace the client asked for.
  t.ok(end.silenceMs < deadlineMs + 3_000, `and before Mosquitto's own ${1.5 * SERVER_KEEPALIVE_S} s`);
  t.ok(willAfter < 20_000, `Will ${Math.round(willAfter)} ms after the CONNECT (the client asked for 60 s)`);
  t.equal(end.keepAlive, 60, 'asked for 60 s');
  t.equal(end.effectiveKeepAlive, SERVER_KEEPALIVE_S, 'enforced the broker\'s 10 s');
});
