/**
 * From a link estimate and a false-death budget to every liveness threshold of one connection.
 * Pure.
 *
 * Budget B: expected false deaths per client-hour. A verdict needs n transmissions in a row to
 * fail (n keep-alive probes, or n transmissions of the same data segment); on a link where one
 * round fails with probability q that happens by chance with probability q^n per episode. With
 * E episodes an hour, E q^n <= B gives n = ceil(log(B / E) / log q), q taken at its upper
 * credible bound. The kernel only probes; the proxy judges with n, and the kernel's own kill
 * switch (TCP_USER_TIMEOUT, TCP_KEEPCNT) is a backstop beyond every proxy verdict.
 */

export interface Profile {
  name: 'fast' | 'balanced' | 'battery';
  /** TCP_KEEPIDLE before jitter, s. */
  idleSeconds: number;
  /** Per-connection factor range applied to idle (phase spread); the kernel takes whole seconds. */
  idleJitter: readonly [number, number];
  intervalSeconds: number;
  /** Fewest probes / transmissions before a TCP-silence verdict. */
  minProbes: number;
  /** Floor of the data-in-flight verdict, ms (today's TCP_USER_TIMEOUT: 8 s). */
  minDataDeadMs: number;
  /**
   * TCP_RTO_MAX_MS (Linux >= 6.15; 120 s before): caps the retransmission backoff so that n
   * transmissions of unacknowledged data fit in seconds, not minutes (n = 9 at 5% loss takes
   * 128 s on the default ladder from a 250 ms RTO, 7.8 s capped at 1 s). Thin streams only
   * retransmit a few segments, so the cost is a retransmission a second to a client in trouble.
   */
  rtoMaxMs: number;
}

export const PROFILES: Readonly<Record<Profile['name'], Profile>> = {
  // Jitter downwards: faster verdicts, up to 25% more probes than today.
  fast: { name: 'fast', idleSeconds: 5, idleJitter: [0.8, 1.0], intervalSeconds: 1, minProbes: 3, minDataDeadMs: 5_000, rtoMaxMs: 1_000 },
  // Jitter upwards: never more probes than today's 720 per idle hour.
  balanced: { name: 'balanced', idleSeconds: 5, idleJitter: [1.0, 1.2], intervalSeconds: 1, minProbes: 3, minDataDeadMs: 8_000, rtoMaxMs: 1_000 },
  battery: { name: 'battery', idleSeconds: 25, idleJitter: [1.0, 1.2], intervalSeconds: 2, minProbes: 3, minDataDeadMs: 15_000, rtoMaxMs: 2_000 },
};

/** Explicit settings (tcp.*, keepAlive.grace): each one set wins over the derived value. */
export interface Overrides {
  idleSeconds?: number;
  intervalSeconds?: number;
  /** Floor of n (the profile's minProbes). */
  count?: number;
  /** Floor of the data-in-flight verdict (the profile's minDataDeadMs). */
  userTimeoutMs?: number;
  /** The base MQTT keep-alive grace, ms (today min(2 s, 0.5 x KA)). */
  keepAliveGraceMs?: number;
}

/** The link figures the budget needs (a LinkEstimate fits). */
export interface LinkView {
  qUpper: number;
  /** The newcomer rule's floor on n (newcomerProbes): 10 for a new connection, gone once its own rounds tell. Absent: none. */
  newcomerN?: number;
  srttMs: number;
  rttvarMs: number;
  rtoMs: number;
  dataSegsPerHour: number;
}

export interface BudgetInputs {
  link: LinkView;
  /** Expected false deaths per client-hour. */
  budgetPerHour: number;
  profile: Profile;
  overrides: Overrides;
  /** Keep-alive the proxy enforces, s (0: none). */
  keepAliveSeconds: number;
  /** Per-connection phase in [0, 1) (e.g. from a hash of the connection id). */
  phase: number;
  /** Longest a correlated verdict may be held (local health), ms. */
  maxHoldMs: number;
  /** Cap on any TCP-silence verdict, ms. */
  maxDeadMs: number;
  /** TCP_THIN_LINEAR_TIMEOUTS on: the first 6 retransmissions do not back off. */
  thinLinear: boolean;
  /** TCP_RTO_MAX_MS could be set on the socket (else the kernel's 120 s ladder applies). */
  rtoMaxApplied: boolean;
}

export interface SilenceThresholds {
  /** Transmissions that must all fail (n). */
  n: number;
  /** From the first unanswered transmission: suspect (first missed answer). */
  suspectAfterMs: number;
  /** ... silence improbable for this link (q^m <= CORRELATE_P): reported to local health. */
  correlateAfterMs: number;
  /** ... dead. */
  deadAfterMs: number;
  /** The kernel's own count that must agree before dead: probes out (idle), retransmissions + 1 (data). */
  required: number;
  /** False: the cap (maxDeadMs) made the verdict faster than the budget allows. */
  budgetMet: boolean;
}

