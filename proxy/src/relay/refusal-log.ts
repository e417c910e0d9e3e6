/**
 * Logging of refused connections that a flood cannot turn into a log flood:
 * per reason, the first refusal of a window is logged with its source, and
 * the rest are summed into one line when the window ends. A sustained flood
 * costs one line per reason per window.
 */
import type { Logger } from 'pino';
import type { Clock, Timer } from '../liveness/clock.ts';

interface Window {
  suppressed: number;
  timer: Timer;
}

export class RefusalLog {
  private readonly windows = new Map<string, Window>();

  constructor(private readonly log: Logger, private readonly clock: Clock, readonly windowMs = 10_000) {}

  note(reason: string, fields: Record<string, unknown>, message: string): void {
    const open = this.windows.get(reason);
    if (open) {
      open.suppressed++;
      return;
    }
    this.log.warn({ event: 'connection_refused', reason, ...fields }, message);
    this.windows.set(reason, { suppressed: 0, timer: this.clock.setTimer(() => this.flush(reason), this.windowMs) });
  }

  private flush(reason: string): void {
    const w = this.windows.get(reason);
    if (!w) return;
    if (w.suppressed === 0) {
      this.windows.delete(reason);
      return;
    }
    this.log.warn(
      { event: 'connection_refused', reason, suppressed: w.suppressed, windowSeconds: this.windowMs / 1000 },
      `${w.suppressed} more connections refused (${reason}) in the last ${this.windowMs / 1000} s`,
    );
    // Still refusing: keep the window open so the next line is a window later.
    w.suppressed = 0;
    w.timer = this.clock.setTimer(() => this.flush(reason), this.windowMs);
  }

  /** Log what is pending and stop the timers. */
  close(): void {
    for (const [reason, w] of this.windows) {
      w.timer.cancel();
      if (w.suppressed > 0) {
        this.log.warn({ event: 'connection_refused', reason, suppressed: w.suppressed }, `${w.suppressed} more connections refused (${reason})`);
      }
    }
    this.windows.clear();
  }
}
