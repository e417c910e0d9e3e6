/**
 * Every query of the Grafana dashboard returns data from a real Prometheus
 * (Debian's /usr/bin/prometheus, on a loopback port, scraping two proxies'
 * admin servers every second as one job, each target labelled with its own
 * namespace as Kubernetes discovery would) and tells the two apart.
 * Proxy A (namespace mqtt-a) runs a scripted scenario: a subscriber and a
 * publisher, an MQTT 5 client with keep-alive 0 (assigned by the proxy), a
 * CONNECT refused for its keep-alive, a malformed frame, webhook events to a
 * local receiver, and a frozen raw-socket client with keep-alive 2 that ends
 * in a keepalive_timeout verdict. Proxy B (namespace mqtt-b, its own broker)
 * only relays a publisher's messages to a subscriber. Queries are run with the
 * dashboard's variables substituted ($namespace, $job, $instance, $reason ->
 * .*, $__rate_interval -> 1m) over the scenario's time range; "data" means at
 * least one finite value. Then each query with $namespace set to one
 * namespace must return exactly what it returns for that proxy's instance
 * alone: a selector without the namespace matcher would mix B into A.
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

/** Grafana's variables (All = .*), and a fixed rate interval. */
function substitute(expr: string, namespace = '.*', instance = '.*'): string {
  return expr.replaceAll('$__rate_interval', '1m').replaceAll('$namespace', namespace).replaceAll('$job', '.*').replaceAll('$instance', instance).replaceAll('$reason', '.*');
}

const NS_A = 'mqtt-a';
const NS_B = 'mqtt-b';

