/**
 * A subscriber that stops reading while its topic is flooded.
 *
 * The relay pauses the broker side as soon as the client socket stops taking
 * bytes, so what it holds for that connection stays under the socket's
 * high-water mark plus one chunk read from the broker; after tcp.sendTimeout
 * (2 s here) the connection ends with send_stall and the broker publishes the
 * Will. Another subscriber on the same topic keeps receiving throughout.
 */
import t from 'tap';
import type net from 'node:net';
import mqttPacket from 'mqtt-packet';
import { startMosquitto } from './helpers/mosquitto.ts';
import { startProxy } from './helpers/proxy.ts';
import { connectClient, connectFrame, eventually, RawClient, sleep } from './helpers/clients.ts';
import { shrinkReceiveBuffer } from './helpers/sockopt.ts';
import type { Connection } from '../src/relay/connection.ts';

const SEND_TIMEOUT_S = 2;
/**
 * The healthy subscriber must receive something in every window this long. Not shorter:
 * this one process runs the proxy, the flooding publisher and both subscribers, and a
 * loaded 2-core machine can stall its event loop for a few hundred ms.
 */
const WINDOW_MS = 1_000;
/** Largest chunk a socket read hands the relay (libuv reads up to 64 KiB). */
const CHUNK = 64 * 1024;
const MB = 1024 * 1024;
const mb = (n: number): string => `${(n / MB).toFixed(1)} MB`;

// No QoS 0 loss for a subscriber that reads: Mosquitto drops QoS 0 messages to an online client
// once its queue is over max_queued_messages (default 1000, per client) or max_queued_bytes; 0 means
// no limit, and with max_inflight_bytes at its default 0 every QoS 0 message then goes out
// (db__ready_for_flight). The stalled subscriber's queue grows meanwhile: bounded by the flood.
const broker = await startMosquitto({ extraConfig: ['max_queued_messages 0', 'max_queued_bytes 0'] });
const proxy = await startProxy(broker.port, {
  logLevel: 'warn',
  tcp: { sendTimeout: SEND_TIMEOUT_S },
});
t.teardown(async () => {
  await proxy.stop();
  await broker.stop();
});

