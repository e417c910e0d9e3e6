/**
 * A real Mosquitto (Debian's) for a test, on a free loopback port, with its
 * log captured so tests can read what the broker saw.
 */
import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { findExecutable } from '../src/broker/supervisor.ts';
import { waitForPort } from '../src/net/tcp-probe.ts';
import { spawnCaptured } from './child.ts';
import { reservedPort } from './ports.ts';

export { closedPort } from './ports.ts';

export interface Mosquitto {
  host: string;
  port: number;
  url: string;
  proc: ChildProcess;
  /** Everything the broker logged so far. */
  log(): string;
  stop(): Promise<void>;
}

/**
 * A port for a server of this test: reserved for the life of this process
 * (see ports.ts), so a test file running in parallel is never given it, even
 * between restarts on it. Async for the callers written before the reservation.
 */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return Promise.resolve(reservedPort(host));
}

export async function startMosquitto(options: { host?: string; port?: number; extraConfig?: string[] } = {}): Promise<Mosquitto> {
  const binary = findExecutable('mosquitto');
  if (!binary) throw new Error('mosquitto is not installed (apt-get install -y mosquitto mosquitto-clients)');
  const host = options.host ?? '127.0.0.1';
  // A port given by the caller is tried once; a port of our own is retried on EADDRINUSE
  // (it cannot be taken while reserved, but a process outside the tests may bind anything).
  for (let attempt = 1; ; attempt++) {
    const port = options.port ?? (await freePort(host));
    try {
      return await launch(binary, host, port, options.extraConfig ?? []);
    } catch (err) {
      if (options.port !== undefined || attempt >= 3 || !/Address already in use/i.test((err as Error).message)) throw err;
    }
  }
}

async function launch(binary: string, host: string, port: number, extraConfig: string[]): Promise<Mosquitto> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-mosquitto-'));
  const conf = path.join(dir, 'mosquitto.conf');
  // A log file, not stdout: Mosquitto's stdout to a pipe is block-buffered.
  const logFile = path.join(dir, 'mosquitto.log');
  // Mosquitto started as root drops to its own user before opening the log.
  chmodSync(dir, 0o755);
  writeFileSync(logFile, '');
  chmodSync(logFile, 0o666);
  writeFileSync(conf, [
    `listener ${port} ${host}`,
    'allow_anonymous true',
    `log_dest file ${logFile}`,
    'log_type all',
    'connection_messages true',
    ...extraConfig,
    '',
  ].join('\n'));
  const readLog = (): string => {
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  // Killed if the test process dies first (tap's timeout): no broker left behind.
  const { proc, output, exited } = spawnCaptured(binary, ['-c', conf]);
  try {
    await Promise.race([
      waitForPort({ host, port }, 10_000),
      exited.then(() => { throw new Error('exited'); }),
    ]);
  } catch (err) {
    proc.kill('SIGKILL');
    await exited;
    const said = readLog() + output();
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`mosquitto did not start on ${host}:${port}: ${(err as Error).message}\n${said}`, { cause: err });
  }
  return {
    host,
    port,
    url: `mqtt://${host}:${port}`,
    proc,
    log: () => readLog() + output(),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGCONT');
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
