import t from 'tap';
import fc from 'fast-check';
import { FleetPrior, LinkEstimate, answerOwed, betaQuantile, upperBound } from '../src/liveness/link-estimate.ts';
import { FakeKernelSocket, sample, heapBytesPer } from './helpers/tcp-sample.ts';

t.test('clean idle probing drives q down to the floor where 3 probes suffice', (t) => {
  const fleet = new FleetPrior();
  const est = new LinkEstimate(fleet);
  t.ok(est.qUpper > 0.1, `no evidence, fleet knows nothing: conservative q<=${est.qUpper.toFixed(3)}`);
  const k = new FakeKernelSocket();
  let now = 0;
  est.update(k.s, now); // first sample: baseline only
  t.equal(est.trials, 0);
  for (let i = 0; i < 720; i++) {
    now += 5000;
    est.update(k.probes(1, 1).s, now);
  }
  t.equal(est.failures, 0);
  // 720 probes over one half-life: 720 x (1 - 1/2) / ln 2 ~ 519 after decay.
  t.ok(est.trials > 500 && est.trials < 540, `an hour of probes, decayed: ${est.trials.toFixed(0)}`);
  t.ok(est.qUpper < 0.0052, `q<=${est.qUpper.toExponential(2)}: (q)^3 below the per-episode budget`);
  t.equal(est.srttMs, 20);
  t.equal(est.rttvarMs, 5);
  t.equal(est.rtoMs, 220);
  t.equal(fleet.contributors, 1, 'enough evidence: it now informs the fleet prior');
  t.end();
});

t.test('lossy probing: failures = probes - answers, and the bound sits above the mean', (t) => {
  const est = new LinkEstimate(new FleetPrior());
  const k = new FakeKernelSocket();
  est.update(k.s, 0);
  for (let i = 1; i <= 200; i++) est.update(k.probes(3, 2).s, i * 6000); // each episode: 2 misses... answered twice of 3
  t.ok(Math.abs(est.failures / est.trials - 1 / 3) < 1e-9);
  t.ok(est.qMean > 0.3 && est.qMean < 0.34, `mean ${est.qMean}`);
  t.ok(est.qUpper > est.qMean && est.qUpper < 0.4, `upper ${est.qUpper}`);
  t.end();
});

t.test('data: retransmissions over data segments, counted for both directions of a round', (t) => {
  const est = new LinkEstimate(new FleetPrior());
  const k = new FakeKernelSocket();
  est.update(k.s, 0);
  est.update(k.data(100, 10).s, 10_000);
  t.equal(est.trials, 100);
  t.ok(Math.abs(est.failures - 19) < 1e-9, 'p = 0.1 each way -> q = 1 - 0.9^2 = 0.19 per segment');
  t.ok(est.dataSegsPerHour > 0, 'data rate learnt');
  // Client data in and no data out: pure ACKs and probes cannot be told apart, no probe evidence.
  est.update(k.set({ dataSegsIn: k.s.dataSegsIn + 5, segsIn: k.s.segsIn + 5, segsOut: k.s.segsOut + 5 }).s, 20_000);
  t.equal(est.trials < 100, true, 'decay only');
  t.end();
});

t.test('data on a thin stream: each segment ACKed on its own, so p already counts a whole round', (t) => {
  const est = new LinkEstimate(new FleetPrior());
  const k = new FakeKernelSocket();
  est.update(k.s, 0);
  est.update(k.data(20, 4).s, 60_000); // 20 segments in a minute, one at a time
  t.equal(est.trials, 20);
  t.ok(Math.abs(est.failures - 4) < 0.01, `4 retransmissions = 4 failed rounds (${est.failures})`);
  t.end();
});

t.test('a silence still owed is never learnt from: a dead peer cannot postpone its own verdict', (t) => {
  const fleet = new FleetPrior();
  const est = new LinkEstimate(fleet);
  const k = new FakeKernelSocket();
  est.update(k.s, 0);
  for (let i = 1; i <= 100; i++) est.update(k.probes(1, 1).s, i * 5000);
  const q = est.qUpper;
  const trials = est.trials;
  // Pulled cable: probes go out unanswered, each sample sees them outstanding.
  for (let p = 1; p <= 10; p++) est.update(k.probes(1, 0).set({ probes: p, lastAckRecvMs: 5000 + p * 1000 }).s, 500_000 + p * 1000);
  t.equal(est.trials, trials, 'nothing committed while probes are out');
  t.equal(est.qUpper, q, 'the bound did not move');
  // Had it been an outage: the answer comes, and the 10 misses are learnt with it.
  est.update(k.probes(1, 1).set({ probes: 0, lastAckRecvMs: 10 }).s, 520_000);
  t.ok(est.failures > 9.9, `the survived silence counts: ${est.failures.toFixed(2)} failures`);
  t.ok(est.qUpper > q);
  est.close();
  t.equal(fleet.contributors, 0, 'closing withdraws the share');
  t.end();
});

