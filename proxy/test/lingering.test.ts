/**
 * Sockets that would otherwise be held forever are cut on a timer:
 * - a half-closed connection (the broker closed, the client never finishes its
 *   side) 10 s after the FIN;
 * - a refused connection (CONNACK with an error sent, then FIN) 2 s after the
 *   refusal, when the client never reads its CONNACK nor closes.
 * Lower bounds are exact from the moment the proxy could have started the
 * timer at the earliest; upper bounds leave room for a loaded machine.
 */
import t from 'tap';
import net from 'node:net';
import { closedPort, startMosquitto } from './helpers/mosquitto.ts';
import { startProxy } from './helpers/proxy.ts';
import { connectClient, connectFrame, eventually } from './helpers/clients.ts';

/** A client socket that never ends its side by itself (allowHalfOpen) and records its end and close times. */
async function stubbornClient(port: number): Promise<{ socket: net.Socket; received: () => Buffer; endAt: () => number; closeAt: () => number }> {
  const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true, noDelay: true });
  let received = Buffer.alloc(0);
  let endAt = -1;
  let closeAt = -1;
  socket.on('data', (d: Buffer) => { received = Buffer.concat([received, d]); });
  socket.on('end', () => { endAt = performance.now(); });
  socket.on('close', () => { closeAt = performance.now(); });
  socket.on('error', () => {});
  await new Promise((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
  return { socket, received: () => received, endAt: () => endAt, closeAt: () => closeAt };
}

t.test('half-closed: the broker closed, the client never finishes its side: both sockets cut 10 s after the FIN', async (t) => {
  const broker = await startMosquitto();
  const proxy = await startProxy(broker.port, { probes: { enabled: false } });
  t.teardown(async () => {
    await proxy.stop();
    await broker.stop();
  });
  const client = await stubbornClient(proxy.port);
  t.teardown(() => { client.socket.destroy(); });
  client.socket.write(connectFrame({ clientId: 'half-closed', keepalive: 60 }));
  await eventually(() => client.received().length >= 4, 5_000, 'CONNACK');
  // A session takeover: Mosquitto closes the first connection (MQTT 3.1.1: no DISCONNECT, a FIN).
  const takeoverAt = performance.now();
  const intruder = await connectClient(`mqtt://127.0.0.1:${broker.port}`, { clientId: 'half-closed', keepalive: 60 });
  t.teardown(() => intruder.end(true));
  await eventually(() => client.endAt() > 0, 5_000, 'the FIN passed on to the client');
  t.equal(client.closeAt(), -1, 'the client keeps its side open');
  // The proxy's close event marks the cut (both of its sockets closed); the client cannot
  // see it: its peer was already in FIN_WAIT2, whose close sends nothing.
  const end = await proxy.nextClose((e) => e.clientId === 'half-closed', 20_000);
  const cutAt = performance.now();
  const cutAfter = cutAt - takeoverAt;
  t.equal(end.reason, 'broker_close');
  t.ok(cutAfter >= 10_000, `cut ${Math.round(cutAfter)} ms after the takeover began: not before 10 s (the linger starts at the broker's FIN, after that)`);
  t.ok(cutAt - client.endAt() < 10_000 + 3_000, `and ${Math.round(cutAt - client.endAt())} ms after the client saw the FIN`);
  t.equal(proxy.app.proxy.connections.size, 0, 'nothing left open in the proxy');
});

t.test('refused (broker unreachable, brokerUnreachable connack), the client never reads nor closes: the socket is cut 2 s after the CONNACK', async (t) => {
  const proxy = await startProxy(closedPort(), { probes: { enabled: false }, brokerUnreachable: 'connack' });
  t.teardown(() => proxy.stop());
  const client = await stubbornClient(proxy.port);
  t.teardown(() => { client.socket.destroy(); });
  client.socket.pause(); // never reads: the CONNACK and the FIN wait in its socket
  const sentAt = performance.now();
  client.socket.write(connectFrame({ clientId: 'refused-stubborn', keepalive: 30 }));
  const end = await proxy.nextClose((e) => e.clientId === 'refused-stubborn', 15_000);
  const endedAfter = performance.now() - sentAt;
  t.equal(end.reason, 'broker_unreachable');
  t.ok(endedAfter >= 2_000, `closed ${Math.round(endedAfter)} ms after the CONNECT was sent: not before 2 s (the refusal came after it)`);
  t.ok(endedAfter < 2_000 + 3_000, 'and within 2 s + slack');
  client.socket.resume();
  await eventually(() => client.received().length >= 4, 5_000, 'the CONNACK read at last');
  t.same([...client.received()], [0x20, 0x02, 0x00, 0x03], 'the CONNACK (server unavailable) was there to read');
});
