/**
 * The admin server of a real proxy: /livez, /readyz (and its checks),
 * /connections with and without a token, errors, and the `status` command
 * run as a real process against it.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { request } from 'undici';
import { closedPort, startMosquitto } from './helpers/mosquitto.ts';
import { startProxy, type TestProxy } from './helpers/proxy.ts';
import { AdminServer, type ConnectionsBody, type ReadyBody } from '../src/admin/server.ts';
import { systemClock } from '../src/liveness/clock.ts';
import { createLogger } from '../src/log.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.join(ROOT, 'proxy/bin/mqtt-liveness-proxy.js');
const TOKEN = 'correct horse battery staple';

async function get<T = Record<string, unknown>>(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<{ status: number; body: T; headers: Record<string, unknown> }> {
  const res = await request(url, { method: method as 'GET', headers });
  const text = await res.body.text();
  return { status: res.statusCode, body: (text ? JSON.parse(text) : null) as T, headers: res.headers };
}

function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.once('error', reject);
    p.once('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

const broker = await startMosquitto();
const proxy = await startProxy(broker.port, { adminToken: TOKEN });
t.teardown(async () => {
  await proxy.stop();
  await broker.stop();
});
const auth = { authorization: `Bearer ${TOKEN}` };

t.test('/livez', async (t) => {
  const res = await get<{ status: string; eventLoopDelayMs: number }>(`${proxy.adminUrl}/livez`);
  t.equal(res.status, 200);
  t.equal(res.body.status, 'ok');
  t.type(res.body.eventLoopDelayMs, 'number');
  t.match(String(res.headers['content-type']), /^application\/json/);
});

t.test('/livez is 503 after the event loop was blocked', async (t) => {
  // A second admin server on the same proxy, with a low limit; the test blocks this process's loop.
  const strict = new AdminServer({
    listen: { host: '127.0.0.1', port: 0 }, proxy: proxy.app.proxy, metrics: proxy.app.metrics, clock: systemClock,
    log: createLogger('silent'), token: null, maxEventLoopDelayMs: 200,
  });
  await strict.listen();
  t.teardown(() => strict.close());
  await new Promise((r) => setTimeout(r, 100));
  const spinUntil = performance.now() + 600;
  while (performance.now() < spinUntil) { /* blocked */ }
  const res = await get<{ status: string; eventLoopDelayMaxMs: number; detail: string }>(`${strict.url}/livez`);
  t.equal(res.status, 503);
  t.equal(res.body.status, 'event_loop_blocked');
  t.ok(res.body.eventLoopDelayMaxMs >= 400, `max delay ${res.body.eventLoopDelayMaxMs} ms`);
  t.match(res.body.detail, /stalled/);
});

t.test('/readyz with the broker up, and a readiness check added later', async (t) => {
  const res = await get<ReadyBody>(`${proxy.adminUrl}/readyz`);
  t.equal(res.status, 200, JSON.stringify(res.body));
  t.equal(res.body.status, 'ready');
  t.equal(res.body.checks.listener.ok, true);
  t.equal(res.body.checks.upstream.ok, true);
  t.match(res.body.checks.upstream.detail, `127.0.0.1:${broker.port}`);

  const remove = proxy.app.admin.addReadinessCheck('canary', () => ({ ok: false, detail: 'no PINGRESP for 3 s' }));
  const down = await get<ReadyBody>(`${proxy.adminUrl}/readyz`);
  t.equal(down.status, 503);
  t.same(down.body.checks.canary, { ok: false, detail: 'no PINGRESP for 3 s' });
  t.equal(down.body.checks.upstream.ok, true);
  remove();
  t.equal((await get(`${proxy.adminUrl}/readyz`)).status, 200, 'ready again once the check is removed');

  proxy.app.admin.addReadinessCheck('throws', async () => { throw new Error('boom'); });
  const threw = await get<ReadyBody>(`${proxy.adminUrl}/readyz`);
  t.equal(threw.status, 503);
  t.match(threw.body.checks.throws.detail, /boom/);
  const removeReplaced = proxy.app.admin.addReadinessCheck('throws', () => ({ ok: true, detail: 'replaced' }));
  t.equal((await get(`${proxy.adminUrl}/readyz`)).status, 200, 'a check of the same name replaces the old one');
  removeReplaced();
});

t.test('/readyz is 503 with a reason when the upstream port is closed, and when the listener stops', async (t) => {
  // Bound and never listening for the life of this process: refused, whatever runs in parallel.
  const refusing = closedPort();
  let orphan: TestProxy | null = await startProxy(refusing);
  t.teardown(() => orphan?.stop());
  const res = await get<ReadyBody>(`${orphan.adminUrl}/readyz`);
  t.equal(res.status, 503);
  t.equal(res.body.status, 'not_ready');
  t.equal(res.body.checks.upstream.ok, false);
  t.match(res.body.checks.upstream.detail, new RegExp(`127\\.0\\.0\\.1:${refusing}.*ECONNREFUSED`));
  t.equal(res.body.checks.listener.ok, true);

  // Draining: the MQTT listener closes first, the admin server stays up meanwhile.
  await orphan.app.proxy.close(0);
  const draining = await get<ReadyBody>(`${orphan.adminUrl}/readyz`);
  t.equal(draining.status, 503);
  t.equal(draining.body.checks.listener.ok, false);
  await orphan.stop();
  orphan = null;
});