/** A range query's result as label set -> values, comparable with t.same. */
function bySeries(body: RangeResult | null): Record<string, Array<[number, string]>> {
  const out: Record<string, Array<[number, string]>> = {};
  for (const s of body?.data.result ?? []) out[JSON.stringify(Object.entries(s.metric).sort())] = s.values;
  return out;
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
  // Proxy B: another release in another namespace, same job name.
  const brokerB = await startMosquitto();
  cleanups.push(() => brokerB.stop());
  const proxyB = await startProxy(brokerB.port, { logLevel: 'warn', probes: { interval: 0.5, timeout: 0.25 } });
  cleanups.push(() => proxyB.stop());
  const adminB = new URL(proxyB.adminUrl);

  // Prometheus, scraping both admin servers every second.
  const prom = await startPrometheus({
    targets: [],
    labelledTargets: [{ target: admin.host, labels: { namespace: NS_A } }, { target: adminB.host, labels: { namespace: NS_B } }],
    scrapeInterval: '1s',
    tmpPrefix: 'mlp-dashboard-data-',
  });
  cleanups.push(() => prom.stop());
  const { query, logTail } = prom;
  await eventually('the first scrape of both', async () => ((await query('mqtt_liveness_build_info'))?.length ?? 0) === 2, 30_000, logTail);
  const start = Date.now() / 1000 - 5;

  // ---- B: a subscriber and a publisher, nothing else
  const subB = await mqtt.connectAsync(proxyB.url, { clientId: 'dash-b-sub', protocolVersion: 4, keepalive: 20, reconnectPeriod: 0 });
  cleanups.push(() => subB.endAsync(true));
  await subB.subscribeAsync('b/#', { qos: 1 });
  const pubB = await mqtt.connectAsync(proxyB.url, { clientId: 'dash-b-pub', protocolVersion: 5, keepalive: 20, reconnectPeriod: 0 });
  cleanups.push(() => pubB.endAsync(true));
  const feedB = setInterval(() => pubB.publish('b/tick', 'x'.repeat(200), { qos: 1 }), 100);
  cleanups.push(() => clearInterval(feedB));

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
  clearInterval(feedB);
  const end = Date.now() / 1000;

  // ---- every panel query
  // What the scenario must show, beyond "some data": [panel title (and type, where two panels share a title),
  // refId, namespace, series labels, check of the largest value].
  const expected: Array<[string, string, string, Record<string, string>, (max: number) => boolean, string]> = [
    ['Liveness verdicts by reason', 'A', NS_A, { reason: 'keepalive_timeout' }, (v) => v > 0, 'the verdict'],
    ['Liveness verdicts by reason', 'A', NS_B, {}, (v) => v <= 0, 'no verdict in B (zero or no series)'],
    ['Detection latency by reason', 'A', NS_A, { reason: 'keepalive_timeout' }, (v) => v >= 2 && v <= 5, 'about keep-alive 2 s + grace 1 s'],
    ['Connections accepted and refused', 'B', NS_A, { reason: 'keepalive_too_large' }, (v) => v > 0, 'the refused CONNECT'],
    ['Connections accepted and refused', 'B', NS_B, {}, (v) => v <= 0, 'nothing refused in B'],
    ['Keep-alive clamps', 'A', NS_A, { protocol: '5' }, (v) => v > 0, 'the assigned keep-alive'],
    ['Frame errors', 'A', NS_A, {}, (v) => v > 0, 'the malformed frame'],
    ['Frame errors', 'A', NS_B, {}, (v) => v <= 0, 'no frame error in B'],
    ['Webhook deliveries', 'A', NS_A, { outcome: 'success' }, (v) => v > 0, 'delivered events'],
    ['Open connections/stat', 'A', NS_A, {}, (v) => v >= 3, 'subscriber, publisher and the keep-alive 0 client'],
    ['Open connections/stat', 'A', NS_B, {}, (v) => v === 2, 'B\'s subscriber and publisher, not A\'s'],
    ['Open connections/timeseries', 'A', NS_B, { instance: adminB.host }, (v) => v === 2, 'B\'s two clients on B\'s instance'],
    ['Bytes relayed', 'A', NS_A, { direction: 'to_client' }, (v) => v > 0, 'traffic'],
    ['Bytes relayed', 'A', NS_B, { direction: 'to_client' }, (v) => v > 0, 'B\'s traffic'],
  ];
  const matched = expected.map(() => 0);
  const range = (expr: string) => prom.get<RangeResult>(`/api/v1/query_range?query=${encodeURIComponent(expr)}&start=${start}&end=${end}&step=1`);
  const empty: string[] = [];
  let inBoth = 0;
  for (const panel of dashboard.panels) {
    for (const target of panel.targets ?? []) {
      const tid = `panel ${panel.id} "${panel.title}" ${target.refId}`;
      const body = await range(substitute(target.expr));
      const finite = body?.data.result.some((s) => s.values.some(([, v]) => Number.isFinite(Number(v)))) ?? false;
      t.ok(finite, `${tid}: data for ${substitute(target.expr)}`);
      if (!finite) empty.push(tid);
      // One namespace selected = that proxy's instance alone, exactly.
      const perNamespace: Record<string, Record<string, Array<[number, string]>>> = {};
      for (const [ns, host] of [[NS_A, admin.host], [NS_B, adminB.host]] as const) {
        const selected = await range(substitute(target.expr, ns));
        const alone = await range(substitute(target.expr, '.*', host));
        t.ok(selected && alone, `${tid}: ${ns} queries answered`);
        perNamespace[ns] = bySeries(selected);
        t.same(perNamespace[ns], bySeries(alone), `${tid}: $namespace=${ns} shows ${ns === NS_A ? 'A' : 'B'} alone`);
        expected.forEach(([title, refId, namespace, labels, check, what], i) => {
          const [name, type] = title.split('/');
          if (name !== panel.title || (type && type !== panel.type) || refId !== target.refId || namespace !== ns) return;
          matched[i]++;
          const series = selected?.data.result.filter((s) => Object.entries(labels).every(([k, v]) => s.metric[k] === v)) ?? [];
          const max = Math.max(-Infinity, ...series.flatMap((s) => s.values.map(([, v]) => Number(v)).filter(Number.isFinite)));
          t.ok(check(max), `panel "${title}" ${refId} in ${ns} ${JSON.stringify(labels)} shows ${what} (max ${max})`);
        });
      }
      if (Object.keys(perNamespace[NS_A]).length > 0 && Object.keys(perNamespace[NS_B]).length > 0) inBoth++;
    }
  }
  // A renamed panel or refId must not silently drop its content check.
  expected.forEach(([title, refId, ns], i) => t.equal(matched[i], 1, `expected panel "${title}" ${refId} (${ns}) matched exactly once`));
  // The equality above only bites where both proxies have data: most queries must.
  t.ok(inBoth >= 20, `${inBoth} queries have data in both namespaces`);
  // ---- variable queries (label_values(selector, label))
  for (const v of dashboard.templating.list) {
    if (v.type !== 'query') continue;
    const m = /^label_values\((.*), (\w+)\)$/.exec((v.query as { query: string }).query);
    t.ok(m, `variable ${v.name}: label_values query`);
    if (!m) continue;
    const values = async (ns: string) => (await prom.get<{ data: string[] }>(`/api/v1/label/${m[2]}/values?match[]=${encodeURIComponent(substitute(m[1], ns))}&start=${start}&end=${end}`))?.data;
    const body = { data: await values('.*') };
    t.ok((body?.data?.length ?? 0) > 0, `variable ${v.name} has values: ${JSON.stringify(body?.data)}`);
    if (v.name === 'namespace') t.same(body?.data, [NS_A, NS_B]);
    if (v.name === 'job') t.same(body?.data, ['mqtt-liveness-proxy'], 'both releases scraped under one job name');
    if (v.name === 'instance') {
      t.same(body?.data, [admin.host, adminB.host].sort());
      t.same(await values(NS_A), [admin.host], 'namespace mqtt-a narrows the instances to A');
      t.same(await values(NS_B), [adminB.host], 'namespace mqtt-b narrows the instances to B');
    }
    if (v.name === 'reason') t.ok(body?.data?.includes('keepalive_timeout'), 'the verdict reason is a value of $reason');
  }
  if (empty.length > 0) t.comment(`queries without data: ${empty.join('; ')}`);
});
