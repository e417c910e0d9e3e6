/**
 * Frozen clients: TCP alive, MQTT silent. The proxy's keep-alive verdict must
 * come at keep-alive + grace, never after the broker's 1.5 x, and the broker
 * must publish the Will at once.
 *
 * Timing on a busy 2-core machine (this process runs the proxy and the clients):
 * lower bounds are exact and measured by the proxy (silence at the verdict, from
 * the last byte it received); upper bounds leave 1.5-2.5 s of slack. That the
 * proxy acted before the broker is shown by the reason (keepalive_timeout: had
 * Mosquitto closed first, it would be broker_close), not by a tight window.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { startMosquitto } from './helpers/mosquitto.ts';
import { startProxy } from './helpers/proxy.ts';
import { connectClient, connectFrame, eventually, nextMessages, RawClient } from './helpers/clients.ts';

const broker = await startMosquitto();
const proxy = await startProxy(broker.port, {
  rules: [{ match: { clientId: 'fast-*' }, keepAlive: { grace: 1 } }],
});
const watcher = await connectClient(proxy.url, { clientId: 'watcher', keepalive: 30 });
await watcher.subscribeAsync('wills/#', { qos: 1 });
t.teardown(async () => {
  watcher.end(true);
  await proxy.stop();
  await broker.stop();
});

/** Connect a raw client that sends CONNECT and then nothing; returns when its CONNACK arrived. */
async function frozenClient(clientId: string, keepalive: number, protocolVersion: 4 | 5 = 4): Promise<{ client: RawClient; lastByteAt: number }> {
  const client = await RawClient.connect(proxy.port);
  client.write(connectFrame({ clientId, keepalive, protocolVersion, will: { topic: `wills/${clientId}`, payload: `${clientId} is gone`, qos: 1 } }));
  const lastByteAt = performance.now();
  await client.waitForBytes(4);
  return { client, lastByteAt };
}

t.test('frozen v3.1.1 client, keep-alive 4: Will within keep-alive + grace + 0.5 s', async (t) => {
  const will = nextMessages(watcher, 1);
  const { client, lastByteAt } = await frozenClient('frozen-v4', 4);
  t.teardown(() => client.destroy());
  const [w] = await will;
  const elapsed = performance.now() - lastByteAt;
  t.equal(w.topic, 'wills/frozen-v4');
  t.ok(elapsed <= 6_000 + 2_000, `Will ${Math.round(elapsed)} ms after the last byte (keep-alive 4 + grace 2 = 6,000)`);
  const end = await proxy.nextClose((e) => e.clientId === 'frozen-v4');
  t.equal(end.reason, 'keepalive_timeout', 'the proxy\'s verdict, not the broker\'s own close');
  t.ok(end.silenceMs >= 6_000, `silence at verdict ${Math.round(end.silenceMs)} ms: not before 6,000`);
  t.ok(end.silenceMs < 6_000 + 1_500, 'and soon after');
  // Here keep-alive + grace equals the broker's 1.5 x, so the advantage is only the timers' lateness.
  t.ok(end.advantageMs !== null && end.advantageMs <= 0 && end.advantageMs > -1_500, `the broker's deadline is the same 6 s (advantage ${end.advantageMs} ms)`);
  t.equal(end.liveness, true);
});

t.test('frozen client with grace 1 s: Will before the broker\'s own 6 s', async (t) => {
  const will = nextMessages(watcher, 1);
  const { client, lastByteAt } = await frozenClient('fast-frozen', 4);
  t.teardown(() => client.destroy());
  await will;
  const elapsed = performance.now() - lastByteAt;
  t.ok(elapsed < 5_000 + 2_000, `Will ${Math.round(elapsed)} ms after the last byte (broker: 6,000 ms and later)`);
  const end = await proxy.nextClose((e) => e.clientId === 'fast-frozen');
  t.equal(end.reason, 'keepalive_timeout', 'the proxy acted before the broker');
  t.ok(end.silenceMs >= 5_000, `silence at verdict ${Math.round(end.silenceMs)} ms: not before keep-alive 4 + grace 1`);
  t.ok((end.advantageMs ?? 0) > 0, `advantage over the broker ${Math.round(end.advantageMs ?? 0)} ms`);
});

t.test('frozen MQTT 5 client: the broker gets DISCONNECT 0x04 (with Will), the client 0x8D', async (t) => {
  const will = nextMessages(watcher, 1);
  const { client, lastByteAt } = await frozenClient('frozen-v5', 2, 5);
  t.teardown(() => client.destroy());
  const [w] = await will;
  const elapsed = performance.now() - lastByteAt;
  t.equal(w.payload.toString(), 'frozen-v5 is gone');
  t.ok(elapsed <= 3_000 + 2_000, `Will ${Math.round(elapsed)} ms after the last byte (keep-alive 2 + grace 1)`);
  const end = await proxy.nextClose((e) => e.clientId === 'frozen-v5');
  t.equal(end.reason, 'keepalive_timeout');
  t.ok(end.silenceMs >= 3_000, `silence at verdict ${Math.round(end.silenceMs)} ms: not before 3,000`);
  await client.waitForClose();
  t.same([...client.received.subarray(-3)], [0xe0, 0x01, 0x8d], 'DISCONNECT 0x8D (keep alive timeout) reached the client');
  t.match(broker.log(), /Client frozen-v5 disconnected/, 'the broker saw a disconnect, not a socket error');
});

t.test('a SIGSTOPped mosquitto_sub is detected by its keep-alive', async (t) => {
  const will = nextMessages(watcher, 1);
  const sub = spawn('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(proxy.port), '-i', 'stopped-sub', '-k', '5', '-t', 'nothing/here', '--will-topic', 'wills/stopped-sub', '--will-payload', 'stopped', '--will-qos', '1'], { stdio: 'ignore' });
  t.teardown(() => { sub.kill('SIGCONT'); sub.kill('SIGKILL'); });
  await eventually(() => [...proxy.app.proxy.connections].some((c) => c.connect?.clientId === 'stopped-sub' && c.hasConnack), 10_000, 'mosquitto_sub connected');
  sub.kill('SIGSTOP');
  const stoppedAt = performance.now();
  const [w] = await will;
  const elapsed = performance.now() - stoppedAt;
  t.equal(w.payload.toString(), 'stopped');
  // Keep-alive 5 + grace 2; its last PINGREQ may have been up to 5 s before the stop.
  t.ok(elapsed <= 7_000 + 2_000, `Will ${Math.round(elapsed)} ms after SIGSTOP`);
  const end = await proxy.nextClose((e) => e.clientId === 'stopped-sub');
  t.equal(end.reason, 'keepalive_timeout');
  t.ok(end.silenceMs >= 7_000, `silence at verdict ${Math.round(end.silenceMs)} ms: not before 7,000`);
});
