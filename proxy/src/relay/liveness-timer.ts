/**
 * The one timer of a Connection and everything it watches: the deadlines (deadlines.ts), the MQTT
 * keep-alive (suspect at KA + base grace, dead at KA + adaptive grace once TCP evidence says the
 * silence is the client's, not the link's: keepalive-watch.ts) and the TCP-silence model
 * (ConnectionLiveness: alive -> suspect -> dead). TCP_INFO is read here only, when the timer
 * fires, never per packet; a write costs one comparison unless it starts a new watch.
 */
import type { SlotTarget, TimerSlot } from '../liveness/clock.ts';
import { ConnectionLiveness, phaseOf } from '../liveness/connection-liveness.ts';
import { evaluate, newDeadlineState, type DeadlineState } from '../liveness/deadlines.ts';
import type { Reason } from '../liveness/reasons.ts';
import { newTcpInfoSample } from '../liveness/tcp-options.ts';
import { keepAliveGrace, type Thresholds } from '../liveness/verdict-budget.ts';
import { KeepAliveWatch, SOLICITED_IDLE_SECONDS, solicitAt, type KeepAliveTimes, type ProbeTiming } from '../liveness/keepalive-watch.ts';
import type { KeepAlivePolicy } from '../config/types.ts';
import type { ConnectionContext } from './connection-context.ts';
import type { ConnectionFacts, SuspectKind } from './events.ts';
import type { ClientTransport } from './transport.ts';

/** What the timer needs from its Connection. */
export interface TimerHost {
  readonly id: number;
  facts(): ConnectionFacts;
  /** A deadline passed or a dead verdict was reached. */
  expire(reason: Reason, detail: string | null): void;
  /** The upstream probe deadline: inject a PINGREQ now. */
  probeUpstream(now: number): void;
}

// One sample for every connection: read and judged synchronously, never kept.
const sample = newTcpInfoSample();
// Likewise the keep-alive times and probe timing handed to a watch.
const times: KeepAliveTimes = { dueAt: 0, frozenAt: 0, capAt: 0, baseGraceMs: 0 };
const probeTiming: ProbeTiming = { idleMs: 0, intervalMs: 0 };

export class LivenessTimer implements SlotTarget {
  readonly deadlines: DeadlineState;
  readonly model: ConnectionLiveness;
  /** Keep-alive silence beyond KA + base grace: since when (-1: not suspect). */
  keepAliveSuspectSince = -1;
  /**
   * A late PINGREQ is being watched or the keep-alive is suspect: the client's next byte ends it
   * (clientSpoke). Derivable from those two, but kept as one flag: it is read on every chunk.
   */
  keepAliveWatched = false;
  /** The one timer, re-armed in place (liveness/deadline-queue.ts). */
  private readonly timer: TimerSlot;
  private timerAt = Infinity;
  /** When to read TCP_INFO next (Infinity: not planned; NaN: not available on this transport). */
  private tcpCheckAt: number;
  /** The kind of the TCP suspicion under way (null: none). */
  private tcpSuspect: SuspectKind | null = null;
  private keepAliveSeconds = 0;
  private explicitGraceMs: number | undefined = undefined;
  /**
   * The keep-alive verdict waits for TCP evidence (TCP_INFO here, the adaptive model, no exact
   * grace): dead at frozenAfterMs of silence at the earliest, deadlines.keepAliveDeadMs (1.5 x KA) at the latest.
   */
  private gated = false;
  private frozenAfterMs = 0;
  /** Made for the first late PINGREQ (most connections never need one). */
  private watch: KeepAliveWatch | null = null;
  private watchAt = Infinity;
  /** TCP_KEEPIDLE was lowered for the watch and must be restored. */
  private solicited = false;
  /**
   * The client's keep-alive clock runs ahead of ours by this much: its last watched packet came
   * this late, and a client times its next PINGREQ from when it sent, not from when we received.
   * Holds while that packet is the last one received (leadFrom); any later byte resynchronises.
   */
  private clientLeadMs = 0;
  private leadFrom = -1;

