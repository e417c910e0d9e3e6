/**
 * What every measurement of `npm run bench` shares: the options (same flags
 * as before the split), the configuration derived from them, logging, and
 * small helpers.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CpuSnapshot } from '../lib/proc.ts';
import { ROOT, type Service, type TargetName } from '../lib/services.ts';

export const { values: opts } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    micro: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    only: { type: 'string' },
    targets: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    rounds: { type: 'string' },
    'quiet-wait': { type: 'string' },
    'quiet-budget': { type: 'string' },
    'retry-budget': { type: 'string' },
    'idle-seconds': { type: 'string' },
    'idle-clients': { type: 'string' },
    'idle-procs': { type: 'string' },
    'idle-concurrency': { type: 'string' },
    'idle-keepalive': { type: 'string' },
    'latency-rate': { type: 'string' },
    sizes: { type: 'string' },
    'fanin-publishers': { type: 'string' },
    'fanin-rate': { type: 'string' },
    out: { type: 'string' },
    'node-flags': { type: 'string' },
    'relay-script': { type: 'string' },
    'heap-snapshot': { type: 'boolean', default: false },
    'mosquitto-nagle': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h' },
  },
});

const num = (v: string | undefined, d: number): number => (v === undefined ? d : Number(v));
export const CFG = {
  durationMs: num(opts.duration, 5) * 1000,
  warmupMs: num(opts.warmup, 1) * 1000,
  rounds: num(opts.rounds, 2),
  latencyRate: num(opts['latency-rate'], 10_000),
  faninPublishers: num(opts['fanin-publishers'], 1000),
  faninRate: num(opts['fanin-rate'], 10),
  idleClients: num(opts['idle-clients'], 9000),
  idleProcs: num(opts['idle-procs'], 3),
  idleConcurrency: num(opts['idle-concurrency'], 32),
  idleKeepalive: num(opts['idle-keepalive'], 60),
  idleRestMs: num(opts['idle-seconds'], opts.quick ? 10 : 60) * 1000,
  /** Before each measurement, wait up to this long for other processes to use less than quietThreshold cores. */
  quietWaitMs: num(opts['quiet-wait'], 20) * 1000,
  /** All quiet waits together, so a busy machine cannot stretch the run much. */
  quietBudgetMs: num(opts['quiet-budget'], 120) * 1000,
  quietThreshold: 0.3,
  /** Re-runs of disturbed measurements allowed in the whole run. */
  retryBudget: num(opts['retry-budget'], 12),
};
export const SIZES = (opts.sizes ?? '64,16384').split(',').map(Number);
export const SCENARIOS = (opts.only ?? 'throughput,latency,fanin,idle').split(',');
export const TARGETS = (opts.targets ?? 'direct,node-relay,socat,haproxy,proxy').split(',') as TargetName[];
export const OUT = path.resolve(ROOT, opts.out ?? 'bench-results/latest.json');

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
export const log = (msg: string): void => {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
};

export const CORES = os.cpus().length;

let topicSeq = 0;
export const topic = (what: string): string => `bench/${what}/${process.pid}/${++topicSeq}`;

export function cpuOf(svc: Service): CpuSnapshot | null {
  return svc.pid === null ? null : CpuSnapshot.take(svc.pid, svc.tree);
}

/** Experiments with --node-flags (--trace-gc...): keep what a target process printed, in bench-results/logs/NAME.log. */
export function keepOutput(svc: Service, name: string = svc.name): void {
  if (!opts['node-flags'] || !svc.pid) return;
  mkdirSync(path.join(ROOT, 'bench-results/logs'), { recursive: true });
  writeFileSync(path.join(ROOT, 'bench-results/logs', `${name}.log`), svc.output());
}
