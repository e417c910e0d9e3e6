// applyTcpLiveness must really reach the kernel: read every option back with getsockopt.
import t from 'tap';
import net from 'node:net';
import { once } from 'node:events';
import {
  applyTcpLiveness,
  readTcpLiveness,
  tcpAckState,
  readTcpInfo,
  newTcpInfoSample,
  setTcpProbeTimers,
  readRetransmitOptions,
} from '../src/liveness/tcp-options.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

t.test('readTcpInfo: RTT, RTO and segment counters of a live loopback connection', async (t) => {
  const [client, peer] = await loopbackPair(t);
  const info = newTcpInfoSample();
  t.equal(readTcpInfo(client, info), true);
  const before = { ...info };
  peer.on('data', (d) => peer.write(d)); // echo
  for (let i = 0; i < 5; i++) {
    client.write('x'.repeat(100));
    await once(client, 'data');
  }
  await sleep(50);
  t.equal(readTcpInfo(client, info), true);
  t.ok(info.rttUs > 0 && info.rttUs < 200_000, `smoothed RTT measured: ${info.rttUs} us`);
  t.ok(info.rtoUs >= 200_000, `RTO at least the kernel minimum 200 ms: ${info.rtoUs} us`);
  t.equal(info.unacked, 0, 'all acknowledged');
  t.equal(info.probes, 0);
  t.equal(info.totalRetrans, 0, 'no loss on loopback');
  t.ok(info.dataSegsOut - before.dataSegsOut >= 5, 'five data segments sent');
  t.ok(info.dataSegsIn - before.dataSegsIn >= 5, 'five echoes received');
  t.ok(info.segsOut >= info.dataSegsOut && info.segsIn >= info.dataSegsIn, 'segs_* count data and pure ACKs');
  t.ok(info.lastAckRecvMs < 200, `an ACK just arrived: ${info.lastAckRecvMs} ms`);
  // Same bytes as the older two-field reader.
  // (One read: two reads a few ms apart can see different ACK ages; a CI run on Node 22 saw 64 and 60 ms.)
  const ack = tcpAckState(client);
  t.same(ack, { unacked: info.unacked, msSinceLastAck: ack!.msSinceLastAck });
  await sleep(400);
  t.equal(readTcpInfo(client, info), true);
  t.ok(info.lastAckRecvMs >= 350, `ms since the last ACK grows while idle: ${info.lastAckRecvMs}`);
  t.ok(info.lastDataRecvMs >= 350, `ms since the last data grows too: ${info.lastDataRecvMs}`);
});

t.test('idle keep-alive: each probe is one segment out, each answer one segment in, and answers reset last_ack_recv', async (t) => {
  const [client] = await loopbackPair(t);
  t.equal(setTcpProbeTimers(client, { idleSeconds: 1, intervalSeconds: 1, count: 5 }), null);
  t.equal(setTcpProbeTimers(client, {}), null, 'nothing to change is fine');
  // Keep-alive must be on for probes: applyTcpLiveness turns SO_KEEPALIVE on.
  t.same(applyTcpLiveness(client, { idleSeconds: 1, intervalSeconds: 1, count: 5, userTimeoutMs: 0 }), { mode: 'native' });
  const info = newTcpInfoSample();
  readTcpInfo(client, info);
  const base = { ...info };
  await sleep(3300);
  readTcpInfo(client, info);
  const out = info.segsOut - base.segsOut;
  const inn = info.segsIn - base.segsIn;
  // Probes at ~1, ~2, ~3 s after the last ACK (each answer restarts the idle time).
  t.ok(out >= 2 && out <= 4, `keep-alive probes sent: ${out}`);
  t.equal(inn, out, 'every probe answered on loopback: answers = probes');
  t.equal(info.dataSegsOut, base.dataSegsOut, 'probes carry no data');
  t.equal(info.probes, 0, 'no probe outstanding after its answer');
  t.ok(info.lastAckRecvMs < 1500, `a probe answer is an ACK: last_ack_recv reset (${info.lastAckRecvMs} ms)`);
});

