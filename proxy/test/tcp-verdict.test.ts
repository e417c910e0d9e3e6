import t from 'tap';
import fc from 'fast-check';
import { ManualClock } from '../src/liveness/clock.ts';
import { TcpSilenceCheck } from '../src/liveness/tcp-verdict.ts';
import { LocalHealth, DEFAULT_LOCAL_HEALTH } from '../src/liveness/local-health.ts';
import { PROFILES, deriveThresholds, type Thresholds } from '../src/liveness/verdict-budget.ts';
import { sample } from './helpers/tcp-sample.ts';

function thresholds(q = 0): Thresholds {
  return deriveThresholds({
    link: { qUpper: q, srttMs: 20, rttvarMs: 5, rtoMs: 220, dataSegsPerHour: 0 },
    budgetPerHour: 1e-4,
    profile: PROFILES.balanced,
    overrides: {},
    keepAliveSeconds: 60,
    phase: 0, // idle 5 s
    maxHoldMs: 30_000,
    maxDeadMs: 120_000,
    thinLinear: false,
    rtoMaxApplied: true,
  });
}

/** The kernel's view of an idle connection whose last ACK was at lastAckAt and that has sent `probes` since. */
function idleSample(now: number, lastAckAt: number, probes: number) {
  return sample({ probes, lastAckRecvMs: now - lastAckAt, lastDataRecvMs: now - lastAckAt + 100 });
}

t.test('idle pulled cable on a clean link: suspect after the first missed probe, dead at idle + 3 x 1 s', (t) => {
  const clock = new ManualClock();
  const health = new LocalHealth();
  const check = new TcpSilenceCheck(health);
  const th = thresholds();
  // Nothing owed: the first look is one interval after the first probe (last ACK + 5 s + 1 s).
  let v = check.check(idleSample(0, 0, 0), 0, th, 0);
  t.equal(v.state, 'alive');
  t.equal(v.nextCheckAt, 6000);
  clock.advance(5500); // probe 1 out at 5 s, answer not back yet
  v = check.check(idleSample(clock.now(), 0, 1), clock.now(), th, 0);
  t.equal(v.state, 'alive', 'within one interval of the probe');
  t.equal(v.nextCheckAt, 6000);
  clock.advance(500);
  v = check.check(idleSample(clock.now(), 0, 2), clock.now(), th, 0);
  t.equal(v.state, 'suspect');
  t.equal(check.suspectSince, 6000);
  t.equal(health.counters.onsets, 1, 'a miss on a clean link is improbable: reported to local health');
  t.equal(v.nextCheckAt, 7000, 'looked at again every interval while suspect');
  clock.advance(1999);
  v = check.check(idleSample(clock.now(), 0, 3), clock.now(), th, 0);
  t.equal(v.state, 'suspect', '1 ms early');
  clock.advance(1);
  v = check.check(idleSample(clock.now(), 0, 3), clock.now(), th, 0);
  t.equal(v.state, 'dead');
  t.equal(v.reason, 'tcp_keepalive');
  t.equal(clock.now(), 8000, 'today\'s 5 + 3 x 1 s');
  t.match(v.detail, /^proxy check: no ACK for 8000 ms, 3 keep-alive probes unanswered, silent 3000 ms owed, q<=0\.0, n=3/);
  t.notMatch(v.detail, /ETIMEDOUT/, 'told apart from the kernel\'s own abort');
  t.equal(check.check(idleSample(9000, 0, 4), 9000, th, 0).nextCheckAt, Infinity, 'dead is final');
  t.end();
});

t.test('the kernel\'s probe count must agree: late probes delay the verdict', (t) => {
  const check = new TcpSilenceCheck(null);
  const th = thresholds();
  const v = check.check(idleSample(9000, 0, 2), 9000, th, 0);
  t.equal(v.state, 'suspect', 'time is up but only 2 probes went out');
  t.equal(check.check(idleSample(9100, 0, 3), 9100, th, 0).state, 'dead');
  t.end();
});

t.test('lossy link (q = 0.36): 16 probes; an answer after 10 misses ends the suspicion', (t) => {
  const clock = new ManualClock();
  const check = new TcpSilenceCheck(new LocalHealth());
  const th = thresholds(0.36);
  t.equal(th.idle.n, 16);
  clock.advance(15_000); // probes since 5 s: 10 out
  let v = check.check(idleSample(clock.now(), 0, 10), clock.now(), th, 0.36);
  t.equal(v.state, 'suspect');
  clock.advance(500); // the 11th probe is answered
  v = check.check(idleSample(clock.now(), clock.now() - 20, 0), clock.now(), th, 0.36);
  t.equal(v.state, 'alive');
  t.equal(v.recovered, true, 'evidence ends a suspicion');
  t.equal(check.suspectSince, -1);
  // A new silence is judged from its own start.
  clock.advance(5000 + 16_000 - 20);
  v = check.check(idleSample(clock.now(), 15_480, 16), clock.now(), th, 0.36);
  t.equal(v.state, 'dead');
  t.end();
});