export interface Thresholds {
  kernel: { idleSeconds: number; intervalSeconds: number; count: number; userTimeoutMs: number; rtoMaxMs: number };
  /** Idle probing, measured from the first keep-alive probe. */
  idle: SilenceThresholds;
  /** Data in flight, measured from the first unacknowledged transmission. */
  data: SilenceThresholds;
  /** MQTT keep-alive: suspect at KA + base grace, dead at KA + adaptive grace (0 when KA is 0). */
  keepAliveGraceBaseMs: number;
  keepAliveGraceMs: number;
  /** Keep-alive probes an idle client gets per hour. */
  probesPerIdleHour: number;
}

/** A silence at least this improbable on the connection's own link counts as a correlation onset. */
export const CORRELATE_P = 0.01;
const MAX_PROBES = 127; // TCP_KEEPCNT's kernel limit
export const KERNEL_RTO_MAX_MS = 120_000; // Linux TCP_RTO_MAX
const THIN_LINEAR_RETRIES = 6; // Linux TCP_THIN_LINEAR_RETRIES
const BACKSTOP_MARGIN_MS = 10_000;

/**
 * The newcomer rule. A new connection's estimate leans on the fleet's prior: in a clean fleet
 * it starts at n = 3 or 4, and a newcomer that is in fact on a lossy cellular link would see its
 * first failure streak reach n with probability q^(n-1) (13 % for n = 3 at q = 0.36, 20 % loss
 * each way) before that streak could teach its estimate anything: the evidence of a silence is
 * committed only once it ends. That is a healthy client cut in its first minutes, however clean
 * the others are (measured: 4 false deaths in 123 newcomers on a 20 % link, `bench:lossy`
 * newcomers). So each connection also weighs, by Bayes' rule on its own rounds, "my link is as
 * bad as q_b" against "my link is as my estimate says", prior 1/2, for q_b in BAD_LINKS (about
 * 5, 10 and 20 % loss each way), and n also keeps the one-off risk of the next streak below
 * NEWCOMER_RISK for each: pBad(q_b) x q_b^(n-1) <= NEWCOMER_RISK. A new connection gets n = 10;
 * a clean one 8 after ~6 rounds, 5 after ~13, 3 after ~60 (idle: rounds are probe periods of
 * 5-6 s; with data every segment is a round). Simulated on the pure functions (60 rounds, a
 * clean fleet): false deaths per newcomer 2e-4 at q = 0.1 or 0.2 and 8e-4 at 0.36, against
 * 1e-3 to 0.13 without the rule.
 */
export const BAD_LINKS: readonly number[] = [0.1, 0.2, 1 - 0.8 ** 2];
export const NEWCOMER_RISK = 1e-4;
/** Prior probability of each bad-link hypothesis against the estimate: no opinion either way. */
export const NEWCOMER_PRIOR = 0.5;

/**
 * Bayes' rule between two hypotheses for one connection's q: qBad, or its own mean estimate qOk,
 * after `failures` failed rounds out of `trials`. Each clean round multiplies the odds of the bad
 * link by (1 - qBad) / (1 - qOk), each failed one by qBad / qOk.
 */
export function badLinkProbability(trials: number, failures: number, qOk: number, qBad: number, prior = NEWCOMER_PRIOR): number {
  const ok = Math.min(Math.max(qOk, 1e-6), 1 - 1e-6);
  const logLr = failures * Math.log(qBad / ok) + Math.max(0, trials - failures) * Math.log((1 - qBad) / (1 - ok));
  const logOdds = Math.log(prior / (1 - prior)) + logLr;
  return logOdds > 0 ? 1 / (1 + Math.exp(-logOdds)) : Math.exp(logOdds) / (1 + Math.exp(logOdds));
}

/** The newcomer rule's floor on n from a connection's own evidence (0 when no hypothesis needs one). */
export function newcomerProbes(trials: number, failures: number, qOk: number, hi = MAX_PROBES): number {
  let n = 0;
  for (const qBad of BAD_LINKS) {
    const p = badLinkProbability(trials, failures, qOk, qBad);
    if (p > NEWCOMER_RISK) n = Math.max(n, 1 + probesFor(qBad, NEWCOMER_RISK / p, 0, hi - 1));
  }
  return Math.min(n, hi);
}

