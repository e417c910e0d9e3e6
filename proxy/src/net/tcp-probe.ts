/**
 * Does something accept TCP connections at host:port? Connect, then close at
 * once. The one probe behind the admin server's readiness, the broker
 * supervisor's wait, the upstream check and the benchmarks.
 */
import net from 'node:net';
import type { HostPort } from '../config/types.ts';

export interface TcpProbeResult {
  ok: boolean;
  /** Time to the answer, ms. */
  ms: number;
  /** Why not: an errno code, or 'timeout'. */
  error?: string;
}

export interface TcpProbeOptions {
  timeoutMs: number;
  /**
   * Hold an accepted connection this long before it counts: a listener going
   * away resets it meanwhile (see upstream-check.ts). 0: count at once.
   */
  settleMs?: number;
}

export function probeTcp({ host, port }: HostPort, { timeoutMs, settleMs = 0 }: TcpProbeOptions): Promise<TcpProbeResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    let settle: NodeJS.Timeout | undefined;
    let answered = false;
    const done = (ok: boolean, error?: string): void => {
      if (answered) return;
      answered = true;
      clearTimeout(timer);
      clearTimeout(settle);
      socket.destroy();
      resolve({ ok, ms: performance.now() - started, ...(error ? { error } : {}) });
    };
    const timer = setTimeout(() => done(false, 'timeout'), timeoutMs);
    socket.once('connect', () => {
      if (settleMs <= 0) return done(true);
      clearTimeout(timer);
      settle = setTimeout(() => done(true), settleMs);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => done(false, err.code ?? err.message)); // refused, or reset by a listener going away
    socket.once('close', () => done(true)); // closed without an error after connecting: something there answered
  });
}

/**
 * Resolve once host:port accepts connections; reject after timeoutMs, or as
 * soon as `gone()` returns a reason (a child process that exited).
 */
export async function waitForPort(target: HostPort, timeoutMs: number, gone: () => string | null = () => null): Promise<void> {
  // Monotonic: a wall-clock step (NTP, a resumed VM) must neither cut the wait short nor stretch it.
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const reason = gone();
    if (reason) throw new Error(`${reason} before listening on ${target.host}:${target.port}`);
    if ((await probeTcp(target, { timeoutMs: 1000 })).ok) return;
    if (performance.now() > deadline) throw new Error(`nothing accepts connections on ${target.host}:${target.port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
