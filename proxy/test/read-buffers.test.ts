/**
 * relay/read-buffers.ts on real loopback sockets: a relay of two socket pairs
 * that reads through readPooled, with a reader slow enough that writes queue
 * and buffers are lent. What arrives must be byte for byte what was sent, and
 * the pool must be reused rather than grown. Runs on every Node line in CI
 * (it reaches into net.Socket's onread slots, which a new Node could change).
 */
import t, { type Test } from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { DIRECT_MIN, PooledReader, READ_SIZE, isPooled, readBufferStats, readPooled } from '../src/relay/read-buffers.ts';
import { startMosquitto } from './helpers/mosquitto.ts';
import { startProxy } from './helpers/proxy.ts';
import { connectClient, sleep } from './helpers/clients.ts';

interface Pair {
  near: net.Socket;
  far: net.Socket;
}

/** A connected loopback pair: `near` connected to a server whose accepted socket is `far`. */
async function pair(t: Test): Promise<Pair> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const near = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const far = await accepted;
  await new Promise((r) => (near.connecting ? near.once('connect', r) : r(null)));
  server.close();
  t.teardown(() => { near.destroy(); far.destroy(); });
  return { near, far };
}

/** sender.near -> sender.far == relay (reads pooled) ==> receiver.near -> receiver.far. */
async function relay(t: Test) {
  const sender = await pair(t);
  const receiver = await pair(t);
  const src = sender.far;
  const dest = receiver.near;
  const reader = new (class extends PooledReader {
    onBytes(bytes: Buffer): void {
      if (!dest.write(bytes)) src.pause();
    }
  })();
  const ok = readPooled(src, dest, reader);
  dest.on('drain', () => { reader.reclaim(); src.resume(); });
  src.on('close', () => reader.sourceClosed());
  return { ok, input: sender.near, src, dest, output: receiver.far };
}

t.test('a 16 MiB stream to a slow reader arrives byte for byte; buffers are lent, then reused', async (t) => {
  const before = { ...readBufferStats };
  const r = await relay(t);
  t.ok(r.ok, 'a plain TCP socket reads through the pool');
  t.ok(isPooled(r.src));
  const payload = randomBytes(16 * 1024 * 1024);
  const got: Buffer[] = [];
  let size = 0;
  const done = new Promise<void>((resolve) => {
    r.output.on('data', (b: Buffer) => {
      got.push(b);
      size += b.length;
      // A slow reader: pause now and then so the relay's writes queue.
      if (got.length % 16 === 0) {
        r.output.pause();
        setTimeout(() => r.output.resume(), 5);
      }
      if (size >= payload.length) resolve();
    });
  });
  // Writes of uneven sizes, so reads land across their edges.
  for (let at = 0; at < payload.length;) {
    const n = Math.min(payload.length - at, 1 + Math.floor(Math.random() * 3 * READ_SIZE));
    if (!r.input.write(payload.subarray(at, at + n))) await new Promise((res) => r.input.once('drain', res));
    at += n;
  }
  await done;
  t.equal(size, payload.length);
  t.ok(Buffer.concat(got).equals(payload), 'identical bytes');
  const direct = readBufferStats.directReads - before.directReads;
  const lent = readBufferStats.lent - before.lent;
  const created = readBufferStats.created - before.created;
  t.comment(`direct reads ${direct}, lent ${lent}, pool buffers created ${created}`);
  t.ok(direct > 50, `large reads were forwarded as views (${direct})`);
  t.ok(lent > 0, `queued writes kept their buffer (${lent} lent)`);
  t.ok(created <= 16, `the pool was reused: ${created} buffers for ${direct} views`);
});

t.test('small messages are copied out of the shared buffer: a calm socket holds no buffer', async (t) => {
  const before = { ...readBufferStats };
  const r = await relay(t);
  const received: Buffer[] = [];
  r.output.on('data', (b: Buffer) => received.push(b));
  const sent: Buffer[] = [];
  for (let i = 0; i < 50; i++) {
    const m = randomBytes(1 + (i % 40) * 50);
    sent.push(m);
    r.input.write(m);
    await sleep(2);
  }
  const total = Buffer.concat(sent);
  for (let i = 0; i < 100 && Buffer.concat(received).length < total.length; i++) await sleep(20);
  t.ok(Buffer.concat(received).equals(total), 'identical bytes');
  t.ok(readBufferStats.sharedReads - before.sharedReads > 0, 'read into the shared buffer');
  t.equal(readBufferStats.created - before.created, 0, 'no pool buffer taken');
  t.ok(total.length / 50 < DIRECT_MIN);
});

t.test('a burst makes a socket busy, calm again after it; the data stays intact both times', async (t) => {
  const r = await relay(t);
  const received: Buffer[] = [];
  r.output.on('data', (b: Buffer) => received.push(b));
  const burst = randomBytes(4 * READ_SIZE);
  const tail = randomBytes(100);
  r.input.write(burst);
  await sleep(200);
  r.input.write(tail);
  for (let i = 0; i < 100 && Buffer.concat(received).length < burst.length + tail.length; i++) await sleep(20);
  t.ok(Buffer.concat(received).equals(Buffer.concat([burst, tail])), 'identical bytes');
});

/** A reader that drops what it reads. */
const sink = () => new (class extends PooledReader {
  onBytes(): void {}
})();

t.test('what cannot read pooled keeps node\'s own reads', async (t) => {
  t.notOk(readPooled(new PassThrough(), new PassThrough(), sink()), 'an in-memory stream');
  t.notOk(readPooled(new tls.TLSSocket(new net.Socket()), new PassThrough(), sink()), 'a TLS socket');
  const p = await pair(t);
  p.far.pause();
  p.far.unshift(Buffer.from('already here'));
  t.notOk(readPooled(p.far, new PassThrough(), sink()), 'a socket with bytes buffered (a PROXY header was read before)');
  const q = await pair(t);
  t.ok(readPooled(q.far, new PassThrough(), sink()));
  t.notOk(readPooled(q.far, new PassThrough(), sink()), 'twice');
});

t.test('the proxy reads both sockets of a TCP client through the pool', async (t) => {
  const broker = await startMosquitto();
  const proxy = await startProxy(broker.port, { probes: { enabled: false } });
  t.teardown(async () => { await proxy.stop(); await broker.stop(); });
  const client = await connectClient(proxy.url, { clientId: 'pooled' });
  t.teardown(() => client.end(true));
  const conn = [...proxy.app.proxy.connections].find((c) => c.connect?.clientId === 'pooled')!;
  t.ok(isPooled(conn.transport.stream), 'the client socket');
  const got = new Promise<Buffer>((resolve) => client.once('message', (_t, p) => resolve(p)));
  await client.subscribeAsync('pooled/x');
  const direct = readBufferStats.directReads;
  const big = randomBytes(3 * READ_SIZE);
  await client.publishAsync('pooled/x', big);
  t.ok((await got).equals(big), 'a 192 KiB message both ways');
  t.ok(readBufferStats.directReads > direct, 'forwarded as views of pooled buffers');
});
