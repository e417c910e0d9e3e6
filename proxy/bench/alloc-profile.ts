/**
 * Where a connection's allocations come from, the short-lived ones included: V8's
 * sampling heap profiler with collected objects kept (what --heap-prof drops), over
 * idle clients connecting to an in-process proxy in front of a real Mosquitto.
 * Prints bytes allocated per connection by call site (the innermost frames).
 *
 *   node --import tsx proxy/bench/alloc-profile.ts [--clients 3000] [--interval 128] [--top 40]
 *
 * Pair it with `npm run bench -- --only idle --node-flags=--trace-gc-nvp` (the
 * `promoted=` bytes of each scavenge) to see which of them outlive two scavenges.
 */
import inspector from 'node:inspector/promises';
import { parseArgs } from 'node:util';
import { startMosquitto } from '../harness/mosquitto.ts';
import { startProxy } from '../harness/proxy.ts';
import { LoadChild } from './lib/child.ts';

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}

const { values } = parseArgs({ options: { clients: { type: 'string' }, interval: { type: 'string' }, top: { type: 'string' } } });
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

/** Self bytes by the innermost four frames. */
function bySite(root: ProfileNode): Map<string, number> {
  const sites = new Map<string, number>();
  const walk = (node: ProfileNode, stack: string[]): void => {
    const here = [frameName(node), ...stack].slice(0, 4);
    if (node.selfSize > 0) {
      const key = here.join(' < ');
      sites.set(key, (sites.get(key) ?? 0) + node.selfSize);
    }
    for (const child of node.children) walk(child, here);
  };
  walk(root, []);
  return sites;
}

const broker = await startMosquitto();
const proxy = await startProxy(broker.port, { logLevel: 'warn' });
const load: LoadChild[] = [];
try {
  // Warm the code paths first, so compilation is not counted.
  load.push(await connectIdle(proxy.port, 200, '127.0.210', 'warm'));
  const session = new inspector.Session();
  session.connect();
  // The include* fields (V8 >= 10.x) are newer than @types/node's protocol types.
  const sampling = { samplingInterval: Number(values.interval ?? 128), includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true };
  await session.post('HeapProfiler.startSampling', sampling);
  load.push(await connectIdle(proxy.port, clients, '127.0.211', 'idle'));
  await new Promise((resolve) => setTimeout(resolve, 500));
  const { profile } = (await session.post('HeapProfiler.stopSampling')) as { profile: { head: ProfileNode } };
  session.disconnect();
  const sites = bySite(profile.head);
  const total = [...sites.values()].reduce((a, b) => a + b, 0);
  console.log(`${clients} connections: ${(total / clients).toFixed(0)} B allocated per connection (sampled)`);
  for (const [site, bytes] of [...sites].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${(bytes / clients).toFixed(0).padStart(7)} B  ${site}`);
  }
} finally {
  for (const child of load) await child.stop();
  await proxy.stop();
  await broker.stop();
}