  constructor(
    private readonly ctx: ConnectionContext,
    private readonly host: TimerHost,
    private readonly transport: ClientTransport,
    now: number,
  ) {
    const cfg = ctx.config;
    this.deadlines = newDeadlineState(now, cfg.connectTimeout * 1000, cfg.tcp.sendTimeout * 1000);
    this.model = new ConnectionLiveness(ctx.liveness.settings, ctx.liveness.shared, phaseOf(host.id));
    this.tcpCheckAt = cfg.tcp.keepAlive ? now : NaN; // the first read says whether TCP_INFO is there
    this.timer = ctx.clock.slot(this);
  }

  /** Jittered idle, interval, backstop count and user timeout for this connection's socket. */
  kernelSettings(): Thresholds['kernel'] {
    return this.model.kernelSettings();
  }

  get tcpState(): 'alive' | 'suspect' | 'dead' {
    return this.model.silence.state;
  }

  /**
   * The keep-alive the proxy enforces is known (CONNECT accepted, or a CONNACK's Server Keep
   * Alive adopted): deadlines.allowedSilenceMs is the suspect point; the dead point adapts.
   */
  setKeepAlive(seconds: number, policy: Pick<KeepAlivePolicy, 'grace' | 'multiplier'> | null): void {
    this.keepAliveSeconds = seconds;
    // A multiplier is an exact deadline; a grace is the base the model may only extend.
    this.explicitGraceMs = policy?.multiplier != null ? -1 : policy?.grace != null ? policy.grace * 1000 : undefined;
    this.model.setKeepAlive(seconds);
    this.updateKeepAliveDead();
  }

  /** Bytes were written to the client. */
  noteWrite(now: number): void {
    if (!(this.tcpCheckAt >= 0)) return; // NaN: no TCP_INFO here
    const at = this.model.onWrite(now);
    if (at < this.tcpCheckAt) {
      this.tcpCheckAt = at;
      this.arm(at);
    }
  }

  /** The client sent bytes while keepAliveWatched (the caller checks it first). */
  clientSpoke(now: number): void {
    if (this.keepAliveSuspectSince >= 0) {
      this.emitSuspect('keepalive', 'end', now, false);
      this.keepAliveSuspectSince = -1;
    }
    this.endWatch(now);
    this.keepAliveWatched = false;
  }

  /** Silence after which the keep-alive verdict is due as things stand (Infinity: none). */
  keepAliveDeadAfterMs(): number {
    const d = this.deadlines;
    if (d.allowedSilenceMs === Infinity) return Infinity;
    if (!this.gated) return Math.max(d.allowedSilenceMs, d.keepAliveDeadMs);
    const notBefore = this.watch?.active ? this.watch.notBefore - d.lastClientActivity : 0;
    return Math.min(d.keepAliveDeadMs, Math.max(this.frozenAfterMs, notBefore));
  }

  /** Make sure the one timer fires no later than the earliest deadline. */
  schedule(now: number): void {
    if (now >= this.nextWatchAt() && this.tcpCheckAt > now) this.tcpCheckAt = now; // the watch judges a fresh sample
    if (now >= this.tcpCheckAt) {
      if (this.checkTcp(now)) return;
      // After the sample: the estimate may have moved keep-alive + grace.
      if (this.tcpCheckAt >= 0 && now >= this.nextWatchAt() && this.watchKeepAlive(now)) return;
    }
    const d = this.deadlines;
    const e = evaluate(d, now);
    if (e.verdict) {
      this.host.expire(e.verdict, e.verdict === 'keepalive_timeout' ? this.keepAliveDetail(now, false) : null);
      return;
    }
    const suspectAt = d.lastClientActivity + d.allowedSilenceMs;
    if (now >= suspectAt) {
      if (this.keepAliveSuspectSince < 0) {
        this.keepAliveSuspectSince = suspectAt;
        this.keepAliveWatched = true;
        this.emitSuspect('keepalive', 'start', suspectAt, false);
      }
    } else if (this.keepAliveSuspectSince >= 0) {
      this.clientSpoke(now);
    }
    if (e.probe) this.host.probeUpstream(now);
    const wake = e.probe ? evaluate(d, now).wakeAt : e.wakeAt;
    const tcpAt = this.tcpCheckAt >= 0 ? this.tcpCheckAt : Infinity;
    this.arm(Math.min(wake, now < suspectAt ? suspectAt : Infinity, tcpAt, this.nextWatchAt()));
  }

