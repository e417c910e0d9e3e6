/** Idle scale: thousands of idle clients through each target; connect rate, memory and CPU at rest. */
import { readFileSync } from 'node:fs';
import { CpuSnapshot, ForeignLoad, clockTicks, openFiles, statusKb, userSystemTicks } from '../lib/proc.ts';
import { LoadChild } from '../lib/child.ts';
import { directService, type Service, type TargetName } from '../lib/services.ts';
import type { IdleConnected } from '../loadgen.ts';
import { CFG, CORES, TARGETS, keepOutput, log, opts, sleep } from './context.ts';
import { quietMoment } from './quiet.ts';
import type { IdleResult, Results } from './results.ts';

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
    const foreignConnect = new ForeignLoad(CORES);
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
      const foreignRest = new ForeignLoad(CORES);
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

/** Fresh processes per target (startTarget); fills results.idle. */
export async function measureIdle(broker: Service, startTarget: (name: TargetName, broker: Service) => Promise<Service>, results: Results): Promise<void> {
  // Fresh processes, so memory growth is measured from a clean start; socat would fork 9,000 processes,
  // and HAProxy at 9,000 connections would need more than the 20,000 open files allowed here.
  for (const name of TARGETS.filter((t) => t !== 'socat' && t !== 'haproxy')) {
    log(`idle ${CFG.idleClients} clients -> ${name}${await quietMoment()}`);
    const svc = name === 'direct' ? directService(broker) : await startTarget(name, broker);
    // Its own pid, for perf or strace during the rest (the pid logged at start is the other process).
    if (svc.pid !== null && name !== 'direct') log(`  ${name}: fresh process pid ${svc.pid}`);
    try {
      const r = await idleScale(svc, name !== 'direct');
      results.idle[name] = r;
      log(`  ${r.connected} ok, ${r.failed} failed; ${Math.round(r.connectRate)}/s; rss ${r.rssPerConnectionKb?.toFixed(2) ?? '-'} KB/conn; rest cpu ${r.restCpuPercent?.toFixed(2) ?? '-'} %`);
    } finally {
      await svc.stop();
      if (name !== 'direct') keepOutput(svc, `idle-${svc.name}`);
    }
    await sleep(2000);
  }
}
