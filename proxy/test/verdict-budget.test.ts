import t from 'tap';
import fc from 'fast-check';
import {
  PROFILES,
  deriveThresholds,
  keepAliveGrace,
  probesFor,
  rtoLadderMs,
  transmissionsWithin,
  jitteredIdleSeconds,
  ThresholdCache,
  newcomerProbes,
  badLinkProbability,
  BAD_LINKS,
  NEWCOMER_RISK,
  type BudgetInputs,
  type Profile,
} from '../src/liveness/verdict-budget.ts';

function inputs(over: Partial<BudgetInputs> & { q?: number } = {}): BudgetInputs {
  const { q = 0, ...rest } = over;
  return {
    link: { qUpper: q, srttMs: 30, rttvarMs: 10, rtoMs: 230, dataSegsPerHour: 7200 },
    budgetPerHour: 1e-4,
    profile: PROFILES.balanced,
    overrides: {},
    keepAliveSeconds: 60,
    phase: 0,
    maxHoldMs: 30_000,
    maxDeadMs: 120_000,
    thinLinear: false,
    rtoMaxApplied: true,
    ...rest,
  };
}

t.test('q = 0: today\'s thresholds (idle 5 s, 3 probes 1 s apart, data 8 s, grace min(2 s, KA/2))', (t) => {
  const th = deriveThresholds(inputs());
  t.equal(th.kernel.idleSeconds, 5);
  t.equal(th.kernel.intervalSeconds, 1);
  t.equal(th.idle.n, 3);
  t.equal(th.idle.deadAfterMs, 3000, 'dead 5 + 3 x 1 s after the last ACK, as the kernel did');
  t.equal(th.idle.suspectAfterMs, 1000);
  t.equal(th.idle.correlateAfterMs, 1000, 'on a clean link the first miss is already improbable');
  t.equal(th.idle.required, 3);
  t.equal(th.data.deadAfterMs, 8000, 'today\'s user timeout');
  t.equal(th.data.suspectAfterMs, 230, 'one RTO');
  t.equal(th.keepAliveGraceBaseMs, 2000);
  t.equal(th.keepAliveGraceMs, 2000);
  t.equal(th.probesPerIdleHour, 720, 'today\'s probe rate');
  t.ok(th.kernel.userTimeoutMs >= 120_000 + 30_000, 'kernel backstop beyond every verdict and hold');
  t.equal(th.kernel.count, 127);
  t.equal(th.kernel.rtoMaxMs, 1000);
  t.end();
});

t.test('property: on q = 0 every profile and phase gives minProbes x interval', (t) => {
  fc.assert(
    fc.property(fc.constantFrom(...Object.values(PROFILES)), fc.double({ min: 0, max: 1, noNaN: true }), (profile: Profile, phase) => {
      const th = deriveThresholds(inputs({ profile, phase }));
      return th.idle.n === profile.minProbes && th.idle.deadAfterMs === profile.minProbes * profile.intervalSeconds * 1000;
    }),
  );
  t.end();
});

t.test('property: every deadline is monotone non-decreasing in loss', (t) => {
  fc.assert(
    fc.property(
      fc.double({ min: 0, max: 0.95, noNaN: true }),
      fc.double({ min: 0, max: 0.95, noNaN: true }),
      fc.constantFrom(...Object.values(PROFILES)),
      fc.double({ min: 1e-7, max: 1e-1, noNaN: true }),
      fc.integer({ min: 0, max: 3600 }),
      (a, b, profile, budgetPerHour, ka) => {
        const [lo, hi] = a <= b ? [a, b] : [b, a];
        const x = deriveThresholds(inputs({ q: lo, profile, budgetPerHour, keepAliveSeconds: ka }));
        const y = deriveThresholds(inputs({ q: hi, profile, budgetPerHour, keepAliveSeconds: ka }));
        return (
          x.idle.deadAfterMs <= y.idle.deadAfterMs && x.data.deadAfterMs <= y.data.deadAfterMs &&
          x.idle.n <= y.idle.n && x.keepAliveGraceMs <= y.keepAliveGraceMs
        );
      },
    ),
  );
  t.end();
});

