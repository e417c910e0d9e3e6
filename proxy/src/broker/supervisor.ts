/**
 * The bundled broker: Mosquitto spawned from broker/mosquitto.conf when it is
 * installed, or the embedded Aedes broker otherwise. A spawned broker that
 * dies is restarted with backoff.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import type { Logger } from 'pino';
import type { Config } from '../config/types.ts';
import { waitForPort } from '../net/tcp-probe.ts';
import { PACKAGE_ROOT } from '../package.ts';

export interface BrokerHandle {
  kind: 'mosquitto' | 'embedded';
  /** The spawned process id (Mosquitto only). */
  pid(): number | undefined;
  stop(): Promise<void>;
}

/** Debian installs Mosquitto in /usr/sbin, which is not on every user's PATH. */
export function findExecutable(name: string): string | null {
  if (name.includes('/')) return isExecutable(name) ? name : null;
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  return null;
}

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export async function startBroker(config: Config, log: Logger): Promise<BrokerHandle | null> {
  if (config.broker === 'none') return null;
  const upstream = config.upstream;
  if (config.broker === 'embedded') return startEmbedded(upstream.host, upstream.port, log, 'selected');
  const binary = findExecutable(config.mosquittoBinary);
  if (!binary) {
    if (config.broker === 'mosquitto') throw new Error(`broker: mosquitto was selected but ${config.mosquittoBinary} is not on PATH`);
    return startEmbedded(upstream.host, upstream.port, log, 'mosquitto not found on PATH');
  }
  const conf = path.resolve(PACKAGE_ROOT, config.mosquittoConfig);
  const handle = superviseMosquitto(binary, conf, log);
  await waitForPort(upstream, 10_000);
  return handle;
}

async function startEmbedded(host: string, port: number, log: Logger, why: string): Promise<BrokerHandle> {
  const { startEmbeddedBroker } = await import('./embedded.ts'); // Aedes: only when it is used
  const broker = await startEmbeddedBroker(host, port);
  log.info({ broker: 'embedded', address: `${host}:${broker.address.port}`, why }, 'started the embedded broker (Aedes)');
  return { kind: 'embedded', pid: () => undefined, stop: () => broker.close() };
}

function superviseMosquitto(binary: string, conf: string, log: Logger): BrokerHandle {
  let child: ChildProcess | null = null;
  let stopping = false;
  let backoffMs = 500;
  let restartTimer: NodeJS.Timeout | null = null;

  const start = (): void => {
    const startedAt = performance.now(); // monotonic: how long it ran, whatever the wall clock does
    // Its own process group: a Ctrl-C in the terminal reaches the proxy, which then
    // stops the broker in order (clients told first), instead of both dying at once.
    const proc = spawn(binary, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    child = proc;
    log.info({ broker: 'mosquitto', pid: proc.pid, binary, config: conf }, 'started Mosquitto');
    for (const stream of [proc.stdout, proc.stderr]) {
      readline.createInterface({ input: stream }).on('line', (line) => log.debug({ broker: 'mosquitto' }, line));
    }
    proc.on('error', (err) => log.error({ broker: 'mosquitto', err: err.message }, 'cannot run Mosquitto'));
    proc.on('exit', (code, signal) => {
      child = null;
      if (stopping) return;
      if (performance.now() - startedAt > 60_000) backoffMs = 500;
      log.error({ broker: 'mosquitto', code, signal, restartInMs: backoffMs }, 'Mosquitto exited; restarting');
      restartTimer = setTimeout(start, backoffMs);
      backoffMs = Math.min(backoffMs * 2, 30_000);
    });
  };
  start();
  // If the proxy exits without stop() (a crash), the broker must not outlive it.
  const killOnExit = (): void => { child?.kill('SIGKILL'); };
  process.once('exit', killOnExit);

  return {
    kind: 'mosquitto',
    pid: () => child?.pid,
    stop: async () => {
      stopping = true;
      process.off('exit', killOnExit);
      if (restartTimer) clearTimeout(restartTimer);
      const proc = child;
      if (!proc) return;
      await new Promise<void>((resolve) => {
        const kill = setTimeout(() => proc.kill('SIGKILL'), 5000);
        proc.once('exit', () => { clearTimeout(kill); resolve(); });
        proc.kill('SIGTERM');
      });
    },
  };
}