t.test('a paused reader\'s zero-window probes are never a TCP-silence verdict', (t) => {
  const check = new TcpSilenceCheck(null);
  const th = thresholds();
  for (const now of [10_000, 60_000, 600_000]) {
    const v = check.check(sample({ probes: 5, notsentBytes: 65536, lastAckRecvMs: now, lastDataRecvMs: now }), now, th, 0);
    t.equal(v.state, 'alive');
    t.equal(v.nextCheckAt, Infinity, 'send_stall has this case');
  }
  t.end();
});

t.test('data in flight: owed since the first write after all was acknowledged, never since an old ACK', (t) => {
  const clock = new ManualClock();
  const check = new TcpSilenceCheck(null);
  const th = thresholds();
  clock.advance(60_000); // idle a minute: last ACK long ago
  const firstLook = check.noteWrite(clock.now(), th);
  t.equal(firstLook, 60_250, 'first look one RTO later, at least 250 ms');
  t.equal(check.noteWrite(clock.now() + 10, th), Infinity, 'already watching');
  clock.advance(250);
  let v = check.check(sample({ unacked: 1, lastAckRecvMs: 60_250, retransmits: 1 }), clock.now(), th, 0);
  t.equal(v.state, 'suspect', 'one RTO without its ACK');
  clock.advance(7749);
  v = check.check(sample({ unacked: 1, lastAckRecvMs: 67_999, retransmits: 7 }), clock.now(), th, 0);
  t.equal(v.state, 'suspect');
  clock.advance(1);
  v = check.check(sample({ unacked: 1, lastAckRecvMs: 68_000, retransmits: 7 }), clock.now(), th, 0);
  t.equal(v.state, 'dead');
  t.equal(v.reason, 'tcp_user_timeout');
  t.match(v.detail, /^proxy check: no ACK for 68000 ms, 1 segments unacknowledged, 7 retransmissions, silent 8000 ms owed/);
  t.end();
});

t.test('data: writes not reported start the watch at the first sample; an ACK that advances restarts it', (t) => {
  const check = new TcpSilenceCheck(null);
  const th = thresholds();
  let v = check.check(sample({ unacked: 3, lastAckRecvMs: 50_000 }), 100_000, th, 0);
  t.equal(v.state, 'alive', 'a 50 s old ACK does not make a fresh write overdue');
  v = check.check(sample({ unacked: 3, lastAckRecvMs: 4000, retransmits: 5 }), 104_000, th, 0);
  t.equal(v.state, 'suspect');
  v = check.check(sample({ unacked: 2, lastAckRecvMs: 10 }), 107_000, th, 0);
  t.equal(v.state, 'alive', 'progress: the peer is alive');
  t.equal(v.recovered, true);
  v = check.check(sample({ unacked: 0, lastAckRecvMs: 10 }), 107_500, th, 0);
  t.equal(v.state, 'alive');
  t.equal(check.noteWrite(108_000, th) < Infinity, true, 'all acknowledged: the next write starts a new watch');
  t.end();
});

t.test('correlated silences: dead verdicts held while degraded, released by evidence', (t) => {
  const clock = new ManualClock();
  const health = new LocalHealth();
  health.openConnections = 20;
  const th = thresholds();
  const checks = Array.from({ length: 5 }, () => new TcpSilenceCheck(health));
  // An outage: every connection's probes go unanswered from 5 s.
  clock.advance(6000);
  for (const c of checks) c.check(idleSample(clock.now(), 0, 2), clock.now(), th, 0);
  t.equal(health.counters.onsets, 5);
  t.equal(health.isDegraded(clock.now()), true, '5 >= max(3, 10% of 20) in 3 s');
  t.equal(health.counters.degradedEpisodes, 1);
  clock.advance(2000);
  const v = checks[0].check(idleSample(clock.now(), 0, 3), clock.now(), th, 0);
  t.equal(v.state, 'suspect');
  t.equal(v.held, true);
  t.equal(v.nextCheckAt, 9000);
  t.equal(health.heldNow, 1);
  // The outage ends: the next probe is answered.
  clock.advance(1000);
  const back = checks[0].check(idleSample(clock.now(), clock.now() - 10, 0), clock.now(), th, 0);
  t.equal(back.state, 'alive');
  t.equal(back.recovered, true);
  t.equal(health.heldNow, 0);
  t.equal(health.counters.released, 1);
  t.end();
});

