/**
 * A real Prometheus (Debian's /usr/bin/prometheus) scrapes the proxy's admin
 * server every second; the proxy's series are then found through the query
 * API. Prometheus missing is a failure, not a skip: CI installs it.
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import { request } from 'undici';
import { findExecutable } from '../src/broker/supervisor.ts';
import { freePort, startMosquitto } from './helpers/mosquitto.ts';
import { startProxy } from './helpers/proxy.ts';

const PROMETHEUS = existsSync('/usr/bin/prometheus') ? '/usr/bin/prometheus' : findExecutable('prometheus');

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

async function getJson<T>(url: string): Promise<T | null> {
  try {
    const res = await request(url, { signal: AbortSignal.timeout(5000) });
    const text = await res.body.text();
    return res.statusCode === 200 ? (JSON.parse(text) as T) : null;
  } catch {
    return null;
  }
}

async function eventually<T>(what: string, fn: () => Promise<T | undefined | false | null>, timeoutMs: number, onTimeout: () => string = () => ''): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false && v !== null) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${onTimeout()}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

t.test('Prometheus scrapes the proxy and finds its series', async (t) => {
  if (!PROMETHEUS) {
    t.fail('Prometheus is not installed: this test needs /usr/bin/prometheus (apt-get install -y prometheus)');
    return;
  }
  const broker = await startMosquitto();
  const proxy = await startProxy(broker.port).catch(async (err: unknown) => {
    await broker.stop();
    throw err;
  });
  const cleanups: Array<() => unknown> = [];
  // Last in, first out: client, Prometheus, proxy, broker.
  t.teardown(async () => {
    for (const fn of cleanups.reverse()) await fn();
  });
  cleanups.push(() => broker.stop(), () => proxy.stop());
  const admin = new URL(proxy.adminUrl);

  const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-prometheus-'));
  const port = await freePort();
  const config = path.join(dir, 'prometheus.yml');
  writeFileSync(config, [
    'global:',
    '  scrape_interval: 1s',
    '  scrape_timeout: 1s',
    '  evaluation_interval: 1s',
    'scrape_configs:',
    '  - job_name: mqtt-liveness-proxy',
    '    metrics_path: /metrics',
    '    static_configs:',
    `      - targets: ['${admin.host}']`,
    '',
  ].join('\n'));
  const prom: ChildProcess = spawn(PROMETHEUS, [
    `--config.file=${config}`,
    `--storage.tsdb.path=${path.join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--storage.tsdb.retention.time=1h',
    '--log.level=warn',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  prom.stdout!.on('data', (d: Buffer) => { output += d.toString(); });
  prom.stderr!.on('data', (d: Buffer) => { output += d.toString(); });
  const exited = new Promise<void>((resolve) => prom.once('exit', () => resolve()));
  cleanups.push(async () => {
    if (prom.exitCode === null && prom.signalCode === null) {
      prom.kill('SIGTERM');
      const timer = setTimeout(() => prom.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  });
  const api = `http://127.0.0.1:${port}`;
  const logTail = (): string => `\nprometheus exit=${prom.exitCode} signal=${prom.signalCode}; its output:\n${output.slice(-3000)}`;

  // Some traffic to see: one client connects and stays.
  const client = await mqtt.connectAsync(proxy.url, { reconnectPeriod: 0, clientId: 'prometheus-seen', keepalive: 30 });
  cleanups.push(() => client.end(true));

  await eventually('Prometheus to be ready', async () => {
    if (prom.exitCode !== null) throw new Error(`prometheus exited${logTail()}`);
    try {
      const res = await request(`${api}/-/ready`, { signal: AbortSignal.timeout(2000) });
      await res.body.dump();
      return res.statusCode === 200;
    } catch {
      return false;
    }
  }, 60_000, logTail);

  type Targets = { data: { activeTargets: Array<{ scrapeUrl: string; health: string; lastError: string; labels: Record<string, string> }> } };
  const target = await eventually('the proxy target to be up', async () => {
    const body = await getJson<Targets>(`${api}/api/v1/targets`);
    return body?.data.activeTargets.find((a) => a.scrapeUrl === `${proxy.adminUrl}/metrics` && a.health === 'up');
  }, 60_000, () => `; targets: ${JSON.stringify(output.slice(-500))}`);
  t.equal(target.labels.job, 'mqtt-liveness-proxy');
  t.equal(target.lastError, '');

  type Query = { status: string; data: { resultType: string; result: Sample[] } };
  const query = (q: string): Promise<Query | null> => getJson<Query>(`${api}/api/v1/query?query=${encodeURIComponent(q)}`);

  const accepted = await eventually('mqtt_liveness_connections_accepted_total >= 1', async () => {
    const body = await query('mqtt_liveness_connections_accepted_total');
    return body?.data.result.find((s) => s.metric.instance === admin.host && Number(s.value[1]) >= 1);
  }, 30_000);
  t.equal(accepted.metric.job, 'mqtt-liveness-proxy');
  t.equal(accepted.metric.__name__, 'mqtt_liveness_connections_accepted_total');

  const open = await query('mqtt_liveness_connections_open');
  t.equal(open?.data.result.length, 1, 'one connections_open series');
  t.ok(Number(open!.data.result[0].value[1]) >= 1, 'the connected client is counted as open');

  const buckets = await query('mqtt_liveness_detection_latency_seconds_bucket{reason="keepalive_timeout"}');
  t.ok((buckets?.data.result.length ?? 0) >= 19, 'every detection latency bucket, pre-created at zero, is stored');
  const reasons = await query('count(mqtt_liveness_disconnects_total)');
  t.equal(Number(reasons?.data.result[0]?.value[1]), 16, 'a disconnects series per reason');
  const packets = await query('sum by (type) (mqtt_liveness_forwarded_packets_total{direction="to_broker"})');
  const connects = packets?.data.result.find((s) => s.metric.type === 'connect');
  t.ok(Number(connects?.value[1]) >= 1, 'forwarded CONNECT packets seen by Prometheus');
  const build = await query('mqtt_liveness_build_info');
  t.equal(build?.data.result[0]?.metric.version, '0.1.0');
  const nodejs = await query('nodejs_eventloop_lag_seconds');
  t.equal(nodejs?.data.result.length, 1, 'default Node.js metrics are scraped too');
});
