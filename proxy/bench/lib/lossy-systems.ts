/**
 * The three systems the lossy-link bench compares, each started inside its own
 * server namespace: Mosquitto alone (clients connect to it directly), HAProxy
 * (TCP mode, clitcpka 5 s / 1 s x 3) in front of Mosquitto, and the proxy's
 * real CLI with its defaults in front of Mosquitto. Clients always reach port
 * 1883 of the namespace; observers and publishers reach the broker itself over
 * the namespace's loopback at `brokerPort`.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { ROOT } from './services.ts';
import type { Namespace } from './lossy-link.ts';

export const SYSTEMS = ['mosquitto', 'haproxy', 'proxy'] as const;
export type SystemName = (typeof SYSTEMS)[number];
export const SYSTEM_LABEL: Record<SystemName, string> = {
  mosquitto: 'Mosquitto alone',
  haproxy: 'HAProxy clitcpka 5/1/3',
  proxy: 'proxy (defaults)',
};

export const CLIENT_PORT = 1883;

/** One line a front (proxy or HAProxy) logged about a connection end. */
export interface FrontEnd {
  at: number;
  /** Proxy: the verdict reason; HAProxy: the two-letter termination state. */
  reason: string;
  clientId?: string;
  source?: string;
  detail?: string;
}

export interface RunningSystem {
  name: SystemName;
  brokerPort: number;
  /** Connection ends the front reported so far (none for Mosquitto alone). */
  ends: FrontEnd[];
  /** Client ids Mosquitto itself disconnected for exceeding 1.5 x keep-alive. */
  brokerTimeouts(): string[];
  stop(): Promise<void>;
}

async function waitInNamespace(ns: Namespace, port: number, proc: ChildProcess, what: string, output: () => string): Promise<void> {
  // Poll the port from inside the namespace (the bench itself lives outside it).
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${what} exited (${proc.exitCode ?? proc.signalCode}): ${output().slice(-800)}`);
    const ok = await ns.run('bash', ['-c', `exec 3<>/dev/tcp/127.0.0.1/${port}`]).then(() => true, () => false);
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} does not listen on ${port} in ${ns.name}: ${output().slice(-800)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function lines(proc: ChildProcess, onLine: (line: string) => void): () => string {
  let tail = '';
  let buf = '';
  const add = (d: Buffer): void => {
    const text = d.toString();
    tail = (tail + text).slice(-4000);
    const parts = (buf + text).split('\n');
    buf = parts.pop()!;
    for (const p of parts) if (p) onLine(p);
  };
  proc.stdout?.on('data', add);
  proc.stderr?.on('data', (d: Buffer) => { tail = (tail + d.toString()).slice(-4000); });
  return () => tail;
}

async function stopProc(proc: ChildProcess, graceMs = 3000): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const gone = once(proc, 'exit');
  proc.kill('SIGTERM');
  const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(timer);
}

export async function startSystem(name: SystemName, ns: Namespace): Promise<RunningSystem> {
  const dir = mkdtempSync(path.join(os.tmpdir(), `mlp-lossy-${name}-`));
  chmodSync(dir, 0o755); // Mosquitto started as root drops to its own user before opening its log
  const brokerPort = name === 'mosquitto' ? CLIENT_PORT : 1884;
  const logFile = path.join(dir, 'mosquitto.log');
  writeFileSync(logFile, '');
  chmodSync(logFile, 0o666);
  writeFileSync(path.join(dir, 'mosquitto.conf'), [
    'per_listener_settings false',
    name === 'mosquitto' ? `listener ${brokerPort} 0.0.0.0` : `listener ${brokerPort} 127.0.0.1`,
    'allow_anonymous true',
    'persistence false',
    'max_connections -1',
    'max_queued_messages 1000',
    `log_dest file ${logFile}`,
    'log_type error',
    'log_type warning',
    'log_type notice',
    'log_type information',
    'connection_messages true',
    '',
  ].join('\n'));
  const procs: ChildProcess[] = [];
  const ends: FrontEnd[] = [];
  const cleanup = async (): Promise<void> => {
    for (const p of procs.reverse()) await stopProc(p);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const broker = ns.exec('mosquitto', ['-c', path.join(dir, 'mosquitto.conf')]);
    procs.push(broker);
    await waitInNamespace(ns, brokerPort, broker, 'mosquitto', lines(broker, () => {}));
    if (name === 'haproxy') {
      writeFileSync(path.join(dir, 'haproxy.cfg'), [
        'global',
        '  nbthread 1',
        '  maxconn 4000',
        '  log stdout format raw local0',
        'defaults',
        '  mode tcp',
        '  log global',
        '  option tcplog',
        '  timeout connect 5s',
        // Far beyond any MQTT keep-alive: only clitcpka (and the client) end a session.
        '  timeout client 1h',
        '  timeout server 1h',
        'frontend mqtt',
        `  bind 0.0.0.0:${CLIENT_PORT}`,
        '  option clitcpka',
        '  clitcpka-idle 5s',
        '  clitcpka-intvl 1s',
        '  clitcpka-cnt 3',
        '  default_backend broker',
        'backend broker',
        `  server mosquitto 127.0.0.1:${brokerPort}`,
        '',
      ].join('\n'));
      const front = ns.exec('haproxy', ['-db', '-f', path.join(dir, 'haproxy.cfg')]);
      procs.push(front);
      // tcplog: "... src:port [date] fe be/srv Tw/Tc/Tt bytes STATE ac/fc/bc/sc/rc sq/bq"
      const out = lines(front, (line) => {
        const m = /^(\S+):\d+ \[[^\]]+\] \S+ \S+ \S+ \d+ (\S\S) \d+\/\d+\/\d+\/\d+\/\d+ /.exec(line);
        if (m) ends.push({ at: Date.now(), reason: m[2]!, source: m[1] });
      });
      await waitInNamespace(ns, CLIENT_PORT, front, 'haproxy', out);
    } else if (name === 'proxy') {
      // The real CLI with its defaults; info level only adds one line per connection end.
      const front = ns.exec('node', [path.join(ROOT, 'proxy/bin/mqtt-liveness-proxy.js'),
        '--listen', `0.0.0.0:${CLIENT_PORT}`, '--upstream', `127.0.0.1:${brokerPort}`, '--admin', '127.0.0.1:9464',
        '--broker', 'none', '--log-level', 'info'], { cwd: ROOT });
      procs.push(front);
      const out = lines(front, (line) => {
        if (!line.includes('connection_end')) return;
        try {
          const l = JSON.parse(line) as { event?: string; time?: string | number; reason?: string; clientId?: string; detail?: string; remote?: string };
          if (l.event === 'connection_end') ends.push({ at: typeof l.time === 'string' ? Date.parse(l.time) : l.time ?? Date.now(), reason: String(l.reason), clientId: l.clientId, detail: l.detail, source: l.remote?.replace(/:\d+$/, '') });
        } catch { /* not JSON */ }
      });
      await waitInNamespace(ns, CLIENT_PORT, front, 'proxy', out);
    }
  } catch (err) {
    await cleanup();
    throw err;
  }
  return {
    name,
    brokerPort,
    ends,
    brokerTimeouts() {
      try {
        return [...readFileSync(logFile, 'utf8').matchAll(/Client (\S+) has exceeded timeout/g)].map((m) => m[1]!);
      } catch {
        return [];
      }
    },
    stop: cleanup,
  };
}
