/**
 * Many owners' deadlines in one indexed binary min-heap, each owner with one
 * slot that is moved in place, never re-created. A Connection re-arms its one
 * timer every few seconds for as long as it lives; a node `Timeout` per arm
 * outlives two scavenges and is then garbage in the old generation (~0.2 KB per
 * idle connection every 20 s, BENCHMARKS.md), where a slot costs nothing per arm.
 * Pure: the clock that drives it (clock.ts) owns the one real timer.
 */

/** What a slot calls when its deadline comes. */
export interface SlotTarget {
  fire(): void;
}

export class QueueSlot {
  /** The deadline, in the driving clock's milliseconds (Infinity: not set). */
  at = Infinity;
  /** Position in the heap; -1 when not queued. */
  index = -1;

  constructor(readonly target: SlotTarget) {}
}

export class DeadlineQueue {
  private readonly heap: QueueSlot[] = [];

  get size(): number {
    return this.heap.length;
  }

  /** The earliest deadline (Infinity when empty). */
  peekAt(): number {
    return this.heap.length === 0 ? Infinity : this.heap[0].at;
  }

  /** Queue the slot for `at`, or move it there if queued. Infinity removes it. */
  set(slot: QueueSlot, at: number): void {
    if (at === Infinity) {
      this.remove(slot);
      return;
    }
    const before = slot.at;
    slot.at = at;
    if (slot.index < 0) {
      slot.index = this.heap.length;
      this.heap.push(slot);
      this.up(slot.index);
    } else if (at < before) {
      this.up(slot.index);
    } else {
      this.down(slot.index);
    }
  }

  /** Take the slot out (at becomes Infinity); nothing if it is not queued. */
  remove(slot: QueueSlot): void {
    slot.at = Infinity;
    const i = slot.index;
    if (i < 0) return;
    slot.index = -1;
    const last = this.heap.pop()!;
    if (last === slot) return;
    this.heap[i] = last;
    last.index = i;
    this.up(i);
    this.down(last.index);
  }

  /** Take out and return the earliest slot due at `now` (its at is kept), or null. */
  popDue(now: number): QueueSlot | null {
    if (this.heap.length === 0 || this.heap[0].at > now) return null;
    const slot = this.heap[0];
    const last = this.heap.pop()!;
    slot.index = -1;
    if (last !== slot) {
      this.heap[0] = last;
      last.index = 0;
      this.down(0);
    }
    return slot;
  }

  private up(i: number): void {
    const heap = this.heap;
    const slot = heap[i];
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent].at <= slot.at) break;
      heap[i] = heap[parent];
      heap[i].index = i;
      i = parent;
    }
    heap[i] = slot;
    slot.index = i;
  }

  private down(i: number): void {
    const heap = this.heap;
    const n = heap.length;
    const slot = heap[i];
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && heap[child + 1].at < heap[child].at) child++;
      if (heap[child].at >= slot.at) break;
      heap[i] = heap[child];
      heap[i].index = i;
      i = child;
    }
    heap[i] = slot;
    slot.index = i;
  }
}

/**
 * Fire every slot due at `now`, in deadline order, each once: a slot set again
 * for now or earlier by a target waits for the next run (as a zero-delay
 * setTimeout would), and a slot cancelled or moved by an earlier target in the
 * same run is skipped. If a target throws, the slots not yet fired go back to
 * the queue and the error propagates.
 */
export function fireDue(queue: DeadlineQueue, now: number, due: QueueSlot[]): void {
  for (let s = queue.popDue(now); s !== null; s = queue.popDue(now)) due.push(s);
  let i = 0;
  try {
    for (; i < due.length; i++) {
      const s = due[i];
      // Still popped and due: not cancelled (at = Infinity) nor set again (index >= 0) since.
      if (s.index < 0 && s.at <= now) {
        s.at = Infinity;
        s.target.fire();
      }
    }
  } finally {
    for (i++; i < due.length; i++) {
      const s = due[i];
      if (s.index < 0 && s.at <= now) queue.set(s, s.at);
    }
    due.length = 0;
  }
}
