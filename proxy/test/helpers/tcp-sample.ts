// TCP_INFO samples for unit tests of the liveness model (no socket needed).
import { newTcpInfoSample, type TcpInfoSample } from '../../src/liveness/tcp-options.ts';

export function sample(fields: Partial<TcpInfoSample> = {}): TcpInfoSample {
  return { ...newTcpInfoSample(), rttUs: 20_000, rttvarUs: 5_000, rtoUs: 220_000, ...fields };
}

/** A connection's counters moving forward, as the kernel would report them. */
export class FakeKernelSocket {
  readonly s: TcpInfoSample = sample();

  /** k keep-alive probes out, `answered` of them answered (idle: no data either way). */
  probes(k: number, answered: number): this {
    this.s.segsOut += k;
    this.s.segsIn += answered;
    return this;
  }

  /** n data segments sent, r of them retransmissions. */
  data(n: number, r: number): this {
    this.s.dataSegsOut += n;
    this.s.segsOut += n;
    this.s.totalRetrans += r;
    this.s.segsIn += n - r;
    return this;
  }

  set(fields: Partial<TcpInfoSample>): this {
    Object.assign(this.s, fields);
    return this;
  }
}

/**
 * Heap bytes per object made by make(), measured around forced collections. What is
 * allocated once (compiled code, feedback, shared caches, a list growing) only ever adds to
 * a measurement, so an unmeasured first round makes (and drops) as many objects and the
 * smaller of two measured rounds is returned: with one round the result moved by about
 * 30 B from run to run, and now and then by 80 B.
 */
export async function heapBytesPer(count: number, make: (i: number) => unknown): Promise<number> {
  const v8 = await import('node:v8');
  const vm = await import('node:vm');
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const keep: unknown[] = new Array(count);
  let best = Infinity;
  for (let round = 0; round < 3; round++) {
    keep.fill(undefined);
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < count; i++) keep[i] = make(i);
    gc();
    const per = (process.memoryUsage().heapUsed - before) / count;
    if (keep.length !== count) throw new Error('unreachable'); // keep `keep` alive past the second gc
    if (round > 0) best = Math.min(best, per);
  }
  return best;
}