t.test('answerOwed: probes with nothing queued, or data unacknowledged beyond one RTO', (t) => {
  t.equal(answerOwed(sample({ probes: 1 }), 200), true, 'keep-alive probe out');
  t.equal(answerOwed(sample({ probes: 1, notsentBytes: 4096 }), 200), false, 'zero-window probe of a paused reader');
  t.equal(answerOwed(sample({ unacked: 2, lastAckRecvMs: 150 }), 200), false, 'in flight, within one RTO');
  t.equal(answerOwed(sample({ unacked: 2, lastAckRecvMs: 250 }), 200), true);
  t.equal(answerOwed(sample(), 200), false);
  t.end();
});

t.test('evidence decays with its half-life', (t) => {
  const est = new LinkEstimate(new FleetPrior(), { priorWeight: 20, credibility: 0.95, halfLifeMs: 60_000 });
  const k = new FakeKernelSocket();
  est.update(k.s, 0);
  est.update(k.probes(100, 50).s, 1000);
  est.update(k.probes(0, 0).s, 61_000);
  t.ok(Math.abs(est.trials - 50) < 1e-9 && Math.abs(est.failures - 25) < 1e-9, 'halved after one half-life');
  t.end();
});

t.test('update reports a change only when the thresholds must be re-derived', (t) => {
  const est = new LinkEstimate(new FleetPrior());
  const k = new FakeKernelSocket();
  t.equal(est.update(k.s, 0), true, 'first sample: the RTT is learnt');
  t.equal(est.update(k.s, 1), false, 'same sample again: nothing moved');
  t.equal(est.update(k.probes(1, 0).s, 5000), true, 'a failure moves the bound');
  t.equal(est.update(k.s, 5001), false, 'nothing new');
  t.equal(est.update(k.set({ rttUs: 400_000 }).s, 5002), true, 'RTT jumped');
  t.end();
});

t.test('the fleet prior: conservative with nothing known, the mean of connections with evidence, floored', (t) => {
  const fleet = new FleetPrior(0.05, 30, 0.001);
  t.equal(fleet.q(), 0.05);
  fleet.replace(NaN, 0.1);
  t.ok(Math.abs(fleet.q() - 0.075) < 1e-12, 'blended with the constant as one connection');
  fleet.replace(0.1, 0);
  for (let i = 0; i < 200; i++) fleet.replace(NaN, 0);
  t.equal(fleet.q(), 0.001, 'never below the floor');
  for (let i = 0; i < 201; i++) fleet.replace(0, NaN);
  t.equal(fleet.contributors, 0);
  t.equal(fleet.q(), 0.05);
  t.end();
});

t.test('a new connection on a clean fleet starts with the fleet (n = 3), a lossy one learns fast', (t) => {
  const fleet = new FleetPrior();
  for (let i = 0; i < 100; i++) fleet.replace(NaN, 0);
  const est = new LinkEstimate(fleet);
  t.ok(est.qUpper < 0.0052, `clean fleet: q<=${est.qUpper.toExponential(2)}`);
  const k = new FakeKernelSocket();
  est.update(k.s, 0);
  est.update(k.probes(3, 1).s, 7000); // one episode that needed 3 probes
  t.ok(est.qUpper > 0.1, `two misses in three: q<=${est.qUpper.toFixed(3)}`);
  t.end();
});

t.test('memory: one estimate stays below 0.5 KB', async (t) => {
  const fleet = new FleetPrior();
  const per = await heapBytesPer(20_000, () => new LinkEstimate(fleet));
  t.ok(per > 50 && per < 500, `${per.toFixed(0)} bytes per estimate (heap, after forced GC)`);
});

t.test('the shared upper bound is never below the exact Beta quantile and at most ~4 % above it', (t) => {
  // The estimate's domain: a = 20 q0 + failures >= 0.02 (q0 >= 0.001), b = 20 (1 - q0) + successes >= 19.
  fc.assert(
    fc.property(fc.double({ min: 0.02, max: 500, noNaN: true }), fc.double({ min: 19, max: 20_000, noNaN: true }), (a, b) => {
      const exact = betaQuantile(0.95, a, b);
      const shared = upperBound(0.95, a, b);
      return shared >= exact && shared <= exact * 1.04;
    }),
    { numRuns: 2000 },
  );
  t.equal(upperBound(0.95, 0.4, 57.3), upperBound(0.95, 0.4, 57.3), 'a repeated question is answered from the memo');
  t.equal(upperBound(0.99, 0.4, 57.3), betaQuantile(0.99, 0.4, 57.3), 'another credibility: exact');
  t.end();
});
