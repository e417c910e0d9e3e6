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
 *
 * One file per measurement in proxy/bench/measure/ (throughput, latency and
 * fan-in, idle); this runner starts the targets, runs what was asked and
 * writes the results.
 */
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { clockTicks, fileLimits } from './lib/proc.ts';
import { ROOT, directService, startMosquitto, startNodeRelay, startHaproxy, startProxy, startSocat, type Service, type TargetName } from './lib/services.ts';
import { round } from './lib/stats.ts';
import { CFG, OUT, SCENARIOS, TARGETS, keepOutput, log, opts } from './measure/context.ts';
import { measureThroughput } from './measure/throughput.ts';
import { measureLatency } from './measure/latency.ts';
import { measureIdle } from './measure/idle.ts';
import { evaluateTargets, renderTable } from './measure/report.ts';
import type { Results } from './measure/results.ts';

if (opts.help) {
  process.stdout.write(readFileSync(new URL(import.meta.url)).toString().split('*/')[0] + '*/\n');
  process.exit(0);
}

if (opts.micro) {
  const { runMicro } = await import('./micro.ts');
  runMicro();
  process.exit(0);
}

const results: Results = { throughput: {}, latency: {}, fanin: {}, idle: {} };

async function startTarget(name: TargetName, broker: Service): Promise<Service> {
  if (name === 'direct') return directService(broker);
  if (name === 'socat') return startSocat(broker);
  if (name === 'haproxy') return startHaproxy(broker);
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

    if (SCENARIOS.includes('throughput')) await measureThroughput(services, broker, results);
    await measureLatency(services, results, SCENARIOS);
    if (SCENARIOS.includes('idle')) await measureIdle(broker, startTarget, results);
  } finally {
    for (const s of services.values()) {
      await s.stop();
      keepOutput(s);
    }
    await broker.stop();
  }

  const targets = evaluateTargets(results);
  const table = renderTable(results, targets);
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

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
