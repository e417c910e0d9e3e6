/**
 * Load generator, run as a child process of run.ts (fork with IPC). One role
 * per process, given in the first IPC message; every loop is bounded in count
 * and in time (`hardLimitMs` ends the process whatever happens). Loopback only.
 *
 * Roles:
 *   sub-count  subscribe and count PUBLISH frames; answers `sample`
 *   pub-flood  flood pre-encoded QoS 0 PUBLISH batches with backpressure after `go`
 *   latency    one publisher at a fixed rate + one subscriber in this process
 *   fanin      many publishers at a modest rate each + one subscriber
 *   idle       open many idle connections, keep them alive, report the connect rate
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { DISCONNECT, FrameCounter, FrameReader, PINGREQ, batchOf, connectFrame, publishFrame, subscribeFrame } from './lib/wire.ts';
import { percentiles, type Percentiles } from './lib/stats.ts';

export type Role =
  | { role: 'sub-count'; host: string; port: number; topic: string; hardLimitMs: number }
  | { role: 'pub-flood'; host: string; port: number; topic: string; payloadSize: number; batchBytes: number; maxMessages: number; hardLimitMs: number }
  | { role: 'latency'; host: string; port: number; topic: string; payloadSize: number; rate: number; warmupMs: number; durationMs: number; hardLimitMs: number }
  | { role: 'fanin'; host: string; port: number; topic: string; payloadSize: number; publishers: number; ratePerPublisher: number; concurrency: number; warmupMs: number; durationMs: number; hardLimitMs: number }
  | { role: 'idle'; host: string; port: number; count: number; localAddresses: string[]; concurrency: number; keepalive: number; clientIdPrefix: string; hardLimitMs: number };

export interface LatencyResult {
  sent: number;
  received: number;
  /** Messages of the measured phase that never arrived. */
  lost: number;
  rate: number;
  latencyMs: Percentiles;
  connectSeconds?: number;
  connectFailed?: number;
}

export interface IdleConnected {
  ok: number;
  failed: number;
  /** Epoch milliseconds (timeOrigin + now) of the first connect and the last CONNACK. */
  firstStart: number;
  lastDone: number;
  errors: Record<string, number>;
}

export type ChildMessage =
  | { ev: 'ready' }
  | { ev: 'sample'; count: number; t: number; extra?: Record<string, number> }
  | { ev: 'latency'; result: LatencyResult }
  | { ev: 'connected'; result: IdleConnected }
  | { ev: 'done'; stats?: Record<string, number> }
  | { ev: 'error'; message: string };

export type ParentMessage = { cmd: 'start'; role: Role } | { cmd: 'go' } | { cmd: 'sample' } | { cmd: 'stop' };

const epochNow = (): number => performance.timeOrigin + performance.now();

function send(msg: ChildMessage): void {
  process.send?.(msg);
}

function fatal(err: unknown): never {
  send({ ev: 'error', message: err instanceof Error ? err.message : String(err) });
  process.exit(1);
}

/** Open a TCP connection, send CONNECT, resolve after a successful CONNACK. */
function openMqtt(host: string, port: number, clientId: string, keepalive: number, localAddress?: string, timeoutMs = 10_000): Promise<{ socket: net.Socket; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, localAddress, noDelay: true });
    let got: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new Error('CONNACK timeout')), timeoutMs);
    const fail = (err: Error): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.destroy();
      reject(err);
    };
    const onData = (chunk: Buffer): void => {
      got = got.length ? Buffer.concat([got, chunk]) : chunk;
      if (got.length < 4) return;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', fail);
      if (got[0] !== 0x20 || got[3] !== 0) {
        socket.destroy();
        reject(new Error(`CONNACK refused: ${got.subarray(0, 4).toString('hex')}`));
        return;
      }
      resolve({ socket, rest: got.subarray(4) });
    };
    socket.once('connect', () => socket.write(connectFrame(clientId, keepalive)));
    socket.on('data', onData);
    socket.once('error', fail);
    socket.once('close', () => fail(new Error('closed before CONNACK')));
  });
}

