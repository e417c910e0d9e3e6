/**
 * `npm run bench`: the proxy against a direct connection to Mosquitto and two
 * plain relays (a Node pipe relay and socat), side by side in one run.
 * Prints one table with PASS/FAIL per target and writes
 * bench-results/latest.json. Loopback only; every loop bounded in time.
 *
 *   npm run bench                       everything (7 to 9 minutes)
 *   npm run bench -- --quick            idle rest 10 s instead of 60 s
 *   npm run bench -- --only throughput,latency --targets direct,proxy
 *   npm run bench -- --micro            framer and policy micro-benchmarks only
 *   npm run bench -- --profile          also write CPU profiles of the proxy and the node relay
 *   npm run bench -- --heap-snapshot    heap snapshots of the idle proxy/relay (before and with every client)
 *   npm run bench -- --mosquitto-nagle  leave Nagle on in Mosquitto (its default; 40 ms stalls appear)
 *   npm run bench -- --node-flags=--trace-gc   extra node flags for the proxy and node relay
 */
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { LoadChild } from './lib/child.ts';
import { CpuSnapshot, ForeignLoad, busyCores, clockTicks, fileLimits, openFiles, statusKb, systemCpu, userSystemTicks, waitForQuiet } from './lib/proc.ts';
import { ROOT, directService, startMosquitto, startNodeRelay, startProxy, startSocat, type Service, type TargetName } from './lib/services.ts';
import { median, round, si } from './lib/stats.ts';
import type { IdleConnected, LatencyResult } from './loadgen.ts';

