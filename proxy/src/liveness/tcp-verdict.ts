/**
 * The proxy's own TCP-silence check for one connection: alive -> suspect -> dead, judged from a
 * TCP_INFO sample (the kernel only probes; its kill switch is a backstop far beyond this).
 * Pure: the caller reads TCP_INFO on its one timer and calls check(); nothing here allocates.
 *
 * "Owed since" - when the peer first owed an answer it has not given:
 * - data in flight (unacked > 0): the first write after everything was acknowledged (noteWrite),
 *   bounded by the last ACK (an ACK that advanced means the peer is alive);
 * - idle probing (probes out, nothing queued): the kernel sends its first keep-alive probe idle
 *   after the last ACK or data received, so owed since = that instant + idle.
 * Probes with bytes queued are zero-window probes of a live, paused reader: its last_ack_recv
 * grows although it answers (proxy/test/tcp-options.test.ts); that is send_stall's business.
 */
import type { TcpInfoSample } from './tcp-options.ts';
import type { SilenceThresholds, Thresholds } from './verdict-budget.ts';
import type { LocalHealth } from './local-health.ts';

export type TcpLivenessState = 'alive' | 'suspect' | 'dead';
export type SilenceKind = 'idle' | 'data';

export interface TcpVerdict {
  state: TcpLivenessState;
  /** Set when state is 'dead'. */
  reason: 'tcp_keepalive' | 'tcp_user_timeout' | null;
  /** Why, naming the proxy's own check (the kernel's abort reads "ETIMEDOUT"). */
  detail: string;
  /** When to read TCP_INFO and call check() again (Infinity: only after the next write). */
  nextCheckAt: number;
  /** A dead verdict is being held because many connections went silent together. */
  held: boolean;
  /** This check ended a suspicion with evidence (an ACK). */
  recovered: boolean;
}

/** Shortest gap between two checks: a stream of writes must not turn into a stream of reads. */
export const MIN_CHECK_GAP_MS = 250;
// One result object for every connection: check() is synchronous and the caller reads it at once.
const out: TcpVerdict = { state: 'alive', reason: null, detail: '', nextCheckAt: Infinity, held: false, recovered: false };
/** last_ack_recv is reported in whole ms from jiffies (down to HZ=100): smaller moves are not an ACK. */
const ACK_MOVE_MS = 25;

export class TcpSilenceCheck {
  state: TcpLivenessState = 'alive';
  kind: SilenceKind | null = null;
  /** Onset of the current suspicion (computed instant, not the check's), -1: none. */
  suspectSince = -1;
  /** When the peer started to owe the answer (-1: nothing owed). */
  owedSince = -1;
  /** First write not yet known to be acknowledged (-1: none). */
  private writeSince = -1;
  private correlated = false;
  private heldSince = -1;
  /** TCP_KEEPIDLE in effect when not the thresholds' (a keep-alive watch asked for probes now), ms; 0: the thresholds'. */
  probeIdleMs = 0;

  constructor(private readonly health: LocalHealth | null) {}

  /**
   * Bytes were written to the client. Cheap enough for every write; returns when the first
   * check of this data is due (Infinity: a check is already planned for earlier data).
   */
  noteWrite(now: number, th: Thresholds): number {
    if (this.writeSince >= 0) return Infinity;
    this.writeSince = now;
    return now + Math.max(th.data.suspectAfterMs, MIN_CHECK_GAP_MS);
  }

