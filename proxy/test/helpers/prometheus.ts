/**
 * A real Prometheus (Debian's /usr/bin/prometheus) for a test: a scrape config
 * for the given targets, a temporary TSDB, a free loopback port, its output
 * captured, and the HTTP API. Prometheus missing is an error, never a skip:
 * CI installs it.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { findExecutable } from '../../src/broker/supervisor.ts';
import { spawnCaptured } from './child.ts';
import { freePort } from './mosquitto.ts';
import { waitFor } from './wait.ts';

export const JOB = 'mqtt-liveness-proxy';

/** One series of an instant query. */
export interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

export interface QueryResponse {
  status: string;
  data: { resultType: string; result: Sample[] };
}

export interface ActiveTarget {
  scrapeUrl: string;
  health: string;
  lastError: string;
  labels: Record<string, string>;
}

export interface StartPrometheusOptions {
  /** HOST:PORT of each target, scraped at /metrics as job mqtt-liveness-proxy. */
  targets: string[];
  /** More targets of the same job with extra labels each (e.g. a namespace per proxy, as Kubernetes discovery adds). */
  labelledTargets?: Array<{ target: string; labels: Record<string, string> }>;
  /** Scrape (and evaluation) interval, also the scrape timeout; default 1s. */
  scrapeInterval?: string;
  /** Prefix of the temporary folder; default mlp-prometheus-. */
  tmpPrefix?: string;
  /** How long to wait for /-/ready, ms; default 60 s. */
  readyTimeoutMs?: number;
}

/** Its functions are closures (no `this`): they can be passed on alone, e.g. logTail as a failure context. */
export interface Prometheus {
  /** Base URL of the HTTP API, http://127.0.0.1:PORT. */
  api: string;
  proc: ChildProcess;
  /** GET a path of the API (/api/v1/…) as JSON; null on any error or non-200. */
  get: <T>(apiPath: string) => Promise<T | null>;
  /** The samples of an instant query; null when the request fails. */
  query: (expr: string) => Promise<Sample[] | null>;
  /** Wait until the target scraped at scrapeUrl is up and return it. */
  waitForTargetUp: (scrapeUrl: string, timeoutMs?: number) => Promise<ActiveTarget>;
  /** Exit status and the last 3000 characters of Prometheus's output, for failure messages. */
  logTail: () => string;
  /** SIGTERM (SIGKILL after 10 s) and remove the temporary folder. */
  stop: () => Promise<void>;
}

export function findPrometheus(): string | null {
  return existsSync('/usr/bin/prometheus') ? '/usr/bin/prometheus' : findExecutable('prometheus');
}

export async function getJson<T>(url: string): Promise<T | null> {
  try {
    const res = await request(url, { signal: AbortSignal.timeout(5000) });
    const text = await res.body.text();
    return res.statusCode === 200 ? (JSON.parse(text) as T) : null;
  } catch {
    return null;
  }
}

/** Poll every 250 ms until fn returns something other than undefined, false or null; context() is added to the timeout error. */
export function eventually<T>(what: string, fn: () => Promise<T | undefined | false | null>, timeoutMs: number, context: () => string = () => ''): Promise<T> {
  return waitFor(what, fn, timeoutMs, { intervalMs: 250, context });
}

/** Start Prometheus and wait until it is ready. Throws when it is not installed, exits or is not ready in time. */
export async function startPrometheus(options: StartPrometheusOptions): Promise<Prometheus> {
  const binary = findPrometheus();
  if (!binary) throw new Error('Prometheus is not installed: this test needs /usr/bin/prometheus (apt-get install -y prometheus)');
  const interval = options.scrapeInterval ?? '1s';
  const dir = mkdtempSync(path.join(os.tmpdir(), options.tmpPrefix ?? 'mlp-prometheus-'));
  const port = await freePort();
  const config = path.join(dir, 'prometheus.yml');
  writeFileSync(config, [
    'global:',
    `  scrape_interval: ${interval}`,
    `  scrape_timeout: ${interval}`,
    `  evaluation_interval: ${interval}`,
    'scrape_configs:',
    `  - job_name: ${JOB}`,
    '    metrics_path: /metrics',
    '    static_configs:',
    `      - targets: [${options.targets.map((t) => `'${t}'`).join(', ')}]`,
    ...(options.labelledTargets ?? []).flatMap((g) => [
      `      - targets: ['${g.target}']`,
      `        labels: {${Object.entries(g.labels).map(([k, v]) => `${k}: '${v}'`).join(', ')}}`,
    ]),
    '',
  ].join('\n'));
  // Killed if the test process dies first (tap's timeout): no Prometheus left behind.
  const { proc, output, exited } = spawnCaptured(binary, [
    `--config.file=${config}`,
    `--storage.tsdb.path=${path.join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--storage.tsdb.retention.time=1h',
    '--log.level=warn',
  ]);

  const api = `http://127.0.0.1:${port}`;
  const get = <T>(apiPath: string): Promise<T | null> => getJson<T>(`${api}${apiPath}`);
  const logTail = (): string => `\nprometheus exit=${proc.exitCode} signal=${proc.signalCode}; its output:\n${output().slice(-3000)}`;
  const stop = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    await eventually('Prometheus to be ready', async () => {
      if (proc.exitCode !== null) throw new Error(`prometheus exited${logTail()}`);
      try {
        const res = await request(`${api}/-/ready`, { signal: AbortSignal.timeout(2000) });
        await res.body.dump();
        return res.statusCode === 200;
      } catch {
        return false;
      }
    }, options.readyTimeoutMs ?? 60_000, logTail);
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    api,
    proc,
    get,
    query: async (expr) => (await get<QueryResponse>(`/api/v1/query?query=${encodeURIComponent(expr)}`))?.data.result ?? null,
    async waitForTargetUp(scrapeUrl, timeoutMs = 60_000) {
      let last: ActiveTarget[] | undefined;
      return eventually(`the target ${scrapeUrl} to be up`, async () => {
        const body = await get<{ data: { activeTargets: ActiveTarget[] } }>('/api/v1/targets');
        last = body?.data.activeTargets ?? last;
        return last?.find((a) => a.scrapeUrl === scrapeUrl && a.health === 'up');
      }, timeoutMs, () => `; targets: ${JSON.stringify(last)}${logTail()}`);
    },
    logTail,
    stop,
  };
}
