/**
 * Admission limits: the bookkeeping on a manual clock (caps, token bucket,
 * bounded memory, rate-limited refusal log), then real sockets through a real
 * proxy in front of Mosquitto: per-source limit with connections from
 * 127.0.0.2 and 127.0.0.3, the global maximum, the CONNECT rate, and every
 * refusal counted in /metrics.
 */
import t from 'tap';
import net from 'node:net';
import { Writable } from 'node:stream';
import { request } from 'undici';
import { ManualClock } from '../src/liveness/clock.ts';
import { createLogger } from '../src/log.ts';
import { Admission, sourceOf, type LimitsConfig, type Ticket } from '../src/relay/limits.ts';
import { RefusalLog } from '../src/relay/refusal-log.ts';
import { startMosquitto } from './helpers/mosquitto.ts';
import { startProxy, type TestProxy } from './helpers/proxy.ts';
import { connectFrame, eventually, sleep } from './helpers/clients.ts';

const NO_LIMITS: LimitsConfig = { maxConnections: 0, maxConnectionsPerSource: 0, connectRatePerSource: 0 };

function ticket(r: Ticket | string): Ticket {
  if (typeof r === 'string') throw new Error(`refused: ${r}`);
  return r;
}

t.test('unit: maximum connections, and slots come back on release (once)', async (t) => {
  const a = new Admission({ ...NO_LIMITS, maxConnections: 2 }, new ManualClock());
  const one = ticket(a.admit('10.0.0.1'));
  ticket(a.admit('10.0.0.2'));
  t.equal(a.admit('10.0.0.3'), 'limit_connections');
  t.equal(a.openCount, 2);
  one.release();
  one.release();
  t.equal(a.openCount, 1, 'a second release changes nothing');
  ticket(a.admit('10.0.0.3'));
  t.equal(a.admit('10.0.0.4'), 'limit_connections');
});

t.test('unit: per source, counted while open and forgotten at zero', async (t) => {
  const a = new Admission({ ...NO_LIMITS, maxConnectionsPerSource: 2 }, new ManualClock());
  const x1 = ticket(a.admit('10.0.0.1'));
  const x2 = ticket(a.admit('10.0.0.1'));
  t.equal(a.admit('10.0.0.1'), 'limit_per_source');
  ticket(a.admit('10.0.0.2'));
  t.equal(a.openFrom('10.0.0.1'), 2);
  x1.release();
  ticket(a.admit('10.0.0.1'));
  x2.release();
  t.equal(a.openFrom('10.0.0.1'), 1);
  t.equal(sourceOf('::ffff:127.0.0.2'), '127.0.0.2', 'IPv4-mapped IPv6 counts as IPv4');
  t.equal(sourceOf('::1'), '::1');
});

t.test('unit: token bucket per source: burst of max(1, rate), then rate per second', async (t) => {
  const clock = new ManualClock();
  const a = new Admission({ ...NO_LIMITS, connectRatePerSource: 5 }, clock);
  for (let i = 0; i < 5; i++) ticket(a.admit('10.0.0.1')).release();
  t.equal(a.admit('10.0.0.1'), 'limit_rate', 'the sixth at once is refused');
  ticket(a.admit('10.0.0.2')).release();
  clock.advance(199);
  t.equal(a.admit('10.0.0.1'), 'limit_rate', 'a refused attempt spends nothing, but less than a token has refilled');
  clock.advance(1);
  ticket(a.admit('10.0.0.1')).release();
  t.equal(a.admit('10.0.0.1'), 'limit_rate');
  clock.advance(10_000);
  for (let i = 0; i < 5; i++) ticket(a.admit('10.0.0.1')).release();
  t.equal(a.admit('10.0.0.1'), 'limit_rate', 'the bucket holds 5, not 50');

  const slow = new Admission({ ...NO_LIMITS, connectRatePerSource: 0.5 }, clock);
  ticket(slow.admit('10.0.0.9')).release();
  t.equal(slow.admit('10.0.0.9'), 'limit_rate', 'rate 0.5: a bucket of 1');
  clock.advance(1999);
  t.equal(slow.admit('10.0.0.9'), 'limit_rate');
  clock.advance(1);
  ticket(slow.admit('10.0.0.9')).release();
});

t.test('unit: rate checked first; a source at its cap still spends tokens', async (t) => {
  const clock = new ManualClock();
  const a = new Admission({ maxConnections: 0, maxConnectionsPerSource: 1, connectRatePerSource: 2 }, clock);
  ticket(a.admit('10.0.0.1'));
  t.equal(a.admit('10.0.0.1'), 'limit_per_source');
  t.equal(a.admit('10.0.0.1'), 'limit_rate');
});