  /** Judge one sample taken now. The returned object is shared: read it before the next check() of any connection. */
  check(s: TcpInfoSample, now: number, th: Thresholds, q: number): TcpVerdict {
    const v = out;
    v.reason = null;
    v.detail = '';
    v.held = false;
    v.recovered = false;
    if (this.state === 'dead') {
      v.nextCheckAt = Infinity;
      return v;
    }
    const lastHeard = now - Math.min(s.lastAckRecvMs, s.lastDataRecvMs);
    let kind: SilenceKind | null = null;
    let owed = -1;
    if (s.unacked > 0) {
      kind = 'data';
      if (this.writeSince < 0) this.writeSince = now; // writes not reported: start watching now, never earlier
      owed = Math.max(this.writeSince, now - s.lastAckRecvMs);
    } else {
      this.writeSince = -1; // all acknowledged: the next write starts a new watch
      if (s.probes > 0 && s.notsentBytes === 0) {
        kind = 'idle';
        owed = lastHeard + this.idleMs(th);
      }
    }
    if (kind === null || (this.owedSince >= 0 && owed > this.owedSince + ACK_MOVE_MS && kind === this.kind && this.state === 'suspect')) {
      // Nothing owed, or the peer answered since the last look (the owed instant moved on).
      if (kind === null) {
        this.toAlive(v, now);
        v.nextCheckAt = this.idleCheckAt(s, now, th);
        return v;
      }
      this.toAlive(v, now);
    }
    this.kind = kind;
    this.owedSince = owed;
    const t = kind === 'data' ? th.data : th.idle;
    const silence = now - owed;
    // The kernel's own count must agree (conservative when its timers and ours disagree).
    const enoughProbes = kind === 'data' ? s.retransmits + 1 >= t.required : s.probes >= t.required;
    if (silence < t.suspectAfterMs) {
      if (this.state === 'suspect') this.toAlive(v, now);
      v.state = 'alive';
      v.nextCheckAt = Math.max(owed + t.suspectAfterMs, now + MIN_CHECK_GAP_MS);
      return v;
    }
    if (this.state !== 'suspect') {
      this.state = 'suspect';
      this.suspectSince = owed + t.suspectAfterMs;
    }
    if (!this.correlated && silence >= t.correlateAfterMs) {
      this.correlated = true;
      this.health?.noteOnset(owed + t.correlateAfterMs, now);
    }
    if (silence >= t.deadAfterMs && enoughProbes) {
      if (this.health?.shouldHold(now) && (this.heldSince < 0 || now - this.heldSince < this.health.maxHoldMs)) {
        if (this.heldSince < 0) {
          this.heldSince = now;
          this.health.noteHeld();
        }
        v.state = 'suspect';
        v.held = true;
        v.nextCheckAt = Math.min(this.heldSince + this.health.maxHoldMs, now + Math.max(th.kernel.intervalSeconds * 1000, MIN_CHECK_GAP_MS));
        return v;
      }
      if (this.heldSince >= 0) this.health?.noteHoldExpired();
      this.heldSince = -1;
      this.state = 'dead';
      v.state = 'dead';
      v.reason = kind === 'data' ? 'tcp_user_timeout' : 'tcp_keepalive';
      v.detail = describe(kind, s, silence, q, t);
      v.nextCheckAt = Infinity;
      return v;
    }
    v.state = 'suspect';
    const nextAt = silence < t.correlateAfterMs ? owed + t.correlateAfterMs : owed + t.deadAfterMs;
    // Look at least once an interval while suspect, so evidence ends the suspicion promptly.
    v.nextCheckAt = Math.max(now + MIN_CHECK_GAP_MS, Math.min(nextAt, now + th.kernel.intervalSeconds * 1000));
    return v;
  }

  /** The connection is closing for any reason: give back a hold. */
  close(): void {
    if (this.heldSince >= 0) this.health?.noteReleased();
    this.heldSince = -1;
  }

  private toAlive(v: TcpVerdict, _now: number): void {
    if (this.state === 'suspect') v.recovered = true;
    if (this.heldSince >= 0) this.health?.noteReleased();
    this.heldSince = -1;
    this.state = 'alive';
    this.kind = null;
    this.suspectSince = -1;
    this.owedSince = -1;
    this.correlated = false;
    v.state = 'alive';
  }

  private idleMs(th: Thresholds): number {
    return this.probeIdleMs > 0 ? this.probeIdleMs : th.kernel.idleSeconds * 1000;
  }

  /** Nothing owed: the next keep-alive probe goes out idle after the last sign of life; look one interval later. */
  private idleCheckAt(s: TcpInfoSample, now: number, th: Thresholds): number {
    if (s.notsentBytes > 0) return Infinity; // zero window: send_stall's deadline covers it
    const lastHeard = now - Math.min(s.lastAckRecvMs, s.lastDataRecvMs);
    const probeAt = lastHeard + this.idleMs(th);
    return Math.max(probeAt + th.idle.suspectAfterMs, now + MIN_CHECK_GAP_MS);
  }
}

function describe(kind: SilenceKind, s: TcpInfoSample, silence: number, q: number, t: SilenceThresholds): string {
  const what = kind === 'data' ? `${s.unacked} segments unacknowledged, ${s.retransmits} retransmissions` : `${s.probes} keep-alive probes unanswered`;
  return `proxy check: no ACK for ${Math.round(s.lastAckRecvMs)} ms, ${what}, silent ${Math.round(silence)} ms owed, q<=${q.toPrecision(2)}, n=${t.n}, dead after ${Math.round(t.deadAfterMs)} ms`;
}
