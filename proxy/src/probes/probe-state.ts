/**
 * The broker canary's logic without I/O: when to connect, when to probe,
 * which answer belongs to which probe, when a probe has failed, and whether
 * the broker is up or down. Time comes from the injected Clock only, so the
 * unit tests run it on a ManualClock in microseconds.
 *
 * The I/O side (canary.ts) does what `ProbeActions` asks and reports back
 * with connected() / connectFailed() / closed() / pingResp() / publishReceived().
 *
 * A probe round: every interval one PINGREQ (and, with a deep topic, one QoS 1
 * PUBLISH that comes back on the same session) goes out; the round succeeds
 * when every answer arrived within the timeout, else it fails. The broker is
 * up after `rise` successful rounds in a row and down after `fall` failures in
 * a row (both 1 by default); a session that cannot be opened or is lost is a
 * failure too.
 */
import type { Clock, Timer } from '../liveness/clock.ts';
import { ms, resolveProbeOptions, seconds, type BrokerState, type ProbeActions, type ProbeObserver, type ProbeOptions, type Readiness, type ResolvedProbeOptions } from './probe-options.ts';

export type { BrokerState, ProbeActions, ProbeFailureReason, ProbeKind, ProbeObserver, ProbeOptions, Readiness } from './probe-options.ts';

type Phase = 'idle' | 'connecting' | 'session' | 'backoff' | 'stopped';

interface Round {
  seq: number;
  sentAt: number;
  pingAt: number;
  publishAt: number;
  pingDone: boolean;
  publishDone: boolean;
  pingRtt: number;
  publishRtt: number | null;
  timedOut: boolean;
  timer: Timer | null;
}

export class ProbeState {
  private readonly o: ResolvedProbeOptions;
  private phase: Phase = 'idle';
  private _state: BrokerState = 'starting';
  private phaseTimer: Timer | null = null;
  private tickTimer: Timer | null = null;
  private seq = 0;
  /** Rounds whose PINGRESP has not come yet, oldest first (PINGRESPs come in order). */
  private readonly pingQueue: Round[] = [];
  /** Rounds whose PUBLISH has not come back yet, by sequence number. */
  private readonly publishWait = new Map<number, Round>();
  /** The round still inside its timeout, if any. */
  private current: Round | null = null;
  private connectAttempts = 0;
  private sessionMisses = 0;
  private successes = 0;
  private failures = 0;
  private settledWaiters: Array<() => void> = [];

  /** Clock time of the last successful round (-1: none yet). */
  lastSuccessAt = -1;
  /** Round-trip times of the last successful round, ms. */
  lastRtt: { ping: number; publish: number | null } | null = null;
  /** Why the last failure happened, in words. */
  lastFailure: string | null = null;
  /** Why the state is what it is, in words. */
  why = 'no probe yet';
  /** Sessions opened so far. */
  sessions = 0;
  /** Answers that came after their probe had failed, and the last one's round trip, ms. */
  lateAnswers = 0;
  lastLateRtt = -1;

  constructor(
    private readonly clock: Clock,
    options: ProbeOptions,
    private readonly actions: ProbeActions,
    private readonly observer: ProbeObserver = {},
  ) {
    this.o = resolveProbeOptions(options);
  }

  get state(): BrokerState {
    return this._state;
  }

  /** Whether a session is open (CONNACK, and SUBACK for the deep probe, received). */
  get inSession(): boolean {
    return this.phase === 'session';
  }

  start(): void {
    if (this.phase !== 'idle') return;
    this.openSession();
  }

  stop(): void {
    if (this.phase === 'stopped') return;
    const wasOpen = this.phase === 'session' || this.phase === 'connecting';
    this.phase = 'stopped';
    this.clearSession();
    if (wasOpen) this.actions.disconnect();
    this.settle();
  }

