/** Latency at a fixed rate, and fan-in (many publishers, one subscriber), through each target. */
import { ForeignLoad, CpuSnapshot } from '../lib/proc.ts';
import { LoadChild } from '../lib/child.ts';
import type { Service, TargetName } from '../lib/services.ts';
import { si } from '../lib/stats.ts';
import type { LatencyResult } from '../loadgen.ts';
import { CFG, CORES, TARGETS, cpuOf, log, topic } from './context.ts';
import { quietMoment, undisturbed } from './quiet.ts';
import type { Results } from './results.ts';

export type LatencyRun = LatencyResult & {
  cpuPercent: number | null;
  /** Intermediary CPU seconds per million messages at this fixed rate (each message mostly its own read and write). */
  cpuPerMillion: number | null;
  foreignCores: number;
};

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

/** Fills results.latency and results.fanin for the scenarios asked for. */
export async function measureLatency(services: Map<TargetName, Service>, results: Results, scenarios: readonly string[]): Promise<void> {
  if (scenarios.includes('latency')) {
    for (const name of TARGETS) {
      log(`latency ${CFG.latencyRate} msg/s -> ${name}${await quietMoment()}`);
      const r = await undisturbed(`latency -> ${name}`, () => latencyRun(services.get(name)!, 'latency'));
      results.latency[name] = r;
      log(`  p50 ${r.latencyMs.p50.toFixed(3)} p99 ${r.latencyMs.p99.toFixed(3)} max ${r.latencyMs.max.toFixed(3)} ms, lost ${r.lost}; ${r.foreignCores.toFixed(2)} cores used by others`);
    }
  }

  if (scenarios.includes('fanin')) {
    for (const name of TARGETS) {
      log(`fan-in ${CFG.faninPublishers} x ${CFG.faninRate} msg/s -> ${name}${await quietMoment()}`);
      const r = await undisturbed(`fan-in -> ${name}`, () => latencyRun(services.get(name)!, 'fanin'));
      results.fanin[name] = r;
      log(`  ${si(r.rate)} msg/s, p50 ${r.latencyMs.p50.toFixed(3)} p99 ${r.latencyMs.p99.toFixed(3)} ms, connect ${r.connectSeconds?.toFixed(2)} s; ${r.foreignCores.toFixed(2)} cores used by others`);
    }
  }
}
