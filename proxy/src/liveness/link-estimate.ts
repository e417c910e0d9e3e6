/**
 * Per-connection link estimate from TCP_INFO samples (read on the connection's timer, never per
 * packet): the kernel's smoothed RTT and variance, and q, the probability that one transmission
 * and its ACK fail (a lost segment or a lost answer). Pure: no I/O, times are Clock milliseconds.
 *
 * Evidence about q, between two samples whose silence has been resolved (the peer answered):
 * - idle interval (no data either way): every segment out is a keep-alive probe and every segment
 *   in its answer, so trials = probes sent, failures = probes - answers (measured on loopback:
 *   proxy/test/tcp-options.test.ts);
 * - data sent: p = retransmissions / data segments. On a thin stream (at most one segment per RTO)
 *   every segment is ACKed on its own and a lost ACK is retransmitted for too: p is q. On a bulk
 *   stream cumulative ACKs hide ACK losses, p is one direction's loss, and a round counts as
 *   q = 1 - (1 - p)^2 (symmetric loss assumed).
 * While an answer is still owed (probes out, or data unacknowledged past one RTO) nothing is
 * committed: a dead peer must not teach its own estimate that the link is lossy and so postpone
 * its own verdict. The evidence of a silence is counted once it ends with an answer.
 *
 * Posterior: Beta(w q0 + failures, w (1 - q0) + successes), q0 the fleet-wide prior, w its weight
 * in pseudo-trials. Decisions use the upper credible bound (95%): little evidence -> conservative.
 * Evidence decays with a half-life so a client that moves into poor coverage is followed.
 */
import { createRequire } from 'node:module';

// jstat (one dependency-free package, no types) for the Beta quantile; CommonJS, loaded once.
const { jStat } = createRequire(import.meta.url)('jstat') as { jStat: { beta: { inv(p: number, a: number, b: number): number } } };
import type { TcpInfoSample } from './tcp-options.ts';
import { newcomerProbes } from './verdict-budget.ts';

/** The p-quantile of Beta(a, b): the credible upper bound of q the decisions use (~25 us). */
export const betaQuantile = (p: number, a: number, b: number): number => jStat.beta.inv(p, a, b);

/** Relative grid of the shared bounds: a rounded up and b down by at most 1 %. */
const GRID = Math.log(1.01);
const GRID_OFFSET = 4096;
const boundMemo = new Map<number, number>();
const BOUND_MEMO_MAX = 16_384;

/**
 * betaQuantile on a 1 % grid, shared by every connection. Thousands of idle connections ask the
 * same few questions (the same prior, a handful of clean rounds each), and a new one asks at every
 * sample of its first minutes: at 9,000 idle connections the exact quantile cost ~4 % of a core
 * (`npm run bench`, idle). Conservative: the upper quantile of Beta(a, b) grows with a and falls
 * with b, so a is rounded up and b down, and the shared bound is never below the exact one
 * (property-tested; at most ~4 % above it, the most where q is tiny and n at its floor anyway).
 */
export function upperBound(p: number, a: number, b: number): number {
  // Only the decisions' own credibility is shared; any other is computed exactly.
  if (p !== DEFAULT_ESTIMATE_OPTIONS.credibility || !(a > 0 && b > 0)) return betaQuantile(p, a, b);
  const ia = Math.ceil(Math.log(a) / GRID - 1e-9);
  const ib = Math.floor(Math.log(b) / GRID + 1e-9);
  if (Math.abs(ia) >= GRID_OFFSET || Math.abs(ib) >= GRID_OFFSET) return betaQuantile(p, a, b);
  const key = (ia + GRID_OFFSET) * 2 * GRID_OFFSET + (ib + GRID_OFFSET);
  let q = boundMemo.get(key);
  if (q === undefined) {
    q = betaQuantile(p, Math.exp(ia * GRID), Math.exp(ib * GRID));
    if (boundMemo.size >= BOUND_MEMO_MAX) boundMemo.clear();
    boundMemo.set(key, q);
  }
  return q;
}