/** Subscribe on an open connection; resolves after the SUBACK with a counter fed from then on. */
async function subscribe(socket: net.Socket, rest: Buffer, topic: string, sink: (chunk: Buffer) => void, isSuback: () => boolean): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('SUBACK timeout')), 10_000);
    const onData = (chunk: Buffer): void => {
      sink(chunk);
      if (isSuback()) {
        clearTimeout(timer);
        resolve();
      }
    };
    socket.on('data', onData);
    if (rest.length) onData(rest);
    socket.write(subscribeFrame(topic));
  });
}

async function subCount(r: Extract<Role, { role: 'sub-count' }>): Promise<void> {
  const { socket, rest } = await openMqtt(r.host, r.port, `bench-sub-${process.pid}`, 60);
  const counter = new FrameCounter();
  socket.on('error', fatal);
  await subscribe(socket, rest, r.topic, (c) => counter.push(c), () => counter.byType[9] > 0);
  let bytes = 0;
  socket.on('data', (c: Buffer) => { bytes += c.length; });
  onParent((m) => {
    if (m.cmd === 'sample') send({ ev: 'sample', count: counter.publishes, t: performance.now(), extra: { bytes } });
    else if (m.cmd === 'stop') {
      socket.end(DISCONNECT);
      send({ ev: 'done' });
      setTimeout(() => process.exit(0), 50);
    }
  });
  send({ ev: 'ready' });
}

async function pubFlood(r: Extract<Role, { role: 'pub-flood' }>): Promise<void> {
  const { socket } = await openMqtt(r.host, r.port, `bench-pub-${process.pid}`, 60);
  socket.on('error', fatal);
  const { frame } = publishFrame(r.topic, r.payloadSize);
  const perBatch = Math.max(1, Math.floor(r.batchBytes / frame.length));
  const batch = batchOf(frame, perBatch);
  let sent = 0;
  let stopped = false;
  let drains = 0;
  const flood = (): void => {
    // Yield to the event loop every few batches so IPC (sample, stop) is heard.
    for (let k = 0; k < 32; k++) {
      if (stopped) return;
      if (sent >= r.maxMessages) {
        stopped = true;
        return;
      }
      sent += perBatch;
      if (!socket.write(batch)) {
        drains++;
        socket.once('drain', flood);
        return;
      }
    }
    setImmediate(flood);
  };
  onParent((m) => {
    if (m.cmd === 'go') flood();
    else if (m.cmd === 'sample') send({ ev: 'sample', count: sent, t: performance.now(), extra: { drains } });
    else if (m.cmd === 'stop') {
      stopped = true;
      socket.destroy();
      send({ ev: 'done', stats: { sent } });
      setTimeout(() => process.exit(0), 50);
    }
  });
  send({ ev: 'ready' });
}

/**
 * Timestamped messages: payload bytes 0-7 are performance.now() at send (a
 * double), byte 8 is 1 for the measured phase and 0 for warm-up.
 */
class Timestamped {
  readonly frame: Buffer;
  readonly payloadOffset: number;
  readonly latencies: Float64Array;
  received = 0;
  measuredReceived = 0;

  constructor(topic: string, payloadSize: number, capacity: number) {
    const p = publishFrame(topic, Math.max(9, payloadSize));
    this.frame = p.frame;
    this.payloadOffset = p.payloadOffset;
    this.latencies = new Float64Array(capacity);
  }

  /** `n` frames stamped now, in one buffer. */
  stamp(n: number, measured: boolean): Buffer {
    const len = this.frame.length;
    const out = Buffer.allocUnsafe(len * n);
    const now = performance.now();
    for (let i = 0; i < n; i++) {
      this.frame.copy(out, i * len);
      out.writeDoubleBE(now, i * len + this.payloadOffset);
      out[i * len + this.payloadOffset + 8] = measured ? 1 : 0;
    }
    return out;
  }

  readonly reader = new FrameReader((buf, start, headerLength, type) => {
    if (type !== 3) return;
    const now = performance.now();
    // QoS 0 PUBLISH: 2-byte topic length + topic + payload.
    const topicLength = buf.readUInt16BE(start + headerLength);
    const p = start + headerLength + 2 + topicLength;
    this.received++;
    if (buf[p + 8] !== 1) return;
    if (this.measuredReceived < this.latencies.length) this.latencies[this.measuredReceived] = now - buf.readDoubleBE(p);
    this.measuredReceived++;
  });
}

