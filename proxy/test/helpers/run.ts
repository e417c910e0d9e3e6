/** Run a command to its end, output collected; killed (SIGKILL) after timeoutMs. Never rejects on a non-zero exit. */
import { spawn } from 'node:child_process';

export interface Ran { code: number | null; stdout: string; stderr: string }

export function run(cmd: string, args: string[], options: { cwd?: string; timeoutMs?: number } = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: options.timeoutMs ?? 5 * 60_000, killSignal: 'SIGKILL' });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    p.once('error', reject);
    p.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}