for (const protocolVersion of [4, 5] as const) {
  const v = protocolVersion === 5 ? 'v5' : 'v3.1.1';
  t.test(`${v}: a subscriber that stops reading ends with send_stall; memory bounded; others keep receiving`, async (t) => {
    const topic = `stall/${v}/flood`;
    const willTopic = `stall/${v}/will`;

    // The healthy subscriber: counts flood messages in WINDOW_MS buckets, and watches for the Will.
    const healthy = await connectClient(proxy.url, { clientId: `healthy-${v}`, keepalive: 30 });
    t.teardown(() => healthy.end(true));
    await healthy.subscribeAsync([topic, willTopic], { qos: 0 });
    const buckets = new Map<number, number>();
    let healthyCount = 0;
    let willAt = -1;
    const t0 = performance.now();
    healthy.on('message', (tp) => {
      if (tp === willTopic) { willAt = performance.now(); return; }
      healthyCount++;
      const b = Math.floor((performance.now() - t0) / WINDOW_MS);
      buckets.set(b, (buckets.get(b) ?? 0) + 1);
    });

    // The subscriber that will stop reading: raw socket, small receive buffer.
    const stalled = await RawClient.connect(proxy.port);
    const rcvbuf = shrinkReceiveBuffer(stalled.socket, 4096);
    stalled.write(connectFrame({ clientId: `stalled-${v}`, keepalive: 60, protocolVersion, will: { topic: willTopic, payload: 'stalled is gone' } }));
    await stalled.waitForBytes(4);
    const afterConnack = stalled.received.length;
    stalled.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 0 }] }, { protocolVersion }));
    await stalled.until(() => stalled.received.length > afterConnack && stalled.received[afterConnack] === 0x90 && stalled.received.length >= afterConnack + 2 + stalled.received[afterConnack + 1], 10_000, 'SUBACK');
    stalled.socket.pause();
    const conn = [...proxy.app.proxy.connections].find((c) => c.connect?.clientId === `stalled-${v}`) as Connection;
    t.ok(conn, 'found the stalled connection in the proxy');
    // The proxy's socket to this client.
    const clientSocket = conn.transport.stream as net.Socket;
    const highWaterMark = clientSocket.writableHighWaterMark;

    // Sample what the proxy holds for it, and this process's memory.
    let maxWritable = 0;
    // When the proxy's writes to it started waiting for drain (the relay's stall), bracketed by
    // the sampler: after the last sample that saw the socket take bytes, by the first that saw it wait.
    let lastFlowing = -1;
    let stallSeen = -1;
    let closedAt = -1;
    let samples = 0;
    const memBefore = process.memoryUsage();
    let memPeak = memBefore;
    const sampler = setInterval(() => {
      samples++;
      if (!clientSocket.destroyed) maxWritable = Math.max(maxWritable, clientSocket.writableLength);
      if (!clientSocket.destroyed) {
        if (!clientSocket.writableNeedDrain) {
          lastFlowing = performance.now();
          stallSeen = -1;
        } else if (stallSeen < 0) stallSeen = performance.now();
      }
      if (closedAt < 0 && clientSocket.destroyed) closedAt = performance.now();
      const m = process.memoryUsage();
      if (m.rss > memPeak.rss) memPeak = m;
    }, 10);
    t.teardown(() => clearInterval(sampler));

    // The publisher: 1 KB QoS 0 messages as fast as its socket takes them, bounded in count and time.
    const publisher = await connectClient(proxy.url, { clientId: `flooder-${v}`, keepalive: 30 });
    t.teardown(() => publisher.end(true));
    const payload = Buffer.alloc(1024, 0x66);
    const floodStart = performance.now();
    const MAX_MESSAGES = 500_000;
    const MAX_MS = 25_000;
    const RATE = 30_000; // messages a second at most: 30 MB/s
    let published = 0;
    let stopAt = Infinity;
    while (published < MAX_MESSAGES && performance.now() - floodStart < MAX_MS && performance.now() < stopAt) {
      if (publisher.stream.writableLength > 256 * 1024 || published > ((performance.now() - floodStart) / 1000) * RATE) {
        await sleep(2);
        continue;
      }
      for (let k = 0; k < 50; k++) publisher.publish(topic, payload, { qos: 0 });
      published += 50;
      await new Promise((r) => setImmediate(r));
      // Keep flooding one more second after the verdict: the others must still get through.
      if (stopAt === Infinity && clientSocket.destroyed) stopAt = performance.now() + 1_000;
    }
    const floodEnd = performance.now();
    const end = await proxy.nextClose((e) => e.clientId === `stalled-${v}`, 10_000);
    clearInterval(sampler);
    await eventually(() => willAt > 0, 10_000, 'the Will').catch(() => {});
    // Let what is in flight arrive.
    let previous = -1;
    await eventually(async () => { const done = healthyCount === previous; previous = healthyCount; await sleep(200); return done; }, 10_000).catch(() => {});
    const healthyAtEnd = healthyCount;

    t.equal(end.reason, 'send_stall', `ended with send_stall (${end.detail ?? ''})`);
    t.ok(end.liveness, 'a liveness verdict: the broker is told at once');
    t.ok(willAt > 0, 'the broker published the stalled client\'s Will');
    t.ok(stallSeen > 0, 'the proxy\'s writes to it waited for drain until the end');
    // Exact lower bound: the stall began after the last sample that saw the socket take bytes.
    const notBefore = closedAt - lastFlowing;
    const after = closedAt - stallSeen;
    t.ok(notBefore >= SEND_TIMEOUT_S * 1000 - 50, `no verdict before sendTimeout: ${Math.round(notBefore)} ms after the socket last took bytes (sendTimeout ${SEND_TIMEOUT_S} s)`);
    t.ok(after < SEND_TIMEOUT_S * 1000 + 3_000, `verdict ${Math.round(after)} ms after writes were seen waiting`);
    t.ok(maxWritable <= highWaterMark + CHUNK, `the proxy held at most ${maxWritable} bytes for it (high-water mark ${highWaterMark} + one ${CHUNK}-byte chunk)`);
    t.ok(end.bytesToClient < published * 1100, `${mb(end.bytesToClient)} reached its socket of ${mb(published * 1030)} published`);

    // The healthy subscriber received in every window of the flood, including after the verdict.
    const first = Math.floor((floodStart - t0) / WINDOW_MS) + 1;
    const last = Math.floor((floodEnd - t0) / WINDOW_MS) - 1;
    const empty = [];
    for (let b = first; b <= last; b++) if (!buckets.get(b)) empty.push(b);
    t.same(empty, [], `the healthy subscriber received in every ${WINDOW_MS} ms window (${last - first + 1} windows, ${healthyAtEnd} messages)`);
    const afterVerdict = [...buckets].filter(([b]) => b * WINDOW_MS + t0 > closedAt).reduce((a, [, n]) => a + n, 0);
    t.ok(afterVerdict > 0, `and ${afterVerdict} after the verdict`);
    t.equal(healthyAtEnd, published, `the healthy subscriber got ${healthyAtEnd} of ${published} (QoS 0, read continuously)`);
    t.comment(`${rcvbuf}; flood ${published} x 1 KB in ${Math.round(floodEnd - floodStart)} ms; stall began ${Math.round(lastFlowing - floodStart)}-${Math.round(stallSeen - floodStart)} ms into it; ${samples} samples`);
    t.comment(`memory of this process (proxy, broker clients, publisher): rss ${mb(memBefore.rss)} -> peak ${mb(memPeak.rss)}, heap ${mb(memBefore.heapUsed)} -> ${mb(memPeak.heapUsed)}`);
    t.ok(memPeak.rss - memBefore.rss < 200 * MB, 'rss grew by less than 200 MB');
    stalled.destroy();
  });
}
