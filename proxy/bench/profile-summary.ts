/**
 * Where a .cpuprofile (node --cpu-prof) spends its time: self time by
 * function and by area (proxy source, Node internals, GC, idle).
 *
 *   node --import tsx proxy/bench/profile-summary.ts FILE.cpuprofile [--top 25] [--window FROM,TO] [--timeline]
 *
 * --window FROM,TO: only samples between FROM and TO seconds after the profile
 * started; --timeline: busy share per second, to find the window.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface Profile {
  nodes: Node[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface Summary {
  totalMs: number;
  byFunction: Array<{ name: string; where: string; selfMs: number; percent: number }>;
  byArea: Array<{ area: string; selfMs: number; percent: number }>;
}

function area(url: string, name: string): string {
  if (name === '(idle)') return 'idle';
  if (name === '(garbage collector)') return 'GC';
  if (name === '(program)') return 'native (program: syscalls, libuv, V8 outside JS)';
  if (url.includes('/proxy/src/')) return 'proxy source';
  if (url.startsWith('node:')) return 'Node core (net, streams, timers)';
  if (url.includes('node_modules')) return 'dependencies';
  if (!url) return 'native/builtin';
  return 'other';
}

export function summarize(file: string, top = 25, window: [number, number] = [0, Infinity]): Summary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  // Each sample's time is the delta that follows it (Chrome's convention).
  let t = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    if (t < window[0] * 1e6 || t > window[1] * 1e6) continue;
    const dt = p.timeDeltas[i + 1] ?? 0;
    self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + dt);
  }
  const fn = new Map<string, { name: string; where: string; us: number }>();
  const areas = new Map<string, number>();
  let total = 0;
  for (const [id, us] of self) {
    const n = byId.get(id)!;
    const { functionName, url, lineNumber } = n.callFrame;
    const name = functionName || '(anonymous)';
    const where = url ? `${url.replace(/^file:\/\/.*?\/(proxy|node_modules)\//, '$1/')}:${lineNumber + 1}` : '';
    const key = `${name}@${where}`;
    const e = fn.get(key) ?? { name, where, us: 0 };
    e.us += us;
    fn.set(key, e);
    const a = area(url, name);
    areas.set(a, (areas.get(a) ?? 0) + us);
    total += us;
  }
  const busy = total - (areas.get('idle') ?? 0);
  return {
    totalMs: total / 1000,
    byFunction: [...fn.values()].sort((a, b) => b.us - a.us).slice(0, top).map((e) => ({ name: e.name, where: e.where, selfMs: e.us / 1000, percent: (e.us / total) * 100 })),
    byArea: [...areas.entries()].sort((a, b) => b[1] - a[1]).map(([a, us]) => ({ area: a, selfMs: us / 1000, percent: (us / (a === 'idle' ? total : busy)) * 100 })),
  };
}

export function render(s: Summary): string {
  const lines = [`total ${(s.totalMs / 1000).toFixed(2)} s sampled`, '', 'by area (% of non-idle time; idle as % of all):'];
  for (const a of s.byArea) lines.push(`  ${a.percent.toFixed(1).padStart(5)}%  ${(a.selfMs / 1000).toFixed(2).padStart(7)} s  ${a.area}`);
  lines.push('', 'top functions by self time (% of all samples):');
  for (const f of s.byFunction) lines.push(`  ${f.percent.toFixed(1).padStart(5)}%  ${f.name}  ${f.where}`);
  return lines.join('\n');
}

/** Busy (non-idle) share of each second of the profile. */
export function timeline(file: string): string {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const idle = new Set(p.nodes.filter((n) => n.callFrame.functionName === '(idle)').map((n) => n.id));
  const busy: number[] = [];
  const all: number[] = [];
  let t = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    const s = Math.floor(t / 1e6);
    const dt = p.timeDeltas[i + 1] ?? 0;
    all[s] = (all[s] ?? 0) + dt;
    if (!idle.has(p.samples[i])) busy[s] = (busy[s] ?? 0) + dt;
  }
  return all.map((a, s) => `${String(s).padStart(4)} s  ${(((busy[s] ?? 0) / (a || 1)) * 100).toFixed(1).padStart(5)}% busy`).join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]).endsWith('profile-summary.ts')) {
  const args = process.argv.slice(2);
  const t = args.indexOf('--top');
  const top = t >= 0 ? Number(args[t + 1]) : 25;
  const w = args.indexOf('--window');
  const window = (w >= 0 ? args[w + 1].split(',').map(Number) : [0, Infinity]) as [number, number];
  for (const file of args.filter((a) => a.endsWith('.cpuprofile'))) {
    const body = args.includes('--timeline') ? timeline(file) : render(summarize(file, top, window));
    process.stdout.write(`== ${path.basename(file)}\n${body}\n\n`);
  }
}
