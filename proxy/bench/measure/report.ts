/** The targets (PASS/FAIL) and the side-by-side table printed at the end of `npm run bench`. */
import type { TargetName } from '../lib/services.ts';
import { pairedDifference, si } from '../lib/stats.ts';
import { CFG, CORES, TARGETS } from './context.ts';
import type { Results } from './results.ts';
import type { LatencyRun } from './latency.ts';

interface TargetCheck {
  name: string;
  measured: string;
  limit: string;
  pass: boolean | null;
}

export function evaluateTargets(results: Results): TargetCheck[] {
  const out: TargetCheck[] = [];
  const add = (name: string, value: number | null | undefined, limit: string, ok: (v: number) => boolean, fmt: (v: number) => string): void => {
    if (value === null || value === undefined || !Number.isFinite(value)) {
      out.push({ name, measured: 'not measured', limit, pass: null });
    } else {
      out.push({ name, measured: fmt(value), limit, pass: ok(value) });
    }
  };
  for (const [size, label] of [['64', '64 B'], ['16384', '16 KiB']] as const) {
    const t = results.throughput[size];
    const ratio = t?.proxy?.vsDirect;
    add(`throughput ${label}: proxy / direct`, ratio, '>= 90%', (v) => v >= 0.9, (v) => `${(v * 100).toFixed(1)}%`);
  }
  for (const [size, label] of [['64', '64 B'], ['16384', '16 KiB']] as const) {
    const t = results.throughput[size];
    const ratio = t?.proxy?.cpuVsNodeRelay;
    add(`CPU per message ${label}: proxy / node-relay`, ratio, '<= 1.5x', (v) => v <= 1.5, (v) => `${v.toFixed(2)}x`);
  }
  // Issue 13's anchor: Debian's HAProxy, one thread, TCP mode.
  for (const [size, label] of [['64', '64 B'], ['16384', '16 KiB']] as const) {
    const t = results.throughput[size];
    add(`throughput ${label}: proxy / haproxy`, t?.proxy?.vsHaproxy, '>= 100%', (v) => v >= 1, (v) => `${(v * 100).toFixed(1)}%`);
    add(`CPU per message ${label}: proxy / haproxy`, t?.proxy?.cpuVsHaproxy, '<= 1.1x', (v) => v <= 1.1, (v) => `${v.toFixed(2)}x`);
    const lost = t?.proxy && t.haproxy ? t.proxy.lostShare - t.haproxy.lostShare : null;
    add(`flood ${label}: share written but not received, proxy - haproxy`, lost, '<= 0.5 points', (v) => v <= 0.005, (v) => `${(v * 100).toFixed(2)} points`);
  }
  {
    const l = results.latency;
    const p99s = (r: LatencyRun | undefined): number[] | undefined => r?.rounds?.map((p) => p.p99);
    const [proxy, haproxy] = [p99s(l.proxy), p99s(l.haproxy)];
    const paired = proxy && haproxy ? `; ${pairedDifference(proxy, haproxy)}` : '';
    add('p99 latency: proxy - haproxy', l.proxy && l.haproxy ? l.proxy.latencyMs.p99 - l.haproxy.latencyMs.p99 : null, '<= 0 ms', (v) => v <= 0, (v) => `${v.toFixed(3)} ms${paired}`);
  }
  {
    const l = results.latency;
    const ratio = l.proxy?.cpuPerMillion && l['node-relay']?.cpuPerMillion ? l.proxy.cpuPerMillion / l['node-relay'].cpuPerMillion : null;
    add(`CPU per message at ${si(CFG.latencyRate)}/s: proxy / node-relay`, ratio, '<= 1.5x', (v) => v <= 1.5, (v) => `${v.toFixed(2)}x`);
  }
  const l = results.latency;
  add('added p99 latency vs direct', l.proxy && l.direct ? l.proxy.latencyMs.p99 - l.direct.latencyMs.p99 : null, '< 1 ms', (v) => v < 1, (v) => `${v.toFixed(3)} ms`);
  const i = results.idle.proxy;
  const settled = i?.rssAfterRestKb && i.rssBeforeKb ? (i.rssAfterRestKb - i.rssBeforeKb) / i.connected : null;
  add(`idle ${CFG.idleClients}: RSS growth per connection, settled (after the rest)`, settled, '<= 10 KB', (v) => v <= 10, (v) => `${v.toFixed(2)} KB`);
  add(`idle ${CFG.idleClients}: RSS growth per connection, peak (highest sample)`, i?.rssPerConnectionKb, '<= 10 KB', (v) => v <= 10, (v) => `${v.toFixed(2)} KB`);
  add(`idle ${CFG.idleClients}: CPU at rest (${CFG.idleRestMs / 1000} s)`, i?.restCpuPercent, '< 3% of a core', (v) => v < 3, (v) => `${v.toFixed(2)}%`);
  add(`idle ${CFG.idleClients}: connect rate`, i?.connectRate, '>= 2,500/s', (v) => v >= 2500, (v) => `${Math.round(v)}/s`);
  add(`idle ${CFG.idleClients}: all connected`, i ? i.connected / i.clients : null, '100%', (v) => v === 1, (v) => `${(v * 100).toFixed(2)}%`);
  return out;
}

