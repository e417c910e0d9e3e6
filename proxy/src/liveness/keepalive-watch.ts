/**
 * Whose silence is it? An MQTT keep-alive silence past keep-alive + grace means a dead client only
 * if the link was up while the PINGREQ should have come: a frozen client's TCP still answers, but
 * a client behind an outage sends its PINGREQ into the outage and its kernel retransmits it on a
 * doubling ladder, so it arrives seconds after the link returns (measured: a 3.6 s outage at the
 * due time cut 2 of 20 healthy keep-alive-30 clients at keep-alive + 2 s, docs/liveness.md §10).
 *
 * So the keep-alive verdict needs TCP evidence gathered after the PINGREQ was due:
 * - the proxy asks its kernel for a keep-alive probe once the PINGREQ is late (TCP_KEEPIDLE set to
 *   1 s; the kernel then probes every second), and the verdict waits for an ACK that came after it;
 * - any unanswered round since (a probe or a retransmission) is link trouble: the verdict then waits
 *   until the link answers again and a PINGREQ sent at the due time has had its next retransmission,
 *   which on the doubling ladder is at most as far after the link's return as the return is after
 *   the due time (+ one RTO, + the base grace for a client that sent early or late);
 * - while the link does not answer at all, the TCP-silence verdict (tcp-verdict.ts) is the one that
 *   decides; keep-alive x 1.5, the broker's own deadline, stays the cap of both.
 * On a clean link a frozen client is still cut at keep-alive + grace. Pure: the caller reads TCP_INFO.
 */
import { answerOwed } from './link-estimate.ts';
import type { TcpInfoSample } from './tcp-options.ts';

/** How late a client's PINGREQ may be without any fault: clients check their keep-alive about once a second (libmosquitto, Paho). */
export const CLIENT_TIMER_SLOP_MS = 1_000;
/** TCP_KEEPIDLE while a PINGREQ is late: the kernel probes at once and every interval after. */
export const SOLICITED_IDLE_SECONDS = 1;
/** Shortest wait for an answer in flight. */
const MIN_ANSWER_WAIT_MS = 200;
/** last_ack_recv is whole ms from jiffies (down to HZ=100): an ACK this close before the request counts as after it. */
const JIFFY_MS = 10;

/** One connection's keep-alive timing, absolute Clock ms. */
export interface KeepAliveTimes {
  /** When the PINGREQ is due: last byte from the client + keep-alive (earlier when the client's clock leads ours). */
  dueAt: number;
  /** Due + the adaptive grace: the earliest verdict, reached on a clean link. */
  frozenAt: number;
  /** Last byte + 1.5 x keep-alive: the broker's own deadline, the latest verdict. */
  capAt: number;
  /** The base grace (min(2 s, 0.5 x KA)), margin for a client that sent early or late. */
  baseGraceMs: number;
}

export interface WatchLink {
  rtoMs: number;
  srttMs: number;
  rttvarMs: number;
}

/** The kernel's keep-alive probing in effect: the first probe idle after the last sign of life, then every interval. */
export interface ProbeTiming {
  idleMs: number;
  intervalMs: number;
}

export interface WatchDecision {
  dead: boolean;
  /** When to judge again (with a fresh sample). */
  nextAt: number;
}

/** When to ask for the probe: late by the clients' timer slop, but before the earliest verdict. */
export function solicitAt(t: KeepAliveTimes): number {
  return t.dueAt + Math.min(CLIENT_TIMER_SLOP_MS, (t.frozenAt - t.dueAt) / 2);
}

const delta = (now: number, before: number): number => (now - before) >>> 0;
// One decision object for every connection: judge() is synchronous and the caller reads it at once.
const decision: WatchDecision = { dead: false, nextAt: Infinity };

export class KeepAliveWatch {
  /** When the probe was asked for (-1: not watching). */
  since = -1;
  /** The due time of the PINGREQ being watched. */
  dueAt = 0;
  /** Episodes of link trouble seen since (for the verdict's detail). */
  troubles = 0;
  /** No verdict before this (0: no trouble seen). */
  notBefore = 0;
  /** The last judge found the evidence complete and waits only for keep-alive + grace (or notBefore). */
  waitingForTime = false;
  /** An answer is overdue right now. */
  private troubleOpen = false;
  private baseSegsOut = 0;
  private baseSegsIn = 0;
  private baseDataOut = 0;
  private baseDataIn = 0;
  private baseRetrans = 0;

  get active(): boolean {
    return this.since >= 0;
  }