/** Smallest n >= lo with q^n <= p (n <= hi). */
export function probesFor(q: number, p: number, lo: number, hi: number): number {
  if (!(q > 0)) return lo;
  if (q >= 1 || !(p > 0)) return hi;
  if (p >= 1) return lo;
  const n = Math.ceil(Math.log(p) / Math.log(q) - 1e-9);
  return Math.min(hi, Math.max(lo, n));
}

/** The RTO ladder: how retransmission timeouts grow (Linux tcp_retransmit_timer). */
export interface Ladder {
  rtoMs: number;
  rtoMaxMs: number;
  thinLinear: boolean;
}

/** When the answer to the n-th transmission on the RTO ladder is overdue, ms after the first. */
export function rtoLadderMs(n: number, l: Ladder): number {
  let t = 0;
  let rto = l.rtoMs;
  for (let k = 0; k < n; k++) {
    t += Math.min(rto, l.rtoMaxMs);
    if (!(l.thinLinear && k < THIN_LINEAR_RETRIES)) rto = Math.min(rto * 2, l.rtoMaxMs);
  }
  return t;
}

/** Transmissions the kernel has made by `ms` after the first (the first included). */
export function transmissionsWithin(ms: number, l: Ladder): number {
  let n = 1;
  while (n < MAX_PROBES && rtoLadderMs(n, l) <= ms) n++;
  return n;
}

/** Idle after the per-connection jitter, whole seconds (TCP_KEEPIDLE's unit). */
export function jitteredIdleSeconds(profile: Profile, phase: number): number {
  const [lo, hi] = profile.idleJitter;
  const f = lo + (hi - lo) * Math.min(Math.max(phase, 0), 1);
  return Math.max(1, Math.round(profile.idleSeconds * f));
}

export function deriveThresholds(x: BudgetInputs): Thresholds {
  const { link, profile, overrides: o } = x;
  const q = Math.min(Math.max(link.qUpper, 0), 1);
  const idleS = o.idleSeconds ?? jitteredIdleSeconds(profile, x.phase);
  const intervalS = o.intervalSeconds ?? profile.intervalSeconds;
  const intervalMs = intervalS * 1000;
  const minN = o.count ?? profile.minProbes;
  const answerWaitMs = Math.max(intervalMs, link.srttMs + 4 * link.rttvarMs);

  // Idle probing: one episode per idle period.
  const idleEpisodes = 3600 / idleS;
  const nNew = Math.min(link.newcomerN ?? 0, MAX_PROBES);
  const nIdle = Math.max(nNew, probesFor(q, x.budgetPerHour / idleEpisodes, minN, MAX_PROBES));
  const mIdle = Math.min(probesFor(q, CORRELATE_P, 1, MAX_PROBES), Math.max(1, nIdle - 1));
  const idleNeed = (nIdle - 1) * intervalMs + answerWaitMs;
  const idle: SilenceThresholds = {
    n: nIdle,
    required: Math.min(nIdle, Math.floor(Math.min(idleNeed, x.maxDeadMs) / intervalMs)),
    suspectAfterMs: Math.min(answerWaitMs, x.maxDeadMs),
    correlateAfterMs: Math.min((mIdle - 1) * intervalMs + answerWaitMs, x.maxDeadMs),
    deadAfterMs: Math.min(idleNeed, x.maxDeadMs),
    budgetMet: idleNeed <= x.maxDeadMs,
  };

  // Data in flight: one episode per data segment sent (at least one a minute).
  const dataEpisodes = Math.max(60, link.dataSegsPerHour);
  const nData = Math.max(nNew, probesFor(q, x.budgetPerHour / dataEpisodes, minN, MAX_PROBES));
  const mData = Math.min(probesFor(q, CORRELATE_P, 1, MAX_PROBES), Math.max(1, nData - 1));
  const dataFloorMs = o.userTimeoutMs ?? profile.minDataDeadMs;
  const ladder: Ladder = { rtoMs: link.rtoMs, rtoMaxMs: x.rtoMaxApplied ? profile.rtoMaxMs : KERNEL_RTO_MAX_MS, thinLinear: x.thinLinear };
  const dataNeed = Math.max(rtoLadderMs(nData, ladder), idleNeed, dataFloorMs);
  const dataDead = Math.min(dataNeed, x.maxDeadMs);
  const data: SilenceThresholds = {
    n: nData,
    required: Math.min(nData, transmissionsWithin(dataDead, ladder)),
    suspectAfterMs: Math.min(rtoLadderMs(1, ladder), x.maxDeadMs),
    correlateAfterMs: Math.min(rtoLadderMs(mData, ladder), dataNeed, x.maxDeadMs),
    deadAfterMs: dataDead,
    budgetMet: dataNeed <= x.maxDeadMs,
  };

  // The kernel gives up only after every proxy verdict and the longest hold (backstop).
  const backstopMs = Math.max(idleS * 1000 + x.maxDeadMs, x.maxDeadMs) + x.maxHoldMs + BACKSTOP_MARGIN_MS;
  const kernel = {
    idleSeconds: idleS,
    intervalSeconds: intervalS,
    count: Math.min(MAX_PROBES, Math.ceil(backstopMs / intervalMs)),
    userTimeoutMs: backstopMs,
    rtoMaxMs: profile.rtoMaxMs,
  };

  const { base, adaptive } = keepAliveGrace(x.keepAliveSeconds, q, x.budgetPerHour, link, o.keepAliveGraceMs);
  return {
    kernel,
    idle,
    data,
    keepAliveGraceBaseMs: base,
    keepAliveGraceMs: adaptive,
    probesPerIdleHour: 3600 / idleS,
  };
}

