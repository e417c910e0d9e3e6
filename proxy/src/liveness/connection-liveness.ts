/**
 * The liveness model of one connection behind one small interface, for the Connection's single
 * timer: estimate (link-estimate.ts) -> thresholds (verdict-budget.ts) -> TCP-silence verdict
 * (tcp-verdict.ts), with the proxy-wide fleet prior and local health. Pure: the caller reads
 * TCP_INFO (tcp-options.ts readTcpInfo) and passes the sample in.
 */
import { FleetPrior, LinkEstimate, DEFAULT_ESTIMATE_OPTIONS, type EstimateOptions } from './link-estimate.ts';
import { ThresholdCache, type Overrides, type Profile, type Thresholds } from './verdict-budget.ts';
import { TcpSilenceCheck, type TcpVerdict } from './tcp-verdict.ts';
import type { LocalHealth } from './local-health.ts';
import type { TcpInfoSample } from './tcp-options.ts';

export interface LivenessSettings {
  profile: Profile;
  /** Expected false deaths per client-hour. */
  falseDeathBudget: number;
  overrides: Overrides;
  /** false: no estimate, the profile and overrides exactly (today's fixed thresholds). */
  adaptive: boolean;
  maxHoldMs: number;
  maxDeadMs: number;
  thinLinear: boolean;
  /** TCP_RTO_MAX_MS was accepted by the kernel (set false when setTcpProbeTimers reported it failed). */
  rtoMaxApplied: boolean;
  estimate?: EstimateOptions;
}

/** Shared by every connection of one proxy (a new thresholds cache when the settings change). */
export interface LivenessShared {
  fleet: FleetPrior;
  health: LocalHealth | null;
  thresholds: ThresholdCache;
}

/** The shared parts for one proxy and its settings. */
export function newLivenessShared(settings: LivenessSettings, fleet: FleetPrior, health: LocalHealth | null): LivenessShared {
  return { fleet, health, thresholds: thresholdCacheFor(settings) };
}

export function thresholdCacheFor(s: LivenessSettings): ThresholdCache {
  return new ThresholdCache({
    budgetPerHour: s.falseDeathBudget,
    profile: s.profile,
    overrides: s.overrides,
    maxHoldMs: s.maxHoldMs,
    maxDeadMs: s.maxDeadMs,
    thinLinear: s.thinLinear,
    rtoMaxApplied: s.rtoMaxApplied,
  });
}

export interface LivenessSnapshot {
  /** loss: q's upper bound; newcomerProbes: the newcomer rule's floor on n (0: none left). */
  link: { srttMs: number; rttvarMs: number; loss: number; newcomerProbes: number; samples: number };
  state: 'alive' | 'suspect' | 'dead';
  suspectSince: number | null;
  deadlines: { idleDeadAfterMs: number; dataDeadAfterMs: number; keepAliveGraceMs: number; probes: number };
}

const CLEAN_LINK = { qUpper: 0, srttMs: 0, rttvarMs: 0, rtoMs: 200, dataSegsPerHour: 0 };

/** A deterministic phase in [0, 1) from a connection number (Knuth's multiplicative hash). */
export function phaseOf(id: number): number {
  return (Math.imul(id | 0, 0x9e3779b1) >>> 0) / 2 ** 32;
}

export class ConnectionLiveness {
  readonly estimate: LinkEstimate | null;
  readonly silence: TcpSilenceCheck;
  thresholds: Thresholds;
  private keepAliveSeconds = 0;

  private readonly cache: ThresholdCache;

  constructor(
    settings: LivenessSettings,
    shared: LivenessShared,
    private readonly phase: number,
  ) {
    this.cache = shared.thresholds;
    this.estimate = settings.adaptive ? new LinkEstimate(shared.fleet, settings.estimate ?? DEFAULT_ESTIMATE_OPTIONS) : null;
    this.silence = new TcpSilenceCheck(shared.health);
    this.thresholds = this.derive();
  }

  /** Kernel settings to apply at accept (applyTcpLiveness): jittered idle, interval, backstop count and user timeout. */
  kernelSettings(): Thresholds['kernel'] {
    return this.thresholds.kernel;
  }

  /** The keep-alive the proxy enforces is known (after CONNECT). */
  setKeepAlive(seconds: number): void {
    this.keepAliveSeconds = seconds;
    this.thresholds = this.derive();
  }

  /** MQTT keep-alive deadlines after the last packet: suspect at KA + base grace, dead at KA + adaptive grace. */
  keepAliveSilenceMs(): { suspectAfterMs: number; deadAfterMs: number } {
    if (this.keepAliveSeconds <= 0) return { suspectAfterMs: Infinity, deadAfterMs: Infinity };
    const ka = this.keepAliveSeconds * 1000;
    return { suspectAfterMs: ka + this.thresholds.keepAliveGraceBaseMs, deadAfterMs: ka + this.thresholds.keepAliveGraceMs };
  }

  /** Bytes written to the client: when to take the first sample for them (Infinity: already planned). */
  onWrite(now: number): number {
    return this.silence.noteWrite(now, this.thresholds);
  }

  /** One TCP_INFO sample on the timer: update the estimate, re-derive when it moved, judge. */
  onSample(sample: TcpInfoSample, now: number): TcpVerdict {
    if (this.estimate?.update(sample, now)) this.thresholds = this.derive();
    return this.silence.check(sample, now, this.thresholds, this.estimate?.qUpper ?? 0);
  }

  snapshot(): LivenessSnapshot {
    const e = this.estimate;
    const th = this.thresholds;
    return {
      link: { srttMs: e?.srttMs ?? 0, rttvarMs: e?.rttvarMs ?? 0, loss: e?.qUpper ?? 0, newcomerProbes: e?.newcomerN ?? 0, samples: e?.samples ?? 0 },
      state: this.silence.state,
      suspectSince: this.silence.suspectSince >= 0 ? this.silence.suspectSince : null,
      deadlines: { idleDeadAfterMs: th.idle.deadAfterMs, dataDeadAfterMs: th.data.deadAfterMs, keepAliveGraceMs: th.keepAliveGraceMs, probes: th.idle.n },
    };
  }

  close(): void {
    this.estimate?.close();
    this.silence.close();
  }

  private derive(): Thresholds {
    return this.cache.get(this.estimate ?? CLEAN_LINK, this.keepAliveSeconds, this.phase);
  }
}