  /**
   * Ready while the state is up and the last successful round is at most
   * interval + timeout old (so a stalled process does not report stale health).
   */
  readiness(now = this.clock.now()): Readiness {
    const windowMs = this.o.intervalMs + this.o.timeoutMs;
    const age = this.lastSuccessAt < 0 ? Infinity : now - this.lastSuccessAt;
    const since = age === Infinity ? 'no probe has succeeded yet' : `last success ${seconds(age)} ago`;
    if (this._state === 'up' && age <= windowMs) {
      const rtt = this.lastRtt;
      const rtts = rtt ? `PINGRESP in ${ms(rtt.ping)}${rtt.publish === null ? '' : `, PUBLISH back in ${ms(rtt.publish)}`}` : '';
      return { ok: true, detail: `broker answers probes: ${rtts}, ${seconds(age)} ago` };
    }
    if (this._state === 'up') {
      // The round's own timeout is about to say the same; the window may expire a moment first.
      return { ok: false, detail: `no probe succeeded within ${seconds(windowMs)} (interval + timeout); ${since}` };
    }
    if (this._state === 'starting') {
      return { ok: false, detail: `the canary has no answer from the broker yet${this.phase === 'connecting' ? ' (connecting)' : ''}` };
    }
    return { ok: false, detail: `${this.why}; ${since}` };
  }

  /** Resolves once the state left 'starting' (or the canary stopped), or after maxWaitMs. */
  settled(maxWaitMs: number): Promise<void> {
    if (this._state !== 'starting' || this.phase === 'stopped') return Promise.resolve();
    return new Promise((resolve) => {
      const timer = this.clock.setTimer(done, maxWaitMs);
      const waiters = this.settledWaiters;
      function done(): void {
        timer.cancel();
        const i = waiters.indexOf(done);
        if (i >= 0) waiters.splice(i, 1);
        resolve();
      }
      waiters.push(done);
    });
  }

  // ---- reports from the I/O side ------------------------------------------

  connected(): void {
    if (this.phase !== 'connecting') return;
    this.phase = 'session';
    this.phaseTimer?.cancel();
    this.phaseTimer = null;
    this.connectAttempts = 0;
    this.sessionMisses = 0;
    this.sessions++;
    this.round();
  }

  connectFailed(detail: string): void {
    if (this.phase !== 'connecting') return;
    this.phaseTimer?.cancel();
    this.phaseTimer = null;
    this.observer.onFailure?.('ping', 'connect', detail);
    this.failed(`cannot connect to the broker: ${detail}`);
    this.reconnectLater();
  }

  closed(detail: string): void {
    if (this.phase === 'connecting') {
      this.connectFailed(detail);
      return;
    }
    if (this.phase !== 'session') return;
    this.clearSession();
    this.observer.onFailure?.('ping', 'closed', detail);
    this.failed(`the canary session was closed: ${detail}`);
    this.reconnectLater();
  }

  pingResp(): void {
    const r = this.pingQueue.shift();
    if (!r || this.phase !== 'session') return;
    r.pingDone = true;
    const rtt = this.clock.now() - r.pingAt;
    if (r.timedOut) {
      this.late(rtt);
      return;
    }
    r.pingRtt = rtt;
    this.observer.onRtt?.('ping', rtt);
    this.maybeComplete(r);
  }

  publishReceived(seq: number): void {
    const r = this.publishWait.get(seq);
    if (!r || this.phase !== 'session') return;
    this.publishWait.delete(seq);
    r.publishDone = true;
    const rtt = this.clock.now() - r.publishAt;
    if (r.timedOut) {
      this.late(rtt);
      return;
    }
    r.publishRtt = rtt;
    this.observer.onRtt?.('publish', rtt);
    this.maybeComplete(r);
  }

  // ---- internals --------------------------------------------------------------

  private openSession(): void {
    this.phase = 'connecting';
    this.phaseTimer?.cancel();
    this.phaseTimer = this.clock.setTimer(() => {
      this.phaseTimer = null;
      if (this.phase !== 'connecting') return;
      this.actions.disconnect();
      this.connectFailed(`no CONNACK${this.o.deep ? '/SUBACK' : ''} within ${seconds(this.o.connectTimeoutMs)}`);
    }, this.o.connectTimeoutMs);
    this.actions.connect();
  }

  private reconnectLater(): void {
    if (this.phase === 'stopped') return;
    this.phase = 'backoff';
    const base = Math.min(this.o.backoffMaxMs, this.o.backoffMinMs * 2 ** this.connectAttempts);
    this.connectAttempts++;
    const delay = base * (0.75 + 0.5 * this.o.random());
    this.phaseTimer?.cancel();
    this.phaseTimer = this.clock.setTimer(() => {
      this.phaseTimer = null;
      if (this.phase === 'backoff') this.openSession();
    }, delay);
  }

  /** Replace a session that stopped answering. */
  private replaceSession(): void {
    this.clearSession();
    this.actions.disconnect();
    this.reconnectLater();
  }