  /** No timer from now on (the connection is ending). */
  stop(): void {
    this.timer.cancel();
    this.timerAt = 0;
  }

  /** Both streams closed: give back the model's shares (fleet prior, held verdicts). */
  close(): void {
    this.stop();
    this.model.close();
  }

  private arm(at: number): void {
    if (at >= this.timerAt) return;
    this.timerAt = at;
    this.timer.set(at);
  }

  /** The timer's deadline came (called by the clock only). */
  fire(): void {
    this.timerAt = Infinity;
    this.schedule(this.ctx.clock.now());
  }

  /** When the keep-alive watch acts next: ask for a probe once the PINGREQ is late, then judge (Infinity: nothing to watch). */
  private nextWatchAt(): number {
    if (!this.gated) return Infinity;
    const t = this.keepAliveTimes();
    const w = this.watch;
    // Waiting only for time: the estimate may have moved keep-alive + grace earlier since the watch planned its next look.
    if (w?.active) return w.waitingForTime ? Math.min(this.watchAt, Math.max(t.frozenAt, w.notBefore)) : this.watchAt;
    return solicitAt(t);
  }

  private keepAliveTimes(): KeepAliveTimes {
    const d = this.deadlines;
    const kaMs = this.keepAliveSeconds * 1000;
    times.dueAt = d.lastClientActivity + kaMs - (d.lastClientActivity === this.leadFrom ? this.clientLeadMs : 0);
    times.frozenAt = d.lastClientActivity + this.frozenAfterMs;
    times.capAt = d.lastClientActivity + d.keepAliveDeadMs;
    times.baseGraceMs = d.allowedSilenceMs - kaMs;
    return times;
  }

  /**
   * The PINGREQ is late: ask the kernel for probes (first time), judge the fresh sample in
   * `sample`. True when the connection was ended.
   */
  private watchKeepAlive(now: number): boolean {
    let watch = this.watch;
    if (watch === null) watch = this.watch = new KeepAliveWatch();
    const link = this.model.estimate!; // gated implies an estimate
    const troublesBefore = watch.active ? watch.troubles : 0;
    if (!watch.active) {
      watch.start(sample, now, this.keepAliveTimes(), link, link.lastLossAt);
      this.keepAliveWatched = true;
      this.solicited = this.ctx.setProbeIdle(this.transport, SOLICITED_IDLE_SECONDS);
      if (this.solicited) this.model.silence.probeIdleMs = SOLICITED_IDLE_SECONDS * 1000;
    }
    const kernel = this.model.kernelSettings();
    probeTiming.idleMs = (this.solicited ? SOLICITED_IDLE_SECONDS : kernel.idleSeconds) * 1000;
    probeTiming.intervalMs = kernel.intervalSeconds * 1000;
    const v = watch.judge(sample, now, this.keepAliveTimes(), link, probeTiming);
    if (troublesBefore === 0 && watch.troubles > 0) this.ctx.events.emit('keepAliveLinkWait');
    if (v.dead) {
      this.host.expire('keepalive_timeout', this.keepAliveDetail(now, true));
      return true;
    }
    this.watchAt = v.nextAt;
    return false;
  }

  /** The client spoke at `now`: the kernel probes at its own idle again. */
  private endWatch(now: number): void {
    if (this.watch === null || !this.watch.active) return;
    this.clientLeadMs = Math.min(Math.max(0, now - this.watch.dueAt), this.keepAliveSeconds * 500);
    this.leadFrom = now;
    this.watch.stop();
    this.watchAt = Infinity;
    if (this.solicited) {
      this.solicited = false;
      this.model.silence.probeIdleMs = 0;
      this.ctx.setProbeIdle(this.transport, this.model.kernelSettings().idleSeconds);
    }
  }