const { values: opts } = parseArgs({
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

if (opts.help) {
  process.stdout.write(readFileSync(new URL(import.meta.url)).toString().split('*/')[0] + '*/\n');
  process.exit(0);
}

if (opts.micro) {
  const { runMicro } = await import('./micro.ts');
  await runMicro();
  process.exit(0);
}

const num = (v: string | undefined, d: number): number => (v === undefined ? d : Number(v));
const CFG = {
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
const SIZES = (opts.sizes ?? '64,16384').split(',').map(Number);
const SCENARIOS = (opts.only ?? 'throughput,latency,fanin,idle').split(',');
const TARGETS = (opts.targets ?? 'direct,node-relay,socat,proxy').split(',') as TargetName[];
const OUT = path.resolve(ROOT, opts.out ?? 'bench-results/latest.json');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const log = (msg: string): void => {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
};

// ---- results -------------------------------------------------------------------

interface ThroughputResult {
  payloadSize: number;
  /** Messages per second received by the subscriber (median over rounds). */
  rate: number;
  rates: number[];
  /** Messages per second written by the publisher. */
  sendRate: number;
  /** CPU seconds of the intermediary per million messages received. */
  cpuPerMillion: number | null;
  mosquittoCpuPerMillion: number;
  /** Publisher + subscriber CPU seconds per million messages received. */
  loadCpuPerMillion: number;
  machineBusyCores: number;
  /** Cores used by processes outside this benchmark (the worst round). */
  foreignCores: number;
  /** Median over rounds of this target's rate / direct's rate in the same round. */
  vsDirect: number | null;
  /** Median over rounds of this target's CPU per message / the node relay's in the same round. */
  cpuVsNodeRelay: number | null;
}

interface IdleResult {
  clients: number;
  connected: number;
  failed: number;
  errors: Record<string, number>;
  connectRate: number;
  connectSeconds: number;
  listenOverflows: number;
  rssBeforeKb: number | null;
  rssAfterConnectKb: number | null;
  rssAfterRestKb: number | null;
  rssPerConnectionKb: number | null;
  openFiles: number | null;
  restSeconds: number;
  restCpuPercent: number | null;
  closedEarly: number;
  pings: number;
  /** Cores used by processes outside this benchmark during connect and rest. */
  foreignCoresConnect: number;
  foreignCoresRest: number | null;
  /** The rest CPU split into user and kernel time (the kernel part includes TCP keep-alive probe handling). */
  restUserPercent: number | null;
  restSystemPercent: number | null;
}

const results: {
  throughput: Record<string, Partial<Record<TargetName, ThroughputResult>>>;
  latency: Partial<Record<TargetName, LatencyRun>>;
  fanin: Partial<Record<TargetName, LatencyRun>>;
  idle: Partial<Record<TargetName, IdleResult>>;
} = { throughput: {}, latency: {}, fanin: {}, idle: {} };

// ---- scenarios -----------------------------------------------------------------

/**
 * Other people's processes share this machine: wait (bounded) for a quiet
 * second before each measurement, and say so when none came.
 */
let quietBudgetMs = CFG.quietBudgetMs;
let retriesLeft = CFG.retryBudget;

/**
 * Run a measurement; if other processes used more than quietThreshold cores
 * meanwhile, run it again (at most twice, within a budget for the whole run)
 * and keep the least disturbed attempt.
 */
async function undisturbed<T extends { foreignCores: number }>(label: string, run: () => Promise<T>): Promise<T & { attempts: number }> {
  let best: T | null = null;
  let attempts = 0;
  for (;;) {
    const r = await run();
    attempts++;
    if (best === null || r.foreignCores < best.foreignCores) best = r;
    if (best.foreignCores <= CFG.quietThreshold || attempts >= 3 || retriesLeft <= 0) break;
    retriesLeft--;
    log(`  ${label}: other processes used ${r.foreignCores.toFixed(2)} cores meanwhile; measuring again${await quietMoment()}`);
  }
  return { ...best, attempts };
}

async function quietMoment(): Promise<string> {
  const maxWait = Math.min(CFG.quietWaitMs, quietBudgetMs);
  const t0 = Date.now();
  const foreign = await waitForQuiet(os.cpus().length, CFG.quietThreshold, Math.max(0, maxWait));
  quietBudgetMs -= Date.now() - t0;
  return foreign < CFG.quietThreshold ? '' : ` (machine not quiet: ${foreign.toFixed(2)} cores used by others)`;
}

let topicSeq = 0;
const topic = (what: string): string => `bench/${what}/${process.pid}/${++topicSeq}`;

function cpuOf(svc: Service): CpuSnapshot | null {
  return svc.pid === null ? null : CpuSnapshot.take(svc.pid, svc.tree);
}

interface ThroughputRun {
  rate: number;
  sendRate: number;
  cpu: number | null;
  brokerCpu: number;
  /** CPU seconds of the publisher and subscriber processes. */
  loadCpu: number;
  /** Busy cores on the machine during the run (of os.cpus().length), and the softirq part. */
  machineBusy: number;
  machineSoftirq: number;
  /** Cores used by processes outside this benchmark meanwhile. */
  foreignCores: number;
  received: number;
  seconds: number;
}

async function throughputOnce(svc: Service, broker: Service, payloadSize: number): Promise<ThroughputRun> {
  const t = topic('tp');
  const hardLimitMs = CFG.warmupMs + CFG.durationMs + 60_000;
  const sub = new LoadChild({ role: 'sub-count', host: svc.host, port: svc.port, topic: t, hardLimitMs });
  const pub = new LoadChild({ role: 'pub-flood', host: svc.host, port: svc.port, topic: t, payloadSize, batchBytes: 64 * 1024, maxMessages: 2e9, hardLimitMs });
  try {
    await sub.next('ready', 30_000);
    await pub.next('ready', 30_000);
    pub.send('go');
    await sleep(CFG.warmupMs);
    const [s0, p0] = await Promise.all([sub.sample(), pub.sample()]);
    const c0 = cpuOf(svc);
    const b0 = CpuSnapshot.take(broker.pid!);
    const l0 = [CpuSnapshot.take(pub.pid!), CpuSnapshot.take(sub.pid!)];
    const m0 = systemCpu();
    const foreign = new ForeignLoad(os.cpus().length);
    await sleep(CFG.durationMs);
    const [s1, p1] = await Promise.all([sub.sample(), pub.sample()]);
    const c1 = cpuOf(svc);
    const b1 = CpuSnapshot.take(broker.pid!);
    const l1 = [CpuSnapshot.take(pub.pid!), CpuSnapshot.take(sub.pid!)];
    const machine = busyCores(m0, systemCpu(), os.cpus().length);
    const received = s1.count - s0.count;
    return {
      rate: (received / (s1.t - s0.t)) * 1000,
      sendRate: ((p1.count - p0.count) / (p1.t - p0.t)) * 1000,
      cpu: c0 && c1 ? c1.secondsSince(c0) : null,
      brokerCpu: b1.secondsSince(b0),
      loadCpu: l1[0].secondsSince(l0[0]) + l1[1].secondsSince(l0[1]),
      machineBusy: machine.busy,
      machineSoftirq: machine.softirq,
      foreignCores: foreign.measure().foreign,
      received,
      seconds: (s1.t - s0.t) / 1000,
    };
  } finally {
    await pub.stop();
    await sub.stop();
  }
}

type LatencyRun = LatencyResult & {
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
    const foreign = new ForeignLoad(os.cpus().length);
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

function listenOverflows(): number {
  // TcpExt: ListenOverflows (accept queue full) for this network namespace.
  const text = readFileSync('/proc/net/netstat', 'utf8').split('\n');
  for (let i = 0; i + 1 < text.length; i++) {
    if (!text[i].startsWith('TcpExt:')) continue;
    const names = text[i].split(/\s+/);
    const vals = text[i + 1].split(/\s+/);
    const k = names.indexOf('ListenOverflows');
    if (k >= 0) return Number(vals[k]);
  }
  return 0;
}

let idleRun = 0;

async function idleScale(svc: Service, rest: boolean): Promise<IdleResult> {
  idleRun++;
  const pid = svc.pid;
  // Warm up the code paths with a few short-lived connections first.
  if (pid !== null) {
    const warm = new LoadChild({ role: 'idle', host: svc.host, port: svc.port, count: 200, localAddresses: [`127.0.200.${idleRun}`], concurrency: 20, keepalive: CFG.idleKeepalive, clientIdPrefix: `warm-${idleRun}`, hardLimitMs: 60_000 });
    await warm.next('ready');
    warm.send('go');
    await warm.next('connected', 30_000);
    await warm.stop();
    await sleep(2000);
  }
  if (opts['heap-snapshot'] && svc.proc) {
    // A baseline snapshot, to diff against the one taken with every client connected.
    svc.proc.kill('SIGUSR2');
    await sleep(5000);
  }
  const rssBeforeKb = pid === null ? null : statusKb(pid, 'VmRSS');
  const per = Math.ceil(CFG.idleClients / CFG.idleProcs);
  const hardLimitMs = CFG.idleRestMs + 300_000;
  const children: LoadChild[] = [];
  for (let k = 0; k < CFG.idleProcs; k++) {
    const count = Math.min(per, CFG.idleClients - k * per);
    if (count <= 0) break;
    // Two source addresses per load process; new ones each run so no TIME_WAIT is reused.
    const localAddresses = [`127.${10 + idleRun}.${k}.1`, `127.${10 + idleRun}.${k}.2`];
    children.push(new LoadChild({ role: 'idle', host: svc.host, port: svc.port, count, localAddresses, concurrency: CFG.idleConcurrency, keepalive: CFG.idleKeepalive, clientIdPrefix: `idle-${idleRun}-${k}`, hardLimitMs }));
  }
  try {
    await Promise.all(children.map((c) => c.next('ready', 30_000)));
    const overflows0 = listenOverflows();
    const foreignConnect = new ForeignLoad(os.cpus().length);
    for (const c of children) c.send('go');
    const connected: IdleConnected[] = (await Promise.all(children.map((c) => c.next('connected', 240_000)))).map((m) => m.result);
    const overflows = listenOverflows() - overflows0;
    const foreignCoresConnect = foreignConnect.measure().foreign;
    const ok = connected.reduce((a, c) => a + c.ok, 0);
    const failed = connected.reduce((a, c) => a + c.failed, 0);
    const errors: Record<string, number> = {};
    for (const c of connected) for (const [k, v] of Object.entries(c.errors)) errors[k] = (errors[k] ?? 0) + v;
    const first = Math.min(...connected.map((c) => c.firstStart));
    const last = Math.max(...connected.map((c) => c.lastDone));
    const connectSeconds = (last - first) / 1000;
    await sleep(1000);
    const rssAfterConnectKb = pid === null ? null : statusKb(pid, 'VmRSS');
    const files = pid === null ? null : openFiles(pid);
    let restCpuPercent: number | null = null;
    let rssAfterRestKb: number | null = null;
    let foreignCoresRest: number | null = null;
    let restUserPercent: number | null = null;
    let restSystemPercent: number | null = null;
    const restMs = rest ? CFG.idleRestMs : 0;
    if (rest && pid !== null) {
      log(`  ${svc.name}: ${ok} connected in ${connectSeconds.toFixed(2)} s; resting ${restMs / 1000} s`);
      if (opts['heap-snapshot'] && svc.proc) {
        // Written by the process itself to bench-results/profiles/<name>/ (it pauses while writing).
        svc.proc.kill('SIGUSR2');
        await sleep(5000);
      }
      const c0 = CpuSnapshot.take(pid);
      const us0 = userSystemTicks(pid);
      const t0 = performance.now();
      const foreignRest = new ForeignLoad(os.cpus().length);
      await sleep(restMs);
      const c1 = CpuSnapshot.take(pid);
      const us1 = userSystemTicks(pid);
      foreignCoresRest = foreignRest.measure().foreign;
      const restSeconds = (performance.now() - t0) / 1000;
      restCpuPercent = (c1.secondsSince(c0) / restSeconds) * 100;
      restUserPercent = ((us1.user - us0.user) / clockTicks() / restSeconds) * 100;
      restSystemPercent = ((us1.system - us0.system) / clockTicks() / restSeconds) * 100;
      rssAfterRestKb = statusKb(pid, 'VmRSS');
    }
    const done = await Promise.all(children.map((c) => c.stop(10_000)));
    const growth = rssBeforeKb === null ? null : Math.max(rssAfterConnectKb ?? 0, rssAfterRestKb ?? 0) - rssBeforeKb;
    return {
      clients: CFG.idleClients,
      connected: ok,
      failed,
      errors,
      connectRate: ok / connectSeconds,
      connectSeconds,
      listenOverflows: overflows,
      rssBeforeKb,
      rssAfterConnectKb,
      rssAfterRestKb,
      rssPerConnectionKb: growth === null || ok === 0 ? null : growth / ok,
      openFiles: files,
      restSeconds: restMs / 1000,
      restCpuPercent,
      closedEarly: done.reduce((a, d) => a + (d?.stats?.closedEarly ?? 0), 0),
      pings: done.reduce((a, d) => a + (d?.stats?.pings ?? 0), 0),
      foreignCoresConnect,
      foreignCoresRest,
      restUserPercent,
      restSystemPercent,
    };
  } finally {
    await Promise.all(children.map((c) => c.stop(10_000)));
  }
}

// ---- main ----------------------------------------------------------------------

async function startTarget(name: TargetName, broker: Service): Promise<Service> {
  if (name === 'direct') return directService(broker);
  if (name === 'socat') return startSocat(broker);
  const profDir = path.join(ROOT, 'bench-results/profiles', name);
  if (opts.profile) mkdirSync(profDir, { recursive: true });
  if (opts['heap-snapshot']) mkdirSync(profDir, { recursive: true });
  const nodeFlags = [
    ...(opts.profile ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : []),
    ...(opts['heap-snapshot'] ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${profDir}`] : []),
    ...(opts['node-flags']?.split(' ').filter(Boolean) ?? []),
  ];
  if (name === 'node-relay') return startNodeRelay(broker, { nodeFlags, script: opts['relay-script'] });
  return startProxy(broker, { nodeFlags });
}

function gitCommit(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'proxy/src'], { cwd: ROOT, encoding: 'utf8' }).trim();
    return dirty ? `${head} (proxy/src modified)` : head;
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  const started = Date.now();
  // Nagle off in Mosquitto (as the relays have it off): with it on, a one-way
  // stream of small messages stalls ~40 ms whenever the receiver delays its ACK,
  // on any path; --mosquitto-nagle keeps Mosquitto's default to see that.
  const broker = await startMosquitto('127.0.0.1', opts['mosquitto-nagle'] ? [] : ['set_tcp_nodelay true']);
  log(`mosquitto pid ${broker.pid} on ${broker.port}; open files ${broker.info.fileLimits.soft}/${broker.info.fileLimits.hard} (${broker.info.raised})`);
  const services = new Map<TargetName, Service>();
  try {
    for (const name of TARGETS) services.set(name, await startTarget(name, broker));
    for (const s of services.values()) log(`${s.name}: ${s.host}:${s.port}${s.pid ? ` pid ${s.pid}` : ''}`);

    if (SCENARIOS.includes('throughput')) {
      for (const size of SIZES) {
        const key = `${size}`;
        results.throughput[key] = {};
        const runs = new Map<TargetName, ThroughputRun[]>();
        for (let round = 0; round < CFG.rounds; round++) {
          // Alternate the order so drift and neighbours' load fall on every target alike.
          const order = round % 2 === 0 ? TARGETS : [...TARGETS].reverse();
          for (const name of order) {
            const quiet = await quietMoment();
            log(`throughput ${size} B -> ${name}${CFG.rounds > 1 ? ` (round ${round + 1})` : ''}${quiet}`);
            const r = await undisturbed(`${size} B -> ${name}`, () => throughputOnce(services.get(name)!, broker, size));
            runs.set(name, [...(runs.get(name) ?? []), r]);
            log(`  ${si(r.rate)} msg/s received, ${si(r.sendRate)} msg/s sent; CPU s: relay ${r.cpu?.toFixed(2) ?? '-'}, mosquitto ${r.brokerCpu.toFixed(2)}, pub+sub ${r.loadCpu.toFixed(2)}; machine ${r.machineBusy.toFixed(2)} cores busy, ${r.foreignCores.toFixed(2)} by others, over ${r.seconds.toFixed(1)} s`);
          }
        }
        for (const [name, rs] of runs) {
          const direct = runs.get('direct');
          const relay = runs.get('node-relay');
          const perMillion = (r: ThroughputRun): number | null => (r.cpu === null ? null : r.cpu / (r.received / 1e6));
          results.throughput[key][name] = {
            payloadSize: size,
            rate: median(rs.map((r) => r.rate)),
            rates: rs.map((r) => r.rate),
            // Ratios per round (runs next to each other in time), then the median.
            vsDirect: direct ? median(rs.map((r, i) => r.rate / direct[i].rate)) : null,
            sendRate: median(rs.map((r) => r.sendRate)),
            cpuPerMillion: rs[0].cpu === null ? null : median(rs.map((r) => perMillion(r)!)),
            cpuVsNodeRelay: relay && rs[0].cpu !== null ? median(rs.map((r, i) => perMillion(r)! / perMillion(relay[i])!)) : null,
            mosquittoCpuPerMillion: median(rs.map((r) => r.brokerCpu / (r.received / 1e6))),
            loadCpuPerMillion: median(rs.map((r) => r.loadCpu / (r.received / 1e6))),
            machineBusyCores: median(rs.map((r) => r.machineBusy)),
            foreignCores: Math.max(...rs.map((r) => r.foreignCores)),
          };
        }
      }
    }

    if (SCENARIOS.includes('latency')) {
      for (const name of TARGETS) {
        log(`latency ${CFG.latencyRate} msg/s -> ${name}${await quietMoment()}`);
        const r = await undisturbed(`latency -> ${name}`, () => latencyRun(services.get(name)!, 'latency'));
        results.latency[name] = r;
        log(`  p50 ${r.latencyMs.p50.toFixed(3)} p99 ${r.latencyMs.p99.toFixed(3)} max ${r.latencyMs.max.toFixed(3)} ms, lost ${r.lost}; ${r.foreignCores.toFixed(2)} cores used by others`);
      }
    }

    if (SCENARIOS.includes('fanin')) {
      for (const name of TARGETS) {
        log(`fan-in ${CFG.faninPublishers} x ${CFG.faninRate} msg/s -> ${name}${await quietMoment()}`);
        const r = await undisturbed(`fan-in -> ${name}`, () => latencyRun(services.get(name)!, 'fanin'));
        results.fanin[name] = r;
        log(`  ${si(r.rate)} msg/s, p50 ${r.latencyMs.p50.toFixed(3)} p99 ${r.latencyMs.p99.toFixed(3)} ms, connect ${r.connectSeconds?.toFixed(2)} s; ${r.foreignCores.toFixed(2)} cores used by others`);
      }
    }

    if (SCENARIOS.includes('idle')) {
      // Fresh processes, so memory growth is measured from a clean start; socat would fork 9,000 processes.
      for (const name of TARGETS.filter((t) => t !== 'socat')) {
        log(`idle ${CFG.idleClients} clients -> ${name}${await quietMoment()}`);
        const svc = name === 'direct' ? directService(broker) : await startTarget(name, broker);
        try {
          const r = await idleScale(svc, name !== 'direct');
          results.idle[name] = r;
          log(`  ${r.connected} ok, ${r.failed} failed; ${Math.round(r.connectRate)}/s; rss ${r.rssPerConnectionKb?.toFixed(2) ?? '-'} KB/conn; rest cpu ${r.restCpuPercent?.toFixed(2) ?? '-'} %`);
        } finally {
          await svc.stop();
        }
        await sleep(2000);
      }
    }
  } finally {
    for (const s of services.values()) {
      await s.stop();
      if (opts['node-flags'] && s.pid) {
        // Experiments with node flags (--trace-gc...): keep what the process printed.
        mkdirSync(path.join(ROOT, 'bench-results/logs'), { recursive: true });
        writeFileSync(path.join(ROOT, 'bench-results/logs', `${s.name}.log`), s.output());
      }
    }
    await broker.stop();
  }

  const targets = evaluateTargets();
  const table = renderTable(targets);
  process.stdout.write(`\n${table}\n`);
  const meta = {
    date: new Date().toISOString(),
    seconds: Math.round((Date.now() - started) / 1000),
    commit: gitCommit(),
    node: process.version,
    cpu: os.cpus()[0]?.model,
    cores: os.cpus().length,
    memoryGiB: round(os.totalmem() / 2 ** 30, 1),
    kernel: os.release(),
    clockTicks: clockTicks(),
    openFilesLimit: fileLimits(),
    mosquitto: broker.info,
    config: CFG,
    scenarios: SCENARIOS,
    targets: TARGETS,
    mosquittoTcpNodelay: !opts['mosquitto-nagle'],
  };
  mkdirSync(path.dirname(OUT), { recursive: true });
  writeFileSync(OUT, `${JSON.stringify({ meta, results, targets, table }, null, 2)}\n`);
  log(`wrote ${path.relative(process.cwd(), OUT)} (${meta.seconds} s)`);
}

// ---- targets and the table ---------------------------------------------------------

interface TargetCheck {
  name: string;
  measured: string;
  limit: string;
  pass: boolean | null;
}

function evaluateTargets(): TargetCheck[] {
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

function renderTable(checks: TargetCheck[]): string {
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
    line(`  MB/s (payload)`, (c) => cell(t[c] ? (t[c]!.rate * Number(size)) / 1e6 : null, (v) => v.toFixed(1)));
    line(`  relay CPU s per M msgs`, (c) => cell(t[c]?.cpuPerMillion, (v) => v.toFixed(2)));
    line(`  relay CPU vs node-relay`, (c) => cell(t[c]?.cpuVsNodeRelay, (v) => `${v.toFixed(2)}x`));
    line(`  mosquitto CPU s per M msgs`, (c) => cell(t[c]?.mosquittoCpuPerMillion, (v) => v.toFixed(2)));
    line(`  machine busy cores (of ${os.cpus().length})`, (c) => cell(t[c]?.machineBusyCores, (v) => v.toFixed(2)));
    line(`  cores used by others (worst round)`, (c) => cell(t[c]?.foreignCores, (v) => v.toFixed(2)));
  }
  const lat = results.latency;
  if (Object.keys(lat).length) {
    const r = `${si(CFG.latencyRate)}/s`;
    line(`latency @ ${r}: p50 ms`, (c) => cell(lat[c]?.latencyMs.p50, ms));
    line(`  p99 ms`, (c) => cell(lat[c]?.latencyMs.p99, ms));
    line(`  max ms`, (c) => cell(lat[c]?.latencyMs.max, ms));
    line(`  added p99 vs direct ms`, (c) => cell(lat[c] && lat.direct ? lat[c]!.latencyMs.p99 - lat.direct.latencyMs.p99 : null, ms));
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
    line(`  RSS after MB`, (c) => cell(idle[c] ? Math.max(idle[c]!.rssAfterConnectKb ?? NaN, idle[c]!.rssAfterRestKb ?? NaN) : null, (v) => (v / 1024).toFixed(1)));
    line(`  RSS growth KB/conn (peak)`, (c) => cell(idle[c]?.rssPerConnectionKb, (v) => v.toFixed(2)));
    line(`  RSS growth KB/conn (after rest)`, (c) => cell(idle[c]?.rssAfterRestKb && idle[c]?.rssBeforeKb ? (idle[c]!.rssAfterRestKb! - idle[c]!.rssBeforeKb!) / idle[c]!.connected : null, (v) => v.toFixed(2)));
    line(`  CPU at rest % (${CFG.idleRestMs / 1000} s)`, (c) => cell(idle[c]?.restCpuPercent, (v) => v.toFixed(2)));
    line(`    of which user / kernel %`, (c) => (idle[c]?.restUserPercent == null ? '-' : `${idle[c]!.restUserPercent!.toFixed(2)} / ${idle[c]!.restSystemPercent!.toFixed(2)}`));
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

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
