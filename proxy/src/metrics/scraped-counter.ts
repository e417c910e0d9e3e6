/**
 * A Prometheus counter whose total lives elsewhere: a plain number the hot
 * path increments (TrafficStats), or a count derived from state. At each
 * scrape the counter adds what grew since the previous scrape, so the relay
 * never touches a label per packet.
 */
import { Counter, type CounterConfiguration } from 'prom-client';

export interface ScrapedSource<L extends string> {
  /** Label values of this series; undefined for a counter without labels. */
  labels?: Partial<Record<L, string>>;
  /** The running total now. */
  read(): number;
}

export function scrapedCounter<L extends string>(config: Omit<CounterConfiguration<L>, 'collect'>, sources: ReadonlyArray<ScrapedSource<L>>): Counter<L> {
  const seen = new Float64Array(sources.length);
  return new Counter<L>({
    ...config,
    collect() {
      for (let i = 0; i < sources.length; i++) {
        const total = sources[i].read();
        const delta = total - seen[i];
        if (delta <= 0) continue;
        const labels = sources[i].labels;
        if (labels) this.inc(labels, delta);
        else this.inc(delta);
        seen[i] = total;
      }
    },
  });
}
