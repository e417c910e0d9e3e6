import t from 'tap';
import { DeadlineQueue, QueueSlot, fireDue } from '../src/liveness/deadline-queue.ts';
import { ManualClock, systemClock } from '../src/liveness/clock.ts';
import { prng } from '../harness/prng.ts';

const slotOf = (log: string[], name: string): QueueSlot => new QueueSlot({ fire: () => log.push(name) });

t.test('slots come out in deadline order, moved and removed in place', async (t) => {
  const q = new DeadlineQueue();
  const log: string[] = [];
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((n) => slotOf(log, n));
  q.set(a, 30);
  q.set(b, 10);
  q.set(c, 20);
  q.set(d, 40);
  q.set(d, 5); // moved earlier
  q.set(b, 35); // moved later
  q.remove(c);
  t.equal(c.at, Infinity);
  t.equal(c.index, -1);
  q.remove(c); // twice is nothing
  t.equal(q.size, 3);
  t.equal(q.peekAt(), 5);
  fireDue(q, 100, []);
  t.same(log, ['d', 'a', 'b']);
  t.equal(q.size, 0);
  t.equal(q.peekAt(), Infinity);
  q.set(a, Infinity);
  t.equal(q.size, 0, 'Infinity is not queued');
});

t.test('only what is due fires; the rest waits', async (t) => {
  const q = new DeadlineQueue();
  const log: string[] = [];
  const a = slotOf(log, 'a');
  const b = slotOf(log, 'b');
  q.set(a, 10);
  q.set(b, 11);
  fireDue(q, 10, []);
  t.same(log, ['a']);
  t.equal(q.peekAt(), 11);
  t.equal(a.at, Infinity, 'a fired slot is no longer set');
});

t.test('a target that sets itself again for now fires in the next run, not in a loop', async (t) => {
  const q = new DeadlineQueue();
  let fired = 0;
  const s: QueueSlot = new QueueSlot({
    fire: () => {
      fired++;
      q.set(s, 10);
    },
  });
  q.set(s, 10);
  fireDue(q, 10, []);
  t.equal(fired, 1);
  t.equal(q.peekAt(), 10);
  fireDue(q, 10, []);
  t.equal(fired, 2);
});

t.test('a slot cancelled or moved by an earlier target in the same run is skipped', async (t) => {
  const q = new DeadlineQueue();
  const log: string[] = [];
  const b = slotOf(log, 'b');
  const c = slotOf(log, 'c');
  const a = new QueueSlot({
    fire: () => {
      log.push('a');
      q.remove(b);
      q.set(c, 50);
    },
  });
  q.set(a, 1);
  q.set(b, 2);
  q.set(c, 3);
  fireDue(q, 10, []);
  t.same(log, ['a']);
  t.equal(q.peekAt(), 50);
});

t.test('a target that throws: the error propagates, the others due are kept for the next run', async (t) => {
  const q = new DeadlineQueue();
  const log: string[] = [];
  const boom = new QueueSlot({ fire: () => { throw new Error('boom'); } });
  const b = slotOf(log, 'b');
  const c = slotOf(log, 'c');
  q.set(boom, 1);
  q.set(b, 2);
  q.set(c, 3);
  const due: QueueSlot[] = [];
  t.throws(() => fireDue(q, 10, due), /boom/);
  t.equal(due.length, 0, 'the scratch list is emptied');
  t.equal(q.size, 2);
  fireDue(q, 10, due);
  t.same(log, ['b', 'c']);
});

t.test('random operations keep the heap in order (against a sorted list)', async (t) => {
  const rand = prng(Number(process.env.QUEUE_SEED ?? 7));
  const q = new DeadlineQueue();
  const fired: number[] = [];
  const slots = Array.from({ length: 200 }, (_, i) => new QueueSlot({ fire: () => fired.push(i) }));
  const model = new Map<number, number>();
  let wrong = 0;
  for (let step = 0; step < 5000; step++) {
    const i = Math.floor(rand() * slots.length);
    if (rand() < 0.2) {
      q.remove(slots[i]);
      model.delete(i);
    } else {
      const at = Math.floor(rand() * 1000);
      q.set(slots[i], at);
      model.set(i, at);
    }
    if (q.size !== model.size || q.peekAt() !== (model.size === 0 ? Infinity : Math.min(...model.values()))) wrong++;
  }
  t.equal(wrong, 0, 'size and earliest deadline right after each of 5,000 operations');
  fireDue(q, 500, []);
  const expected = [...model].filter(([, at]) => at <= 500).sort((x, y) => x[1] - y[1]).map(([i]) => i);
  t.same(fired.map((i) => model.get(i)), expected.map((i) => model.get(i)), 'fired in deadline order');
  t.same(new Set(fired), new Set(expected), 'exactly the due ones');
  t.equal(q.size, model.size - expected.length);
});

t.test('ManualClock slots: set moves, cancel stops, a fired slot can be set again', async (t) => {
  const clock = new ManualClock();
  const log: number[] = [];
  const slot = clock.slot({ fire: () => log.push(clock.now()) });
  slot.set(100);
  slot.set(50);
  clock.advance(60);
  t.same(log, [50]);
  slot.set(80);
  slot.cancel();
  clock.advance(100);
  t.same(log, [50]);
  slot.set(10); // in the past: fires at once on the next advance, time does not go back
  clock.advance(0);
  t.same(log, [50, 160]);
  t.equal(clock.pending, 0);
});

t.test('system slots fire in order on one node timer, and leave no timer behind', async (t) => {
  const timeoutsBefore = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const log: string[] = [];
  const start = performance.now();
  let resolve!: () => void;
  const done = new Promise<void>((r) => (resolve = r));
  const a = systemClock.slot({ fire: () => log.push('a') });
  const b = systemClock.slot({ fire: () => log.push('b') });
  const c = systemClock.slot({ fire: () => { log.push('c'); resolve(); } });
  const never = systemClock.slot({ fire: () => log.push('never') });
  c.set(start + 60);
  a.set(start + 20);
  b.set(start + 40);
  never.set(start + 30);
  never.cancel();
  await done;
  t.same(log, ['a', 'b', 'c']);
  t.ok(performance.now() - start >= 59, 'not before its deadline');
  const x = systemClock.slot({ fire: () => log.push('x') });
  x.set(performance.now() + 60_000);
  x.cancel();
  t.equal(process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length, timeoutsBefore, 'no node timer is left for cancelled slots');
});