t.test('newcomer rule: pBad(q_b) x q_b^(n-1) <= 1e-4 for q_b in 0.1, 0.2, 0.36; gone once the link has shown it is not bad', (t) => {
  t.same(BAD_LINKS.map((q) => q.toFixed(2)), ['0.10', '0.20', '0.36'], 'about 5, 10 and 20 % loss each way');
  t.equal(newcomerProbes(0, 0, 0.001), 10, 'a newcomer: 0.5 x 0.36^9 = 5e-5 (n = 9 would give 1.4e-4)');
  t.ok(0.5 * 0.36 ** 9 <= NEWCOMER_RISK && 0.5 * 0.36 ** 8 > NEWCOMER_RISK);
  t.same([0, 6, 13, 30, 60].map((k) => newcomerProbes(k, 0, 0.001)), [10, 8, 5, 4, 3], 'clean rounds bring it down');
  t.ok(newcomerProbes(1000, 0, 0.001) <= 2, 'long clean: nothing left of it');
  t.equal(newcomerProbes(0, 0, 0.001, 5), 5, 'capped');
  t.equal(newcomerProbes(20, 4, 0.2), 9, 'a link that fails a fifth of its rounds: 0.36 still has odds 0.23, 0.23 x 0.36^8 <= 1e-4');
  const link = (newcomerN: number, q = 0) => ({ qUpper: q, newcomerN, srttMs: 30, rttvarMs: 10, rtoMs: 230, dataSegsPerHour: 7200 });
  t.equal(deriveThresholds(inputs({ link: link(10) })).idle.n, 10);
  t.equal(deriveThresholds(inputs({ link: link(10) })).data.n, 10, 'data in flight too');
  t.equal(deriveThresholds(inputs({ link: link(10, 0.3) })).idle.n, deriveThresholds(inputs({ q: 0.3 })).idle.n, 'a learnt lossy link needs more than the rule');
  t.equal(deriveThresholds(inputs({ link: link(1) })).idle.n, 3, 'never below the profile');
  const cache = new ThresholdCache({ budgetPerHour: 1e-4, profile: PROFILES.balanced, overrides: {}, maxHoldMs: 30_000, maxDeadMs: 120_000, thinLinear: false, rtoMaxApplied: true });
  const view = { qUpper: 0.001, srttMs: 30, rttvarMs: 10, rtoMs: 230, dataSegsPerHour: 60 };
  t.equal(cache.get({ ...view, newcomerN: 10 }, 60, 0).idle.n, 10, 'the cache keys on newcomerN');
  t.equal(cache.get({ ...view, newcomerN: 0 }, 60, 0).idle.n, 3);
  // Bayes: clean rounds multiply the odds by (1 - q_b) / (1 - q), failed ones by q_b / q.
  t.equal(badLinkProbability(0, 0, 0.001, 0.36), 0.5);
  const odds = (0.64 / 0.999) ** 10;
  t.ok(Math.abs(badLinkProbability(10, 0, 0.001, 0.36) - odds / (1 + odds)) < 1e-12);
  t.ok(badLinkProbability(5, 2, 0.01, 0.36) > 0.99, 'two failures in five on a link thought clean');
  t.ok(badLinkProbability(1e6, 0, 0.001, 0.36) < 1e-300, 'no overflow');
  t.equal(badLinkProbability(1e6, 1e6, 0.001, 0.36), 1, 'no overflow the other way');
  t.end();
});

t.test('property: every deadline is monotone non-decreasing in newcomerN; newcomerProbes never rises on a clean round', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 127 }), fc.integer({ min: 0, max: 127 }), fc.double({ min: 0, max: 0.9, noNaN: true }), (a, b, q) => {
      const [lo, hi] = a <= b ? [a, b] : [b, a];
      const link = (newcomerN: number) => ({ qUpper: q, newcomerN, srttMs: 30, rttvarMs: 10, rtoMs: 230, dataSegsPerHour: 7200 });
      const x = deriveThresholds(inputs({ link: link(lo) }));
      const y = deriveThresholds(inputs({ link: link(hi) }));
      return x.idle.deadAfterMs <= y.idle.deadAfterMs && x.data.deadAfterMs <= y.data.deadAfterMs && x.idle.n <= y.idle.n && x.data.n <= y.data.n;
    }),
  );
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 5000 }), fc.integer({ min: 0, max: 100 }), fc.double({ min: 1e-4, max: 0.05, noNaN: true }), (trials, f, q) => {
      const failures = Math.min(f, trials);
      return newcomerProbes(trials + 1, failures, q) <= newcomerProbes(trials, failures, q);
    }),
  );
  t.end();
});