t.test('/connections lists a client with its keep-alive; the token is enforced', async (t) => {
  const client = await mqtt.connectAsync(proxy.url, { reconnectPeriod: 0, clientId: 'admin-listed', username: 'alice', password: 'hunter2', keepalive: 17 }, false);
  const other = await mqtt.connectAsync(proxy.url, { reconnectPeriod: 0, clientId: 'admin-other', protocolVersion: 5, keepalive: 40 }, false);
  t.teardown(() => { client.end(true); other.end(true); });

  const noToken = await get<{ error: string }>(`${proxy.adminUrl}/connections`);
  t.equal(noToken.status, 401, 'no token: 401');
  t.match(String(noToken.headers['www-authenticate']), /^Bearer/);
  t.equal((await get(`${proxy.adminUrl}/connections`, { authorization: 'Bearer wrong' })).status, 401, 'wrong token: 401');
  t.equal((await get(`${proxy.adminUrl}/connections`, { authorization: `Bearer ${TOKEN}x` })).status, 401, 'longer token: 401');
  t.equal((await get(`${proxy.adminUrl}/connections`, { authorization: TOKEN })).status, 401, 'no Bearer scheme: 401');

  const res = await get<ConnectionsBody>(`${proxy.adminUrl}/connections`, auth);
  t.equal(res.status, 200);
  t.equal(res.body.total, 2);
  const row = res.body.connections.find((c) => c.clientId === 'admin-listed');
  t.ok(row, 'the client is listed');
  t.equal(row!.username, 'alice');
  t.equal(row!.protocol, '3.1.1');
  t.equal(row!.keepAlive, 17);
  t.equal(row!.effectiveKeepAlive, 17);
  t.equal(row!.remoteAddress, '127.0.0.1');
  t.ok(row!.secondsSinceLastPacket >= 0 && row!.secondsSinceLastPacket < 17, `silent for ${row!.secondsSinceLastPacket} s`);
  // keep-alive 17: suspect at + min(2, 8.5) = 19 s, dead at + the adaptive grace, never beyond 1.5 x 17 = 25.5 s
  // (a fresh proxy knows nothing of the link yet: the model is patient up to that cap).
  t.ok(row!.secondsToDeadline !== null && row!.secondsToDeadline > 0 && row!.secondsToDeadline <= 25.5, `deadline in ${row!.secondsToDeadline} s`);
  t.equal(row!.state, 'alive');
  t.equal(row!.suspectSince, null);
  t.ok(row!.link.samples >= 1 && row!.link.srttMs >= 0 && row!.link.loss > 0 && row!.link.loss < 1, `link estimate ${JSON.stringify(row!.link)}`);
  t.ok(row!.deadlines.probes >= 3 && row!.deadlines.keepAliveGraceMs >= 2000 && row!.deadlines.keepAliveGraceMs <= 8500, `model deadlines ${JSON.stringify(row!.deadlines)}`);
  t.ok(row!.bytesFromClient > 0 && row!.bytesToClient >= 4, 'bytes both ways');
  t.notOk(JSON.stringify(res.body).includes('hunter2'), 'no password anywhere');
  const v5 = res.body.connections.find((c) => c.clientId === 'admin-other');
  t.equal(v5?.protocol, '5');
  t.equal(v5?.keepAlive, 40);

  const limited = await get<ConnectionsBody>(`${proxy.adminUrl}/connections?limit=1`, auth);
  t.equal(limited.body.shown, 1);
  t.equal(limited.body.total, 2);
  t.equal(limited.body.connections.length, 1);
  t.equal((await get(`${proxy.adminUrl}/connections?limit=abc`, auth)).status, 400);
});

t.test('unknown paths and wrong methods', async (t) => {
  const missing = await get<{ error: string }>(`${proxy.adminUrl}/nope`);
  t.equal(missing.status, 404);
  t.equal(missing.body.error, 'not found');
  const post = await get<{ error: string }>(`${proxy.adminUrl}/metrics`, {}, 'POST');
  t.equal(post.status, 405);
  t.match(String(post.headers.allow), /GET/);
  const metrics = await request(`${proxy.adminUrl}/metrics`);
  t.equal(metrics.statusCode, 200, '/metrics needs no token');
  await metrics.body.dump();
});

t.test('the status command prints readiness and a connections table', async (t) => {
  const client = await mqtt.connectAsync(proxy.url, { reconnectPeriod: 0, clientId: 'status-shown', keepalive: 25 });
  t.teardown(() => client.end(true));

  const ok = await runCli(['status', '--admin', proxy.adminUrl, '--token', TOKEN]);
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, /READY/);
  t.match(ok.stdout, /^CHECK\s+STATE\s+DETAIL/m);
  t.match(ok.stdout, /^upstream\s+ok\s+/m);
  t.match(ok.stdout, /^\s*ID\s+CLIENT ID\s+USERNAME\s+REMOTE\s+PROTO\s+KEEPALIVE\s+ENFORCED\s+SILENT\s+DEADLINE IN\s+BYTES IN\s+BYTES OUT$/m);
  t.match(ok.stdout, /status-shown\s+-\s+127\.0\.0\.1:\d+\s+3\.1\.1\s+25s\s+25s\s+/);
  t.comment(ok.stdout);

  const hostPort = proxy.adminUrl.replace(/^http:\/\//, '');
  const envToken = await runCli(['status', '--admin', hostPort], { MLP_ADMIN_TOKEN: TOKEN });
  t.equal(envToken.code, 0, 'HOST:PORT and the token from MLP_ADMIN_TOKEN work too');
  t.match(envToken.stdout, /status-shown/);

  const noToken = await runCli(['status', '--admin', proxy.adminUrl], { MLP_ADMIN_TOKEN: '' });
  t.equal(noToken.code, 1);
  t.match(noToken.stdout, /401.*token/);

  const nobody = await runCli(['status', '--admin', `http://127.0.0.1:${closedPort()}`]);
  t.equal(nobody.code, 1);
  t.match(nobody.stdout, /unreachable \(ECONNREFUSED\)/);
});
