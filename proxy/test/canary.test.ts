/**
 * The broker canary against a real Mosquitto: /readyz follows the broker
 * (SIGSTOP: 503 within interval + timeout, SIGCONT: 200 again), RTTs reach
 * /metrics, onBrokerDown close ends client sessions (MQTT 5: DISCONNECT 0x89),
 * reconnect after the broker comes up, credentials, protocol levels 3/4/5.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ReadyBody } from '../src/admin/server.ts';
import { freePort, startMosquitto, type Mosquitto } from './helpers/mosquitto.ts';
import { startProxy, type TestProxy } from './helpers/proxy.ts';
import { metricsText, readyz } from './helpers/admin.ts';
import { connectFrame, eventually, RawClient, sleep } from './helpers/clients.ts';

const INTERVAL = 1;
const TIMEOUT = 0.5;
/** Worst case for the flip: the last probe succeeded just before, the next goes out an interval later and times out. */
const BOUND_MS = (INTERVAL + TIMEOUT) * 1000;
/** Timer and polling slack on a busy 2-core machine (the proxy shares this process's event loop). */
const SLACK_MS = 2_000;


function metric(text: string, series: string): number {
  const escaped = series.replace(/[{}"=]/g, (c) => `\\${c}`);
  const m = new RegExp(`^${escaped} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

/** Poll /readyz every 20 ms until it answers `status`; ms from `since`, and the body. */
async function waitForReadyz(proxy: TestProxy, status: number, since: number, timeoutMs = 20_000): Promise<{ ms: number; body: ReadyBody }> {
  for (;;) {
    const r = await readyz(proxy);
    const ms = performance.now() - since;
    if (r.status === status) return { ms, body: r.body };
    if (ms > timeoutMs) throw new Error(`/readyz still ${r.status} after ${Math.round(ms)} ms: ${JSON.stringify(r.body)}`);
    await sleep(20);
  }
}

function rttSummary(text: string, probe: 'ping' | 'publish'): string {
  const count = metric(text, `mqtt_liveness_broker_probe_rtt_seconds_count{probe="${probe}"}`);
  const sum = metric(text, `mqtt_liveness_broker_probe_rtt_seconds_sum{probe="${probe}"}`);
  return `${probe}: ${count} probes, mean ${((sum / count) * 1000).toFixed(2)} ms`;
}

t.test('SIGSTOP/SIGCONT: /readyz and broker_up follow the broker; onBrokerDown close ends sessions', async (t) => {
  const broker = await startMosquitto();
  const proxy = await startProxy(broker.port, {
    logLevel: 'info',
    probes: { interval: INTERVAL, timeout: TIMEOUT, deepTopic: 'mlp/canary', onBrokerDown: 'close' },
  });
  t.teardown(async () => {
    broker.proc.kill('SIGCONT');
    await proxy.stop();
    await broker.stop();
  });

  const first = await readyz(proxy);
  t.equal(first.status, 200, `ready at start: ${JSON.stringify(first.body.checks.broker)}`);
  t.match(first.body.checks.broker.detail, /^broker answers probes: PINGRESP in [\d.]+ ms, PUBLISH back in [\d.]+ ms/);
  t.match(broker.log(), new RegExp(`New client connected from 127\\.0\\.0\\.1:\\d+ as ${proxy.app.canary!.clientId} \\(p2, c1, k10\\)`), 'the canary is a v3.1.1 session with keep-alive 10 (3 x interval, at least 10)');

  // A few rounds, so the histograms have something; then the metrics.
  await sleep(2500);
  let text = await metricsText(proxy);
  t.equal(metric(text, 'mqtt_liveness_broker_up'), 1, 'broker_up 1');
  t.ok(metric(text, 'mqtt_liveness_broker_probe_rtt_seconds_count{probe="ping"}') >= 2, rttSummary(text, 'ping'));
  t.ok(metric(text, 'mqtt_liveness_broker_probe_rtt_seconds_count{probe="publish"}') >= 2, rttSummary(text, 'publish'));
  t.equal(metric(text, 'mqtt_liveness_broker_probe_failures_total{probe="ping",reason="timeout"}'), 0);
  t.comment(`RTT before the stop: ${rttSummary(text, 'ping')}; ${rttSummary(text, 'publish')}`);

  // Clients with an MQTT session through the proxy.
  const v5 = await RawClient.connect(proxy.port);
  v5.write(connectFrame({ clientId: 'canary-v5', keepalive: 60, protocolVersion: 5 }));
  await v5.waitForBytes(5);
  const v4 = await RawClient.connect(proxy.port);
  v4.write(connectFrame({ clientId: 'canary-v4', keepalive: 60 }));
  await v4.waitForBytes(4);
  t.teardown(() => { v5.destroy(); v4.destroy(); });
  await eventually(() => [...proxy.app.proxy.connections].filter((c) => c.hasConnack).length === 2, 5000, 'both CONNACKs seen');
  const v5Connack = v5.received.length;

  broker.proc.kill('SIGSTOP');
  const stoppedAt = performance.now();
  const down = await waitForReadyz(proxy, 503, stoppedAt);
  t.ok(down.ms <= BOUND_MS + SLACK_MS, `/readyz 503 ${Math.round(down.ms)} ms after SIGSTOP (interval + timeout = ${BOUND_MS} ms)`);
  t.equal(down.body.checks.broker.ok, false);
  // The round's timeout, or (a moment earlier, when the last success is interval + timeout old) the window.
  t.match(down.body.checks.broker.detail, /^(no PINGRESP and no probe PUBLISH back within 0\.50 s|no probe succeeded within 1\.50 s \(interval \+ timeout\)); last success [\d.]+ s ago$/, `says why: ${down.body.checks.broker.detail}`);
  t.equal(down.body.checks.upstream.ok, true, 'while the TCP check alone still passes: the kernel accepts for a stopped broker');
  t.equal(down.body.checks.listener.ok, true);

  // onBrokerDown close: both sessions end, the MQTT 5 one with DISCONNECT 0x89.
  await v5.waitForClose(5000);
  t.same([...v5.received.subarray(v5Connack)], [0xe0, 0x01, 0x89], 'the MQTT 5 client got DISCONNECT 0x89 (server busy)');
  await v4.waitForClose(5000);
  t.equal(v4.received.length, 4, 'the 3.1.1 client got nothing after its CONNACK (it has no DISCONNECT from a server)');
  const ends = proxy.closes.filter((e) => e.clientId === 'canary-v5' || e.clientId === 'canary-v4');
  t.same(ends.map((e) => e.reason).sort(), ['broker_down', 'broker_down']);
  t.match(ends[0].detail, /no PINGRESP/);
  t.equal(metric(await metricsText(proxy), 'mqtt_liveness_broker_up'), 0, 'broker_up 0');
  t.ok(proxy.logs.some((l) => l.event === 'broker_down_close' && l.connections === 2), 'logged: 2 connections ended');

  await sleep(1000);
  broker.proc.kill('SIGCONT');
  const contAt = performance.now();
  const up = await waitForReadyz(proxy, 200, contAt);
  t.ok(up.ms <= BOUND_MS + SLACK_MS, `/readyz 200 ${Math.round(up.ms)} ms after SIGCONT`);
  t.match(up.body.checks.broker.detail, /^broker answers probes/);
  text = await metricsText(proxy);
  t.equal(metric(text, 'mqtt_liveness_broker_up'), 1, 'broker_up 1 again');
  const timeouts = metric(text, 'mqtt_liveness_broker_probe_failures_total{probe="ping",reason="timeout"}');
  t.ok(timeouts >= 1, `${timeouts} ping timeouts counted`);
  t.ok(metric(text, 'mqtt_liveness_broker_probe_failures_total{probe="publish",reason="timeout"}') >= 1, 'and publish timeouts');
  t.equal(proxy.app.canary!.state.sessions, 1, 'the same canary session throughout');
  t.comment(`flip after SIGSTOP ${Math.round(down.ms)} ms, after SIGCONT ${Math.round(up.ms)} ms; ${rttSummary(text, 'ping')}; ${rttSummary(text, 'publish')}`);

  // A longer stop: the unanswering session is replaced, and the new one comes up after SIGCONT.
  broker.proc.kill('SIGSTOP');
  const longStop = performance.now();
  const down2 = await waitForReadyz(proxy, 503, longStop);
  await sleep(5000);
  broker.proc.kill('SIGCONT');
  const cont2 = performance.now();
  const up2 = await waitForReadyz(proxy, 200, cont2);
  t.ok(proxy.app.canary!.state.sessions >= 2, `session replaced after three missed rounds (${proxy.app.canary!.state.sessions} sessions)`);
  t.ok(up2.ms <= 5000 + SLACK_MS, `ready ${Math.round(up2.ms)} ms after SIGCONT (6 s stop; reconnect backoff at most 5 s)`);
  t.comment(`6 s stop: 503 after ${Math.round(down2.ms)} ms, 200 ${Math.round(up2.ms)} ms after SIGCONT`);
});

t.test('a broker that is not there yet: 503 with the reason, ready once it listens', async (t) => {
  // Reserved for this process: refused until Mosquitto binds it below, and no test running in
  // parallel can be given it meanwhile.
  const port = await freePort();
  const proxy = await startProxy(port, { probes: { interval: INTERVAL, timeout: TIMEOUT } });
  let broker: Mosquitto | null = null;
  t.teardown(async () => {
    await proxy.stop();
    await broker?.stop();
  });
  const r = await readyz(proxy);
  t.equal(r.status, 503);
  t.match(r.body.checks.broker.detail, /^cannot connect to the broker: ECONNREFUSED; no probe has succeeded yet$/);
  await sleep(1500);
  const text = await metricsText(proxy);
  t.ok(metric(text, 'mqtt_liveness_broker_probe_failures_total{probe="ping",reason="connect"}') >= 2, 'connect failures counted, retried');
  broker = await startMosquitto({ port });
  const started = performance.now();
  const up = await waitForReadyz(proxy, 200, started);
  t.ok(up.ms <= 5000 + SLACK_MS, `ready ${Math.round(up.ms)} ms after Mosquitto listened (backoff at most 5 s)`);
  t.comment(`broker started late: ready after ${Math.round(up.ms)} ms`);
});

t.test('credentials: the canary logs in; a wrong password is not ready and never logged', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-canary-auth-'));
  chmodSync(dir, 0o755);
  const passwd = path.join(dir, 'passwd');
  execFileSync('mosquitto_passwd', ['-b', '-c', passwd, 'canary', 'right-secret-123']);
  chmodSync(passwd, 0o644);
  const broker = await startMosquitto({ extraConfig: [`password_file ${passwd}`, 'allow_anonymous false'] });
  const good = await startProxy(broker.port, { probes: { interval: INTERVAL, timeout: TIMEOUT, username: 'canary', password: 'right-secret-123' } });
  const bad = await startProxy(broker.port, { probes: { interval: INTERVAL, timeout: TIMEOUT, username: 'canary', password: 'wrong-secret-456' } });
  t.teardown(async () => {
    await good.stop();
    await bad.stop();
    await broker.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const ok = await readyz(good);
  t.equal(ok.status, 200, JSON.stringify(ok.body.checks.broker));
  const refused = await readyz(bad);
  t.equal(refused.status, 503);
  t.match(refused.body.checks.broker.detail, /^cannot connect to the broker: CONNACK return code 5 \(not authorized\)/);
  const logs = JSON.stringify([...good.logs, ...bad.logs]);
  t.notMatch(logs, /right-secret|wrong-secret/, 'no password in the logs');
  t.match(logs, /canary starting/);
});

t.test('protocol levels 3, 4 and 5', async (t) => {
  const broker = await startMosquitto();
  t.teardown(() => broker.stop());
  for (const [level, p] of [[3, 'p1'], [4, 'p2'], [5, 'p5']] as const) {
    const proxy = await startProxy(broker.port, { probes: { interval: INTERVAL, timeout: TIMEOUT, protocolVersion: level, deepTopic: 'mlp/levels' } });
    const r = await readyz(proxy);
    t.equal(r.status, 200, `level ${level}: ${r.body.checks.broker.detail}`);
    t.match(r.body.checks.broker.detail, /PUBLISH back in/);
    t.match(broker.log(), new RegExp(`as ${proxy.app.canary!.clientId} \\(${p}, c1, k10\\)`), `the broker saw protocol ${p}`);
    await proxy.stop();
    const gone = new RegExp(`Client ${proxy.app.canary!.clientId} disconnected\\.`);
    t.ok(await eventually(() => gone.test(broker.log()), 5000, 'the canary\'s disconnect in the broker log'), 'stopped with a DISCONNECT');
  }
});

t.test('probes.enabled false: no canary, no broker check, broker_up 0', async (t) => {
  const broker = await startMosquitto();
  const proxy = await startProxy(broker.port, { probes: { enabled: false } });
  t.teardown(async () => {
    await proxy.stop();
    await broker.stop();
  });
  t.equal(proxy.app.canary, null);
  const r = await readyz(proxy);
  t.equal(r.status, 200);
  t.notOk('broker' in r.body.checks);
  t.equal(metric(await metricsText(proxy), 'mqtt_liveness_broker_up'), 0);
});