t.test('property: the MQTT grace is never above 0.5 x KA and never below the base', (t) => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 65535 }),
      fc.double({ min: 0, max: 1, noNaN: true }),
      fc.double({ min: 1e-9, max: 1, noNaN: true }),
      fc.double({ min: 1, max: 60_000, noNaN: true }),
      fc.option(fc.integer({ min: 0, max: 100_000 }), { nil: undefined }),
      (ka, q, budget, rtoMs, explicit) => {
        const g = keepAliveGrace(ka, q, budget, { rtoMs, srttMs: rtoMs / 4 }, explicit);
        return g.adaptive <= 500 * ka && g.base <= g.adaptive;
      },
    ),
  );
  t.equal(keepAliveGrace(0, 0.5, 1e-4, { rtoMs: 200, srttMs: 10 }, undefined).adaptive, 0, 'no keep-alive, no grace');
  t.end();
});

t.test('property: the verdict order holds: suspect <= correlate <= dead <= maxDead, and n >= minProbes', (t) => {
  fc.assert(
    fc.property(
      fc.double({ min: 0, max: 1, noNaN: true }),
      fc.constantFrom(...Object.values(PROFILES)),
      fc.double({ min: 0, max: 1, noNaN: true }),
      fc.double({ min: 0, max: 5000, noNaN: true }),
      (q, profile, phase, srtt) => {
        const th = deriveThresholds({ ...inputs({ q, profile, phase }), link: { qUpper: q, srttMs: srtt, rttvarMs: srtt / 2, rtoMs: 200 + srtt * 2, dataSegsPerHour: 100 } });
        return [th.idle, th.data].every(
          (s) => s.suspectAfterMs <= s.correlateAfterMs && s.correlateAfterMs <= s.deadAfterMs && s.deadAfterMs <= 120_000 &&
            s.n >= profile.minProbes && s.required >= 1 && s.required <= s.n,
        ) && th.kernel.userTimeoutMs > th.data.deadAfterMs + 30_000 && th.kernel.userTimeoutMs > th.kernel.idleSeconds * 1000 + th.idle.deadAfterMs + 30_000;
      },
    ),
  );
  t.end();
});

t.test('n from the budget: q^n per episode within B / episodes', (t) => {
  // 20% loss each way: q = 0.36; 720 idle episodes/h; B = 1e-4 -> b = 1.39e-7 -> n = 16 (0.36^16 = 8e-8).
  const th = deriveThresholds(inputs({ q: 0.36 }));
  t.equal(th.idle.n, 16);
  t.ok(720 * 0.36 ** th.idle.n <= 1e-4 && 720 * 0.36 ** (th.idle.n - 1) > 1e-4, 'smallest n within budget');
  t.equal(th.idle.deadAfterMs, 16_000);
  t.equal(th.idle.correlateAfterMs, 5000, 'q^5 <= 1%: five misses in a row are improbable on this link');
  t.equal(th.keepAliveGraceMs, 30_000, 'lossy: the full 0.5 x KA');
  t.equal(probesFor(0.5, 0.25, 1, 10), 2, 'exact powers are not rounded up');
  t.equal(probesFor(1, 1e-4, 3, 127), 127);
  t.equal(probesFor(0.5, 0, 3, 127), 127, 'a zero budget: as patient as allowed');
  t.equal(probesFor(0.5, 2, 3, 127), 3);
  t.end();
});

t.test('the cap: budgetMet says when maxDead made a verdict faster than the budget', (t) => {
  const th = deriveThresholds(inputs({ q: 0.9, maxDeadMs: 60_000 }));
  t.equal(th.idle.deadAfterMs, 60_000);
  t.equal(th.idle.budgetMet, false);
  t.equal(th.idle.required, 60, 'the kernel count that fits in the cap');
  t.end();
});

