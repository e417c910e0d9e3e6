import t from 'tap';
import { evaluate, newDeadlineState } from '../src/liveness/deadlines.ts';
import { ManualClock } from '../src/liveness/clock.ts';

t.test('CONNECT timeout, then keep-alive from the last byte', async (t) => {
  const s = newDeadlineState(1000, 10_000, 10_000);
  t.same(evaluate(s, 1000), { verdict: null, probe: false, wakeAt: 11_000 });
  t.equal(evaluate(s, 11_000).verdict, 'connect_timeout');
  s.connectDeadline = Infinity;
  s.allowedSilenceMs = 6_000;
  s.lastClientActivity = 5_000;
  t.equal(evaluate(s, 10_999).verdict, null);
  t.equal(evaluate(s, 10_999).wakeAt, 11_000);
  t.equal(evaluate(s, 11_000).verdict, 'keepalive_timeout');
  s.lastClientActivity = 10_000;
  t.equal(evaluate(s, 11_000).verdict, null, 'activity moves the deadline');
});

t.test('send stall', async (t) => {
  const s = newDeadlineState(0, 10_000, 2_000);
  s.connectDeadline = Infinity;
  s.stallSince = 100;
  t.equal(evaluate(s, 2_099).wakeAt, 2_100);
  t.equal(evaluate(s, 2_100).verdict, 'send_stall');
  s.stallSince = -1;
  t.equal(evaluate(s, 2_100).verdict, null);
  t.equal(evaluate(s, 2_100).wakeAt, Infinity, 'nothing pending without keep-alive');
});

t.test('upstream probes: due after idle, broker_unresponsive after the timeout', async (t) => {
  const s = newDeadlineState(0, 10_000, 10_000);
  s.connectDeadline = Infinity;
  s.upstreamProbeIdleMs = 5_000;
  s.probeTimeoutMs = 1_000;
  t.same(evaluate(s, 4_000), { verdict: null, probe: false, wakeAt: 5_000 });
  const due = evaluate(s, 5_000);
  t.equal(due.probe, true);
  s.probeSentAt = 5_000;
  t.same(evaluate(s, 5_500), { verdict: null, probe: false, wakeAt: 6_000 });
  t.equal(evaluate(s, 6_000).verdict, 'broker_unresponsive');
  s.probeSentAt = -1;
  s.lastUpstreamActivity = 5_000;
  t.equal(evaluate(s, 6_000).wakeAt, 10_000);
});

t.test('the earliest deadline wins', async (t) => {
  const s = newDeadlineState(0, 10_000, 3_000);
  s.connectDeadline = Infinity;
  s.allowedSilenceMs = 8_000;
  s.stallSince = 0;
  t.equal(evaluate(s, 0).wakeAt, 3_000);
  t.equal(evaluate(s, 3_000).verdict, 'send_stall');
});

t.test('manual clock fires timers in order and can cancel them', async (t) => {
  const clock = new ManualClock();
  const fired: string[] = [];
  clock.setTimer(() => fired.push('b'), 200);
  clock.setTimer(() => fired.push('a'), 100);
  const c = clock.setTimer(() => fired.push('c'), 150);
  c.cancel();
  clock.advance(150);
  t.same(fired, ['a']);
  t.equal(clock.now(), 150);
  clock.advance(100);
  t.same(fired, ['a', 'b']);
  t.equal(clock.pending, 0);
  t.equal(clock.wallNow(), 1_700_000_000_250);
});
