/** Latency at a fixed rate, and fan-in (many publishers, one subscriber), through each target. */
import { ForeignLoad, CpuSnapshot } from '../lib/proc.ts';
import { LoadChild } from '../lib/child.ts';
import type { Service, TargetName } from '../lib/services.ts';
import { median, si } from '../lib/stats.ts';
import type { LatencyResult } from '../loadgen.ts';
import { CFG, CORES, TARGETS, cpuOf, log, topic } from './context.ts';
import { quietMoment, undisturbed } from './quiet.ts';
import type { Results } from './results.ts';

export type LatencyRun = LatencyResult & {
  cpuPercent: number | null;
  /** Intermediary CPU seconds per million messages at this fixed rate (each message mostly its own read and write). */
  cpuPerMillion: number | null;
  foreignCores: number;
  /** With --rounds N: each round's percentiles (latencyMs and the CPU figures are then medians over rounds). */
  rounds?: LatencyResult['latencyMs'][];
};

/**
 * One p99 of a 10-second run moves by a few tenths of a millisecond from run to run
 * on this machine (the scheduler, the 1 ms pacing tick): the rounds alternate the
 * targets, as the throughput rounds do, and each percentile is the median over rounds.
 */
function combine(runs: LatencyRun[]): LatencyRun {
  if (runs.length === 1) return runs[0];
  const pick = (f: (r: LatencyRun) => number): number => median(runs.map(f));
  const nullable = (f: (r: LatencyRun) => number | null): number | null => (runs.some((r) => f(r) === null) ? null : pick((r) => f(r)!));
  const l = runs.map((r) => r.latencyMs);
  return {
    ...runs[0],
    sent: runs.reduce((a, r) => a + r.sent, 0),
    received: runs.reduce((a, r) => a + r.received, 0),
    lost: runs.reduce((a, r) => a + r.lost, 0),
    rate: pick((r) => r.rate),
    latencyMs: {
      count: l.reduce((a, p) => a + p.count, 0),
      p50: median(l.map((p) => p.p50)),
      p90: median(l.map((p) => p.p90)),
      p99: median(l.map((p) => p.p99)),
      p999: median(l.map((p) => p.p999)),
      max: Math.max(...l.map((p) => p.max)),
      mean: median(l.map((p) => p.mean)),
    },
    cpuPercent: nullable((r) => r.cpuPercent),
    cpuPerMillion: nullable((r) => r.cpuPerMillion),
    foreignCores: Math.max(...runs.map((r) => r.foreignCores)),
    rounds: l,
  };
}

async function latencyRun(svc: Service, role: 'latency' | 'fanin'): Promise<LatencyRun> {
  const hardLimitMs = CFG.warmupMs + CFG.durationMs + 120_000;
  const child = new LoadChild(role === 'latency'
    ? { role: 'latency', host: svc.host, port: svc.port, topic: topic('lat'), payloadSize: 64, rate: CFG.latencyRate, warmupMs: CFG.warmupMs, durationMs: CFG.durationMs, hardLimitMs }
    : { role: 'fanin', host: svc.host, port: svc.port, topic: topic('fan'), payloadSize: 64, publishers: CFG.faninPublishers, ratePerPublisher: CFG.faninRate, concurrency: 50, warmupMs: CFG.warmupMs, durationMs: CFG.durationMs, hardLimitMs });
  try {
    await child.next('ready', 60_000);
    const c0 = cpuOf(svc);
    const t0 = performance.now();
    const foreign = new ForeignLoad(CORES);
    child.send('go');
    // The end snapshot is taken while the connections are still open (socat's
    // per-connection processes must be alive to be counted).
    let c1: CpuSnapshot | null = null;
    let seconds = 0;
    let foreignCores = NaN;
    const snap = setTimeout(() => {
      c1 = cpuOf(svc);
      seconds = (performance.now() - t0) / 1000;
      foreignCores = foreign.measure().foreign;
    }, CFG.warmupMs + CFG.durationMs - 20);
    const { result } = await child.next('latency', hardLimitMs).finally(() => clearTimeout(snap));
    const end = c1 as CpuSnapshot | null;
    const cpu = c0 && end ? end.secondsSince(c0) : null;
    return {
      ...result,
      cpuPercent: cpu === null ? null : (cpu / seconds) * 100,
      cpuPerMillion: cpu === null || result.received === 0 ? null : cpu / (result.received / 1e6),
      foreignCores,
    };
  } finally {
    await child.stop();
  }
}

/** Fills results.latency and results.fanin for the scenarios asked for (CFG.rounds rounds, alternating the order). */
export async function measureLatency(services: Map<TargetName, Service>, results: Results, scenarios: readonly string[]): Promise<void> {
  for (const role of ['latency', 'fanin'] as const) {
    if (!scenarios.includes(role)) continue;
    const runs = new Map<TargetName, LatencyRun[]>();
    for (let round = 0; round < CFG.rounds; round++) {
      const order = round % 2 === 0 ? TARGETS : [...TARGETS].reverse();
      for (const name of order) {
        const label = role === 'latency' ? `latency ${CFG.latencyRate} msg/s` : `fan-in ${CFG.faninPublishers} x ${CFG.faninRate} msg/s`;
        log(`${label} -> ${name}${CFG.rounds > 1 ? ` (round ${round + 1})` : ''}${await quietMoment()}`);
        const r = await undisturbed(`${role} -> ${name}`, () => latencyRun(services.get(name)!, role));
        runs.set(name, [...(runs.get(name) ?? []), r]);
        const connect = role === 'fanin' ? `, connect ${r.connectSeconds?.toFixed(2)} s` : '';
        log(`  ${role === 'fanin' ? `${si(r.rate)} msg/s, ` : ''}p50 ${r.latencyMs.p50.toFixed(3)} p99 ${r.latencyMs.p99.toFixed(3)} max ${r.latencyMs.max.toFixed(3)} ms, lost ${r.lost}${connect}; ${r.foreignCores.toFixed(2)} cores used by others`);
      }
    }
    for (const [name, rs] of runs) results[role][name] = combine(rs);
  }
}