t.test('RTO ladder: doubling, the cap, thin-stream linear timeouts', (t) => {
  const l = { rtoMs: 200, rtoMaxMs: 120_000, thinLinear: false };
  t.equal(rtoLadderMs(3, l), 1400, '200 + 400 + 800');
  t.equal(rtoLadderMs(6, l), 12_600, 'the ladder that made the 8 s user timeout take 12.6 s');
  t.equal(rtoLadderMs(5, { ...l, rtoMaxMs: 1000 }), 200 + 400 + 800 + 1000 + 1000);
  t.equal(rtoLadderMs(8, { ...l, thinLinear: true }), 6 * 200 + 200 + 400);
  t.equal(transmissionsWithin(1399, l), 3, 'sent at 0, 200, 600 ms');
  t.equal(transmissionsWithin(1400, l), 4);
  // 5% loss each way, 2 segments/s: n = 8 (0.098^8 x 7200 <= 1e-4). Without TCP_RTO_MAX_MS the
  // kernel's ladder applies: 8 transmissions take 0.23 s x 255.
  const th = deriveThresholds(inputs({ q: 0.098, rtoMaxApplied: false }));
  t.equal(th.data.n, 8);
  t.equal(th.data.deadAfterMs, 58_650);
  t.equal(deriveThresholds(inputs({ q: 0.098 })).data.deadAfterMs, 8000, 'with the 1 s cap the 8 s floor rules');
  t.end();
});

t.test('overrides win: idle and interval exactly, count / userTimeout / grace as floors', (t) => {
  const th = deriveThresholds(inputs({ q: 0, phase: 0.9, overrides: { idleSeconds: 7, intervalSeconds: 2, count: 5, userTimeoutMs: 20_000, keepAliveGraceMs: 4000 } }));
  t.equal(th.kernel.idleSeconds, 7, 'no jitter on an explicit idle');
  t.equal(th.kernel.intervalSeconds, 2);
  t.equal(th.idle.n, 5);
  t.equal(th.idle.deadAfterMs, 10_000);
  t.equal(th.data.deadAfterMs, 20_000);
  t.equal(th.keepAliveGraceBaseMs, 4000);
  t.equal(th.probesPerIdleHour, 3600 / 7);
  t.end();
});

t.test('profiles: jitter spreads idle over whole seconds; balanced never probes more than today', (t) => {
  t.equal(jitteredIdleSeconds(PROFILES.balanced, 0), 5);
  t.equal(jitteredIdleSeconds(PROFILES.balanced, 1), 6);
  t.equal(jitteredIdleSeconds(PROFILES.fast, 1), 5);
  t.equal(jitteredIdleSeconds(PROFILES.fast, 0), 4);
  t.equal(jitteredIdleSeconds(PROFILES.battery, 0.5), 28);
  fc.assert(
    fc.property(fc.double({ min: 0, max: 1, noNaN: true }), (phase) => deriveThresholds(inputs({ phase })).probesPerIdleHour <= 720),
  );
  t.ok(deriveThresholds(inputs({ profile: PROFILES.battery })).probesPerIdleHour <= 144);
  t.end();
});

t.test('property: a cached (shared) threshold set is never faster than the exact one', (t) => {
  const base = inputs();
  const cache = new ThresholdCache({ budgetPerHour: base.budgetPerHour, profile: base.profile, overrides: {}, maxHoldMs: base.maxHoldMs, maxDeadMs: base.maxDeadMs, thinLinear: false, rtoMaxApplied: true });
  fc.assert(
    fc.property(
      fc.double({ min: 0, max: 1, noNaN: true }),
      fc.double({ min: 0, max: 3000, noNaN: true }),
      fc.double({ min: 0, max: 100_000, noNaN: true }),
      fc.integer({ min: 0, max: 1200 }),
      fc.double({ min: 0, max: 1, noNaN: true }),
      (q, srtt, rate, ka, phase) => {
        const link = { qUpper: q, srttMs: srtt, rttvarMs: srtt / 3, rtoMs: 200 + srtt * 2, dataSegsPerHour: rate };
        const exact = deriveThresholds({ ...base, link, keepAliveSeconds: ka, phase });
        const shared = cache.get(link, ka, phase);
        return (
          shared.kernel.idleSeconds === exact.kernel.idleSeconds &&
          shared.idle.deadAfterMs >= exact.idle.deadAfterMs && shared.data.deadAfterMs >= exact.data.deadAfterMs &&
          shared.idle.n >= exact.idle.n && shared.keepAliveGraceMs >= exact.keepAliveGraceMs &&
          shared.idle.deadAfterMs <= exact.idle.deadAfterMs * 1.5 + 1000
        );
      },
    ),
  );
  t.equal(cache.get({ ...base.link, srttMs: 32 }, 60, 0), cache.get({ ...base.link, srttMs: 38 }, 60, 0.1), 'same rounded inputs: one object');
  t.end();
});
