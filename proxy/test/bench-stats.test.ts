/** The bench's statistics (proxy/bench/lib/stats.ts): pure, checked against values worked out by hand. */
import t from 'tap';
import { median, medianInterval, pairedDifference, percentiles } from '../bench/lib/stats.ts';

t.test('percentiles are nearest-rank', async (t) => {
  const v = Float64Array.from({ length: 100 }, (_, i) => 100 - i);
  const p = percentiles(v);
  t.equal(p.p50, 50);
  t.equal(p.p99, 99);
  t.equal(p.max, 100);
  t.equal(median([3, 1, 2, 10]), 2.5);
});

t.test('medianInterval: binomial order statistics around the median', async (t) => {
  t.equal(medianInterval([1, 2, 3, 4, 5]), null, '5 values cannot give 95 % (the widest covers 1 - 2/32 = 93.75 %)');
  const six = medianInterval([6, 1, 5, 2, 4, 3])!;
  t.same([six.low, six.high, six.median], [1, 6, 3.5], 'six values: min and max');
  t.equal(six.coverage, 1 - 2 / 64);
  // n = 20: P(X <= 5) = 0.0207 <= 0.025 < P(X <= 6) = 0.0577, so the 6th and 15th values.
  const xs = Array.from({ length: 20 }, (_, i) => (i * 7) % 20); // 0..19, shuffled
  const i20 = medianInterval(xs)!;
  t.same([i20.low, i20.high, i20.median], [5, 14, 9.5]);
  t.ok(Math.abs(i20.coverage - 0.9586) < 1e-4, `coverage ${i20.coverage}`);
  const wide = medianInterval(xs, 0.99)!;
  t.same([wide.low, wide.high], [3, 16], '99 %: P(X <= 3) = 0.0013 <= 0.005 < P(X <= 4) = 0.0059');
});

t.test('medianInterval: a shift every value shares moves the interval off zero', async (t) => {
  const noise = [0.12, -0.08, 0.05, -0.03, 0.1, -0.11, 0.02, 0.07, -0.06, 0.01, -0.02, 0.09];
  const none = medianInterval(noise)!;
  t.ok(none.low < 0 && none.high > 0, `no shift: [${none.low}, ${none.high}] holds 0`);
  const shifted = medianInterval(noise.map((x) => x + 0.2))!;
  t.ok(shifted.low > 0, `shifted by 0.2: [${shifted.low}, ${shifted.high}] is above 0`);
});

t.test('pairedDifference: round by round, with its interval', async (t) => {
  const b = [1, 2, 3, 4, 5, 6];
  t.equal(pairedDifference(b.map((x) => x + 0.1), b), 'paired by round: median +0.100 ms, 96.9 % interval +0.100..+0.100 ms, not above in 0 of 6');
  t.equal(pairedDifference([1, 2], [2, 1]), 'paired by round: median +0.000 ms, not above in 1 of 2', 'no interval below 6 pairs');
  t.equal(pairedDifference([1], [1, 2]), 'paired by round: no pairs');
});
