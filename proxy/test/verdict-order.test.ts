/**
 * A verdict is counted only once the broker has been told. Whoever sees the
 * close event (metrics, the webhook, /connections) may act on "the Will has
 * been triggered", so for an MQTT 5 client the event must come after the
 * broker received DISCONNECT 0x04 (disconnect with Will) and closed its side.
 *
 * The upstream here is a tiny broker on a raw socket, because the order is the
 * point: it notes the moment it has the DISCONNECT, which Mosquitto cannot tell
 * a test synchronously. (liveness-frozen.test.ts checks the same verdict
 * against the real Mosquitto: the Will is published.)
 */
import t from 'tap';
import net from 'node:net';
import { startProxy } from './helpers/proxy.ts';
import { connectFrame, eventually, RawClient } from './helpers/clients.ts';

interface FakeBroker {
  port: number;
  /** Every byte each connection sent, in order of connection. */
  received: Buffer[];
  /** performance.now() when a connection's FIN arrived (after its DISCONNECT, if any), by connection. */
  endedAt: number[];
  close(): Promise<void>;
}

/** Answers each CONNECT with an MQTT 5 CONNACK, records everything, and closes when the peer does. */
async function fakeBroker(): Promise<FakeBroker> {
  const received: Buffer[] = [];
  const endedAt: number[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    const i = received.push(Buffer.alloc(0)) - 1;
    endedAt.push(-1);
    sockets.add(s);
    let answered = false;
    s.on('data', (d: Buffer) => {
      received[i] = Buffer.concat([received[i], d]);
      if (!answered && received[i][0] === 0x10) {
        answered = true;
        s.write(Buffer.from([0x20, 0x03, 0x00, 0x00, 0x00])); // CONNACK, v5, success, no properties
      }
    });
    s.on('end', () => { endedAt[i] = performance.now(); }); // and allowHalfOpen false: we close too
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    received,
    endedAt,
    close: () => new Promise((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()); }),
  };
}

t.test('MQTT 5 keep-alive verdict: the close event comes after the broker had DISCONNECT 0x04 and closed', async (t) => {
  const broker = await fakeBroker();
  const proxy = await startProxy(broker.port, { probes: { enabled: false } });
  t.teardown(async () => {
    await proxy.stop();
    await broker.close();
  });
  // What the broker had when the proxy counted the verdict, taken synchronously in the listener.
  let atVerdict: { bytes: string; brokerEnded: boolean; at: number } | null = null;
  proxy.app.proxy.events.on('close', (e) => {
    if (e.clientId !== 'order-v5' || atVerdict) return;
    atVerdict = { bytes: broker.received[0]?.toString('hex') ?? '', brokerEnded: broker.endedAt[0] >= 0, at: performance.now() };
  });
  const client = await RawClient.connect(proxy.port);
  t.teardown(() => client.destroy());
  client.write(connectFrame({ clientId: 'order-v5', keepalive: 1, protocolVersion: 5, will: { topic: 'w', payload: 'gone' } }));
  const sentAt = performance.now();
  await client.waitForBytes(5);
  const end = await proxy.nextClose((e) => e.clientId === 'order-v5', 15_000);
  t.equal(end.reason, 'keepalive_timeout');
  // Keep-alive 1 s + grace min(2, 0.5 x 1) = 1.5 s, measured by the proxy from the CONNECT's arrival.
  t.ok(end.silenceMs >= 1_500, `silence at the verdict ${Math.round(end.silenceMs)} ms, not before 1,500`);
  t.ok(performance.now() - sentAt >= 1_500, 'and not before 1.5 s after the CONNECT was sent');
  await eventually(() => atVerdict, 5_000, 'the close listener ran');
  const seen = atVerdict!;
  t.match(seen.bytes, /e00104$/, `the broker had DISCONNECT 0x04 (disconnect with Will) when the verdict was counted (it had ${seen.bytes.slice(-12)})`);
  t.equal(seen.brokerEnded, true, 'and the broker had closed its side of the session');
  t.ok(broker.endedAt[0] <= seen.at, 'broker end before the close event');
  await client.waitForClose();
  t.same([...client.received.subarray(-3)], [0xe0, 0x01, 0x8d], 'the client got DISCONNECT 0x8D (keep alive timeout)');
});