  private clearSession(): void {
    this.phaseTimer?.cancel();
    this.phaseTimer = null;
    this.tickTimer?.cancel();
    this.tickTimer = null;
    for (const r of this.pingQueue) r.timer?.cancel();
    for (const r of this.publishWait.values()) r.timer?.cancel();
    this.current?.timer?.cancel();
    this.pingQueue.length = 0;
    this.publishWait.clear();
    this.current = null;
  }

  /**
   * Send one probe round now; the next one follows an interval after
   * `scheduledAt` (when this round was due), so timer lateness does not add up.
   */
  private round(scheduledAt = this.clock.now()): void {
    const now = this.clock.now();
    const r: Round = { seq: ++this.seq, sentAt: now, pingAt: now, publishAt: now, pingDone: false, publishDone: !this.o.deep, pingRtt: 0, publishRtt: null, timedOut: false, timer: null };
    this.current = r;
    r.timer = this.clock.setTimer(() => this.onRoundDeadline(r), this.o.timeoutMs);
    this.pingQueue.push(r);
    if (this.o.deep) this.publishWait.set(r.seq, r);
    this.actions.ping();
    if (this.phase !== 'session') return; // the I/O side may report a close synchronously
    if (this.o.deep) this.actions.publish(r.seq);
    this.tickTimer?.cancel();
    let at = scheduledAt + this.o.intervalMs;
    if (at <= now) at = now + this.o.intervalMs;
    this.tickTimer = this.clock.setTimer(() => {
      this.tickTimer = null;
      if (this.phase === 'session') this.round(at);
    }, at - now);
  }

  /**
   * The timeout passed. One more turn of the event loop first: if this process
   * was stalled, an answer may be waiting in the socket, and timers run before
   * sockets are read. A late verdict must not blame the broker for our stall.
   */
  private onRoundDeadline(r: Round): void {
    r.timer = this.clock.setTimer(() => {
      r.timer = null;
      if (r.pingDone && r.publishDone) return;
      if (this.phase !== 'session') return;
      r.timedOut = true;
      if (this.current === r) this.current = null;
      const missing: string[] = [];
      if (!r.pingDone) {
        this.observer.onFailure?.('ping', 'timeout', `no PINGRESP within ${seconds(this.o.timeoutMs)}`);
        missing.push('PINGRESP');
      }
      if (!r.publishDone) {
        this.observer.onFailure?.('publish', 'timeout', `the probe PUBLISH did not come back within ${seconds(this.o.timeoutMs)}`);
        missing.push('probe PUBLISH back');
      }
      this.failed(`no ${missing.join(' and no ')} within ${seconds(this.o.timeoutMs)}`);
      this.sessionMisses++;
      if (this.sessionMisses >= this.o.missesPerSession) this.replaceSession();
    }, 0);
  }

  /** An answer to a probe that had already failed: the broker may be back, so probe again at once. */
  private late(rttMs: number): void {
    this.lateAnswers++;
    this.lastLateRtt = rttMs;
    if (this.current === null && this.phase === 'session') this.round();
  }

  private maybeComplete(r: Round): void {
    if (!r.pingDone || !r.publishDone || r.timedOut) return;
    r.timer?.cancel();
    r.timer = null;
    if (this.current === r) this.current = null;
    this.lastSuccessAt = this.clock.now();
    this.lastRtt = { ping: r.pingRtt, publish: r.publishRtt };
    this.sessionMisses = 0;
    this.failures = 0;
    this.successes++;
    const rtt = this.lastRtt;
    const why = `the broker answered: PINGRESP in ${ms(rtt.ping)}${rtt.publish === null ? '' : `, PUBLISH back in ${ms(rtt.publish)}`}`;
    if (this._state !== 'up' && this.successes >= this.o.rise) this.setState('up', why);
    else if (this._state === 'up') this.why = why;
  }

  private failed(why: string): void {
    this.lastFailure = why;
    this.successes = 0;
    this.failures++;
    if (this._state === 'down') {
      this.why = why;
      return;
    }
    if (this._state === 'starting' || this.failures >= this.o.fall) this.setState('down', why);
  }

  private setState(state: BrokerState, why: string): void {
    const previous = this._state;
    this._state = state;
    this.why = why;
    this.settle();
    this.observer.onState?.(state, why, previous);
  }

  private settle(): void {
    const waiters = this.settledWaiters;
    this.settledWaiters = [];
    for (const w of waiters) w();
  }
}