  /** Read TCP_INFO and judge. True when the connection was ended. */
  private checkTcp(now: number): boolean {
    if (!this.ctx.readTcpInfo(this.transport, sample)) {
      this.tcpCheckAt = NaN; // the kernel's own timers alone decide (backstop values still apply)
      return false;
    }
    const v = this.model.onSample(sample, now);
    const { state, reason, detail, held, recovered, nextCheckAt } = v; // v is shared: copy before anything else runs
    const link = this.model.estimate;
    if (link) this.ctx.events.emit('linkEstimate', link.srttMs / 1000, link.qUpper);
    this.updateKeepAliveDead();
    if (this.tcpSuspect !== null && (recovered || state === 'alive')) {
      this.emitSuspect(this.tcpSuspect, 'end', now, false);
      this.tcpSuspect = null;
    }
    if (state === 'suspect' && this.tcpSuspect === null) {
      this.tcpSuspect = this.model.silence.kind === 'data' ? 'tcp_data' : 'tcp_idle';
      this.emitSuspect(this.tcpSuspect, 'start', this.model.silence.suspectSince, held);
    }
    if (state === 'dead' && reason !== null) {
      this.tcpCheckAt = Infinity;
      this.host.expire(reason, detail);
      return true;
    }
    this.tcpCheckAt = nextCheckAt;
    return false;
  }

  /**
   * Dead at KA + adaptive grace: max(base, a PINGREQ late by the retransmissions the budget
   * allows), <= 1.5 x KA, and only once the link has answered since the PINGREQ was due
   * (gated: keepalive-watch.ts; deadlines.keepAliveDeadMs is then the 1.5 x KA cap). An explicit
   * keepAlive.grace or multiplier is exact (its documented meaning), and without a TCP_INFO
   * sample yet there is nothing to adapt to or judge by: the base applies.
   */
  private updateKeepAliveDead(): void {
    const d = this.deadlines;
    const link = this.model.estimate;
    if (this.keepAliveSeconds <= 0 || this.explicitGraceMs !== undefined || d.allowedSilenceMs === Infinity || !link || link.samples === 0) {
      d.keepAliveDeadMs = 0;
      this.gated = false;
      return;
    }
    const grace = keepAliveGrace(this.keepAliveSeconds, link.qUpper, this.ctx.liveness.settings.falseDeathBudget, link, undefined);
    this.frozenAfterMs = Math.max(d.allowedSilenceMs, this.keepAliveSeconds * 1000 + grace.adaptive);
    this.gated = this.tcpCheckAt >= 0;
    d.keepAliveDeadMs = this.gated ? Math.max(this.frozenAfterMs, this.keepAliveSeconds * 1500) : this.frozenAfterMs;
  }

  /** fresh: `sample` was just read for this connection. */
  private keepAliveDetail(now: number, fresh: boolean): string {
    const d = this.deadlines;
    const silent = Math.round(now - d.lastClientActivity);
    const head = `proxy check: silent ${silent} ms, keep-alive ${this.keepAliveSeconds} s, suspect after ${Math.round(d.allowedSilenceMs)} ms`;
    const w = this.watch;
    if (!this.gated || w === null || !w.active) return `${head}, dead after ${Math.round(this.keepAliveDeadAfterMs())} ms`;
    const answered = fresh ? `, TCP answered ${Math.round(sample.lastAckRecvMs)} ms ago` : '';
    const waited = w.notBefore > 0 ? ` (waited for its retransmission until ${Math.round(w.notBefore - d.lastClientActivity)} ms)` : '';
    const trouble = w.troubles > 0 ? `, link trouble ${w.troubles}x since the PINGREQ was due${waited}` : '';
    const cap = now >= d.lastClientActivity + d.keepAliveDeadMs ? ', at the 1.5 x keep-alive cap' : '';
    return `${head}, dead after ${Math.round(this.keepAliveDeadAfterMs())} ms${answered}${trouble}${cap}`;
  }

  private emitSuspect(kind: SuspectKind, phase: 'start' | 'end', at: number, held: boolean): void {
    this.ctx.events.emit('suspect', { ...this.host.facts(), kind, phase, at: this.ctx.clock.wallNow() - (this.ctx.clock.now() - at), held });
  }
}
