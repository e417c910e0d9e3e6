/**
 * Where a connection's allocations come from, the short-lived ones included: V8's
 * sampling heap profiler with collected objects kept (what --heap-prof drops), over
 * idle clients connecting to an in-process proxy in front of a real Mosquitto.
 * Prints bytes allocated per connection by call site (the innermost frames).
 *
 *   node --expose-gc --import tsx proxy/bench/alloc-profile.ts [--clients 3000] [--interval 128] [--top 40] [--depth 4] [--promoted] [--relay] [--rest S]
 *
 * --promoted: instead, what outlives the young generation and then dies (copied to the old
 * generation, freed only by a mark-compact: the idle peak's garbage), and what stays live.
 * --rest S: what is promoted over S seconds at rest after the connections (timers, samples).
 * --relay: the same for the bench's plain node relay (relay.ts) instead of the proxy.
 * --latency S: instead, bytes per message by site while the bench's latency load (one publisher
 *   at 10k msg/s, 64 B, and one subscriber, both through the proxy) runs for S seconds.
 *
 * Pair it with `npm run bench -- --only idle --node-flags=--trace-gc-nvp` (the
 * `promoted=` bytes of each scavenge) to see which of them outlive two scavenges.
 */
import inspector from 'node:inspector/promises';
import net from 'node:net';
import { parseArgs } from 'node:util';
import { startMosquitto } from '../harness/mosquitto.ts';
import { startProxy } from '../harness/proxy.ts';
import { LoadChild } from './lib/child.ts';
import { createNodeRelay } from './lib/node-relay.ts';

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}

const { values } = parseArgs({ options: { clients: { type: 'string' }, interval: { type: 'string' }, top: { type: 'string' }, promoted: { type: 'boolean' }, relay: { type: 'boolean' }, rest: { type: 'string' }, latency: { type: 'string' }, depth: { type: 'string' } } });
const depth = Number(values.depth ?? 4);
const clients = Number(values.clients ?? 3000);
const top = Number(values.top ?? 40);

async function connectIdle(port: number, count: number, source: string, prefix: string): Promise<LoadChild> {
  const child = new LoadChild({ role: 'idle', host: '127.0.0.1', port, count, localAddresses: [`${source}.1`, `${source}.2`], concurrency: 100, keepalive: 60, clientIdPrefix: prefix, hardLimitMs: 120_000 });
  await child.next('ready', 30_000);
  child.send('go');
  await child.next('connected', 120_000);
  return child;
}

