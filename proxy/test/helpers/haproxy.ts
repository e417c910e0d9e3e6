/**
 * A real HAProxy (Debian's) for a test, in the foreground with its log on
 * stdout, so tests can read what it saw (%ci:%cp of an accept-proxy frontend).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { findExecutable } from '../../src/broker/supervisor.ts';
import { waitForPort } from '../../src/net/tcp-probe.ts';
import { spawnCaptured } from './child.ts';

export interface Haproxy {
  /** Everything HAProxy logged so far. */
  log(): string;
  stop(): Promise<void>;
}

/** `sections` are frontends/backends; waits for every port in `ports` to accept. */
export async function startHaproxy(sections: string, ports: number[]): Promise<Haproxy> {
  const binary = findExecutable('haproxy');
  if (!binary) throw new Error('haproxy is not installed (apt-get install -y haproxy)');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-haproxy-'));
  const conf = path.join(dir, 'haproxy.cfg');
  writeFileSync(conf, [
    'global',
    '  log stdout format raw local0 info',
    'defaults',
    '  mode tcp',
    '  log global',
    '  timeout connect 5s',
    '  timeout client 60s',
    '  timeout server 60s',
    sections,
    '',
  ].join('\n'));
  const { proc, output, exited } = spawnCaptured(binary, ['-db', '-f', conf]);
  try {
    for (const port of ports) await waitForPort({ host: '127.0.0.1', port }, 10_000);
  } catch (err) {
    proc.kill('SIGKILL');
    throw new Error(`haproxy did not start: ${(err as Error).message}\n${output()}`, { cause: err });
  }
  return {
    log: output,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * HAProxy with an accept-proxy frontend in front of a broker: it logs, for each connection, the
 * client address it took from the PROXY header ("MLP-SEEN <client ip:port> -> <frontend ip:port>").
 */
export async function startAcceptProxyFront(brokerPort: number, front: number): Promise<Haproxy> {
  return startHaproxy([
    '  log-format "MLP-SEEN %ci:%cp -> %fi:%fp"',
    `frontend pp\n  bind 127.0.0.1:${front} accept-proxy\n  default_backend broker`,
    `backend broker\n  server m 127.0.0.1:${brokerPort}`,
  ].join('\n'), [front]);
}
