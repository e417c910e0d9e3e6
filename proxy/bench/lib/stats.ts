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
