// applyTcpLiveness must really reach the kernel: read every option back with getsockopt.
import t from 'tap';
import net from 'node:net';
import { once } from 'node:events';
import {
  applyTcpLiveness,
  readTcpLiveness,
  tcpAckState,
} from '../src/liveness/tcp-options.ts';

// A connected loopback pair: [client side, server (accepted) side].
async function loopbackPair(t: { teardown(fn: () => void): void }): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const client = net.connect(port, '127.0.0.1');
  await once(client, 'connect');
  const [peer] = await accepted;
  t.teardown(() => {
    client.destroy();
    peer.destroy();
    server.close();
  });
  return [client, peer];
}

t.test('native mode sets exact values on both ends', async (t) => {
  const [client, peer] = await loopbackPair(t);
  const opts = { idleSeconds: 3, intervalSeconds: 2, count: 4, userTimeoutMs: 9500 };
  for (const sock of [client, peer]) {
    t.same(applyTcpLiveness(sock, opts), { mode: 'native' });
    t.same(readTcpLiveness(sock), { keepAlive: true, ...opts });
  }
});

t.test('userTimeoutMs 0 leaves TCP_USER_TIMEOUT at the kernel default', async (t) => {
  const [client] = await loopbackPair(t);
  t.equal(readTcpLiveness(client)?.keepAlive, false, 'keep-alive off before apply');
  const r = applyTcpLiveness(client, { idleSeconds: 10, intervalSeconds: 5, count: 3, userTimeoutMs: 0 });
  t.equal(r.mode, 'native');
  t.same(readTcpLiveness(client), {
    keepAlive: true, idleSeconds: 10, intervalSeconds: 5, count: 3, userTimeoutMs: 0,
  });
});

t.test('a kernel rejection falls back to setKeepAlive and reports errno', async (t) => {
  const [client] = await loopbackPair(t);
  // TCP_KEEPCNT must be 1..127: the kernel answers EINVAL.
  const r = applyTcpLiveness(client, { idleSeconds: 7, intervalSeconds: 2, count: 0, userTimeoutMs: 0 });
  t.equal(r.mode, 'fallback');
  t.match(r.error, /TCP_KEEPCNT=0.*EINVAL/);
  const back = readTcpLiveness(client);
  t.equal(back?.keepAlive, true);
  t.equal(back?.idleSeconds, 7, 'setKeepAlive applied the idle time');
});

t.test('socket without fd falls back', async (t) => {
  const sock = new net.Socket(); // not connected: no _handle, no fd
  const r = applyTcpLiveness(sock, { idleSeconds: 5, intervalSeconds: 1, count: 3, userTimeoutMs: 1000 });
  t.equal(r.mode, 'fallback');
  t.match(r.error, /file descriptor/);
  t.equal(readTcpLiveness(sock), null);
  t.equal(tcpAckState(sock), null);
  sock.destroy();
});

t.test('tcpAckState: nothing unacknowledged on an idle connection', async (t) => {
  const [client, peer] = await loopbackPair(t);
  client.write('ping');
  await once(peer, 'data');
  // Loopback ACKs immediately; give the ACK a moment to be processed.
  await new Promise((r) => setTimeout(r, 50));
  t.equal(tcpAckState(client)?.unacked, 0);
});
