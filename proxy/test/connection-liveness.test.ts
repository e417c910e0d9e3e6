import t from 'tap';
import fc from 'fast-check';
import { ManualClock } from '../src/liveness/clock.ts';
import { ConnectionLiveness, newLivenessShared, phaseOf, type LivenessSettings } from '../src/liveness/connection-liveness.ts';
import { FleetPrior } from '../src/liveness/link-estimate.ts';
import { LocalHealth } from '../src/liveness/local-health.ts';
import { PROFILES } from '../src/liveness/verdict-budget.ts';
import { FakeKernelSocket, heapBytesPer } from './helpers/tcp-sample.ts';

const settings: LivenessSettings = {
  profile: PROFILES.balanced,
  falseDeathBudget: 1e-4,
  overrides: {},
  adaptive: true,
  maxHoldMs: 30_000,
  maxDeadMs: 120_000,
  thinLinear: false,
  rtoMaxApplied: true,
};

t.test('phaseOf spreads connection numbers over [0, 1)', (t) => {
  fc.assert(fc.property(fc.integer(), (id) => phaseOf(id) >= 0 && phaseOf(id) < 1));
  const idles = new Set(Array.from({ length: 100 }, (_, i) => new ConnectionLiveness(settings, newLivenessShared(settings, new FleetPrior(), null), phaseOf(i)).kernelSettings().idleSeconds));
  t.same([...idles].sort(), [5, 6], 'consecutive connections get both idle values');
  t.end();
});

t.test('a lossy link is learnt from the timer\'s samples and the verdict gets patient; a clean fleet keeps today\'s speed', (t) => {
  const clock = new ManualClock();
  const fleet = new FleetPrior();
  for (let i = 0; i < 100; i++) fleet.replace(NaN, 0); // a clean fleet
  const shared = newLivenessShared(settings, fleet, new LocalHealth());
  const clean = new ConnectionLiveness(settings, shared, 0);
  const lossy = new ConnectionLiveness(settings, shared, 0);
  t.equal(clean.thresholds.idle.n, 10, 'a newcomer: the fleet says clean, but this link has not shown it yet (newcomer rule)');
  t.equal(lossy.thresholds.idle.n, 10, 'nothing known about this link yet');
  const kc = new FakeKernelSocket();
  const kl = new FakeKernelSocket();
  clean.onSample(kc.s, 0);
  lossy.onSample(kl.s, 0);
  for (let i = 0; i < 60; i++) {
    clock.advance(6000);
    clean.onSample(kc.probes(1, 1).s, clock.now());
    // 20% loss each way: about one round in three fails.
    lossy.onSample(kl.probes(3, 2).s, clock.now());
  }
  // One lossy link among 101 raises the fleet prior a little; 60 clean rounds bring n back to 3 or 4.
  t.ok(clean.thresholds.idle.n <= 4, `clean: n = ${clean.thresholds.idle.n}`);
  t.ok(clean.estimate!.newcomerN <= 3, `clean: the newcomer rule asks for no more (${clean.estimate!.newcomerN})`);
  t.ok(lossy.thresholds.idle.n >= 16, `lossy: n = ${lossy.thresholds.idle.n}`);
  t.equal(lossy.thresholds.keepAliveGraceMs, 0, 'no keep-alive known yet');
  lossy.setKeepAlive(60);
  t.same(lossy.keepAliveSilenceMs(), { suspectAfterMs: 62_000, deadAfterMs: 90_000 });
  clean.setKeepAlive(60);
  t.same(clean.keepAliveSilenceMs(), { suspectAfterMs: 62_000, deadAfterMs: 62_000 }, 'frozen client on a clean link: KA + 2 s');
  const snap = lossy.snapshot();
  t.equal(snap.state, 'alive');
  t.equal(snap.link.samples, 61);
  t.ok(snap.link.loss > 0.3 && snap.link.loss < 0.45, `loss bound ${snap.link.loss}`);
  t.equal(snap.deadlines.probes, lossy.thresholds.idle.n);
  clean.close();
  lossy.close();
  t.equal(fleet.contributors, 100, 'both shares withdrawn');
  t.end();
});