export interface EstimateOptions {
  /** Weight of the fleet prior, in pseudo-trials. */
  priorWeight: number;
  /** Credibility of the upper bound used for decisions. */
  credibility: number;
  /** Half-life of evidence, ms. */
  halfLifeMs: number;
}

export const DEFAULT_ESTIMATE_OPTIONS: EstimateOptions = { priorWeight: 20, credibility: 0.95, halfLifeMs: 3_600_000 };

/**
 * The fleet-wide prior for q: the mean of the connections' own loss estimates (those with at
 * least minTrials of evidence), blended with a conservative constant that counts as one
 * connection, so a lone connection cannot make the prior optimistic for everyone. O(1) per update.
 */
export class FleetPrior {
  private sum = 0;
  private count = 0;

  constructor(
    readonly defaultQ = 0.05,
    readonly minTrials = 30,
    /** Never below this: a prior of exactly 0 would make the first contact with a lossy link deadly. */
    readonly floorQ = 0.001,
  ) {}

  q(): number {
    return Math.max(this.floorQ, (this.sum + this.defaultQ) / (this.count + 1));
  }

  get contributors(): number {
    return this.count;
  }

  /** Replace one connection's contribution (NaN: none). */
  replace(oldQ: number, newQ: number): void {
    if (!Number.isNaN(oldQ)) {
      this.sum -= oldQ;
      this.count--;
    }
    if (!Number.isNaN(newQ)) {
      this.sum += newQ;
      this.count++;
    }
    if (this.count === 0) this.sum = 0; // no drift from float error
  }
}

/** u32 counter difference, wrap-safe. */
const delta = (now: number, before: number): number => (now - before) >>> 0;

export class LinkEstimate {
  srttMs = 0;
  rttvarMs = 0;
  rtoMs = 200;
  /** Decayed evidence about q. */
  trials = 0;
  failures = 0;
  /** Upper credible bound and mean of q (posterior with the fleet prior). */
  qUpper = 0;
  qMean = 0;
  /** The newcomer rule's floor on n from this connection's own rounds (verdict-budget.ts). */
  newcomerN = 0;
  /** Data segments sent per hour (smoothed): the rate of possible data-in-flight episodes. */
  dataSegsPerHour = 0;
  /** Samples seen, and samples whose evidence was committed. */
  samples = 0;
  commits = 0;
  /** When the last commit with a lost round was made (-1: none): the loss came before it (keepalive-watch.ts). */
  lastLossAt = -1;

  // Counters at the last commit.
  private baseAt = -1;
  private baseSegsOut = 0;
  private baseSegsIn = 0;
  private baseDataOut = 0;
  private baseDataIn = 0;
  private baseRetrans = 0;
  // What the bound was last computed from (~25 us with jstat: recomputed only on a material change).
  private boundTrials = -1;
  private boundFailures = -1;
  private boundPrior = -1;
  /** This connection's contribution to the fleet mean (NaN: none). */
  private fleetShare = NaN;

  constructor(
    private readonly fleet: FleetPrior,
    private readonly opts: EstimateOptions = DEFAULT_ESTIMATE_OPTIONS,
  ) {
    this.refreshBound();
  }

  /** Feed one sample. Returns true when qUpper or the RTT figures changed (thresholds to re-derive). */
  update(s: TcpInfoSample, now: number): boolean {
    const before = this.qUpper;
    const newcomerBefore = this.newcomerN;
    const rttBefore = this.srttMs + 4 * this.rttvarMs;
    this.samples++;
    this.srttMs = s.rttUs / 1000;
    this.rttvarMs = s.rttvarUs / 1000;
    if (s.rtoUs > 0 && s.backoff === 0) this.rtoMs = s.rtoUs / 1000; // the un-backed-off RTO
    if (this.baseAt < 0) {
      this.rebase(s, now);
    } else if (!answerOwed(s, this.rtoMs)) {
      this.commit(s, now);
    }
    this.refreshBound();
    return this.qUpper !== before || this.newcomerN !== newcomerBefore || Math.abs(this.srttMs + 4 * this.rttvarMs - rttBefore) > 0.2 * rttBefore + 5;
  }

