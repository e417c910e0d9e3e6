/**
 * Webhook events from a real proxy to a local HTTP receiver: the body, a
 * retry after HTTP 500, and a receiver that hangs (bounded queue, drops
 * counted) while MQTT traffic through the proxy carries on.
 */
import t from 'tap';
import http from 'node:http';
import net from 'node:net';
import mqtt from 'mqtt';
import mqttPacket from 'mqtt-packet';
import { request } from 'undici';
import { startMosquitto } from './helpers/mosquitto.ts';
import { startProxy, type TestProxy } from './helpers/proxy.ts';
import { waitFor } from './helpers/wait.ts';
import type { WebhookBody } from '../src/events/webhook.ts';

interface Received {
  body: WebhookBody;
  raw: string;
  headers: http.IncomingHttpHeaders;
}

interface Receiver {
  url: string;
  received: Received[];
  /** What to answer the next request with: a status, or 'hang' (never answer). */
  answer: (n: number) => number | 'hang';
  hanging: number;
  close(): Promise<void>;
}

async function startReceiver(answer: Receiver['answer'] = () => 200): Promise<Receiver> {
  const state: Receiver = { url: '', received: [], answer, hanging: 0, close: async () => undefined };
  const server = http.createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => { raw += d; });
    req.on('end', () => {
      const n = state.received.length;
      state.received.push({ body: JSON.parse(raw) as WebhookBody, raw, headers: req.headers });
      const a = state.answer(n);
      if (a === 'hang') {
        state.hanging++;
        return;
      }
      res.writeHead(a, { 'content-type': 'text/plain' });
      res.end(a < 300 ? 'thanks' : 'nope');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/hooks/mqtt`;
  state.close = () => new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
  return state;
}

/** Poll the receiver or a scrape every 50 ms, for up to 30 s. */
function eventually<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>): Promise<T> {
  return waitFor(what, fn, 30_000, { intervalMs: 50 });
}

async function metric(proxy: TestProxy, key: string): Promise<number> {
  const res = await request(`${proxy.adminUrl}/metrics`);
  const text = await res.body.text();
  const line = text.split('\n').find((l) => l.startsWith(`${key} `));
  if (!line) throw new Error(`series ${key} is missing`);
  return Number(line.slice(key.length + 1));
}

const broker = await startMosquitto();
t.teardown(() => broker.stop());

t.test('connect, disconnect and verdict events: the body, and never a password', async (t) => {
  const receiver = await startReceiver();
  const proxy = await startProxy(broker.port, {
    keepAlive: { grace: 0.5 },
    events: { webhook: receiver.url, types: ['verdict', 'connect', 'disconnect'] },
  });
  t.teardown(async () => {
    await proxy.stop();
    await receiver.close();
  });

  const client = await mqtt.connectAsync(proxy.url, { reconnectPeriod: 0, clientId: 'hook-clean', username: 'bob', password: 'pa55-clean', keepalive: 20 });
  await client.endAsync();
  await eventually('connect and disconnect events', () => receiver.received.filter((r) => r.body.clientId === 'hook-clean').length >= 2);
  const [connect, disconnect] = receiver.received.filter((r) => r.body.clientId === 'hook-clean');
  t.equal(connect.headers['content-type'], 'application/json');
  t.match(String(connect.headers['user-agent']), /^mqtt-liveness-proxy\//);
  t.match(connect.body, {
    type: 'connect', clientId: 'hook-clean', username: 'bob', remoteAddress: '127.0.0.1', protocol: '3.1.1',
    keepAlive: 20, effectiveKeepAlive: 20, reason: null, silenceSeconds: null, advantageSeconds: null, endedAt: null, proxyVersion: '0.1.0',
  });
  t.match(connect.body.connectedAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  t.match(disconnect.body, { type: 'disconnect', clientId: 'hook-clean', reason: 'client_disconnect', advantageSeconds: null });
  t.match(disconnect.body.endedAt, /Z$/);
  t.ok(Date.parse(disconnect.body.endedAt!) >= Date.parse(disconnect.body.connectedAt), 'ended after it connected');
  t.not(connect.body.eventId, disconnect.body.eventId);

  // A frozen raw client whose CONNECT carries a password.
  const frozen = net.connect({ host: '127.0.0.1', port: proxy.port });
  frozen.on('error', () => undefined);
  t.teardown(() => frozen.destroy());
  frozen.write(mqttPacket.generate({
    cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'hook-frozen', keepalive: 2,
    username: 'carol', password: Buffer.from('pa55-frozen'),
    will: { topic: 'hook/will', payload: Buffer.from('gone'), qos: 0, retain: false },
  }));
  const verdict = await eventually('the verdict event', () => receiver.received.find((r) => r.body.clientId === 'hook-frozen' && r.body.type === 'verdict'));
  t.match(verdict.body, { type: 'verdict', clientId: 'hook-frozen', username: 'carol', reason: 'keepalive_timeout', keepAlive: 2, effectiveKeepAlive: 2 });
  t.ok(verdict.body.silenceSeconds! >= 2 && verdict.body.silenceSeconds! <= 4.5, `silence ${verdict.body.silenceSeconds} s`);
  t.ok(verdict.body.advantageSeconds! > 0, `advantage ${verdict.body.advantageSeconds} s`);
  t.equal(receiver.received.filter((r) => r.body.clientId === 'hook-frozen' && r.body.type === 'disconnect').length, 0, 'a verdict is not also a disconnect');

  for (const r of receiver.received) {
    t.notOk('password' in r.body, `no password field in the ${r.body.type} event`);
    t.notOk(/pa55-/.test(r.raw), `no password value in the ${r.body.type} event`);
  }
  t.equal(await metric(proxy, 'mqtt_liveness_event_deliveries_total{outcome="success"}'), receiver.received.length);
});

t.test('a failed delivery (HTTP 500) is retried', async (t) => {
  const receiver = await startReceiver((n) => (n === 0 ? 500 : 200));
  const proxy = await startProxy(broker.port, { events: { webhook: receiver.url, types: ['connect'], retries: 3 } });
  t.teardown(async () => {
    await proxy.stop();
    await receiver.close();
  });
  const client = await mqtt.connectAsync(proxy.url, { reconnectPeriod: 0, clientId: 'hook-retry' });
  t.teardown(() => client.end(true));
  await eventually('the retry', () => receiver.received.length >= 2);
  const [first, second] = receiver.received;
  t.equal(first.body.eventId, second.body.eventId, 'the same event, delivered again');
  t.equal(second.body.clientId, 'hook-retry');
  await eventually('the success counted', async () => (await metric(proxy, 'mqtt_liveness_event_deliveries_total{outcome="success"}')) === 1);
  t.equal(await metric(proxy, 'mqtt_liveness_event_deliveries_total{outcome="failure"}'), 1);
  t.equal(await metric(proxy, 'mqtt_liveness_events_dropped_total'), 0);
  t.equal(receiver.received.length, 2, 'no more attempts after the success');
});

t.test('a receiver that hangs: the queue stays bounded, drops are counted, MQTT keeps working', async (t) => {
  const receiver = await startReceiver(() => 'hang');
  const proxy = await startProxy(broker.port, { events: { webhook: receiver.url, types: ['connect'], queueSize: 3, timeout: 60, retries: 0 } });
  let proxyStopped = false;
  t.teardown(async () => {
    if (!proxyStopped) await proxy.stop();
    await receiver.close();
  });

  const clients: mqtt.MqttClient[] = [];
  t.teardown(() => { for (const c of clients) c.end(true); });
  for (let i = 0; i < 10; i++) {
    clients.push(await mqtt.connectAsync(proxy.url, { reconnectPeriod: 0, clientId: `hook-hang-${i}` }));
    // The first event is in flight (hanging) before the next ones arrive.
    if (i === 0) await eventually('the first request at the receiver', () => receiver.hanging === 1);
  }
  t.equal(await metric(proxy, 'mqtt_liveness_event_queue_length'), 3, 'the queue holds queueSize events');
  t.equal(await metric(proxy, 'mqtt_liveness_events_dropped_total'), 6, '10 events: 1 in flight, 3 queued, 6 dropped');
  t.equal(receiver.received.length, 1, 'one delivery at a time');

  // Meanwhile, pub/sub through the proxy is unaffected.
  const sub = await mqtt.connectAsync(proxy.url, { reconnectPeriod: 0, clientId: 'hook-hang-sub' });
  const pub = await mqtt.connectAsync(proxy.url, { reconnectPeriod: 0, clientId: 'hook-hang-pub' });
  clients.push(sub, pub);
  await sub.subscribeAsync('hook/traffic', { qos: 1 });
  let got = 0;
  const all = new Promise<void>((resolve) => sub.on('message', () => { if (++got === 200) resolve(); }));
  const started = performance.now();
  await Promise.all(Array.from({ length: 200 }, (_, i) => pub.publishAsync('hook/traffic', `m${i}`, { qos: 1 })));
  await all;
  const ms = performance.now() - started;
  t.equal(got, 200, `200 QoS 1 messages through the proxy in ${Math.round(ms)} ms while the webhook hangs`);
  t.equal(await metric(proxy, 'mqtt_liveness_events_dropped_total'), 8, 'the two new connect events were dropped too');

  // stop() drains briefly, then gives up on what is left.
  const stopStarted = performance.now();
  await proxy.stop();
  proxyStopped = true;
  const stopMs = performance.now() - stopStarted;
  t.ok(stopMs < 15_000, `stop() returned in ${Math.round(stopMs)} ms despite the hanging receiver`);
  t.equal(proxy.app.webhook!.dropped, 12, 'every undelivered event counted as dropped after stop');
  t.equal(proxy.app.webhook!.queueLength, 0);
});
