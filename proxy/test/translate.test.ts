/**
 * Keep-alive translation against Mosquitto: a 3.1.1 client asks for a long
 * keep-alive, the broker is sent a short one (keepAlive.aboveMax translate,
 * upstreamKeepAlive), and the proxy keeps that broker session alive with
 * injected PINGREQs whose PINGRESPs the client never sees. The client's own
 * keep-alive is still enforced by the proxy, and a pulled cable still gets
 * its Will out in seconds.
 */
import t from 'tap';
import { startMosquitto } from './helpers/mosquitto.ts';
import { startProxy } from './helpers/proxy.ts';
import { connectClient, connectFrame, eventually, nextMessages, RawClient, sleep } from './helpers/clients.ts';
import { createCable, NETNS_CLIENT, waitForEvent } from './helpers/netns.ts';

const UPSTREAM_KEEPALIVE = 5;
const broker = await startMosquitto();
const cable = await createCable('transl');
const proxy = await startProxy(broker.port, {
  listen: `${cable.hostAddress}:0`,
  keepAlive: { aboveMax: 'translate', upstreamKeepAlive: UPSTREAM_KEEPALIVE },
  rules: [{ match: { clientId: 'frozen-*' }, keepAlive: { upstreamKeepAlive: 2 } }],
});
const watcher = await connectClient(broker.url, { clientId: 'transl-watcher' });
await watcher.subscribeAsync('transl/will/#', { qos: 1 });
t.teardown(async () => {
  watcher.end(true);
  await cable.destroy();
  await proxy.stop();
  await broker.stop();
});

const injected = (): number => proxy.app.proxy.stats.injectedPings;
const swallowed = (): number => proxy.app.proxy.stats.swallowedPingResps;
const connectionOf = (clientId: string) => [...proxy.app.proxy.connections].find((c) => c.connect?.clientId === clientId);

t.test('v3.1.1 keep-alive 30 is sent to Mosquitto as 5; the silent session outlives four upstream periods; a pulled cable still gets its Will', async (t) => {
  const clientId = 'transl-device';
  const device = cable.exec('node', ['--import', 'tsx', NETNS_CLIENT, JSON.stringify({
    host: cable.hostAddress,
    port: proxy.port,
    clientId,
    protocolVersion: 4,
    keepalive: 30,
    subscribe: 'transl/feed',
    will: { topic: `transl/will/${clientId}`, payload: `${clientId} lost`, qos: 1 },
  })]);
  t.teardown(() => device.kill('SIGKILL'));
  await waitForEvent(device, 'connected', 30_000);

  const seen = (await eventually(() => new RegExp(`New client connected from [\\d.]+:\\d+ as ${clientId} \\(p2, c1, k(\\d+)\\)`).exec(broker.log()), 5000, 'the broker log line'))!;
  t.equal(Number(seen[1]), UPSTREAM_KEEPALIVE, `Mosquitto logged: ${seen[0]}`);
  const conn = connectionOf(clientId)!;
  t.equal(conn.facts().keepAlive, 30);
  t.equal(conn.facts().effectiveKeepAlive, 30, 'the proxy enforces the client\'s own 30 s');
  t.equal(conn.facts().upstreamKeepAlive, UPSTREAM_KEEPALIVE);

  // Silence from the client (its keep-alive is 30 s) for more than four upstream keep-alive periods.
  const bytesBefore = conn.bytesFromClient;
  const injectedBefore = injected();
  const quietMs = 4 * UPSTREAM_KEEPALIVE * 1000 + 2000;
  await sleep(quietMs);
  t.equal(conn.bytesFromClient, bytesBefore, `the client sent nothing for ${quietMs} ms`);
  t.ok(conn.isOpen, 'the connection is still open');
  t.notMatch(broker.log(), new RegExp(`Client ${clientId} has exceeded timeout`), 'Mosquitto never timed the session out (it would after 7.5 s)');
  const pings = injected() - injectedBefore;
  t.ok(pings >= 7, `${pings} PINGREQs injected in ${quietMs} ms (every ${UPSTREAM_KEEPALIVE / 2} s)`);
  t.ok(injected() - swallowed() <= 2, `their PINGRESPs swallowed (${swallowed()} of ${injected()})`);
  // The broker session is alive end to end, and the client saw none of the injected PINGRESPs.
  const msg = waitForEvent(device, 'message', 10_000);
  watcher.publish('transl/feed', 'still there', { qos: 1 });
  t.equal((await msg).payload, 'still there', 'a message published at the broker reaches the client');
  await t.rejects(waitForEvent(device, 'pingresp', 100), 'the client got no PINGRESP: it sent no PINGREQ');

  // Pulled cable: the proxy's TCP keep-alive finds it within the model's bound for this connection (its jittered
  // idle + the idle verdict's deadAfter: 3 x 1 s on a link known clean, more while the estimate has little
  // evidence; docs/liveness.md); the broker gets no DISCONNECT and publishes the Will.
  await sleep(500);
  const th = conn.liveness.model.thresholds;
  const modelMs = th.kernel.idleSeconds * 1000 + th.idle.deadAfterMs;
  const will = nextMessages(watcher, 1, 30_000);
  await cable.pull();
  const pulledAt = performance.now();
  const [w] = await will;
  const elapsed = performance.now() - pulledAt;
  t.equal(w.payload.toString(), `${clientId} lost`);
  const bound = modelMs + 1_500;
  t.ok(elapsed <= bound, `Will ${Math.round(elapsed)} ms after the pull (bound ${bound} ms: the model's ${modelMs} + 1.5 s)`);
  const end = await proxy.nextClose((e) => e.clientId === clientId, 10_000);
  t.equal(end.reason, 'tcp_keepalive');
  t.comment(`translated k30 -> k${seen[1]}: ${pings} injected PINGREQs in ${quietMs} ms of client silence; Will ${Math.round(elapsed)} ms after the pull (${end.reason})`);
  await cable.restore();
});