t.test('unit: memory stays bounded: idle buckets go, and at most maxSources are kept', async (t) => {
  const clock = new ManualClock();
  const a = new Admission({ ...NO_LIMITS, connectRatePerSource: 10 }, clock, { maxSources: 1000 });
  for (let i = 0; i < 5000; i++) ticket(a.admit(`10.1.${i >> 8}.${i & 255}`)).release();
  t.equal(a.trackedSources, 1000, 'a flood of sources keeps maxSources buckets');
  clock.advance(1000); // 10 tokens at 10/s: every bucket is full again
  ticket(a.admit('10.9.9.9')).release();
  t.equal(a.trackedSources, 1, 'refilled buckets are dropped');
  t.equal(a.openCount, 0);
  // Dropping a refilled bucket changes no decision: a new one is full too.
  for (let i = 0; i < 10; i++) ticket(a.admit('10.9.9.8')).release();
  t.equal(a.admit('10.9.9.8'), 'limit_rate');
});

t.test('unit: new limits apply to the next socket; open ones stay', async (t) => {
  const a = new Admission({ ...NO_LIMITS, maxConnections: 3 }, new ManualClock());
  for (let i = 0; i < 3; i++) ticket(a.admit('10.0.0.1'));
  a.setConfig({ ...NO_LIMITS, maxConnections: 1 });
  t.equal(a.openCount, 3);
  t.equal(a.admit('10.0.0.2'), 'limit_connections');
  a.setConfig(NO_LIMITS);
  ticket(a.admit('10.0.0.2'));
});

t.test('unit: refusal log: first of a window with its source, the rest summed, one line per window', async (t) => {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({ write(c: Buffer, _e, cb) { for (const l of c.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>); cb(); } });
  const clock = new ManualClock();
  const log = new RefusalLog(createLogger('info', sink), clock, 10_000);
  for (let i = 0; i < 10_000; i++) log.note('limit_rate', { source: `10.0.${i >> 8}.${i & 255}` }, 'connection refused');
  log.note('limit_per_source', { source: '10.0.0.1' }, 'connection refused');
  await sleep(10);
  t.equal(lines.length, 2, 'ten thousand refusals, one line per reason');
  t.match(lines[0], { event: 'connection_refused', reason: 'limit_rate', source: '10.0.0.0' });
  clock.advance(10_000);
  await sleep(10);
  t.equal(lines.length, 3);
  t.match(lines[2], { reason: 'limit_rate', suppressed: 9999 });
  for (let i = 0; i < 5; i++) log.note('limit_rate', {}, 'connection refused');
  t.equal(lines.length, 3, 'still within the next window: nothing yet');
  clock.advance(10_000);
  await sleep(10);
  t.match(lines[3], { reason: 'limit_rate', suppressed: 5 });
  clock.advance(20_000);
  log.note('limit_rate', { source: '10.0.0.7' }, 'connection refused');
  await sleep(10);
  t.match(lines[4], { reason: 'limit_rate', source: '10.0.0.7' }, 'after a quiet window the next refusal is logged at once');
  log.close();
  t.equal(clock.pending, 0, 'close() leaves no timers');
});

type Outcome = { admitted: boolean; closedAfterMs: number; bytes: number; socket: net.Socket };

/** A raw MQTT 3.1.1 client from a given loopback address: admitted when a CONNACK comes, refused when closed with nothing. */
function tryConnect(port: number, localAddress: string, clientId: string): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    let bytes = 0;
    socket.on('error', () => undefined);
    socket.once('connect', () => socket.write(connectFrame({ clientId, keepalive: 60 })));
    socket.on('data', (d) => {
      bytes += d.length;
      if (bytes >= 4) resolve({ admitted: true, closedAfterMs: -1, bytes, socket });
    });
    socket.once('close', () => resolve({ admitted: false, closedAfterMs: performance.now() - started, bytes, socket }));
    setTimeout(() => reject(new Error(`no CONNACK and no close from ${localAddress} within 5 s`)), 5000).unref();
  });
}

async function rejected(proxy: TestProxy): Promise<Record<string, number>> {
  const text = await (await request(`${proxy.adminUrl}/metrics`)).body.text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^mqtt_liveness_connects_rejected_total\{reason="(\w+)"\} (\S+)$/gm)) out[m[1]] = Number(m[2]);
  return out;
}

function brokerConnections(log: string): number {
  return log.split('\n').filter((l) => /New connection from/.test(l)).length;
}

