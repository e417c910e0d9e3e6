/**
 * The processes under test, each on a free loopback port: Mosquitto, the proxy
 * (its own process, started the way its bin starts it), a minimal Node pipe
 * relay, socat and HAProxy. Every process is ended by its own pid.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileLimits, treeTicks } from './proc.ts';
// One free-port helper for tests and benchmarks.
import { freePort } from '../../harness/mosquitto.ts';
import { findExecutable } from '../../src/broker/supervisor.ts';
import { waitForPort as waitForTcp } from '../../src/net/tcp-probe.ts';
import { PACKAGE_ROOT } from '../../src/package.ts';

export { freePort };

export const ROOT = PACKAGE_ROOT;

export type TargetName = 'direct' | 'node-relay' | 'socat' | 'haproxy' | 'proxy';

export interface Service {
  name: string;
  host: string;
  port: number;
  /** The process to account CPU and memory to (none for direct). */
  pid: number | null;
  /** Count CPU over the whole process tree (socat forks per connection). */
  tree: boolean;
  proc: ChildProcess | null;
  output(): string;
  stop(): Promise<void>;
}


/** Resolve once host:port accepts connections; fail early if `proc` exits first. */
export function waitForPort(host: string, port: number, timeoutMs: number, proc?: ChildProcess): Promise<void> {
  return waitForTcp({ host, port }, timeoutMs, () => (proc && proc.exitCode !== null ? `process exited with code ${proc.exitCode}` : null));
}

function capture(proc: ChildProcess): () => string {
  let out = '';
  const add = (d: Buffer): void => {
    out += d.toString();
    if (out.length > 100_000) out = out.slice(-50_000);
  };
  proc.stdout?.on('data', add);
  proc.stderr?.on('data', add);
  return () => out;
}

/** SIGTERM, then SIGKILL after `graceMs`; descendants (socat's forks) get the same. */
async function stopProcess(proc: ChildProcess, graceMs = 15_000, withChildren = false): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const children = withChildren && proc.pid ? [...treeTicks(proc.pid).keys()].filter((p) => p !== proc.pid) : [];
  proc.kill('SIGTERM');
  for (const pid of children) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
  const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

function service(name: string, host: string, port: number, proc: ChildProcess, tree: boolean, cleanup?: () => void, graceMs?: number): Service {
  const output = capture(proc);
  return {
    name,
    host,
    port,
    pid: proc.pid ?? null,
    tree,
    proc,
    output,
    async stop() {
      await stopProcess(proc, graceMs, tree);
      cleanup?.();
    },
  };
}

export interface MosquittoInfo {
  fileLimits: { soft: number; hard: number };
  raised: string;
}

/**
 * Mosquitto with no connection limit and only errors logged. Its open-files
 * limit is raised with prlimit when the hard limit allows more than it has.
 */