t.test('a frozen translated client (keep-alive 6, upstream 2): the proxy ends the broker session at keep-alive + grace', async (t) => {
  const clientId = 'frozen-transl';
  const will = nextMessages(watcher, 1, 30_000);
  const client = await RawClient.connect(proxy.port, cable.hostAddress);
  t.teardown(() => client.destroy());
  const injectedBefore = injected();
  client.write(connectFrame({ clientId, keepalive: 6, will: { topic: `transl/will/${clientId}`, payload: `${clientId} frozen`, qos: 1 } }));
  const lastByteAt = performance.now();
  await client.waitForBytes(4);
  const seen = (await eventually(() => new RegExp(`as ${clientId} \\(p2, c1, k(\\d+)\\)`).exec(broker.log()), 5000, 'the broker log line'))!;
  t.equal(Number(seen[1]), 2, 'Mosquitto was sent keep-alive 2 (would time out after 3 s)');
  const [w] = await will;
  const elapsed = performance.now() - lastByteAt;
  t.equal(w.payload.toString(), `${clientId} frozen`);
  // Keep-alive 6 + grace min(2, 3) = 8 s; the broker alone would have dropped it after 3 s.
  // Upper bound with room for a loaded 2-core machine; the exact lower bound is the proxy's own.
  t.ok(elapsed <= 8_000 + 2_500, `Will ${Math.round(elapsed)} ms after the last byte (6 s + 2 s grace)`);
  const end = await proxy.nextClose((e) => e.clientId === clientId, 5_000);
  t.equal(end.reason, 'keepalive_timeout');
  t.ok(end.silenceMs >= 8_000, `the proxy's verdict after ${Math.round(end.silenceMs)} ms of silence: not before 8,000`);
  const pings = injected() - injectedBefore;
  t.ok(pings >= 6, `the broker got ${pings} injected PINGREQs meanwhile (every 1 s)`);
  t.notMatch(broker.log(), new RegExp(`Client ${clientId} has exceeded timeout`), 'Mosquitto did not time it out itself');
  await client.waitForClose(5000);
  t.equal(client.received.length, 4, 'the client received its CONNACK and nothing else: no PINGRESP leaked');
  t.comment(`frozen k6 -> k2: Will ${Math.round(elapsed)} ms after the last byte, ${pings} injected PINGREQs, verdict ${end.reason}`);
});
