/**
 * Time behind one seam: the real clock for the proxy, a manual one for tests,
 * so deadline logic runs in microseconds under test.
 */
export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Monotonic milliseconds. */
  now(): number;
  /** Wall-clock milliseconds since the epoch, for timestamps in events. */
  wallNow(): number;
  setTimer(fn: () => void, delayMs: number): Timer;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  wallNow: () => Date.now(),
  setTimer(fn, delayMs) {
    return new SystemTimer(setTimeout(fn, Math.max(0, Math.ceil(delayMs))));
  },
};

/** One small object per armed timer (a closure and an object per arm cost ~80 B more per idle connection). */
class SystemTimer implements Timer {
  constructor(private readonly handle: NodeJS.Timeout) {}

  cancel(): void {
    clearTimeout(this.handle);
  }
}

/** A clock that only moves when told to. */
export class ManualClock implements Clock {
  private current = 0;
  private readonly timers = new Set<{ at: number; fn: () => void }>();

  constructor(private readonly epoch = 1_700_000_000_000) {}

  now(): number {
    return this.current;
  }

  wallNow(): number {
    return this.epoch + this.current;
  }

  setTimer(fn: () => void, delayMs: number): Timer {
    const entry = { at: this.current + Math.max(0, delayMs), fn };
    this.timers.add(entry);
    return { cancel: () => this.timers.delete(entry) };
  }

  /** Move time forward, firing due timers in order. */
  advance(ms: number): void {
    const target = this.current + ms;
    for (;;) {
      let next: { at: number; fn: () => void } | undefined;
      for (const t of this.timers) if (t.at <= target && (!next || t.at < next.at)) next = t;
      if (!next) break;
      this.timers.delete(next);
      this.current = next.at;
      next.fn();
    }
    this.current = target;
  }

  get pending(): number {
    return this.timers.size;
  }
}
