/**
 * Every query of the Grafana dashboard returns data from a real Prometheus
 * (Debian's /usr/bin/prometheus, on a loopback port, scraping the proxy's
 * admin server every second) during a scripted scenario: a subscriber and a
 * publisher, an MQTT 5 client with keep-alive 0 (assigned by the proxy), a
 * CONNECT refused for its keep-alive, a malformed frame, webhook events to a
 * local receiver, and a frozen raw-socket client with keep-alive 2 that ends
 * in a keepalive_timeout verdict. Queries are run with the dashboard's
 * variables substituted ($job, $instance, $reason -> .*, $__rate_interval ->
 * 1m) over the scenario's time range; "data" means at least one finite value.
 * Prometheus missing is a failure, not a skip.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import mqtt from 'mqtt';
import { ROOT } from '../../scripts/sync-chart.ts';
import { RawClient, connectFrame, sleep } from './helpers/clients.ts';
import { startMosquitto } from './helpers/mosquitto.ts';
import { eventually, startPrometheus } from './helpers/prometheus.ts';
import { startProxy } from './helpers/proxy.ts';

interface Panel {
  id: number;
  type: string;
  title: string;
  targets?: Array<{ expr: string; refId: string }>;
}
const dashboard = JSON.parse(readFileSync(path.join(ROOT, 'grafana/mqtt-liveness-proxy.json'), 'utf8')) as {
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string; query: string | { query: string } }> };
};

/** Grafana's variables with All selected, and a fixed rate interval. */
function substitute(expr: string): string {
  return expr.replaceAll('$__rate_interval', '1m').replaceAll('$job', '.*').replaceAll('$instance', '.*').replaceAll('$reason', '.*');
}

type RangeResult = { status: string; data: { result: Array<{ metric: Record<string, string>; values: Array<[number, string]> }> }; error?: string };