t.test('a paused reader on loopback still ACKs: data waits in our buffers, nothing is unacknowledged in flight', async (t) => {
  const [client, peer] = await loopbackPair(t);
  peer.pause();
  const chunk = Buffer.alloc(64 * 1024);
  for (let i = 0; i < 200 && client.write(chunk); i++); // until Node's buffer pushes back
  for (let i = 0; i < 64; i++) client.write(chunk); // and more queued in user space
  await sleep(1200);
  const info = newTcpInfoSample();
  t.equal(readTcpInfo(client, info), true);
  t.ok(client.writableLength > 0, `bytes queued behind a closed window: ${client.writableLength}`);
  // The peer's receive queue is full and its window is zero, yet every segment that was sent got its ACK:
  // a "no ACK for X ms" rule must look only at unacked > 0 (data in flight), never at queued data.
  t.equal(info.unacked, 0, 'nothing in flight: the kernel stopped at the zero window');
  t.ok(info.notsentBytes > 0, `bytes queued in the kernel behind the zero window: ${info.notsentBytes}`);
  // The trap: the kernel sends zero-window probes (probes > 0) and their answers do not refresh
  // last_ack_recv, so "probes out and no ACK for a while" looks like a dead idle peer. Keep-alive
  // probes only go out with nothing queued: the idle-probing rule requires notsentBytes === 0.
  t.ok(info.probes >= 1, `zero-window probes counted in tcpi_probes: ${info.probes}`);
  t.ok(info.lastAckRecvMs >= 500, `last_ack_recv grows for a live, paused peer: ${info.lastAckRecvMs} ms`);
  peer.resume();
});

t.test('setTcpProbeTimers changes a live socket and reads back; the kernel\'s errno is reported', async (t) => {
  const [client] = await loopbackPair(t);
  applyTcpLiveness(client, { idleSeconds: 5, intervalSeconds: 1, count: 3, userTimeoutMs: 8000 });
  t.equal(setTcpProbeTimers(client, { idleSeconds: 6, intervalSeconds: 2, count: 127, userTimeoutMs: 93_000, thinLinearTimeouts: true, rtoMaxMs: 1000 }), null);
  t.same(readTcpLiveness(client), { keepAlive: true, idleSeconds: 6, intervalSeconds: 2, count: 127, userTimeoutMs: 93_000 });
  t.same(readRetransmitOptions(client), { thinLinearTimeouts: true, rtoMaxMs: 1000 }, 'TCP_RTO_MAX_MS exists on this kernel (>= 6.15)');
  t.match(setTcpProbeTimers(client, { rtoMaxMs: 999 }), /TCP_RTO_MAX_MS=999.*EINVAL/, 'the kernel takes 1000..120000 ms');
  t.equal(setTcpProbeTimers(client, { count: 4 }), null, 'one field alone');
  t.same(readTcpLiveness(client), { keepAlive: true, idleSeconds: 6, intervalSeconds: 2, count: 4, userTimeoutMs: 93_000 });
  t.match(setTcpProbeTimers(client, { count: 128 }), /TCP_KEEPCNT=128.*EINVAL/, 'TCP_KEEPCNT max is 127');
  t.equal(readTcpLiveness(client)?.count, 4, 'a rejected value leaves the old one');
  const unconnected = new net.Socket();
  t.match(setTcpProbeTimers(unconnected, { count: 4 }), /file descriptor/);
  t.equal(readTcpInfo(unconnected, newTcpInfoSample()), false);
  t.equal(readRetransmitOptions(unconnected), null);
  unconnected.destroy();
});

t.test('lowering TCP_KEEPIDLE on a connection idle for longer sends a probe at once (what the keep-alive watch relies on)', async (t) => {
  const [client] = await loopbackPair(t);
  t.same(applyTcpLiveness(client, { idleSeconds: 60, intervalSeconds: 1, count: 5, userTimeoutMs: 0 }), { mode: 'native' });
  await sleep(1_500); // idle 1.5 s: no probe yet (idle is 60 s)
  const info = newTcpInfoSample();
  readTcpInfo(client, info);
  const base = { ...info };
  t.ok(info.lastAckRecvMs >= 1_400, `no ACK for ${info.lastAckRecvMs} ms`);
  const askedAt = performance.now();
  t.equal(setTcpProbeTimers(client, { idleSeconds: 1 }), null);
  await sleep(300);
  readTcpInfo(client, info);
  const sinceAsked = performance.now() - askedAt;
  t.equal(info.segsOut - base.segsOut, 1, 'one keep-alive probe went out at once');
  t.equal(info.segsIn - base.segsIn, 1, 'and was answered');
  // After the request (last_ack_recv counts in jiffies: allow one tick).
  t.ok(info.lastAckRecvMs <= sinceAsked + 10, `the answer is the latest ACK, ${info.lastAckRecvMs} ms ago, asked ${Math.round(sinceAsked)} ms ago`);
  t.equal(setTcpProbeTimers(client, { idleSeconds: 60 }), null, 'restored');
  await sleep(1_500);
  readTcpInfo(client, info);
  t.equal(info.segsOut - base.segsOut, 1, 'no further probe once the idle is back at 60 s');
});
