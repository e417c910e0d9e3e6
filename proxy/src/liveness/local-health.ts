/**
 * Correlated verdicts (Lifeguard's local-health awareness): when many connections' silences turn
 * improbable within a short window, a shared path or the proxy's own side has far more likely
 * failed than many independent clients at once. Then TCP-level dead verdicts are held (the
 * connection stays suspect) and re-checked, each for at most maxHoldMs; evidence (an ACK)
 * releases a connection at once; after its hold the verdict stands. One per proxy. Pure.
 *
 * Onsets are counted when a silence becomes improbable on the connection's own link
 * (q^m <= 1%, see verdict-budget.ts), not at the first missed answer: on a lossy fleet first
 * misses are routine and would keep the proxy degraded, and delay every verdict, for ever.
 */

export interface LocalHealthOptions {
  windowMs: number;
  /** Degraded when onsets in the window reach max(minCount, ceil(fraction x open connections)). */
  minCount: number;
  fraction: number;
  maxHoldMs: number;
  /** Window resolution. */
  bucketMs: number;
}

export const DEFAULT_LOCAL_HEALTH: LocalHealthOptions = { windowMs: 3000, minCount: 3, fraction: 0.1, maxHoldMs: 30_000, bucketMs: 100 };

export interface LocalHealthCounters {
  onsets: number;
  /** Times the proxy became degraded. */
  degradedEpisodes: number;
  /** Dead verdicts held; released by evidence; that stood after their hold. */
  held: number;
  released: number;
  expired: number;
}

export type LocalHealthListener = (degraded: boolean, info: { onsetsInWindow: number; threshold: number; heldNow: number }) => void;

export class LocalHealth {
  readonly maxHoldMs: number;
  readonly counters: LocalHealthCounters = { onsets: 0, degradedEpisodes: 0, held: 0, released: 0, expired: 0 };
  /** Open connections, kept by the caller (the threshold scales with it). */
  openConnections = 0;
  /** Dead verdicts held right now. */
  heldNow = 0;
  private degraded = false;
  private lastTriggerAt = -Infinity;
  // Ring of onset counts per bucket; bucketStart[i] says which bucket index i currently holds.
  private readonly counts: Uint32Array;
  private readonly bucketIds: Float64Array;

  constructor(
    private readonly opts: LocalHealthOptions = DEFAULT_LOCAL_HEALTH,
    private readonly onChange: LocalHealthListener | null = null,
  ) {
    if (!(opts.windowMs > 0 && opts.bucketMs > 0 && opts.maxHoldMs >= 0)) throw new Error('local health: windowMs, bucketMs > 0 and maxHoldMs >= 0 required');
    this.maxHoldMs = opts.maxHoldMs;
    const n = Math.ceil(opts.windowMs / opts.bucketMs) + 1;
    this.counts = new Uint32Array(n);
    this.bucketIds = new Float64Array(n).fill(-1);
  }

  threshold(): number {
    return Math.max(this.opts.minCount, Math.ceil(this.opts.fraction * this.openConnections));
  }

  /** A connection's silence became improbable at `at` (<= now). Onsets older than the window are ignored. */
  noteOnset(at: number, now: number): void {
    this.counters.onsets++;
    if (at < now - this.opts.windowMs || at > now) at = Math.min(Math.max(at, now - this.opts.windowMs), now);
    const id = Math.floor(at / this.opts.bucketMs);
    const i = id % this.counts.length;
    if (this.bucketIds[i] !== id) {
      this.bucketIds[i] = id;
      this.counts[i] = 0;
    }
    this.counts[i]++;
    this.update(now);
  }

  onsetsInWindow(now: number): number {
    const from = Math.floor((now - this.opts.windowMs) / this.opts.bucketMs);
    const to = Math.floor(now / this.opts.bucketMs);
    let sum = 0;
    for (let i = 0; i < this.counts.length; i++) {
      const id = this.bucketIds[i];
      if (id >= from && id <= to) sum += this.counts[i];
    }
    return sum;
  }

  /** Whether a TCP-level dead verdict reached now should be held (never with maxHoldMs 0: holds off). */
  shouldHold(now: number): boolean {
    this.update(now);
    return this.degraded && this.maxHoldMs > 0;
  }

  isDegraded(now: number): boolean {
    this.update(now);
    return this.degraded;
  }

  noteHeld(): void {
    this.counters.held++;
    this.heldNow++;
  }

  /** A held connection showed evidence (or closed for another reason). */
  noteReleased(): void {
    this.counters.released++;
    this.heldNow = Math.max(0, this.heldNow - 1);
  }

  /** A hold ran out: the verdict stands. */
  noteHoldExpired(): void {
    this.counters.expired++;
    this.heldNow = Math.max(0, this.heldNow - 1);
  }

  /**
   * Enter when the window reaches the threshold. Leave when the window has been below it for a
   * whole window and nothing is held any more, or maxHoldMs after the last trigger at the latest
   * (each connection's hold is bounded by maxHoldMs anyway).
   */
  private update(now: number): void {
    const inWindow = this.onsetsInWindow(now);
    const threshold = this.threshold();
    if (inWindow >= threshold) {
      this.lastTriggerAt = now;
      if (!this.degraded) {
        this.degraded = true;
        this.counters.degradedEpisodes++;
        this.onChange?.(true, { onsetsInWindow: inWindow, threshold, heldNow: this.heldNow });
      }
      return;
    }
    if (!this.degraded) return;
    const quiet = now - this.lastTriggerAt;
    if ((quiet >= this.opts.windowMs && this.heldNow === 0) || quiet >= this.opts.maxHoldMs) {
      this.degraded = false;
      this.onChange?.(false, { onsetsInWindow: inWindow, threshold, heldNow: this.heldNow });
    }
  }
}
