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
