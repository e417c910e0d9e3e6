/**
 * A child process for tests: its stdout and stderr captured together, a
 * promise of its exit, and a SIGKILL when the test process exits first (tap's
 * timeout), so no broker or Prometheus is left behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';

export interface CapturedChild {
  proc: ChildProcess;
  /** Everything it has written to stdout and stderr so far. */
  output: () => string;
  /** Resolves when it exits. */
  exited: Promise<void>;
}

export function spawnCaptured(binary: string, args: string[]): CapturedChild {
  const proc = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (d: Buffer) => { output += d.toString(); });
  proc.stderr.on('data', (d: Buffer) => { output += d.toString(); });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const killOnExit = (): void => { proc.kill('SIGKILL'); };
  process.once('exit', killOnExit);
  void exited.then(() => process.off('exit', killOnExit));
  return { proc, output: () => output, exited };
}
