/**
 * Headless Chromium (Debian's `chromium`) driven over the DevTools protocol
 * through --remote-debugging-pipe (fd 3 in, fd 4 out, NUL-terminated JSON), so
 * the browser can run inside a cable's network namespace and still be driven
 * after the cable is pulled: the pipe is not network traffic.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { findExecutable } from '../src/broker/supervisor.ts';
import type { Cable } from './netns.ts';

export interface Chromium {
  /** A CDP command to the browser (no session) or to the page session. */
  send<T = Record<string, unknown>>(method: string, params?: Record<string, unknown>, to?: 'browser' | 'page'): Promise<T>;
  /** Evaluate in the page, awaiting a promise; returns the value or throws the page's exception. */
  evaluate<T>(expression: string): Promise<T>;
  /** Everything the browser wrote on stdout/stderr. */
  output(): string;
  close(): Promise<void>;
}

const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage', '--remote-debugging-pipe', '--disable-features=Translate,MediaRouter'];

export async function launchChromium(options: { cable?: Cable } = {}): Promise<Chromium> {
  const binary = findExecutable('chromium');
  if (!binary) throw new Error('chromium is not installed (apt-get install -y chromium)');
  const profile = mkdtempSync(path.join(os.tmpdir(), 'mlp-chromium-'));
  const args = [...FLAGS, `--user-data-dir=${profile}`, 'about:blank'];
  const stdio: Array<'pipe' | 'ignore'> = ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'];
  const proc: ChildProcess = options.cable ? options.cable.exec(binary, args, { stdio }) : spawn(binary, args, { stdio });
  const killOnExit = (): void => { proc.kill('SIGKILL'); };
  process.once('exit', killOnExit);
  let output = '';
  proc.stdout!.on('data', (d: Buffer) => { output += d.toString(); });
  proc.stderr!.on('data', (d: Buffer) => { output += d.toString(); });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const toBrowser = proc.stdio[3] as Writable;
  const fromBrowser = proc.stdio[4] as Readable;
  toBrowser.on('error', () => {});

  let nextId = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; method: string }>();
  let buffered = '';
  fromBrowser.on('data', (d: Buffer) => {
    buffered += d.toString('utf8');
    for (let end = buffered.indexOf('\0'); end !== -1; end = buffered.indexOf('\0')) {
      const message = JSON.parse(buffered.slice(0, end)) as { id?: number; result?: unknown; error?: { message: string } };
      buffered = buffered.slice(end + 1);
      const waiter = message.id === undefined ? undefined : pending.get(message.id);
      if (!waiter) continue; // events: not needed here
      pending.delete(message.id!);
      if (message.error) waiter.reject(new Error(`${waiter.method}: ${message.error.message}`));
      else waiter.resolve(message.result);
    }
  });
  void exited.then(() => {
    for (const w of pending.values()) w.reject(new Error(`chromium exited during ${w.method}:\n${output.slice(-2000)}`));
    pending.clear();
  });

  // The page session, set once attached below; the browser-level calls before that go without one.
  let sessionId: string | undefined = undefined;
  const send = <T,>(method: string, params: Record<string, unknown> = {}, to: 'browser' | 'page' = 'page'): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject, method });
      toBrowser.write(JSON.stringify({ id, method, params, ...(to === 'page' ? { sessionId } : {}) }) + '\0');
    });

  const started = Date.now();
  let pageTarget: string | undefined;
  while (!pageTarget) {
    if (proc.exitCode !== null) throw new Error(`chromium exited at start:\n${output}`);
    const { targetInfos } = await send<{ targetInfos: Array<{ targetId: string; type: string }> }>('Target.getTargets', {}, 'browser');
    pageTarget = targetInfos.find((t) => t.type === 'page')?.targetId;
    if (!pageTarget) {
      if (Date.now() - started > 20_000) throw new Error(`chromium opened no page:\n${output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  sessionId = (await send<{ sessionId: string }>('Target.attachToTarget', { targetId: pageTarget, flatten: true }, 'browser')).sessionId;

  return {
    send,
    async evaluate<T>(expression: string): Promise<T> {
      const r = await send<{ result: { value?: unknown }; exceptionDetails?: { text: string; exception?: { description?: string; value?: unknown } } }>('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true });
      if (r.exceptionDetails) throw new Error(`page: ${r.exceptionDetails.exception?.description ?? JSON.stringify(r.exceptionDetails.exception?.value) ?? r.exceptionDetails.text}`);
      return r.result.value as T;
    },
    output: () => output,
    async close() {
      if (proc.exitCode === null && proc.signalCode === null) {
        await Promise.race([send('Browser.close', {}, 'browser').catch(() => undefined), new Promise((r) => setTimeout(r, 2000))]);
        const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(t);
      }
      process.off('exit', killOnExit);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
