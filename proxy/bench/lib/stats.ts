/** Small numeric helpers for benchmark results. */

export interface Percentiles {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** Percentiles (nearest rank) of the first `count` values; sorts that part in place. */
export function percentiles(values: Float64Array, count = values.length): Percentiles {
  const v = values.subarray(0, count).sort();
  const at = (q: number): number => (count === 0 ? NaN : v[Math.min(count - 1, Math.max(0, Math.ceil(q * count) - 1))]);
  let sum = 0;
  for (let i = 0; i < count; i++) sum += v[i];
  return { count, p50: at(0.5), p90: at(0.9), p99: at(0.99), p999: at(0.999), max: count ? v[count - 1] : NaN, mean: count ? sum / count : NaN };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function round(x: number, digits = 0): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** 1234567 -> "1.23 M", 12345 -> "12.3 k". */
export function si(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a >= 1e6) return `${(x / 1e6).toPrecision(3)} M`;
  if (a >= 1e3) return `${(x / 1e3).toPrecision(3)} k`;
  return x.toPrecision(3);
}

export interface MedianInterval {
  median: number;
  low: number;
  high: number;
  /** The interval's exact coverage (binomial), at least the level asked for. */
  coverage: number;
}

/**
 * The median of `xs` with a distribution-free confidence interval: the order
 * statistics a binomial(n, 1/2) sign test puts around it. Latency rounds are
 * neither normal nor independent of the machine's drift, so no mean and
 * standard error; pairing rounds that ran back to back removes most of the
 * drift. Null when no interval reaches `level` (fewer than 6 values for 95 %).
 */
export function medianInterval(xs: readonly number[], level = 0.95): MedianInterval | null {
  const n = xs.length;
  const s = [...xs].sort((a, b) => a - b);
  // Adds up the binomial terms P(X = i), X ~ Bin(n, 1/2), until the lower tail passes (1 - level) / 2.
  let term = 0.5 ** n;
  let below = 0;
  let k = -1; // the largest k with P(X <= k) <= (1 - level) / 2
  for (let i = 0; i <= n; i++) {
    below += term;
    if (below > (1 - level) / 2) break;
    k = i;
    term = (term * (n - i)) / (i + 1);
  }
  if (k < 0) return null;
  const tail = below - term; // P(X <= k)
  return { median: median(s), low: s[k], high: s[n - 1 - k], coverage: 1 - 2 * tail };
}

/**
 * a - b in ms round by round, for values measured back to back in each round (the
 * bench alternates the targets), so the machine's drift between rounds cancels:
 * "paired by round: median +0.030 ms, 95.9 % interval -0.020..+0.090 ms, not
 * above in 7 of 20". It says how far a difference of medians can be trusted.
 */
export function pairedDifference(a: readonly number[], b: readonly number[]): string {
  if (a.length !== b.length || a.length === 0) return 'paired by round: no pairs';
  const d = a.map((x, i) => x - b[i]);
  const signed = (v: number): string => `${v >= 0 ? '+' : ''}${v.toFixed(3)}`;
  const ci = medianInterval(d);
  const interval = ci ? `, ${(ci.coverage * 100).toFixed(1)} % interval ${signed(ci.low)}..${signed(ci.high)} ms` : '';
  return `paired by round: median ${signed(median(d))} ms${interval}, not above in ${d.filter((v) => v <= 0).length} of ${d.length}`;
}
