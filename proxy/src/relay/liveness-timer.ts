/**
 * The one timer of a Connection and everything it watches: the deadlines (deadlines.ts), the MQTT
 * keep-alive (suspect at KA + base grace, dead at KA + adaptive grace) and the TCP-silence model
 * (ConnectionLiveness: alive -> suspect -> dead). TCP_INFO is read here only, when the timer
 * fires, never per packet; a write costs one comparison unless it starts a new watch.
 */
import type { Timer } from '../liveness/clock.ts';
import { ConnectionLiveness, phaseOf } from '../liveness/connection-liveness.ts';
import { evaluate, newDeadlineState, type DeadlineState } from '../liveness/deadlines.ts';
import type { Reason } from '../liveness/reasons.ts';
import { newTcpInfoSample } from '../liveness/tcp-options.ts';
import { keepAliveGrace, type Thresholds } from '../liveness/verdict-budget.ts';
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

export class LivenessTimer {
  readonly deadlines: DeadlineState;
  readonly model: ConnectionLiveness;
  /** Keep-alive silence beyond KA + base grace: since when (-1: not suspect). */
  keepAliveSuspectSince = -1;
  private timer: Timer | null = null;
  private timerAt = Infinity;
  /** When to read TCP_INFO next (Infinity: not planned; NaN: not available on this transport). */
  private tcpCheckAt: number;
  /** The kind of the TCP suspicion under way (null: none). */
  private tcpSuspect: SuspectKind | null = null;
  private keepAliveSeconds = 0;
  private explicitGraceMs: number | undefined = undefined;
  private readonly fired = this.onTimer.bind(this);

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
      this.arm(now, at);
    }
  }

  /** The client sent bytes while keep-alive suspect (the caller checks keepAliveSuspectSince first). */
  clientSpoke(now: number): void {
    this.emitSuspect('keepalive', 'end', now, false);
    this.keepAliveSuspectSince = -1;
  }

  /** Make sure the one timer fires no later than the earliest deadline. */
  schedule(now: number): void {
    if (now >= this.tcpCheckAt && this.checkTcp(now)) return;
    const d = this.deadlines;
    const e = evaluate(d, now);
    if (e.verdict) {
      this.host.expire(e.verdict, e.verdict === 'keepalive_timeout' ? this.keepAliveDetail(now) : null);
      return;
    }
    const suspectAt = d.lastClientActivity + d.allowedSilenceMs;
    if (now >= suspectAt) {
      if (this.keepAliveSuspectSince < 0) {
        this.keepAliveSuspectSince = suspectAt;
        this.emitSuspect('keepalive', 'start', suspectAt, false);
      }
    } else if (this.keepAliveSuspectSince >= 0) {
      this.clientSpoke(now);
    }
    if (e.probe) this.host.probeUpstream(now);
    const wake = e.probe ? evaluate(d, now).wakeAt : e.wakeAt;
    this.arm(now, Math.min(wake, now < suspectAt ? suspectAt : Infinity, this.tcpCheckAt >= 0 ? this.tcpCheckAt : Infinity));
  }

  /** No timer from now on (the connection is ending). */
  stop(): void {
    this.timer?.cancel();
    this.timer = null;
    this.timerAt = 0;
  }

  /** Both streams closed: give back the model's shares (fleet prior, held verdicts). */
  close(): void {
    this.stop();
    this.model.close();
  }

  private arm(now: number, at: number): void {
    if (at >= this.timerAt) return;
    this.timer?.cancel();
    this.timerAt = at;
    this.timer = at === Infinity ? null : this.ctx.clock.setTimer(this.fired, at - now);
  }

  private onTimer(): void {
    this.timer = null;
    this.timerAt = Infinity;
    this.schedule(this.ctx.clock.now());
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
   * allows), <= 1.5 x KA. An explicit keepAlive.grace or multiplier is exact (its documented
   * meaning), and without a TCP_INFO sample yet there is nothing to adapt to: the base applies.
   */
  private updateKeepAliveDead(): void {
    const d = this.deadlines;
    const link = this.model.estimate;
    if (this.keepAliveSeconds <= 0 || this.explicitGraceMs !== undefined || d.allowedSilenceMs === Infinity || !link || link.samples === 0) {
      d.keepAliveDeadMs = 0;
      return;
    }
    const grace = keepAliveGrace(this.keepAliveSeconds, link.qUpper, this.ctx.liveness.settings.falseDeathBudget, link, undefined);
    d.keepAliveDeadMs = Math.max(d.allowedSilenceMs, this.keepAliveSeconds * 1000 + grace.adaptive);
  }

  private keepAliveDetail(now: number): string {
    const d = this.deadlines;
    const silent = Math.round(now - d.lastClientActivity);
    return `proxy check: silent ${silent} ms, keep-alive ${this.keepAliveSeconds} s, suspect after ${Math.round(d.allowedSilenceMs)} ms, dead after ${Math.round(Math.max(d.allowedSilenceMs, d.keepAliveDeadMs))} ms`;
  }

  private emitSuspect(kind: SuspectKind, phase: 'start' | 'end', at: number, held: boolean): void {
    this.ctx.events.emit('suspect', { ...this.host.facts(), kind, phase, at: this.ctx.clock.wallNow() - (this.ctx.clock.now() - at), held });
  }
}