t.test('real sockets through the proxy', async (t) => {
  const broker = await startMosquitto();
  t.teardown(() => broker.stop());
  const open: net.Socket[] = [];
  t.teardown(() => { for (const s of open) s.destroy(); });
  const keep = (o: Outcome): Outcome => { open.push(o.socket); return o; };

  t.test('per source: 2 from 127.0.0.2 and 2 from 127.0.0.3, the third from each refused at once', async (t) => {
    const proxy = await startProxy(broker.port, { limits: { maxConnectionsPerSource: 2 }, probes: { enabled: false } });
    t.teardown(() => proxy.stop());
    const before = brokerConnections(broker.log());
    const a1 = keep(await tryConnect(proxy.port, '127.0.0.2', 'a1'));
    const a2 = keep(await tryConnect(proxy.port, '127.0.0.2', 'a2'));
    const a3 = keep(await tryConnect(proxy.port, '127.0.0.2', 'a3'));
    const b1 = keep(await tryConnect(proxy.port, '127.0.0.3', 'b1'));
    const b2 = keep(await tryConnect(proxy.port, '127.0.0.3', 'b2'));
    const b3 = keep(await tryConnect(proxy.port, '127.0.0.3', 'b3'));
    t.same([a1, a2, a3, b1, b2, b3].map((o) => o.admitted), [true, true, false, true, true, false]);
    t.equal(a3.bytes + b3.bytes, 0, 'the refused ones got no byte');
    t.ok(a3.closedAfterMs < 500 && b3.closedAfterMs < 500, `refused at once (${a3.closedAfterMs.toFixed(1)} ms, ${b3.closedAfterMs.toFixed(1)} ms after connect)`);
    t.comment(`refusal closed the client socket ${a3.closedAfterMs.toFixed(1)} ms and ${b3.closedAfterMs.toFixed(1)} ms after it connected`);
    await sleep(300);
    t.equal(brokerConnections(broker.log()) - before, 4, 'the broker saw the 4 admitted connections and nothing of the refused ones');
    t.equal(proxy.app.proxy.connections.size, 4);
    a1.socket.destroy();
    await eventually(() => proxy.app.proxy.admission.openFrom('127.0.0.2') === 1, 5000, 'the slot of the closed socket freed');
    const a4 = keep(await tryConnect(proxy.port, '127.0.0.2', 'a4'));
    t.ok(a4.admitted, 'a closed connection frees its slot');
    t.same((await rejected(proxy)), { keepalive_too_large: 0, keepalive_zero: 0, broker_unreachable: 0, limit_connections: 0, limit_per_source: 2, limit_rate: 0 }, 'counted in /metrics');
    const logged = proxy.logs.filter((l) => l.event === 'connection_refused');
    t.equal(logged.length, 1, 'two refusals within the log window: one line');
    t.match(logged[0], { level: 'warn', reason: 'limit_per_source', source: '127.0.0.2', listener: 'mqtt', 'limits.maxConnectionsPerSource': 2 });
    t.equal(proxy.closes.length, 1, 'refused sockets never became connections (no close events)');

    proxy.app.proxy.reconfigure({ ...proxy.app.proxy.config, limits: { maxConnections: 0, maxConnectionsPerSource: 3, connectRatePerSource: 0 } });
    t.ok(keep(await tryConnect(proxy.port, '127.0.0.2', 'a5')).admitted, 'a reconfigured limit applies to the next socket');
    t.equal((await tryConnect(proxy.port, '127.0.0.2', 'a6')).admitted, false);
  });

  t.test('maximum connections across sources', async (t) => {
    const proxy = await startProxy(broker.port, { limits: { maxConnections: 3 }, probes: { enabled: false } });
    t.teardown(() => proxy.stop());
    const got = [];
    for (const [i, from] of ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6'].entries()) got.push(keep(await tryConnect(proxy.port, from, `m${i}`)));
    t.same(got.map((o) => o.admitted), [true, true, true, false, false]);
    t.equal((await rejected(proxy)).limit_connections, 2);
    t.equal(proxy.app.proxy.admission.openCount, 3);
    for (const o of got) o.socket.destroy();
    await eventually(() => proxy.app.proxy.admission.openCount === 0, 5000, 'every slot freed');
    t.ok(keep(await tryConnect(proxy.port, '127.0.0.7', 'm9')).admitted);
  });

  t.test('CONNECT rate per source', async (t) => {
    const proxy = await startProxy(broker.port, { limits: { connectRatePerSource: 2 }, probes: { enabled: false } });
    t.teardown(() => proxy.stop());
    // Six at once, not one after another: sequential CONNECT round trips on a loaded machine can
    // take longer than the 500 ms in which a token comes back. Whatever the burst took, at most
    // 2 x its duration in tokens can have refilled: that bounds the admitted count exactly.
    const burstStart = performance.now();
    const outcomes = await Promise.all(Array.from({ length: 6 }, (_, i) => tryConnect(proxy.port, '127.0.0.2', `r${i}`)));
    const burstMs = performance.now() - burstStart;
    for (const o of outcomes) o.socket.destroy();
    const admitted = outcomes.filter((o) => o.admitted).length;
    const refill = Math.floor((2 * burstMs) / 1000);
    t.ok(admitted >= 2 && admitted <= 2 + refill, `a bucket of 2: ${admitted} of 6 admitted in ${Math.round(burstMs)} ms (at most ${refill} refilled)`);
    t.ok(outcomes.filter((o) => !o.admitted).every((o) => o.bytes === 0), 'the refused ones got no byte');
    t.ok(keep(await tryConnect(proxy.port, '127.0.0.3', 'other')).admitted, 'another source has its own bucket');
    await sleep(600); // 1.2 tokens
    const later = await tryConnect(proxy.port, '127.0.0.2', 'r-later');
    later.socket.destroy();
    t.ok(later.admitted, 'refilled at 2 per second');
    t.equal((await rejected(proxy)).limit_rate, 6 - admitted);
    t.equal(proxy.logs.filter((l) => l.event === 'connection_refused').length, 1, `${6 - admitted} refusals, one log line`);
  });
});
