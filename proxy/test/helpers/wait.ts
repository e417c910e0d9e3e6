/**
 * Poll until a value is there: one helper for the tests that wait on something outside their
 * process (a scrape, a webhook receiver, Prometheus). Deadlines are monotonic, so a wall-clock
 * step on the machine neither cuts a wait short nor stretches it.
 */

export interface WaitOptions {
  /** Between two calls of fn (default 100 ms). */
  intervalMs?: number;
  /** Added to the timeout error (logs of the processes waited on). */
  context?: () => string;
}

/** Call fn until it returns something other than undefined, false or null, and return that. */
export async function waitFor<T>(what: string, fn: () => T | undefined | false | null | Promise<T | undefined | false | null>, timeoutMs: number, { intervalMs = 100, context = () => '' }: WaitOptions = {}): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false && v !== null) return v;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${context()}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