/** A subscriber whose received bytes (after its SUBACK) feed the timestamp reader. */
async function subscribeTimestamped(host: string, port: number, topic: string, clientId: string, ts: Timestamped): Promise<net.Socket> {
  const sub = await openMqtt(host, port, clientId, 60);
  sub.socket.on('error', fatal);
  let subacked = false;
  await subscribe(sub.socket, sub.rest, topic, (c) => {
    if (!subacked && c.length >= 5 && c[0] === 0x90) {
      subacked = true;
      if (c.length > 5) ts.reader.push(c.subarray(5));
      return;
    }
    ts.reader.push(c);
  }, () => subacked);
  return sub.socket;
}

async function latency(r: Extract<Role, { role: 'latency' }>): Promise<void> {
  const ts = new Timestamped(r.topic, r.payloadSize, Math.ceil((r.rate * r.durationMs) / 1000) + 1000);
  const sub = await subscribeTimestamped(r.host, r.port, r.topic, `bench-lsub-${process.pid}`, ts);
  const pub = await openMqtt(r.host, r.port, `bench-lpub-${process.pid}`, 60);
  pub.socket.on('error', fatal);
  onParent(() => {});
  send({ ev: 'ready' });
  await waitFor('go');
  const result = await pace(r.rate, r.warmupMs, r.durationMs, ts, (buf) => pub.socket.write(buf), (n) => n);
  sub.destroy();
  pub.socket.destroy();
  send({ ev: 'latency', result });
  setTimeout(() => process.exit(0), 50);
}

/**
 * Send `rate` messages per second for warm-up + duration on a 1 ms tick (each
 * tick sends what is due), then wait up to 1 s for stragglers. `write` gets a
 * batch of stamped frames; `split` says how many frames go per write.
 */
async function pace(rate: number, warmupMs: number, durationMs: number, ts: Timestamped, write: (buf: Buffer) => void, split: (due: number) => number): Promise<LatencyResult> {
  const start = performance.now();
  const measureFrom = start + warmupMs;
  const end = measureFrom + durationMs;
  let sent = 0;
  let measuredSent = 0;
  const maxMessages = Math.ceil((rate * (warmupMs + durationMs)) / 1000);
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      const now = performance.now();
      if (now >= end || sent >= maxMessages) {
        clearInterval(tick);
        resolve();
        return;
      }
      let due = Math.min(Math.floor(((now - start) * rate) / 1000) - sent, maxMessages - sent);
      const measured = now >= measureFrom;
      while (due > 0) {
        const n = split(due);
        write(ts.stamp(n, measured));
        sent += n;
        if (measured) measuredSent += n;
        due -= n;
      }
    }, 1);
  });
  const sentAt = performance.now();
  const measuredAtStop = ts.measuredReceived;
  while (ts.measuredReceived < measuredSent && performance.now() - sentAt < 1000) await sleep(10);
  const count = Math.min(ts.measuredReceived, ts.latencies.length);
  return {
    sent,
    received: ts.received,
    lost: measuredSent - ts.measuredReceived,
    // Received rate over the measured phase (what arrived by the end of sending).
    rate: (measuredAtStop / durationMs) * 1000,
    latencyMs: percentiles(ts.latencies, count),
  };
}

async function fanin(r: Extract<Role, { role: 'fanin' }>): Promise<void> {
  const totalRate = r.publishers * r.ratePerPublisher;
  const ts = new Timestamped(r.topic, r.payloadSize, Math.ceil((totalRate * r.durationMs) / 1000) + 1000);
  const sub = await subscribeTimestamped(r.host, r.port, r.topic, `bench-fsub-${process.pid}`, ts);
  const t0 = performance.now();
  const { sockets, failed } = await openMany(r.host, r.port, r.publishers, r.concurrency, (i) => `bench-fpub-${process.pid}-${i}`, 60, [undefined]);
  const connectSeconds = (performance.now() - t0) / 1000;
  for (const s of sockets) {
    s.on('error', () => {});
    s.on('data', () => {});
  }
  onParent(() => {});
  send({ ev: 'ready' });
  await waitFor('go');
  // Message j of the global schedule goes out on publisher j mod N, one write each.
  let next = 0;
  const result = await pace(totalRate, r.warmupMs, r.durationMs, ts, (buf) => {
    sockets[next].write(buf);
    next = (next + 1) % sockets.length;
  }, () => 1);
  result.connectSeconds = connectSeconds;
  result.connectFailed = failed;
  sub.destroy();
  for (const s of sockets) s.destroy();
  send({ ev: 'latency', result });
  setTimeout(() => process.exit(0), 50);
}

