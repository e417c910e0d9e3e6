/**
 * Time behind one seam: the real clock for the proxy, a manual one for tests,
 * so deadline logic runs in microseconds under test.
 */
import { DeadlineQueue, QueueSlot, fireDue, type SlotTarget } from './deadline-queue.ts';

export type { SlotTarget };

export interface Timer {
  cancel(): void;
}

/** A timer re-armed in place, one per owner: set() moves its deadline, cancel() stops it. */
export interface TimerSlot {
  /** Fire the target at `at` (the clock's now() milliseconds) instead of any earlier setting. */
  set(at: number): void;
  cancel(): void;
}

export interface Clock {
  /** Monotonic milliseconds. */
  now(): number;
  /** Wall-clock milliseconds since the epoch, for timestamps in events. */
  wallNow(): number;
  setTimer(fn: () => void, delayMs: number): Timer;
  /** A slot for a timer its owner re-arms often (a connection's liveness timer): no allocation per arm. */
  slot(target: SlotTarget): TimerSlot;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  wallNow: () => Date.now(),
  setTimer(fn, delayMs) {
    return new SystemTimer(setTimeout(fn, Math.max(0, Math.ceil(delayMs))));
  },
  slot: (target) => new SystemSlot(target),
};

// Every system slot's deadline in one queue, woken by one node timer set for the earliest.
const queue = new DeadlineQueue();
const due: QueueSlot[] = [];
let wake: NodeJS.Timeout | null = null;
let wakeAt = Infinity;

class SystemSlot extends QueueSlot implements TimerSlot {
  set(at: number): void {
    queue.set(this, at);
    if (at < wakeAt) rearm();
  }

  cancel(): void {
    queue.remove(this);
    // An earlier wake may still fire for nothing; with nothing left it must not keep the process up.
    if (queue.size === 0 && wake !== null) rearm();
  }
}

function rearm(): void {
  if (wake !== null) clearTimeout(wake);
  wakeAt = queue.peekAt();
  wake = wakeAt === Infinity ? null : setTimeout(onWake, Math.max(0, Math.ceil(wakeAt - performance.now())));
}

function onWake(): void {
  wake = null;
  wakeAt = Infinity;
  try {
    fireDue(queue, performance.now(), due);
  } finally {
    rearm();
  }
}

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

  constructor(private epoch = 1_700_000_000_000) {}

  /** Step the wall clock alone (NTP, a resumed VM); the monotonic clock does not move. */
  stepWall(ms: number): void {
    this.epoch += ms;
  }

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

  slot(target: SlotTarget): TimerSlot {
    // Its own timers, one at a time: a deadline in the past fires at the next advance.
    let timer: Timer | null = null;
    const cancel = (): void => {
      timer?.cancel();
      timer = null;
    };
    const set = (at: number): void => {
      cancel();
      if (at === Infinity) return;
      const mine = this.setTimer(() => {
        if (timer === mine) timer = null;
        target.fire();
      }, at - this.current);
      timer = mine;
    };
    return { set, cancel };
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