export function renderTable(results: Results, checks: TargetCheck[]): string {
  const cols: TargetName[] = TARGETS;
  const rows: string[][] = [];
  const cell = (v: number | null | undefined, f: (v: number) => string): string => (v === null || v === undefined || !Number.isFinite(v) ? '-' : f(v));
  const ms = (v: number): string => v.toFixed(3);
  const line = (label: string, get: (t: TargetName) => string): void => {
    rows.push([label, ...cols.map(get)]);
  };
  for (const [size, label] of [['64', '64 B'], ['16384', '16 KiB']] as const) {
    const t = results.throughput[size];
    if (!t) continue;
    line(`QoS 0 flood ${label}: received msg/s`, (c) => cell(t[c]?.rate, (v) => si(v)));
    line(`  vs direct (median of per-round ratios)`, (c) => cell(t[c]?.vsDirect, (v) => `${(v * 100).toFixed(1)}%`));
    line(`  MB/s (payload)`, (c) => cell(t[c] ? (t[c].rate * Number(size)) / 1e6 : null, (v) => v.toFixed(1)));
    line(`  relay CPU s per M msgs`, (c) => cell(t[c]?.cpuPerMillion, (v) => v.toFixed(2)));
    line(`  relay CPU vs node-relay`, (c) => cell(t[c]?.cpuVsNodeRelay, (v) => `${v.toFixed(2)}x`));
    line(`  relay CPU vs haproxy`, (c) => cell(t[c]?.cpuVsHaproxy, (v) => `${v.toFixed(2)}x`));
    line(`  vs haproxy (median of per-round ratios)`, (c) => cell(t[c]?.vsHaproxy, (v) => `${(v * 100).toFixed(1)}%`));
    line(`  written but not received % (rounds)`, (c) => cell(t[c]?.lostShares.length, () => t[c]!.lostShares.map((v) => (v * 100).toFixed(1)).join('/')));
    line(`  mosquitto CPU s per M msgs`, (c) => cell(t[c]?.mosquittoCpuPerMillion, (v) => v.toFixed(2)));
    line(`  machine busy cores (of ${CORES})`, (c) => cell(t[c]?.machineBusyCores, (v) => v.toFixed(2)));
    line(`  cores used by others (worst round)`, (c) => cell(t[c]?.foreignCores, (v) => v.toFixed(2)));
  }
  const lat = results.latency;
  if (Object.keys(lat).length) {
    const r = `${si(CFG.latencyRate)}/s`;
    line(`latency @ ${r}: p50 ms`, (c) => cell(lat[c]?.latencyMs.p50, ms));
    line(`  p99 ms`, (c) => cell(lat[c]?.latencyMs.p99, ms));
    line(`  max ms`, (c) => cell(lat[c]?.latencyMs.max, ms));
    line(`  added p99 vs direct ms`, (c) => cell(lat[c] && lat.direct ? lat[c].latencyMs.p99 - lat.direct.latencyMs.p99 : null, ms));
    line(`  relay CPU % of a core`, (c) => cell(lat[c]?.cpuPercent, (v) => v.toFixed(1)));
    line(`  relay CPU s per M msgs`, (c) => cell(lat[c]?.cpuPerMillion, (v) => v.toFixed(2)));
    line(`  lost`, (c) => cell(lat[c]?.lost, (v) => String(v)));
    line(`  cores used by others`, (c) => cell(lat[c]?.foreignCores, (v) => v.toFixed(2)));
  }
  const fan = results.fanin;
  if (Object.keys(fan).length) {
    line(`fan-in ${CFG.faninPublishers} x ${CFG.faninRate}/s: received msg/s`, (c) => cell(fan[c]?.rate, (v) => si(v)));
    line(`  p50 ms`, (c) => cell(fan[c]?.latencyMs.p50, ms));
    line(`  p99 ms`, (c) => cell(fan[c]?.latencyMs.p99, ms));
    line(`  max ms`, (c) => cell(fan[c]?.latencyMs.max, ms));
    line(`  connect ${CFG.faninPublishers} s`, (c) => cell(fan[c]?.connectSeconds, (v) => v.toFixed(2)));
    line(`  relay CPU % of a core`, (c) => cell(fan[c]?.cpuPercent, (v) => v.toFixed(1)));
    line(`  cores used by others`, (c) => cell(fan[c]?.foreignCores, (v) => v.toFixed(2)));
  }
  const idle = results.idle;
  if (Object.keys(idle).length) {
    line(`idle ${CFG.idleClients}: connected`, (c) => cell(idle[c]?.connected, (v) => String(v)));
    line(`  connect rate /s`, (c) => cell(idle[c]?.connectRate, (v) => String(Math.round(v))));
    line(`  RSS before MB`, (c) => cell(idle[c]?.rssBeforeKb, (v) => (v / 1024).toFixed(1)));
    line(`  RSS after MB`, (c) => cell(idle[c] ? Math.max(idle[c].rssAfterConnectKb ?? NaN, idle[c].rssAfterRestKb ?? NaN) : null, (v) => (v / 1024).toFixed(1)));
    line(`  RSS growth KB/conn (peak)`, (c) => cell(idle[c]?.rssPerConnectionKb, (v) => v.toFixed(2)));
    line(`  RSS growth KB/conn (after rest)`, (c) => cell(idle[c]?.rssAfterRestKb && idle[c]?.rssBeforeKb ? (idle[c].rssAfterRestKb - idle[c].rssBeforeKb) / idle[c].connected : null, (v) => v.toFixed(2)));
    line(`  CPU at rest % (${CFG.idleRestMs / 1000} s)`, (c) => cell(idle[c]?.restCpuPercent, (v) => v.toFixed(2)));
    line(`    of which user / kernel %`, (c) => (idle[c]?.restUserPercent == null ? '-' : `${idle[c].restUserPercent.toFixed(2)} / ${idle[c].restSystemPercent!.toFixed(2)}`));
    line(`  cores used by others (connect)`, (c) => cell(idle[c]?.foreignCoresConnect, (v) => v.toFixed(2)));
  }
  const widths = [0, ...cols.map(() => 0)];
  const header = ['', ...cols];
  for (const r of [header, ...rows]) r.forEach((c, k) => { widths[k] = Math.max(widths[k], c.length); });
  const fmt = (r: string[]): string => r.map((c, k) => (k === 0 ? c.padEnd(widths[k]) : c.padStart(widths[k]))).join('  ');
  const lines = [fmt(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(fmt)];
  lines.push('', 'Targets:');
  for (const c of checks) {
    const verdict = c.pass === null ? 'n/a ' : c.pass ? 'PASS' : 'FAIL';
    lines.push(`  ${verdict}  ${c.name}: ${c.measured} (target ${c.limit})`);
  }
  return lines.join('\n');
}
