/**
 * A live but slow reader is not a dead one. A client that stops reading on
 * loopback still has a kernel that ACKs everything until its receive window is
 * full, and then answers the proxy's zero-window probes: nothing stays
 * unacknowledged, so neither the kernel's TCP_USER_TIMEOUT nor the proxy's own
 * TCP_INFO check may give a tcp_user_timeout verdict, however long it pauses.
 * (send_stall after tcp.sendTimeout is the verdict for that case; it is set far
 * beyond this test's window so it stays out of the way.)
 */
import t from 'tap';
import type net from 'node:net';
import { run } from './helpers/netns.ts';
import mqttPacket from 'mqtt-packet';
import { startMosquitto } from './helpers/mosquitto.ts';
import { startProxy } from './helpers/proxy.ts';
import { connectClient, connectFrame, eventually, RawClient, sleep } from './helpers/clients.ts';
import { shrinkReceiveBuffer } from './helpers/sockopt.ts';
import type { Connection } from '../src/relay/connection.ts';

const USER_TIMEOUT_S = 2;
/** The reader stays paused this long: three user timeouts. */
const PAUSE_MS = 3 * USER_TIMEOUT_S * 1000;

/** Send-Q of the proxy's socket to the client on this local port, from `ss` (bytes not yet acknowledged or not yet sent). */
async function proxySendQueue(clientPort: number): Promise<number> {
  const out = await run('ss', ['-Htn', 'state', 'established', `dport = :${clientPort}`]);
  const m = /^\d+\s+(\d+)\s/m.exec(out);
  return m ? Number(m[1]) : -1;
}

// No QoS 0 queue limits: Mosquitto would otherwise drop the message sent after the pause (its queue to this reader is full).
const broker = await startMosquitto({ extraConfig: ['max_queued_messages 0', 'max_queued_bytes 0'] });
const proxy = await startProxy(broker.port, {
  logLevel: 'warn',
  tcp: { userTimeout: USER_TIMEOUT_S, sendTimeout: 120 },
});
t.teardown(async () => {
  await proxy.stop();
  await broker.stop();
});

// Found by this test: Linux's persist timer honours TCP_USER_TIMEOUT (tcp_probe_timer, since 5.11), so a
// zero window held for the user timeout aborted a reader that ACKs every window probe. Fixed: the kernel's
// TCP_USER_TIMEOUT is now a backstop beyond tcp.sendTimeout and every proxy verdict, and the proxy's own
// check ignores probes while bytes are queued (notsent_bytes > 0): a paused reader is send_stall's case.
t.test(`a reader paused for ${PAUSE_MS} ms (user timeout ${USER_TIMEOUT_S} s) is not cut, and reads on afterwards`, async (t) => {
  const topic = 'slow/reader';
  const reader = await RawClient.connect(proxy.port);
  t.teardown(() => reader.destroy());
  const rcvbuf = shrinkReceiveBuffer(reader.socket, 4096);
  reader.write(connectFrame({ clientId: 'slow-reader', keepalive: 60 }));
  await reader.waitForBytes(4);
  reader.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 0 }] }));
  await reader.waitForBytes(4 + 5);
  const conn = [...proxy.app.proxy.connections].find((c) => c.connect?.clientId === 'slow-reader') as Connection;
  t.ok(conn, 'found the reader\'s connection in the proxy');
  // The proxy's socket to this client, to see the stall happen.
  const clientSocket = conn.transport.stream as net.Socket;
  reader.socket.pause();

  const publisher = await connectClient(proxy.url, { clientId: 'slow-reader-feed', keepalive: 30 });
  t.teardown(() => publisher.end(true));
  const payload = Buffer.alloc(1024, 0x61);
  const pausedAt = performance.now();
  let published = 0;
  let sendQ = -1;
  let lastSample = 0;
  // 1 KB every 5 ms (~200 KB/s): its 4 KB window is full at once, then bytes wait on the proxy's side.
  while (performance.now() - pausedAt < PAUSE_MS) {
    publisher.publish(topic, payload, { qos: 0 });
    published++;
    // The most that ever waited (sampled from 1 s on): one early sample can miss it on a loaded machine.
    if (performance.now() - pausedAt > 1_000 && performance.now() - lastSample >= 250) {
      sendQ = Math.max(sendQ, await proxySendQueue(reader.localPort));
      lastSample = performance.now();
    }
    await sleep(5);
    if (proxy.closes.some((e) => e.clientId === 'slow-reader')) break;
  }
  const pausedFor = performance.now() - pausedAt;
  // Its receive buffer is 4 KB: eight times that queued in the proxy's kernel socket means it stopped
  // reading (not 100 KB: a loaded machine publishes well below the nominal 200 KB/s).
  t.ok(sendQ > 32 * 1024, `the reader really stopped taking bytes: ${sendQ} bytes waiting in the proxy's socket to it at most during the pause (${rcvbuf})`);
  const cut = proxy.closes.find((e) => e.clientId === 'slow-reader');
  t.equal(cut, undefined, `no verdict within ${Math.round(pausedFor)} ms of pause (${cut ? `${cut.reason}: ${cut.detail}` : 'still connected'}, ${published} messages published)`);

  if (cut) return;
  // It reads again: everything that waited arrives, and the connection lives on.
  const before = reader.received.length;
  // A 4 KB buffer against loopback's 64 KB MSS drains by window probes only (receiver-side silly-window
  // avoidance), ~40 KB/s: give it a normal buffer again, as a reader that catches up would have.
  shrinkReceiveBuffer(reader.socket, 1 << 20);
  reader.socket.resume();
  publisher.publish(topic, 'after the pause', { qos: 0 });
  await reader.until(() => reader.received.includes(Buffer.from('after the pause')), 30_000, 'the message sent after the pause');
  t.ok(reader.received.length - before > 100_000, `${reader.received.length - before} bytes read after the pause`);
  await eventually(() => clientSocket.writableLength === 0, 10_000, 'the proxy drained its queue');
  t.equal(reader.closed, false, 'still connected');
  t.equal(proxy.closes.find((e) => e.clientId === 'slow-reader'), undefined);
});