  /**
   * The probe is being asked for now; `s` is the sample taken just before. lastLossAt: when the
   * link estimate last committed a lost round (-1: never); a loss that may have held up the
   * PINGREQ before the watch began counts as link trouble that ended then.
   */
  start(s: TcpInfoSample, now: number, t: KeepAliveTimes, link: WatchLink, lastLossAt: number): void {
    this.since = now;
    this.dueAt = t.dueAt;
    this.troubles = 0;
    this.notBefore = 0;
    this.troubleOpen = false;
    this.rebase(s);
    if (lastLossAt >= 0) {
      const wait = this.retransmissionWait(lastLossAt, t, link);
      if (wait > t.frozenAt) {
        this.troubles++;
        this.notBefore = wait;
      }
    }
  }

  /** The client spoke (or the connection ends). */
  stop(): void {
    this.since = -1;
    this.waitingForTime = false;
    this.troubleOpen = false;
    this.notBefore = 0;
  }

  /** Judge one fresh sample. The returned object is shared: read it before the next judge() of any connection. */
  judge(s: TcpInfoSample, now: number, t: KeepAliveTimes, link: WatchLink, probe: ProbeTiming): WatchDecision {
    const d = decision;
    d.dead = false;
    this.waitingForTime = false;
    if (now >= t.capAt) {
      d.dead = true;
      d.nextAt = Infinity;
      return d;
    }
    const answerWaitMs = Math.max(MIN_ANSWER_WAIT_MS, link.srttMs + 4 * link.rttvarMs);
    const owed = answerOwed(s, link.rtoMs);
    // Owed for longer than an answer takes: data unacknowledged past one RTO, or a probe (sent idle after the last ACK) unanswered.
    const overdue = owed && s.lastAckRecvMs > (s.unacked > 0 ? link.rtoMs : probe.idleMs) + answerWaitMs;
    if (overdue) {
      if (!this.troubleOpen) this.troubles++;
      this.troubleOpen = true;
      this.rebase(s);
      d.nextAt = Math.min(now + probe.intervalMs, t.capAt);
      return d;
    }
    const lost = this.lostSinceBase(s);
    if (this.troubleOpen || lost > 0) {
      if (!this.troubleOpen) this.troubles++;
      this.troubleOpen = false;
      this.rebase(s);
      this.notBefore = Math.max(this.notBefore, this.retransmissionWait(now, t, link));
    }
    const earliest = Math.max(t.frozenAt, this.notBefore);
    // An ACK after the request, or a zero window (the peer's kernel answers; its reader is stuck).
    const answered = now - s.lastAckRecvMs >= this.since - JIFFY_MS || (s.unacked === 0 && s.notsentBytes > 0);
    if (!owed && answered && now >= earliest) {
      d.dead = true;
      d.nextAt = Infinity;
      return d;
    }
    this.waitingForTime = !owed && answered;
    const next = owed ? now + answerWaitMs : answered ? earliest : now + probe.intervalMs;
    d.nextAt = Math.min(Math.max(next, now + MIN_ANSWER_WAIT_MS), t.capAt);
    return d;
  }

  /**
   * The link answers again by `end`: a PINGREQ sent at the due time is retransmitted by
   * due + 2 (end - due) + RTO, and the client may have sent it up to a base grace early.
   */
  private retransmissionWait(end: number, t: KeepAliveTimes, link: WatchLink): number {
    return end + (end - t.dueAt) + link.rtoMs + link.srttMs + t.baseGraceMs;
  }

  /**
   * Rounds lost since the last look: retransmissions of data, or (no data either way) keep-alive
   * probes that got no answer, those still out excepted (overdue judges them).
   */
  private lostSinceBase(s: TcpInfoSample): number {
    const retrans = delta(s.totalRetrans, this.baseRetrans);
    if (retrans > 0) return retrans;
    if (delta(s.dataSegsOut, this.baseDataOut) > 0 || delta(s.dataSegsIn, this.baseDataIn) > 0) return 0;
    const outstanding = s.notsentBytes === 0 ? s.probes : 0;
    return Math.max(0, delta(s.segsOut, this.baseSegsOut) - delta(s.segsIn, this.baseSegsIn) - outstanding);
  }

  private rebase(s: TcpInfoSample): void {
    this.baseSegsOut = s.segsOut;
    this.baseSegsIn = s.segsIn;
    this.baseDataOut = s.dataSegsOut;
    this.baseDataIn = s.dataSegsIn;
    this.baseRetrans = s.totalRetrans;
  }
}
