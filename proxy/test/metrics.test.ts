/**
 * GET /metrics of a real proxy in front of a real Mosquitto, scraped over
 * HTTP and parsed: a frozen client, a clean disconnect and a malformed frame
 * each move exactly the series the metrics contract says they move.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import net from 'node:net';
import mqtt from 'mqtt';
import mqttPacket from 'mqtt-packet';
import { scrape, value } from './helpers/scrape.ts';
import { startMosquitto } from './helpers/mosquitto.ts';
import { startProxy } from './helpers/proxy.ts';
import { waitFor } from './helpers/wait.ts';

function rawConnect(port: number): Promise<{ socket: net.Socket; received: () => Buffer; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let received = Buffer.alloc(0);
    socket.on('data', (d) => { received = Buffer.concat([received, d]); });
    socket.on('error', () => undefined);
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.once('connect', () => resolve({ socket, received: () => received, closed }));
    socket.once('error', reject);
  });
}

const broker = await startMosquitto();
// grace 0.5 s: a 2 s keep-alive is cut after 2.5 s of silence, 0.5 s before Mosquitto's own 3 s.
const proxy = await startProxy(broker.port, { keepAlive: { grace: 0.5 } });
t.teardown(async () => {
  await proxy.stop();
  await broker.stop();
});

const LAT = 'mqtt_liveness_detection_latency_seconds';
const ADV = 'mqtt_liveness_detection_advantage_seconds';

t.test('every contract series exists from the start, at zero', async (t) => {
  const { samples, contentType } = await scrape(proxy.adminUrl);
  t.match(contentType, /^text\/plain; version=0\.0\.4/);
  for (const key of [
    `${LAT}_count{reason="keepalive_timeout"}`,
    `${ADV}_count{reason="send_stall"}`,
    'mqtt_liveness_disconnects_total{reason="client_disconnect"}',
    'mqtt_liveness_disconnects_total{reason="shutdown"}',
    'mqtt_liveness_connects_rejected_total{reason="limit_rate"}',
    'mqtt_liveness_keepalive_requested_seconds_count{protocol="3.1"}',
    'mqtt_liveness_keepalive_effective_seconds_count{protocol="5"}',
    'mqtt_liveness_keepalive_clamps_total{protocol="3.1.1"}',
    'mqtt_liveness_forwarded_bytes_total{direction="to_client"}',
    'mqtt_liveness_forwarded_packets_total{direction="to_broker",type="pingreq"}',
    'mqtt_liveness_frame_errors_total{kind="too_large"}',
    'mqtt_liveness_event_deliveries_total{outcome="failure"}',
    'mqtt_liveness_broker_probe_rtt_seconds_count{probe="publish"}',
    'mqtt_liveness_broker_probe_failures_total{probe="ping",reason="timeout"}',
    'mqtt_liveness_connections_open{transport="wss"}',
    'mqtt_liveness_connections_accepted_total{transport="ws"}',
    'mqtt_liveness_listener_refusals_total{transport="tcp",reason="proxy_header"}',
    'mqtt_liveness_listener_refusals_total{transport="ws",reason="bad_path"}',
    'mqtt_liveness_keepalive_link_waits_total',
  ]) {
    t.equal(value(samples, key), 0, key);
  }
  for (const key of [
    'mqtt_liveness_connections_open{transport="tcp"}', 'mqtt_liveness_connections_accepted_total{transport="tcp"}', 'mqtt_liveness_injected_pingreqs_total',
    'mqtt_liveness_swallowed_pingresps_total', 'mqtt_liveness_events_dropped_total', 'mqtt_liveness_event_queue_length', 'mqtt_liveness_broker_up',
  ]) {
    t.ok(samples.has(key), key);
  }
  t.equal(value(samples, 'mqtt_liveness_build_info{version="0.1.0"}'), 1);
  t.ok([...samples.keys()].some((k) => k.startsWith('process_cpu_user_seconds_total')), 'default process metrics on the same registry');
  t.ok([...samples.keys()].some((k) => k.startsWith('nodejs_eventloop_lag_seconds')), 'default nodejs metrics on the same registry');
});

t.test('a frozen client: detection latency and advantage', async (t) => {
  const watcher = await mqtt.connectAsync(broker.url, { reconnectPeriod: 0, clientId: 'metrics-watcher' });
  t.teardown(() => watcher.end(true));
  await watcher.subscribeAsync('metrics/will', { qos: 1 });
  const will = new Promise<string>((resolve) => watcher.on('message', (_topic, payload) => resolve(payload.toString())));

  const before = (await scrape(proxy.adminUrl)).samples;
  const frozen = await rawConnect(proxy.port);
  t.teardown(() => frozen.socket.destroy());
  frozen.socket.write(mqttPacket.generate({
    cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'frozen-metrics', keepalive: 2,
    will: { topic: 'metrics/will', payload: Buffer.from('frozen-metrics is gone'), qos: 1, retain: false },
  }));
  await waitFor('the CONNACK', async () => frozen.received().length >= 4, 20_000);
  t.same([...frozen.received().subarray(0, 4)], [0x20, 0x02, 0x00, 0x00], 'CONNACK accepted');
  // ... and then nothing: the process is "frozen".

  const end = await proxy.nextClose((e) => e.clientId === 'frozen-metrics', 30_000);
  t.equal(end.reason, 'keepalive_timeout');
  t.equal(await will, 'frozen-metrics is gone', 'the broker published the Will');

  const after = (await scrape(proxy.adminUrl)).samples;
  const key = (name: string): string => `${name}{reason="keepalive_timeout"}`;
  t.equal(value(after, key(`${LAT}_count`)) - value(before, key(`${LAT}_count`)), 1, 'one more verdict observed');
  const latency = value(after, key(`${LAT}_sum`)) - value(before, key(`${LAT}_sum`));
  t.ok(latency >= 2 && latency <= 4.5, `detection latency ${latency.toFixed(3)} s is between 2 and 4.5 s`);
  t.comment(`measured detection latency: ${latency.toFixed(3)} s`);
  t.equal(value(after, `${LAT}_bucket{le="5",reason="keepalive_timeout"}`) - value(before, `${LAT}_bucket{le="5",reason="keepalive_timeout"}`), 1, 'in the le=5 bucket');
  t.equal(value(after, key(`${ADV}_count`)) - value(before, key(`${ADV}_count`)), 1);
  const advantage = value(after, key(`${ADV}_sum`)) - value(before, key(`${ADV}_sum`));
  t.ok(advantage > 0, `advantage ${advantage.toFixed(3)} s is positive (the proxy acted before the broker would)`);
  t.comment(`measured advantage: ${advantage.toFixed(3)} s`);
  t.equal(value(after, key('mqtt_liveness_disconnects_total')) - value(before, key('mqtt_liveness_disconnects_total')), 1);
  t.equal(value(after, 'mqtt_liveness_keepalive_requested_seconds_count{protocol="3.1.1"}') - value(before, 'mqtt_liveness_keepalive_requested_seconds_count{protocol="3.1.1"}'), 1);
  t.equal(value(after, 'mqtt_liveness_keepalive_requested_seconds_sum{protocol="3.1.1"}') - value(before, 'mqtt_liveness_keepalive_requested_seconds_sum{protocol="3.1.1"}'), 2);
  t.equal(value(after, 'mqtt_liveness_keepalive_effective_seconds_sum{protocol="3.1.1"}') - value(before, 'mqtt_liveness_keepalive_effective_seconds_sum{protocol="3.1.1"}'), 2);
});

t.test('a clean disconnect, traffic counters, a malformed frame', async (t) => {
  const before = (await scrape(proxy.adminUrl)).samples;

  const client = await mqtt.connectAsync(proxy.url, { reconnectPeriod: 0, clientId: 'metrics-clean', keepalive: 30 });
  await client.subscribeAsync('metrics/echo', { qos: 1 });
  const echoed = new Promise<void>((resolve) => client.once('message', () => resolve()));
  await client.publishAsync('metrics/echo', Buffer.alloc(1000, 1), { qos: 1 });
  await echoed;
  const ended = proxy.nextClose((e) => e.clientId === 'metrics-clean');
  await client.endAsync();
  t.equal((await ended).reason, 'client_disconnect');

  const bad = await rawConnect(proxy.port);
  t.teardown(() => bad.socket.destroy());
  bad.socket.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x01]));
  const badEnd = await proxy.nextClose((e) => e.reason === 'protocol_error' && e.clientId === null);
  t.match(badEnd.detail, /MLP_MALFORMED_LENGTH/);

  const after = (await scrape(proxy.adminUrl)).samples;
  const delta = (k: string): number => value(after, k) - value(before, k);
  t.equal(delta('mqtt_liveness_disconnects_total{reason="client_disconnect"}'), 1, 'client_disconnect counted');
  t.equal(delta('mqtt_liveness_disconnects_total{reason="protocol_error"}'), 1, 'protocol_error counted');
  t.equal(delta('mqtt_liveness_frame_errors_total{kind="malformed_length"}'), 1, 'malformed_length counted');
  t.equal(delta('mqtt_liveness_connections_accepted_total{transport="tcp"}'), 2, 'two connections accepted');
  t.equal(delta('mqtt_liveness_forwarded_packets_total{direction="to_broker",type="connect"}'), 1);
  t.equal(delta('mqtt_liveness_forwarded_packets_total{direction="to_broker",type="subscribe"}'), 1);
  t.equal(delta('mqtt_liveness_forwarded_packets_total{direction="to_broker",type="publish"}'), 1);
  t.equal(delta('mqtt_liveness_forwarded_packets_total{direction="to_broker",type="disconnect"}'), 1);
  t.equal(delta('mqtt_liveness_forwarded_packets_total{direction="to_client",type="connack"}'), 1);
  t.equal(delta('mqtt_liveness_forwarded_packets_total{direction="to_client",type="suback"}'), 1);
  t.equal(delta('mqtt_liveness_forwarded_packets_total{direction="to_client",type="puback"}'), 1);
  t.equal(delta('mqtt_liveness_forwarded_packets_total{direction="to_client",type="publish"}'), 1);
  t.ok(delta('mqtt_liveness_forwarded_bytes_total{direction="to_broker"}') > 1000, 'bytes to the broker include the 1000-byte payload');
  t.ok(delta('mqtt_liveness_forwarded_bytes_total{direction="to_client"}') > 1000, 'bytes to the client include the echoed payload');
  t.equal(delta('mqtt_liveness_keepalive_requested_seconds_sum{protocol="3.1.1"}'), 30);

  const open = await waitFor('connections_open back at 0', async () => {
    const s = (await scrape(proxy.adminUrl)).samples;
    return value(s, 'mqtt_liveness_connections_open{transport="tcp"}') === 0 ? s : undefined;
  }, 20_000);
  t.equal(value(open, 'mqtt_liveness_connections_open{transport="tcp"}'), 0, 'no connection left open');
});

t.test('promtool check metrics accepts the mqtt_liveness_ series', async (t) => {
  const { text } = await scrape(proxy.adminUrl);
  const ours = text.split('\n').filter((l) => /^(# (HELP|TYPE) )?mqtt_liveness_/.test(l)).join('\n') + '\n';
  t.ok(ours.split('\n').length > 100, 'hundreds of lines to check');
  const result = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
    const p = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    p.stdout.on('data', (d: Buffer) => { output += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { output += d.toString(); });
    p.once('error', (err) => reject(new Error(`promtool could not run (apt-get install -y prometheus): ${err.message}`)));
    p.once('close', (code) => resolve({ code, output }));
    p.stdin.end(ours);
  });
  t.equal(result.output, '', 'promtool has no complaints');
  t.equal(result.code, 0, 'promtool exit status 0');
});