/** Open `count` MQTT connections, `concurrency` at a time. */
async function openMany(host: string, port: number, count: number, concurrency: number, clientId: (i: number) => string, keepalive: number, localAddresses: Array<string | undefined>, onOpen?: () => void) {
  const sockets: net.Socket[] = [];
  /** When each socket got its CONNACK (performance.now()). */
  const connectedAt: number[] = [];
  const errors: Record<string, number> = {};
  let failed = 0;
  let nextIndex = 0;
  const worker = async (): Promise<void> => {
    while (nextIndex < count) {
      const i = nextIndex++;
      try {
        const { socket } = await openMqtt(host, port, clientId(i), keepalive, localAddresses[i % localAddresses.length]);
        sockets.push(socket);
        connectedAt.push(performance.now());
        onOpen?.();
      } catch (err) {
        failed++;
        const key = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        errors[key] = (errors[key] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return { sockets, connectedAt, failed, errors };
}

async function idle(r: Extract<Role, { role: 'idle' }>): Promise<void> {
  onParent(() => {});
  send({ ev: 'ready' });
  await waitFor('go');
  const firstStart = epochNow();
  let lastDone = firstStart;
  const { sockets, connectedAt, failed, errors } = await openMany(r.host, r.port, r.count, r.concurrency, (i) => `${r.clientIdPrefix}-${i}`, r.keepalive, r.localAddresses, () => { lastDone = epochNow(); });
  let closedEarly = 0;
  const nextPing = new Float64Array(sockets.length);
  sockets.forEach((s, i) => {
    s.on('error', () => {});
    s.on('data', () => {});
    s.once('close', () => { closedEarly++; });
    // Spread the keep-alive PINGREQs evenly over one keep-alive period, the
    // first within one keep-alive of the CONNECT (the pinger ticks every 250 ms).
    nextPing[i] = connectedAt[i] + Math.random() * (r.keepalive * 1000 - 500);
  });
  let pings = 0;
  const pinger = setInterval(() => {
    const now = performance.now();
    for (let i = 0; i < sockets.length; i++) {
      if (nextPing[i] <= now) {
        sockets[i].write(PINGREQ);
        pings++;
        nextPing[i] += r.keepalive * 1000;
      }
    }
  }, 250);
  send({ ev: 'connected', result: { ok: sockets.length, failed, firstStart, lastDone, errors } });
  await waitFor('stop');
  clearInterval(pinger);
  const early = closedEarly;
  for (const s of sockets) s.end(DISCONNECT);
  send({ ev: 'done', stats: { closedEarly: early, pings } });
  setTimeout(() => process.exit(0), 200);
}

// ---- IPC plumbing --------------------------------------------------------------

const waiters: Array<{ cmd: ParentMessage['cmd']; resolve: () => void }> = [];
let handler: (m: ParentMessage) => void = () => {};

function onParent(h: (m: ParentMessage) => void): void {
  handler = h;
}

function waitFor(cmd: ParentMessage['cmd']): Promise<void> {
  return new Promise((resolve) => waiters.push({ cmd, resolve }));
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

process.on('message', (m: ParentMessage) => {
  if (m.cmd === 'start') {
    const role = m.role;
    setTimeout(() => {
      send({ ev: 'error', message: `hard time limit of ${role.hardLimitMs} ms reached` });
      process.exit(3);
    }, role.hardLimitMs).unref();
    const run = { 'sub-count': subCount, 'pub-flood': pubFlood, latency, fanin, idle }[role.role] as (r: Role) => Promise<void>;
    run(role).catch(fatal);
    return;
  }
  for (let i = waiters.length - 1; i >= 0; i--) {
    if (waiters[i].cmd === m.cmd) waiters.splice(i, 1)[0].resolve();
  }
  handler(m);
});
process.on('disconnect', () => process.exit(0));