function frameName(node: ProfileNode): string {
  const f = node.callFrame;
  const where = f.url.replace(/^.*\/(node_modules|proxy)\//, '$1/');
  return `${f.functionName || '(anonymous)'} ${where}:${f.lineNumber + 1}`;
}

/** Self bytes by the innermost `depth` frames. */
function bySite(root: ProfileNode): Map<string, number> {
  const sites = new Map<string, number>();
  const walk = (node: ProfileNode, stack: string[]): void => {
    const here = [frameName(node), ...stack].slice(0, depth);
    if (node.selfSize > 0) {
      const key = here.join(' < ');
      sites.set(key, (sites.get(key) ?? 0) + node.selfSize);
    }
    for (const child of node.children) walk(child, here);
  };
  walk(root, []);
  return sites;
}

/** The plain node relay of the bench (relay.ts), in this process, for comparison. */
async function startRelay(upstreamPort: number): Promise<{ port: number; stop: () => Promise<void> }> {
  const server = createNodeRelay('127.0.0.1', upstreamPort);
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, resolve));
  return { port: (server.address() as net.AddressInfo).port, stop: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

interface Include { major: boolean; minor: boolean }

function startSampling(session: inspector.Session, include: Include): Promise<unknown> {
  // The include* fields (V8 >= 10.x) are newer than @types/node's protocol types.
  return session.post('HeapProfiler.startSampling', { samplingInterval: Number(values.interval ?? 128), includeObjectsCollectedByMajorGC: include.major, includeObjectsCollectedByMinorGC: include.minor });
}

/**
 * Two scavenges (and a full GC when `fullGc`) before the profile is read, so that what it still counts as
 * alive is alive: the young generation's garbage is freed by the scavenges (a mark-compact would count it as
 * its own), the promoted garbage by the mark-compact. Bytes per connection by site.
 */
/** Bytes by site since startSampling, divided by `per` (connections, or messages for --latency). */
async function stopSampling(session: inspector.Session, fullGc: boolean, per = clients): Promise<Map<string, number>> {
  const gc = (globalThis as { gc?: (o: { type: 'minor' | 'major' }) => void }).gc;
  if (!gc) throw new Error('run with node --expose-gc');
  gc({ type: 'minor' });
  gc({ type: 'minor' });
  if (fullGc) await session.post('HeapProfiler.collectGarbage');
  const { profile } = (await session.post('HeapProfiler.stopSampling')) as { profile: { head: ProfileNode } };
  const sites = bySite(profile.head);
  for (const [k, v] of sites) sites.set(k, v / per);
  return sites;
}

/** Bytes per connection by site while `clients` connect, keeping the collected objects that `include` says. */
async function profileStorm(session: inspector.Session, port: number, include: Include, source: string, prefix: string, load: LoadChild[]): Promise<Map<string, number>> {
  await startSampling(session, include);
  load.push(await connectIdle(port, clients, source, prefix));
  await new Promise((resolve) => setTimeout(resolve, 500));
  return stopSampling(session, true);
}

function print(title: string, sites: Map<string, number>, per = 'connection'): void {
  const total = [...sites.values()].reduce((a, b) => a + b, 0);
  console.log(`${title}: ${total.toFixed(0)} B per ${per} (sampled)`);
  for (const [site, bytes] of [...sites].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    if (Math.abs(bytes) >= 1) console.log(`${bytes.toFixed(0).padStart(7)} B  ${site}`);
  }
}

const broker = await startMosquitto();
const proxy = values.relay ? await startRelay(broker.port) : await startProxy(broker.port, { logLevel: 'warn' });
const load: LoadChild[] = [];
const session = new inspector.Session();
try {
  // Warm the code paths first, so compilation is not counted.
  load.push(await connectIdle(proxy.port, 200, '127.0.210', 'warm'));
  session.connect();
  if (values.latency) {
    const seconds = Number(values.latency);
    const child = new LoadChild({ role: 'latency', host: '127.0.0.1', port: proxy.port, topic: 'alloc/lat', payloadSize: 64, rate: 10_000, warmupMs: 1000, durationMs: seconds * 1000, hardLimitMs: seconds * 1000 + 60_000 });
    load.push(child);
    await child.next('ready', 30_000);
    child.send('go');
    await new Promise((resolve) => setTimeout(resolve, 1000)); // the warm-up: compile first
    await startSampling(session, { major: true, minor: true });
    const { result } = await child.next('latency', seconds * 1000 + 60_000);
    // Per message of the measured phase: sampling started with it, after the warm-up.
    const messages = result.latencyMs.count;
    const sites = await stopSampling(session, false, messages);
    print(`latency load, ${messages} messages, allocated`, sites, 'message');
  } else if (values.rest) {
    // At rest: connect without sampling, then keep what outlives the young generation over the rest.
    load.push(await connectIdle(proxy.port, clients, '127.0.211', 'idle'));
    await startSampling(session, { major: true, minor: false });
    await new Promise((resolve) => setTimeout(resolve, Number(values.rest) * 1000));
    const sites = await stopSampling(session, false);
    print(`${clients} connections, ${values.rest} s at rest: promoted (live or garbage)`, sites);
  } else if (!values.promoted) {
    print(`${clients} connections, allocated`, await profileStorm(session, proxy.port, { major: true, minor: true }, '127.0.211', 'idle', load));
  } else {
    // Promoted garbage: what survived the young generation (so was copied into the old one) and died later,
    // by the difference between a storm that keeps objects freed by mark-compacts and one that keeps only the live.
    const kept = await profileStorm(session, proxy.port, { major: true, minor: false }, '127.0.211', 'idle', load);
    const live = await profileStorm(session, proxy.port, { major: false, minor: false }, '127.0.212', 'idle2', load);
    const promoted = new Map<string, number>();
    for (const [k, v] of kept) promoted.set(k, v - (live.get(k) ?? 0));
    for (const [k, v] of live) if (!kept.has(k)) promoted.set(k, -v);
    print(`${clients} connections, kept (live and promoted garbage)`, kept);
    print(`${clients} connections, live after a full GC`, live);
    print(`${clients} connections, promoted to the old generation and freed by a mark-compact`, promoted);
  }
} finally {
  session.disconnect();
  for (const child of load) await child.stop();
  await proxy.stop();
  await broker.stop();
}
