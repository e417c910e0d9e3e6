/**
 * Scraping the proxy's /metrics over HTTP and reading series from the text
 * exposition, for tests.
 */
import { request } from 'undici';

export type Samples = Map<string, number>;

/** Parse the text exposition into `name{labels}` -> value (labels as written, sorted by prom-client). */
export function parseMetrics(text: string): Samples {
  const samples: Samples = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable metrics line: ${line}`);
    samples.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return samples;
}

export async function scrape(adminUrl: string): Promise<{ text: string; samples: Samples; contentType: string }> {
  const res = await request(`${adminUrl}/metrics`);
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`/metrics answered ${res.statusCode}: ${text}`);
  return { text, samples: parseMetrics(text), contentType: String(res.headers['content-type']) };
}

/** The value of `name{labels}` (labels exactly as prom-client writes them). */
export function value(samples: Samples, key: string): number {
  const v = samples.get(key);
  if (v === undefined) throw new Error(`series ${key} is missing`);
  return v;
}
