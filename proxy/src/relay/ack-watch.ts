/**
 * Unacknowledged data to the client, watched by the proxy itself.
 *
 * TCP_USER_TIMEOUT is set on the socket, but the kernel only acts on it when its
 * retransmission timer fires, and that timer is not always clamped to the user
 * timeout: on a 200 ms RTO ladder the abort then comes at 12.6 s instead of 8 s.
 * So once data has been written to the client, the proxy reads TCP_INFO when the
 * user timeout could have passed, and gives the verdict when data is still in
 * flight and nothing was acknowledged for that long.
 *
 * Pure: the caller reads TCP_INFO (or a test feeds it) and owns the timer.
 */
import type { TcpAckState } from '../liveness/tcp-options.ts';

export class AckWatch {
  /** When to look at TCP_INFO next (Infinity: nothing written since the last look found all acknowledged). */
  checkAt = Infinity;
  /** When the data the current watch is about was first written. */
  private since = 0;

  /** @param limitMs the user timeout in ms; 0 turns the watch off. */
  constructor(private limitMs: number) {}

  /** Data was written to the client at `now`. True when this started a new watch (bring the timer forward to checkAt). */
  written(now: number): boolean {
    if (this.checkAt !== Infinity || this.limitMs <= 0) return false;
    this.since = now;
    this.checkAt = now + this.limitMs;
    return true;
  }

  /**
   * Look at the socket's ACK state at checkAt. Returns the verdict's detail
   * when the user timeout passed with data unacknowledged, else null (and
   * checkAt says when to look again). A null state (no TCP_INFO here: no fd,
   * no koffi) turns the watch off: the kernel's own timer alone decides.
   */
  check(now: number, state: TcpAckState | null): string | null {
    if (state === null) {
      this.limitMs = 0;
      this.checkAt = Infinity;
      return null;
    }
    if (state.unacked === 0) {
      this.checkAt = Infinity; // all acknowledged: the next write starts a new watch
      return null;
    }
    const limit = this.limitMs;
    if (state.msSinceLastAck >= limit && now - this.since >= limit) {
      return `${state.unacked} segments unacknowledged, no ACK for ${state.msSinceLastAck} ms`;
    }
    this.checkAt = Math.max(now + limit - state.msSinceLastAck, this.since + limit, now + 100);
    return null;
  }
}