/**
 * MQTT keep-alive grace. A PINGREQ that needed k retransmissions arrives about
 * RTO x (2^k - 1) + srtt late; one keep-alive period is one episode, so k is the smallest with
 * q^k <= B x KA / 3600. Never more than 0.5 x KA: the proxy waits no longer than the broker's
 * own 1.5 x KA. Suspect at KA + base, dead at KA + adaptive, so a frozen client on a clean link
 * is still caught at KA + base (<= KA + 2 s).
 */
export function keepAliveGrace(
  keepAliveSeconds: number,
  q: number,
  budgetPerHour: number,
  link: Pick<LinkView, 'rtoMs' | 'srttMs'>,
  explicitBaseMs: number | undefined,
): { base: number; adaptive: number } {
  if (keepAliveSeconds <= 0) return { base: 0, adaptive: 0 };
  const capMs = 500 * keepAliveSeconds;
  const base = Math.min(explicitBaseMs ?? Math.min(2000, capMs), capMs);
  const k = probesFor(q, (budgetPerHour * keepAliveSeconds) / 3600, 1, 30);
  const late = link.rtoMs * (2 ** k - 1) + link.srttMs;
  return { base, adaptive: Math.min(Math.max(base, late), capMs) };
}

/**
 * Thresholds shared between connections whose inputs round to the same values, so a connection
 * holds a reference, not its own copy (memory per idle connection). Rounding is upwards only:
 * every threshold is monotone non-decreasing in q, newcomerN, RTT, RTO and the data rate (property-tested),
 * so a shared entry is never faster than the exact one. One cache per settings (profile, budget,
 * overrides, caps); treat entries as read-only.
 */
export class ThresholdCache {
  private readonly map = new Map<string, Thresholds>();

  constructor(
    private readonly base: Omit<BudgetInputs, 'link' | 'keepAliveSeconds' | 'phase'>,
    private readonly maxEntries = 10_000,
  ) {}

  get size(): number {
    return this.map.size;
  }

  get(link: LinkView, keepAliveSeconds: number, phase: number): Thresholds {
    const idle = this.base.overrides.idleSeconds ?? jitteredIdleSeconds(this.base.profile, phase);
    const q = roundUpQ(link.qUpper);
    const newcomerN = link.newcomerN ?? 0;
    const srtt = roundUp(link.srttMs, 10);
    const rttvar = roundUp(link.rttvarMs, 10);
    const rto = roundUp(link.rtoMs, 10);
    const rate = link.dataSegsPerHour <= 60 ? 60 : 2 ** Math.ceil(Math.log2(link.dataSegsPerHour));
    const key = `${q} ${newcomerN} ${srtt} ${rttvar} ${rto} ${rate} ${keepAliveSeconds} ${idle}`;
    let th = this.map.get(key);
    if (th === undefined) {
      if (this.map.size >= this.maxEntries) this.map.clear();
      th = deriveThresholds({
        ...this.base,
        link: { qUpper: q, newcomerN, srttMs: srtt, rttvarMs: rttvar, rtoMs: rto, dataSegsPerHour: rate },
        keepAliveSeconds,
        phase,
        overrides: { ...this.base.overrides, idleSeconds: idle },
      });
      this.map.set(key, th);
    }
    return th;
  }
}

const roundUp = (x: number, step: number): number => Math.ceil(x / step) * step;

/** q rounded up onto a grid 5% apart (0 and 1 exact). */
function roundUpQ(q: number): number {
  if (!(q > 1e-9)) return q > 0 ? 1e-9 : 0;
  if (q >= 1) return 1;
  const k = Math.ceil(Math.log(q / 1e-9) / Math.log(1.05) - 1e-9);
  return Math.min(1, 1e-9 * 1.05 ** k);
}
