import t from 'tap';
import fc from 'fast-check';
import { ManualClock } from '../src/liveness/clock.ts';
import { LocalHealth, DEFAULT_LOCAL_HEALTH } from '../src/liveness/local-health.ts';

t.test('threshold: max(3, 10% of open connections)', (t) => {
  const h = new LocalHealth();
  t.equal(h.threshold(), 3);
  h.openConnections = 29;
  t.equal(h.threshold(), 3);
  h.openConnections = 31;
  t.equal(h.threshold(), 4);
  h.openConnections = 1000;
  t.equal(h.threshold(), 100);
  t.end();
});

t.test('onsets in the window make the proxy degraded; independent ones spread in time do not', (t) => {
  const clock = new ManualClock();
  const changes: boolean[] = [];
  const h = new LocalHealth(DEFAULT_LOCAL_HEALTH, (degraded) => changes.push(degraded));
  h.openConnections = 20;
  for (let i = 0; i < 10; i++) {
    clock.advance(2000); // one every 2 s: never 3 in 3 s
    h.noteOnset(clock.now(), clock.now());
    t.equal(h.isDegraded(clock.now()), false);
  }
  h.noteOnset(clock.now() - 100, clock.now());
  h.noteOnset(clock.now() - 2900, clock.now());
  t.equal(h.onsetsInWindow(clock.now()), 4, 'onsets counted at their own instant (17.1, 18, 19.9, 20 s), not at the check');
  t.equal(h.isDegraded(clock.now()), true);
  t.same(changes, [true]);
  t.equal(h.counters.degradedEpisodes, 1);
  t.equal(h.counters.onsets, 12);
  t.end();
});

t.test('leaves degraded a window after the last trigger once nothing is held; at maxHoldMs at the latest', (t) => {
  const clock = new ManualClock();
  const changes: boolean[] = [];
  const h = new LocalHealth(DEFAULT_LOCAL_HEALTH, (d) => changes.push(d));
  for (let i = 0; i < 3; i++) h.noteOnset(clock.now(), clock.now());
  t.equal(h.isDegraded(0), true);
  h.noteHeld();
  clock.advance(3100); // the window (100 ms buckets) has moved past the onsets
  t.equal(h.onsetsInWindow(clock.now()), 0);
  t.equal(h.isDegraded(clock.now()), true, 'a verdict is still held');
  h.noteReleased();
  t.equal(h.isDegraded(clock.now()), false, 'quiet for a window and nothing held');
  for (let i = 0; i < 3; i++) h.noteOnset(clock.now(), clock.now());
  h.noteHeld();
  clock.advance(29_999);
  t.equal(h.isDegraded(clock.now()), true);
  clock.advance(1);
  t.equal(h.isDegraded(clock.now()), false, 'bounded: maxHoldMs after the last trigger');
  t.same(changes, [true, false, true, false]);
  h.noteHoldExpired();
  t.same(h.counters, { onsets: 6, degradedEpisodes: 2, held: 2, released: 1, expired: 1 });
  t.equal(h.heldNow, 0);
  t.end();
});

t.test('onsets outside the window are clamped to its edge, future ones to now', (t) => {
  const h = new LocalHealth();
  h.noteOnset(-50_000, 10_000);
  h.noteOnset(99_000, 10_000);
  t.equal(h.onsetsInWindow(10_000), 2);
  t.equal(h.onsetsInWindow(13_200), 0, 'both out of the window later');
  t.end();
});

t.test('bad options are refused', (t) => {
  t.throws(() => new LocalHealth({ ...DEFAULT_LOCAL_HEALTH, windowMs: 0 }), /windowMs/);
  t.end();
});

t.test('property: the window count equals a brute-force count of onsets within the window (bucket resolution)', (t) => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 2000 }), { maxLength: 80 }), (gaps) => {
      const h = new LocalHealth({ ...DEFAULT_LOCAL_HEALTH, minCount: 1_000_000 });
      const at: number[] = [];
      let now = 0;
      for (const g of gaps) {
        now += g;
        h.noteOnset(now, now);
        at.push(now);
        const bucketFrom = Math.floor((now - 3000) / 100) * 100;
        const brute = at.filter((x) => x >= bucketFrom).length;
        if (h.onsetsInWindow(now) !== brute) return false;
      }
      return true;
    }),
  );
  t.end();
});
