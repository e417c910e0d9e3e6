/**
 * A real Mosquitto (Debian's) for a test, on a free loopback port, with its
 * log captured so tests can read what the broker saw.
 */
import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { findExecutable } from '../src/broker/supervisor.ts';
import { listen } from '../src/net/listen.ts';
import { waitForPort } from '../src/net/tcp-probe.ts';
import { spawnCaptured } from './child.ts';

export interface Mosquitto {
  host: string;
  port: number;
  url: string;
  proc: ChildProcess;
  /** Everything the broker logged so far. */
  log(): string;
  stop(): Promise<void>;
}

/** A port free on `host` now (the kernel picks it; closed again at once). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const s = net.createServer();
  const { port } = await listen(s, { host, port: 0 });
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

export async function startMosquitto(options: { host?: string; port?: number; extraConfig?: string[] } = {}): Promise<Mosquitto> {
  const binary = findExecutable('mosquitto');
  if (!binary) throw new Error('mosquitto is not installed (apt-get install -y mosquitto mosquitto-clients)');
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? (await freePort(host));
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
    ...(options.extraConfig ?? []),
    '',
  ].join('\n'));
  // Killed if the test process dies first (tap's timeout): no broker left behind.
  const { proc, output, exited } = spawnCaptured(binary, ['-c', conf]);
  try {
    await waitForPort({ host, port }, 10_000);
  } catch (err) {
    proc.kill('SIGKILL');
    throw new Error(`mosquitto did not start: ${(err as Error).message}\n${output()}`);
  }
  return {
    host,
    port,
    url: `mqtt://${host}:${port}`,
    proc,
    log: () => {
      try {
        return readFileSync(logFile, 'utf8') + output();
      } catch {
        return output();
      }
    },
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