t.test('every dashboard query returns data from a real Prometheus', async (t) => {
  const cleanups: Array<() => unknown> = [];
  t.teardown(async () => {
    for (const fn of cleanups.reverse()) await fn();
  });

  // Webhook receiver.
  let hooks = 0;
  const receiver = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      hooks++;
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => receiver.close(() => resolve())));
  const hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;

  const broker = await startMosquitto();
  cleanups.push(() => broker.stop());
  const proxy = await startProxy(broker.port, {
    logLevel: 'warn',
    keepAlive: { max: 600, aboveMax: 'reject', zero: 'assign', assign: 30 },
    probes: { interval: 0.5, timeout: 0.25, deepTopic: 'mlp/canary', upstreamProbeIdle: 1 },
    events: { webhook: hookUrl, types: ['verdict', 'connect', 'disconnect'] },
  });
  cleanups.push(() => proxy.stop());
  const admin = new URL(proxy.adminUrl);

  // Prometheus, scraping the admin server every second.
  const prom = await startPrometheus({ targets: [admin.host], scrapeInterval: '1s', tmpPrefix: 'mlp-dashboard-data-' });
  cleanups.push(() => prom.stop());
  const { query, logTail } = prom;
  await eventually('the first scrape', async () => ((await query('mqtt_liveness_build_info'))?.length ?? 0) > 0, 30_000, logTail);
  const start = Date.now() / 1000 - 5;

  // ---- the scenario
  const subscriber = await mqtt.connectAsync(proxy.url, { clientId: 'dash-sub', protocolVersion: 5, keepalive: 20, reconnectPeriod: 0 });
  cleanups.push(() => subscriber.endAsync(true));
  await subscriber.subscribeAsync('dash/#', { qos: 1 });
  const publisher = await mqtt.connectAsync(proxy.url, { clientId: 'dash-pub', protocolVersion: 4, keepalive: 15, reconnectPeriod: 0 });
  cleanups.push(() => publisher.endAsync(true));
  // MQTT 5 with keep-alive 0: the proxy assigns 30 s (a clamp).
  const zero = await mqtt.connectAsync(proxy.url, { clientId: 'dash-zero', protocolVersion: 5, keepalive: 0, reconnectPeriod: 0 });
  cleanups.push(() => zero.endAsync(true));
  // Keep-alive above max with aboveMax: reject.
  const refused = await RawClient.connect(proxy.port);
  refused.write(connectFrame({ clientId: 'dash-refused', keepalive: 1000 }));
  await refused.waitForClose(10_000);
  // A malformed frame: reserved packet type 0.
  const garbage = await RawClient.connect(proxy.port);
  garbage.write([0x00, 0x00]);
  await garbage.waitForClose(10_000);
  // The frozen client: CONNECT with keep-alive 2 and a Will, then silence.
  const frozen = await RawClient.connect(proxy.port);
  frozen.write(connectFrame({ clientId: 'dash-frozen', keepalive: 2, will: { topic: 'dash/will', payload: 'gone' } }));
  await frozen.waitForBytes(4, 10_000);
  const will = new Promise<string>((resolve) => subscriber.on('message', (topic, payload) => { if (topic === 'dash/will') resolve(payload.toString()); }));
  for (let i = 0; i < 10; i++) {
    await publisher.publishAsync(`dash/n${i}`, `message ${i}`, { qos: i % 2 as 0 | 1 });
    await sleep(300);
  }
  await frozen.waitForClose(15_000);
  t.equal(await will, 'gone', 'the frozen client got its verdict and its Will');
  const verdict = await proxy.nextClose((e) => e.reason === 'keepalive_timeout', 5000);
  t.ok(verdict, 'keepalive_timeout verdict');
  // Keep traffic going while Prometheus scrapes the verdict into a few samples.
  await eventually('Prometheus to see the verdict', async () => Number((await query('sum(mqtt_liveness_detection_latency_seconds_count)'))?.[0]?.value[1] ?? 0) >= 1, 30_000, logTail);
  await eventually('the webhook to deliver', async () => hooks > 0, 15_000);
  for (let i = 0; i < 10; i++) {
    await publisher.publishAsync('dash/tail', `tail ${i}`, { qos: 1 });
    await sleep(300);
  }
  await sleep(3000);
  const end = Date.now() / 1000;

  // ---- every panel query
  // What the scenario must show, beyond "some data": [panel title, refId, series labels, check of the largest value].
  const expected: Array<[string, string, Record<string, string>, (max: number) => boolean, string]> = [
    ['Liveness verdicts by reason', 'A', { reason: 'keepalive_timeout' }, (v) => v > 0, 'the verdict'],
    ['Detection latency by reason', 'A', { reason: 'keepalive_timeout' }, (v) => v >= 2 && v <= 5, 'about keep-alive 2 s + grace 1 s'],
    ['Connections accepted and refused', 'B', { reason: 'keepalive_too_large' }, (v) => v > 0, 'the refused CONNECT'],
    ['Keep-alive clamps', 'A', { protocol: '5' }, (v) => v > 0, 'the assigned keep-alive'],
    ['Frame errors', 'A', {}, (v) => v > 0, 'the malformed frame'],
    ['Webhook deliveries', 'A', { outcome: 'success' }, (v) => v > 0, 'delivered events'],
    ['Open connections', 'A', {}, (v) => v >= 3, 'subscriber, publisher and the keep-alive 0 client'],
    ['Bytes relayed', 'A', { direction: 'to_client' }, (v) => v > 0, 'traffic'],
  ];
  const empty: string[] = [];
  for (const panel of dashboard.panels) {
    for (const target of panel.targets ?? []) {
      const expr = substitute(target.expr);
      const body = await prom.get<RangeResult>(`/api/v1/query_range?query=${encodeURIComponent(expr)}&start=${start}&end=${end}&step=1`);
      const finite = body?.data.result.some((s) => s.values.some(([, v]) => Number.isFinite(Number(v)))) ?? false;
      t.ok(finite, `panel ${panel.id} "${panel.title}" ${target.refId}: data for ${expr}`);
      if (!finite) empty.push(`panel ${panel.id} "${panel.title}" ${target.refId}`);
      for (const [title, refId, labels, check, what] of expected) {
        if (title !== panel.title || refId !== target.refId) continue;
        const series = body?.data.result.filter((s) => Object.entries(labels).every(([k, v]) => s.metric[k] === v)) ?? [];
        const max = Math.max(-Infinity, ...series.flatMap((s) => s.values.map(([, v]) => Number(v)).filter(Number.isFinite)));
        t.ok(check(max), `panel "${title}" ${refId} ${JSON.stringify(labels)} shows ${what} (max ${max})`);
      }
    }
  }
  // ---- variable queries (label_values(selector, label))
  for (const v of dashboard.templating.list) {
    if (v.type !== 'query') continue;
    const m = /^label_values\((.*), (\w+)\)$/.exec((v.query as { query: string }).query);
    t.ok(m, `variable ${v.name}: label_values query`);
    if (!m) continue;
    const body = await prom.get<{ data: string[] }>(`/api/v1/label/${m[2]}/values?match[]=${encodeURIComponent(substitute(m[1]))}&start=${start}&end=${end}`);
    t.ok((body?.data.length ?? 0) > 0, `variable ${v.name} has values: ${JSON.stringify(body?.data)}`);
    if (v.name === 'job') t.same(body?.data, ['mqtt-liveness-proxy']);
    if (v.name === 'instance') t.same(body?.data, [admin.host]);
    if (v.name === 'reason') t.ok(body?.data.includes('keepalive_timeout'), 'the verdict reason is a value of $reason');
  }
  if (empty.length > 0) t.comment(`queries without data: ${empty.join('; ')}`);
});