export async function startMosquitto(host = '127.0.0.1', extraConfig: string[] = []): Promise<Service & { info: MosquittoInfo }> {
  const binary = findExecutable('mosquitto');
  if (!binary) throw new Error('mosquitto is not installed');
  const port = await freePort(host);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-bench-mosquitto-'));
  const conf = path.join(dir, 'mosquitto.conf');
  writeFileSync(conf, [
    'per_listener_settings false',
    `listener ${port} ${host}`,
    'allow_anonymous true',
    'persistence false',
    'max_connections -1',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    ...extraConfig,
    '',
  ].join('\n'));
  // The soft limit can only be raised up to the hard one without CAP_SYS_RESOURCE.
  const mine = fileLimits();
  const proc = spawn(binary, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  const svc = service('mosquitto', host, port, proc, false, () => rmSync(dir, { recursive: true, force: true }));
  await waitForPort(host, port, 10_000, proc);
  let raised = 'not needed';
  if (mine.soft < mine.hard) {
    const r = spawn('prlimit', [`--pid=${proc.pid}`, `--nofile=${mine.hard}:${mine.hard}`], { stdio: 'ignore' });
    const code = await new Promise<number | null>((resolve) => r.once('exit', resolve));
    raised = code === 0 ? `raised to ${mine.hard}` : `prlimit failed (${code})`;
  }
  return { ...svc, info: { fileLimits: fileLimits(proc.pid), raised } };
}

export function directService(broker: Service): Service {
  return { name: 'direct', host: broker.host, port: broker.port, pid: null, tree: false, proc: null, output: () => '', stop: async () => {} };
}

export async function startNodeRelay(upstream: Service, options: { nodeFlags?: string[]; host?: string; script?: string } = {}): Promise<Service> {
  const host = options.host ?? '127.0.0.1';
  const port = await freePort(host);
  const proc = spawn(process.execPath, [...(options.nodeFlags ?? []), '--import', 'tsx', path.resolve(ROOT, options.script ?? 'proxy/bench/relay.ts'), '--listen', `${host}:${port}`, '--upstream', `${upstream.host}:${upstream.port}`], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const svc = service('node-relay', host, port, proc, false);
  await waitForPort(host, port, 20_000, proc);
  return svc;
}

export async function startSocat(upstream: Service, host = '127.0.0.1'): Promise<Service> {
  const binary = findExecutable('socat');
  if (!binary) throw new Error('socat is not installed');
  const port = await freePort(host);
  const proc = spawn(binary, [`TCP-LISTEN:${port},bind=${host},fork,reuseaddr,nodelay,backlog=4096`, `TCP:${upstream.host}:${upstream.port},nodelay`], { stdio: ['ignore', 'pipe', 'pipe'] });
  const svc = service('socat', host, port, proc, true);
  await waitForPort(host, port, 10_000, proc);
  return svc;
}

/**
 * Debian's HAProxy as a plain TCP relay: one thread, no keep-alive probes (a
 * throughput anchor, not a liveness one), Nagle off both ways like the others.
 */
export async function startHaproxy(upstream: Service, host = '127.0.0.1'): Promise<Service> {
  const binary = findExecutable('haproxy');
  if (!binary) throw new Error('haproxy is not installed');
  const port = await freePort(host);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-bench-haproxy-'));
  const cfg = path.join(dir, 'haproxy.cfg');
  writeFileSync(cfg, [
    'global',
    '  nbthread 1',
    '  maxconn 4000',
    'defaults',
    '  mode tcp',
    '  timeout connect 5s',
    // Beyond any run: only the clients end a session.
    '  timeout client 1h',
    '  timeout server 1h',
    'frontend mqtt',
    `  bind ${host}:${port}`,
    '  default_backend broker',
    'backend broker',
    `  server mosquitto ${upstream.host}:${upstream.port}`,
    '',
  ].join('\n'));
  const proc = spawn(binary, ['-db', '-f', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  const svc = service('haproxy', host, port, proc, false, () => rmSync(dir, { recursive: true, force: true }));
  await waitForPort(host, port, 10_000, proc);
  return svc;
}

export const PROXY_BIN = path.join(ROOT, 'proxy/bin/mqtt-liveness-proxy.js');

/**
 * The node flags the bin's shebang carries (`#!/usr/bin/env -S node FLAGS`), so
 * the bench runs the proxy with exactly the flags a user's launch gets, plus its own.
 */
export function binNodeFlags(bin = PROXY_BIN): string[] {
  const first = readFileSync(bin, 'utf8').split('\n', 1)[0];
  const m = /^#!\S*env -S node((?: \S+)*)\s*$/.exec(first);
  return m ? m[1].split(' ').filter(Boolean) : [];
}

/** The proxy as shipped (bin -> dist/cli with the bin's node flags), with optional extra node flags (--cpu-prof). */
export async function startProxy(upstream: Service, options: { nodeFlags?: string[]; host?: string; extraArgs?: string[] } = {}): Promise<Service> {
  const host = options.host ?? '127.0.0.1';
  const port = await freePort(host);
  const admin = await freePort(host);
  const proc = spawn(process.execPath, [
    ...binNodeFlags(),
    ...(options.nodeFlags ?? []),
    PROXY_BIN,
    '--listen', `${host}:${port}`,
    '--upstream', `${upstream.host}:${upstream.port}`,
    '--admin', `${host}:${admin}`,
    '--broker', 'none',
    '--log-level', 'warn',
    ...(options.extraArgs ?? []),
  ], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const svc = service('proxy', host, port, proc, false, undefined, 30_000);
  await waitForPort(host, port, 20_000, proc);
  return svc;
}
