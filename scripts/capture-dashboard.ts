/**
 * `npm run figures:capture` (about 2 minutes): a proxy in front of a real
 * Mosquitto, scraped every second by a real Prometheus, runs a scripted
 * scenario; then the dashboard's own queries for its key panels (variables
 * All, $__rate_interval 10s) are read back with query_range and written to
 * docs/results/dashboard-panels.json, which `npm run figures` draws.
 * A progress line every 10 s.
 */
import { writeFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import mqtt from 'mqtt';
import { ROOT } from './sync-chart.ts';
import { RawClient, connectFrame, sleep } from '../proxy/test/helpers/clients.ts';
import { startMosquitto } from '../proxy/test/helpers/mosquitto.ts';
import { eventually, startPrometheus } from '../proxy/test/helpers/prometheus.ts';
import { startProxy } from '../proxy/test/helpers/proxy.ts';
import type { PanelData, PanelsFile } from './figure-panels.ts';

const OUT = path.join(ROOT, 'docs/results/dashboard-panels.json');
const RATE_INTERVAL = '10s';
const DURATION_S = 120;
/** Keep-alives of the frozen clients, in turn: the proxy's deadline is keep-alive + 2 s, the broker's 1.5 x keep-alive. */
const FROZEN_KEEPALIVES = [10, 20, 30];
/** Panels drawn: [title, type] (two panels are called "Open connections"). */
const PANELS: Array<[string, string]> = [
  ['Open connections', 'timeseries'],
  ['Connections accepted and refused', 'timeseries'],
  ['Liveness verdicts by reason', 'timeseries'],
  ['Detection latency by reason', 'timeseries'],
  ['Advantage over the broker by reason', 'timeseries'],
  ['Canary round trip', 'timeseries'],
];

interface Panel { title: string; type: string; fieldConfig?: { defaults?: { unit?: string } }; targets?: Array<{ expr: string; legendFormat: string }> }
const dashboard = JSON.parse(readFileSync(path.join(ROOT, 'grafana/mqtt-liveness-proxy.json'), 'utf8')) as { panels: Panel[] };
const substitute = (expr: string) => expr.replaceAll('$__rate_interval', RATE_INTERVAL).replaceAll(/\$(namespace|job|instance|reason)\b/g, '.*');

const broker = await startMosquitto();
const proxy = await startProxy(broker.port, {
  logLevel: 'warn',
  keepAlive: { max: 300, aboveMax: 'reject' },
  probes: { interval: 1, timeout: 0.5 },
});
const prom = await startPrometheus({ targets: [new URL(proxy.adminUrl).host], scrapeInterval: '1s', tmpPrefix: 'mlp-figure-' });
const cleanup: Array<() => unknown> = [() => prom.stop(), () => proxy.stop(), () => broker.stop()];
try {
  await eventually('the first scrape', async () => ((await prom.query('mqtt_liveness_build_info'))?.length ?? 0) > 0, 30_000, prom.logTail);
  const start = Math.floor(Date.now() / 1000);
  console.log(`Scenario for ${DURATION_S} s: 5 subscribers, a publisher at 5 msg/s, a frozen client every 10 s (keep-alive ${FROZEN_KEEPALIVES.join(', ')} s in turn), a CONNECT refused every 15 s; a progress line every 10 s.`);
  const clients: mqtt.MqttClient[] = [];
  for (let i = 0; i < 5; i++) {
    const c = await mqtt.connectAsync(proxy.url, { clientId: `fig-sub-${i}`, keepalive: 30, reconnectPeriod: 0, protocolVersion: i % 2 ? 5 : 4 });
    await c.subscribeAsync('fig/#', { qos: 0 });
    clients.push(c);
  }
  const publisher = await mqtt.connectAsync(proxy.url, { clientId: 'fig-pub', keepalive: 30, reconnectPeriod: 0 });
  clients.push(publisher);
  const feed = setInterval(() => publisher.publish('fig/tick', 'x'.repeat(64), { qos: 0 }), 200);
  const frozen: RawClient[] = [];
  let verdictsBefore = proxy.closes.filter((e) => e.liveness).length;
  for (let s = 0; s < DURATION_S; s++) {
    if (s % 10 === 2 && s < DURATION_S - 40) {
      const raw = await RawClient.connect(proxy.port);
      raw.write(connectFrame({ clientId: `fig-frozen-${s}`, keepalive: FROZEN_KEEPALIVES[((s / 10) | 0) % FROZEN_KEEPALIVES.length], will: { topic: 'fig/will', payload: 'gone' } }));
      frozen.push(raw);
    }
    if (s % 15 === 5) {
      const refused = await RawClient.connect(proxy.port);
      refused.write(connectFrame({ clientId: `fig-refused-${s}`, keepalive: 1000 }));
      await refused.waitForClose(5_000).catch(() => undefined);
    }
    if (s % 10 === 9) {
      const verdicts = proxy.closes.filter((e) => e.liveness).length;
      console.log(`[${s + 1} s] ${verdicts} verdicts (${verdicts - verdictsBefore} in the last 10 s), ${clients.length} healthy clients`);
      verdictsBefore = verdicts;
    }
    await sleep(1000);
  }
  clearInterval(feed);
  await sleep(3000);
  const end = Math.floor(Date.now() / 1000);
  for (const c of clients) c.end(true);
  for (const r of frozen) r.destroy();

  const panels: PanelData[] = [];
  for (const [title, type] of PANELS) {
    const found = dashboard.panels.filter((p) => p.title === title && p.type === type);
    if (found.length !== 1) throw new Error(`expected one ${type} panel "${title}", found ${found.length}`);
    const p = found[0];
    const series: PanelData['series'] = [];
    for (const target of p.targets ?? []) {
      const body = await prom.get<{ data: { result: Array<{ metric: Record<string, string>; values: Array<[number, string]> }> } }>(
        `/api/v1/query_range?query=${encodeURIComponent(substitute(target.expr))}&start=${start}&end=${end}&step=2`);
      if (!body) throw new Error(`query failed: ${target.expr}${prom.logTail()}`);
      for (const r of body.data.result) {
        series.push({
          legend: target.legendFormat.replaceAll(/\{\{\s*(\w+)\s*\}\}/g, (_, k: string) => r.metric[k] ?? ''),
          values: r.values.map(([t, v]) => [t, Number(Number(v).toPrecision(4))] as [number, number]),
        });
      }
    }
    panels.push({ title, unit: p.fieldConfig?.defaults?.unit ?? '', series });
  }
  const file: PanelsFile = {
    date: new Date(start * 1000).toISOString(),
    command: 'npm run figures:capture',
    scenario: `${DURATION_S} s: 5 subscribers, a publisher at 5 msg/s, a frozen client every 10 s (keep-alive ${FROZEN_KEEPALIVES.join(', ')} s in turn), a CONNECT refused every 15 s.`,
    rateInterval: RATE_INTERVAL,
    start,
    end,
    panels,
  };
  writeFileSync(OUT, `${JSON.stringify(file, null, 1)}\n`);
  console.log(`written ${OUT} (${panels.map((p) => `${p.title}: ${p.series.length} series`).join('; ')})`);
} finally {
  for (const fn of cleanup) await fn();
}
process.exit(0);
