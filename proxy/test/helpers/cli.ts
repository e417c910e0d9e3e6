/**
 * The CLI as a child process, as a user (or Kubernetes) runs it: its JSON log
 * lines parsed as they come, with the time each arrived.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { PACKAGE_ROOT } from '../../src/package.ts';
import { eventually } from './clients.ts';

export const BIN = path.join(PACKAGE_ROOT, 'proxy/bin/mqtt-liveness-proxy.js');

export type LogLine = Record<string, unknown> & { receivedAt: number };

export interface RunningCli {
  proc: ChildProcess;
  /** Parsed stdout lines; receivedAt is performance.now() in the test process. */
  lines: LogLine[];
  stderr(): string;
  exited: Promise<number | null>;
  /** The first line matching, waiting for it if needed. */
  waitFor(match: (l: LogLine) => boolean, timeoutMs?: number, what?: string): Promise<LogLine>;
}

export function spawnCli(args: string[]): RunningCli {
  const proc = spawn(process.execPath, [BIN, ...args], { cwd: PACKAGE_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: LogLine[] = [];
  let buf = '';
  let err = '';
  proc.stdout.on('data', (d: Buffer) => {
    const parts = (buf + d.toString()).split('\n');
    buf = parts.pop()!;
    const now = performance.now();
    for (const p of parts) if (p) lines.push({ ...(JSON.parse(p) as Record<string, unknown>), receivedAt: now });
  });
  proc.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  // A test that dies must not leave its proxy behind.
  const kill = (): void => { proc.kill('SIGKILL'); };
  process.once('exit', kill);
  void exited.then(() => process.off('exit', kill));
  return {
    proc,
    lines,
    stderr: () => err,
    exited,
    async waitFor(match, timeoutMs = 20_000, what = 'log line') {
      return (await eventually(() => lines.find(match), timeoutMs, `${what} (stderr: ${err.slice(-500)})`))!;
    },
  };
}
