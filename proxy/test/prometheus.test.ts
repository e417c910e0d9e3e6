/**
 * A real Prometheus (Debian's /usr/bin/prometheus) scrapes the proxy's admin
 * server every second; the proxy's series are then found through the query
 * API. Prometheus missing is a failure, not a skip: CI installs it.
 */
import { REASONS } from '../src/liveness/reasons.ts';
import t from 'tap';
import mqtt from 'mqtt';
import { eventually, startPrometheus } from './helpers/prometheus.ts';
import { startMosquitto } from './helpers/mosquitto.ts';
import { startProxy } from './helpers/proxy.ts';

t.test('Prometheus scrapes the proxy and finds its series', async (t) => {
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

  const prom = await startPrometheus({ targets: [admin.host] });
  cleanups.push(() => prom.stop());

  // Some traffic to see: one client connects and stays.
  const client = await mqtt.connectAsync(proxy.url, { reconnectPeriod: 0, clientId: 'prometheus-seen', keepalive: 30 });
  cleanups.push(() => client.end(true));

  const target = await prom.waitForTargetUp(`${proxy.adminUrl}/metrics`);
  t.equal(target.labels.job, 'mqtt-liveness-proxy');
  t.equal(target.lastError, '');

  const accepted = await eventually('mqtt_liveness_connections_accepted_total >= 1', async () => {
    const samples = await prom.query('mqtt_liveness_connections_accepted_total');
    return samples?.find((s) => s.metric.instance === admin.host && Number(s.value[1]) >= 1);
  }, 30_000);
  t.equal(accepted.metric.job, 'mqtt-liveness-proxy');
  t.equal(accepted.metric.__name__, 'mqtt_liveness_connections_accepted_total');

  const open = await prom.query('sum(mqtt_liveness_connections_open)');
  t.equal(open?.length, 1, 'one connections_open total (sum over transports)');
  t.ok(Number(open![0].value[1]) >= 1, 'the connected client is counted as open');

  const buckets = await prom.query('mqtt_liveness_detection_latency_seconds_bucket{reason="keepalive_timeout"}');
  t.ok((buckets?.length ?? 0) >= 19, 'every detection latency bucket, pre-created at zero, is stored');
  const reasons = await prom.query('count(mqtt_liveness_disconnects_total)');
  t.equal(Number(reasons?.[0]?.value[1]), REASONS.length, 'a disconnects series per reason');
  const packets = await prom.query('sum by (type) (mqtt_liveness_forwarded_packets_total{direction="to_broker"})');
  const connects = packets?.find((s) => s.metric.type === 'connect');
  t.ok(Number(connects?.value[1]) >= 1, 'forwarded CONNECT packets seen by Prometheus');
  const build = await prom.query('mqtt_liveness_build_info');
  t.equal(build?.[0]?.metric.version, '0.1.0');
  const nodejs = await prom.query('nodejs_eventloop_lag_seconds');
  t.equal(nodejs?.length, 1, 'default Node.js metrics are scraped too');
});