t.test('newcomer rule: in a clean fleet a new connection on a bad link survives its first failure streak', (t) => {
  const clock = new ManualClock();
  const fleet = new FleetPrior();
  for (let i = 0; i < 100; i++) fleet.replace(NaN, 0); // a clean fleet: the prior says q = 0.001
  const shared = newLivenessShared(settings, fleet, new LocalHealth());
  // Without the rule this connection had n = 3: a first streak of 3 failed probes on a 20 % link
  // (probability 0.36^2 = 13 % once a streak begins) was a verdict before any failure was learnt.
  const c = new ConnectionLiveness(settings, shared, 0);
  const k = new FakeKernelSocket();
  c.onSample(k.s, 0);
  t.equal(c.thresholds.idle.n, 10);
  // First probe 5 s after the last packet; it and the next 8 fail (9 out, none answered).
  let v;
  for (let out = 1; out <= 9; out++) {
    clock.advance(out === 1 ? 5000 : 1000);
    k.set({ probes: out, lastAckRecvMs: clock.now(), lastDataRecvMs: clock.now() });
    k.probes(1, 0);
    v = c.onSample(k.s, clock.now());
    t.not(v.state, 'dead', `${out} unanswered probes: not dead (n = ${c.thresholds.idle.n})`);
  }
  // The 10th is answered: the streak ends, its failures are learnt and n rises with them.
  clock.advance(1000);
  k.set({ probes: 0, lastAckRecvMs: 0, lastDataRecvMs: 0 });
  k.probes(1, 1);
  v = c.onSample(k.s, clock.now());
  t.equal(v.state, 'alive');
  t.ok(c.thresholds.idle.n >= 10, `after a streak of 9: n = ${c.thresholds.idle.n}`);
  c.close();
  t.end();
});

t.test('newcomer rule: clean rounds bring n down to the budget\'s own', (t) => {
  const clock = new ManualClock();
  const fleet = new FleetPrior();
  for (let i = 0; i < 100; i++) fleet.replace(NaN, 0);
  const c = new ConnectionLiveness(settings, newLivenessShared(settings, fleet, new LocalHealth()), 0);
  const k = new FakeKernelSocket();
  c.onSample(k.s, 0);
  const ns = [c.thresholds.idle.n];
  for (let i = 0; i < 60; i++) {
    clock.advance(6000);
    c.onSample(k.probes(1, 1).s, clock.now());
    ns.push(c.thresholds.idle.n);
  }
  t.same([0, 6, 13, 30, 60].map((i) => ns[i]), [10, 8, 6, 4, 3], `n after 0, 6, 13, 30, 60 clean rounds: ${ns.join(' ')}`);
  t.ok(ns.every((n, i) => i === 0 || n <= ns[i - 1]), 'never rises on clean evidence');
  c.close();
  t.end();
});

t.test('adaptive off: the profile and overrides exactly, whatever the link shows', (t) => {
  const fixed = { ...settings, adaptive: false, overrides: { count: 4 } };
  const c = new ConnectionLiveness(fixed, newLivenessShared(fixed, new FleetPrior(), null), 0.5);
  const k = new FakeKernelSocket();
  c.onSample(k.s, 0);
  c.onSample(k.probes(10, 2).s, 6000);
  t.equal(c.estimate, null);
  t.equal(c.thresholds.idle.n, 4);
  t.equal(c.snapshot().link.loss, 0);
  t.end();
});

t.test('a pulled cable through the facade: write, samples on the timer, tcp_user_timeout at the floor', (t) => {
  const clock = new ManualClock();
  const c = new ConnectionLiveness(settings, newLivenessShared(settings, new FleetPrior(), new LocalHealth()), 0);
  const k = new FakeKernelSocket();
  c.onSample(k.s, 0);
  clock.advance(30_000);
  let at = c.onWrite(clock.now());
  t.ok(at > clock.now() && at < clock.now() + 1000);
  let v;
  do {
    clock.advance(at - clock.now());
    const retransmits = Math.floor((clock.now() - 30_000) / 1000);
    v = c.onSample(k.set({ unacked: 1, retransmits, lastAckRecvMs: clock.now() }).s, clock.now());
    at = v.nextCheckAt;
  } while (v.state !== 'dead' && clock.now() < 200_000);
  t.equal(v.reason, 'tcp_user_timeout');
  t.ok(clock.now() - 30_000 >= c.thresholds.data.deadAfterMs, 'never before the threshold');
  t.ok(clock.now() - 30_000 <= c.thresholds.data.deadAfterMs + 1000, `within one interval of it: ${clock.now() - 30_000} ms`);
  t.end();
});

t.test('memory: one connection\'s whole model (estimate, thresholds, state machine)', async (t) => {
  const shared = newLivenessShared(settings, new FleetPrior(), null);
  const per = await heapBytesPer(10_000, (i) => new ConnectionLiveness(settings, shared, phaseOf(i)));
  t.ok(per > 100 && per < 500, `${per.toFixed(0)} bytes per connection`);
  t.equal(shared.thresholds.size, 2, 'idle 5 or 6 s on a fresh link: two shared threshold sets');
});