  /** The connection ended: withdraw its share of the fleet prior. */
  close(): void {
    this.fleet.replace(this.fleetShare, NaN);
    this.fleetShare = NaN;
  }

  private commit(s: TcpInfoSample, now: number): void {
    const dataOut = delta(s.dataSegsOut, this.baseDataOut);
    const dataIn = delta(s.dataSegsIn, this.baseDataIn);
    const segsOut = delta(s.segsOut, this.baseSegsOut);
    const segsIn = delta(s.segsIn, this.baseSegsIn);
    const retrans = delta(s.totalRetrans, this.baseRetrans);
    const elapsed = now - this.baseAt;
    let trials = 0;
    let failures = 0;
    if (dataOut > 0) {
      const p = Math.min(1, retrans / dataOut);
      trials = dataOut;
      // A thin stream (at most one segment per RTO on average: MQTT's usual traffic) has each segment
      // ACKed on its own, so a lost ACK costs a retransmission too and p already measures a whole round
      // (measured: counting it twice made q at 10 % loss look like 0.34 and verdicts 30 % slower).
      // A bulk stream's cumulative ACKs hide ACK losses: count both directions.
      const thin = dataOut * this.rtoMs <= elapsed;
      failures = thin ? dataOut * p : dataOut * (1 - (1 - p) * (1 - p));
    } else if (dataIn === 0 && segsOut > 0) {
      trials = segsOut;
      failures = Math.max(0, segsOut - segsIn);
    }
    if (elapsed > 0) {
      const decay = Math.pow(2, -elapsed / this.opts.halfLifeMs);
      this.trials = this.trials * decay + trials;
      this.failures = this.failures * decay + failures;
      const rate = (dataOut * 3_600_000) / elapsed;
      const w = Math.min(1, elapsed / 60_000); // about a minute of smoothing
      this.dataSegsPerHour += w * (rate - this.dataSegsPerHour);
    }
    this.commits++;
    if (failures > 0) this.lastLossAt = now;
    this.rebase(s, now);
    const share = this.trials >= this.fleet.minTrials ? this.failures / this.trials : NaN;
    if (!(Number.isNaN(share) && Number.isNaN(this.fleetShare)) && share !== this.fleetShare) {
      this.fleet.replace(this.fleetShare, share);
      this.fleetShare = share;
    }
  }

  private rebase(s: TcpInfoSample, now: number): void {
    this.baseAt = now;
    this.baseSegsOut = s.segsOut;
    this.baseSegsIn = s.segsIn;
    this.baseDataOut = s.dataSegsOut;
    this.baseDataIn = s.dataSegsIn;
    this.baseRetrans = s.totalRetrans;
  }

  private refreshBound(): void {
    const q0 = this.fleet.q();
    // 10% moves: n = ceil(log b / log q) rarely changes for less, and a lossy link would
    // otherwise pay the quantile on every sample.
    const material =
      Math.abs(this.failures - this.boundFailures) >= Math.max(0.25, 0.1 * this.boundFailures) ||
      Math.abs(this.trials - this.boundTrials) > 0.1 * this.boundTrials ||
      Math.abs(q0 - this.boundPrior) > 0.1 * this.boundPrior;
    if (!material) return;
    this.boundTrials = this.trials;
    this.boundFailures = this.failures;
    this.boundPrior = q0;
    const w = this.opts.priorWeight;
    const a = w * q0 + this.failures;
    const b = w * (1 - q0) + Math.max(0, this.trials - this.failures);
    this.qMean = a / (a + b);
    this.qUpper = upperBound(this.opts.credibility, a, b);
    this.newcomerN = newcomerProbes(this.trials, this.failures, this.qMean);
  }
}

/**
 * Whether the peer owes an answer right now: probes out with nothing queued (keep-alive
 * probing; with bytes queued behind a zero window they are window probes, answered or not),
 * or data unacknowledged for longer than one RTO.
 */
export function answerOwed(s: TcpInfoSample, rtoMs: number): boolean {
  if (s.unacked > 0) return s.lastAckRecvMs > rtoMs;
  return s.probes > 0 && s.notsentBytes === 0;
}