t.test('a hold ends after maxHoldMs and the verdict stands', (t) => {
  const clock = new ManualClock();
  const health = new LocalHealth({ ...DEFAULT_LOCAL_HEALTH, maxHoldMs: 10_000 });
  const th = thresholds();
  const checks = Array.from({ length: 3 }, () => new TcpSilenceCheck(health));
  clock.advance(6000);
  for (const c of checks) c.check(idleSample(clock.now(), 0, 2), clock.now(), th, 0);
  clock.advance(2000);
  const c = checks[0];
  let v = c.check(idleSample(clock.now(), 0, 3), clock.now(), th, 0);
  t.equal(v.held, true);
  while (v.state !== 'dead') {
    clock.advance(v.nextCheckAt - clock.now());
    v = c.check(idleSample(clock.now(), 0, 3), clock.now(), th, 0);
  }
  t.equal(clock.now(), 18_000, 'held exactly maxHoldMs');
  t.equal(health.counters.expired, 1);
  t.equal(health.heldNow, 0);
  t.end();
});

t.test('maxHold 0 turns holds off: a degraded proxy still gives its verdict on time', (t) => {
  const clock = new ManualClock();
  const health = new LocalHealth({ ...DEFAULT_LOCAL_HEALTH, maxHoldMs: 0 });
  const th = thresholds();
  const checks = Array.from({ length: 3 }, () => new TcpSilenceCheck(health));
  clock.advance(6000);
  for (const c of checks) c.check(idleSample(clock.now(), 0, 2), clock.now(), th, 0);
  clock.advance(2000);
  t.equal(health.isDegraded(clock.now()), true, 'three onsets together: degraded');
  const v = checks[0].check(idleSample(clock.now(), 0, 3), clock.now(), th, 0);
  t.equal(v.state, 'dead', 'not held for a single check (found by the property below with maxHoldMs 0)');
  t.equal(v.held, false);
  t.equal(health.counters.held, 0);
  t.end();
});

t.test('property: a connection is never held longer than maxHoldMs, whatever the degraded state does', (t) => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 20_000 }),
      fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 60 }),
      fc.array(fc.integer({ min: 0, max: 5000 }), { maxLength: 20 }),
      (maxHoldMs, gaps, otherOnsets) => {
        const clock = new ManualClock();
        const health = new LocalHealth({ ...DEFAULT_LOCAL_HEALTH, maxHoldMs });
        const th = thresholds();
        const c = new TcpSilenceCheck(health);
        let firstHeld = -1;
        let i = 0;
        for (const gap of gaps) {
          clock.advance(gap);
          const now = clock.now();
          if (i < otherOnsets.length) health.noteOnset(now - otherOnsets[i++], now);
          const probes = Math.max(0, Math.floor((now - 5000) / 1000) + 1);
          const v = c.check(idleSample(now, 0, probes), now, th, 0);
          if (v.held && firstHeld < 0) firstHeld = now;
          if (v.held && now - firstHeld >= maxHoldMs) return false;
          if (v.state === 'dead') return firstHeld < 0 || now - firstHeld <= maxHoldMs + 3000;
        }
        return true;
      },
    ),
  );
  t.end();
});

t.test('close gives a hold back', (t) => {
  const health = new LocalHealth();
  const th = thresholds();
  const cs = Array.from({ length: 3 }, () => new TcpSilenceCheck(health));
  for (const c of cs) c.check(idleSample(6000, 0, 2), 6000, th, 0);
  t.equal(cs[0].check(idleSample(8000, 0, 3), 8000, th, 0).held, true);
  cs[0].close();
  t.equal(health.heldNow, 0);
  t.end();
});

t.test('probeIdleMs: while a keep-alive watch has the kernel probe 1 s after the last ACK, silence is owed from then', (t) => {
  const check = new TcpSilenceCheck(null);
  const th = thresholds(); // idle 5 s, 3 probes
  check.probeIdleMs = 1_000;
  t.equal(check.check(idleSample(0, 0, 0), 0, th, 0).nextCheckAt, 2_000, 'nothing owed: look one interval after the first probe (1 s + 1 s)');
  let v = check.check(idleSample(2_000, 0, 2), 2_000, th, 0);
  t.equal(v.state, 'suspect', 'first probe at 1 s unanswered');
  t.equal(check.suspectSince, 2_000);
  v = check.check(idleSample(4_000, 0, 3), 4_000, th, 0);
  t.equal(v.state, 'dead', 'dead at 1 + 3 x 1 s: the same n, counted from the probes the kernel really sent');
  t.end();
});
