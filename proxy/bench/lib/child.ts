/** A load-generator child process (loadgen.ts) driven over IPC. */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { ChildMessage, ParentMessage, Role } from '../loadgen.ts';
import { ROOT } from './services.ts';

type Ev = ChildMessage['ev'];
type Of<E extends Ev> = Extract<ChildMessage, { ev: E }>;

export class LoadChild {
  private readonly proc: ChildProcess;
  private readonly queue: ChildMessage[] = [];
  private readonly waiting: Array<{ ev: Ev; resolve: (m: ChildMessage) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }> = [];
  private exited = false;
  private stderr = '';

  constructor(readonly role: Role) {
    this.proc = fork(path.join(ROOT, 'proxy/bench/loadgen.ts'), [], {
      cwd: ROOT,
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
    });
    this.proc.stderr!.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-4000);
    });
    this.proc.on('message', (m: ChildMessage) => this.deliver(m));
    this.proc.once('exit', (code, signal) => {
      this.exited = true;
      // Messages sent just before exiting may still be on their way.
      setTimeout(() => {
        const err = new Error(`load generator (${role.role}) exited (${code ?? signal}) ${this.stderr}`);
        for (const w of this.waiting.splice(0)) {
          clearTimeout(w.timer);
          w.reject(err);
        }
      }, 200);
    });
    this.proc.send({ cmd: 'start', role } satisfies ParentMessage);
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  private deliver(m: ChildMessage): void {
    if (m.ev === 'error') {
      const err = new Error(`load generator (${this.role.role}): ${m.message}`);
      for (const w of this.waiting.splice(0)) {
        clearTimeout(w.timer);
        w.reject(err);
      }
      return;
    }
    const i = this.waiting.findIndex((w) => w.ev === m.ev);
    if (i >= 0) {
      const w = this.waiting.splice(i, 1)[0];
      clearTimeout(w.timer);
      w.resolve(m);
    } else {
      this.queue.push(m);
    }
  }

  next<E extends Ev>(ev: E, timeoutMs = 60_000): Promise<Of<E>> {
    const i = this.queue.findIndex((m) => m.ev === ev);
    if (i >= 0) return Promise.resolve(this.queue.splice(i, 1)[0] as Of<E>);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const k = this.waiting.findIndex((w) => w.timer === timer);
        if (k >= 0) this.waiting.splice(k, 1);
        reject(new Error(`load generator (${this.role.role}): no ${ev} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.push({ ev, resolve: resolve as (m: ChildMessage) => void, reject, timer });
    });
  }

  send(cmd: Exclude<ParentMessage['cmd'], 'start'>): void {
    // A child that exits after this check makes the write fail (EPIPE): with a callback that
    // error is passed here instead of emitted as an unhandled 'error' that ends the bench.
    if (!this.exited && this.proc.connected) this.proc.send({ cmd } satisfies ParentMessage, (err) => {
      if (err) this.stderr = `${this.stderr}\n(send ${cmd}: ${err.message})`.slice(-4000);
    });
  }

  async sample(): Promise<Of<'sample'>> {
    const p = this.next('sample', 10_000);
    this.send('sample');
    return p;
  }

  /** Ask it to stop, and kill it (by its pid) if it has not exited after graceMs. */
  async stop(graceMs = 5000): Promise<Of<'done'> | null> {
    if (this.exited) return null;
    const done = this.next('done', graceMs).catch(() => null);
    const exited = new Promise<void>((resolve) => this.proc.once('exit', () => resolve()));
    this.send('stop');
    const result = await done;
    const t = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(t);
    return result;
  }
}
