/**
 * Graceful shutdown as Kubernetes does it: SIGTERM to the CLI (in front of a
 * real Mosquitto) with an MQTT 5 and an MQTT 3.1.1 client connected, /readyz
 * polled every few milliseconds. /readyz turns 503 at once; during
 * shutdownDelay a new client is still taken; then new TCP connections are
 * refused, the MQTT 5 client gets DISCONNECT 0x8B, every client is closed
 * within shutdownGrace, the process exits 0 — and /readyz was 503 before any
 * client was closed.
 */
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Agent, request } from 'undici';
import { freePort, startMosquitto } from './helpers/mosquitto.ts';
import { connectClient, connectFrame, eventually, sleep } from './helpers/clients.ts';
import { spawnCli } from './helpers/cli.ts';

const GRACE_S = 5;
const DELAY_S = 2;

t.test('SIGTERM: readyz 503 first, clients taken during shutdownDelay, then listener closed, DISCONNECT 0x8B, all closed within shutdownGrace, exit 0', async (t) => {
  const broker = await startMosquitto();
  t.teardown(() => broker.stop());
  const [listen, admin] = [await freePort(), await freePort()];
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-shutdown-'));
  const file = path.join(dir, 'proxy.yaml');
  writeFileSync(file, [
    `listen: 127.0.0.1:${listen}`,
    `admin: 127.0.0.1:${admin}`,
    `upstream: 127.0.0.1:${broker.port}`,
    'broker: none',
    `shutdownGrace: ${GRACE_S}`,
    `shutdownDelay: ${DELAY_S}`,
    '',
  ].join('\n'));
  const run = spawnCli(['--config', file]);
  t.teardown(() => { run.proc.kill('SIGKILL'); });
  await run.waitFor((l) => l.msg === 'admin server listening', 20_000, 'proxy started');

  const url = `mqtt://127.0.0.1:${listen}`;
  const v5 = await connectClient(url, { protocolVersion: 5, clientId: 'v5-client' });
  const v3 = await connectClient(url, { protocolVersion: 4, clientId: 'v3-client' });
  const ended: Record<string, { at: number; wall: number; reasonCode?: number }> = {};
  v5.on('disconnect', (p) => { ended.v5disconnect ??= { at: performance.now(), wall: Date.now(), reasonCode: p.reasonCode }; });
  v5.once('close', () => { ended.v5 = { at: performance.now(), wall: Date.now() }; });
  v3.once('close', () => { ended.v3 = { at: performance.now(), wall: Date.now() }; });

  // Poll /readyz as fast as one keep-alive connection allows.
  const agent = new Agent({ connections: 1, pipelining: 0 });
  t.teardown(() => agent.close());
  const polls: Array<{ at: number; status: number; body: Record<string, unknown> }> = [];
  let polling = true;
  const poller = (async () => {
    while (polling) {
      try {
        const res = await request(`http://127.0.0.1:${admin}/readyz`, { dispatcher: agent });
        const body = (await res.body.json()) as Record<string, unknown>;
        polls.push({ at: performance.now(), status: res.statusCode, body });
      } catch {
        return; // the admin server has gone
      }
      await sleep(2);
    }
  })();
  while (!polls.some((p) => p.status === 200)) await sleep(5);

  const sigterm = performance.now();
  run.proc.kill('SIGTERM');
  // shutdownDelay: /readyz is 503 while the listener still takes new clients.
  while (!polls.some((p) => p.status === 503 && p.at > sigterm) && !run.lines.some((l) => l.event === 'shutdown_delay_over')) await sleep(1);
  const first503 = polls.find((p) => p.status === 503 && p.at > sigterm);
  t.ok(first503, `/readyz answered 503 within shutdownDelay (${polls.filter((p) => p.at > sigterm).map((p) => p.status).join(' ')} after SIGTERM)`);
  if (!first503) return;
  const late = await connectClient(url, { protocolVersion: 4, clientId: 'late-client', reconnectPeriod: 0 }).catch((e: Error) => e);
  t.notOk(late instanceof Error, `a client arriving during shutdownDelay is still taken (${late instanceof Error ? late.message : 'CONNACK'})`);
  const lateClient = late instanceof Error ? null : late;
  lateClient?.once('close', () => { ended.late = { at: performance.now(), wall: Date.now() }; });

  // After the delay a new TCP connection is refused by the kernel.
  await run.waitFor((l) => l.event === 'shutdown_delay_over', DELAY_S * 1000 + 10_000, 'shutdownDelay over');
  const delayOverAt = performance.now();
  const attempt = await new Promise<string>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port: listen });
    s.once('connect', () => { s.destroy(); resolve('connected'); });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
  const refusedAt = performance.now();
  t.equal(attempt, 'ECONNREFUSED', 'after shutdownDelay new TCP connections are refused');
  t.ok(delayOverAt - sigterm >= DELAY_S * 1000 - 50, `the listener stayed open for shutdownDelay (${(delayOverAt - sigterm).toFixed(0)} ms)`);

  const code = await run.exited;
  const exitedAt = performance.now();
  polling = false;
  await poller;
  t.equal(code, 0, 'exit code 0');

  t.equal(ended.v5disconnect?.reasonCode, 0x8b, 'the MQTT 5 client got DISCONNECT 0x8B (server shutting down)');
  // The child's exit and the sockets' close can reach this process in either order.
  await eventually(() => ended.v5 && ended.v3 && ended.late, GRACE_S * 1000, 'all clients closed');
  t.ok(ended.v5 && ended.v3 && ended.late, 'all three clients were closed');
  const lastClose = Math.max(ended.v5.at, ended.v3.at, ended.late.at);
  t.ok(lastClose - delayOverAt < GRACE_S * 1000, `all closed within shutdownGrace ${GRACE_S} s after the delay`);
  t.ok(Math.min(ended.v5.at, ended.v3.at, ended.late.at) >= sigterm + DELAY_S * 1000, 'no client was closed during the delay');

  // Order: /readyz was 503 before the clients were closed. The proxy turns it 503 and
  // closes the listener and the clients in the same event-loop turn, so no poll can
  // land in between; the body says since when (the proxy's clock, same host) and the
  // log says in which order things happened.
  const since = Date.parse(String(first503.body.drainingSince));
  t.match(first503.body, { status: 'not_ready', checks: { draining: { ok: false } } });
  t.ok(since <= ended.v5disconnect.wall && since <= ended.v3.wall, 'draining began before either client was told or closed');
  const idx = (pred: (l: Record<string, unknown>) => boolean): number => run.lines.findIndex(pred);
  const drainingLine = idx((l) => l.event === 'draining');
  const firstEnd = idx((l) => l.msg === 'connection ended' && l.reason === 'shutdown');
  t.ok(drainingLine >= 0 && firstEnd > drainingLine, 'the log shows draining before the first connection ended');
  t.equal(run.lines.filter((l) => l.msg === 'connection ended' && l.reason === 'shutdown').length, 3, 'all three connections ended with reason shutdown');
  const closedLine = run.lines.find((l) => l.event === 'shutdown_closed');
  t.match(closedLine, { connections: 3, cutAfterGrace: 0 }, 'nothing had to be cut after the grace');
  t.ok(polls.filter((p) => p.at > first503.at).every((p) => p.status === 503), 'never ready again');

  const ms = (x: number): string => `${(x - sigterm).toFixed(1)} ms`;
  t.comment(`SIGTERM -> first /readyz 503 received: ${ms(first503.at)} (poll gap ~2 ms + request)`);
  t.comment(`SIGTERM -> shutdownDelay over: ${ms(delayOverAt)}; new connection refused: ${ms(refusedAt)}`);
  t.comment(`SIGTERM -> v5 DISCONNECT 0x8B: ${ms(ended.v5disconnect.at)}; v5 close ${ms(ended.v5.at)}; v3 close ${ms(ended.v3.at)}`);
  t.comment(`SIGTERM -> process exit: ${ms(exitedAt)}; proxy-side close of all connections took ${String(closedLine?.elapsedMs)} ms`);
  t.comment(`draining began ${Math.min(ended.v5disconnect.wall, ended.v3.wall) - since} ms (wall clock, 1 ms resolution) before the first client saw its end`);
});

t.test('SIGTERM with a connection that will not close: cut after shutdownGrace, counted as cutAfterGrace', async (t) => {
  const GRACE = 2;
  const broker = await startMosquitto();
  t.teardown(() => broker.stop());
  const [listen, admin] = [await freePort(), await freePort()];
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-shutdown-'));
  const file = path.join(dir, 'proxy.yaml');
  writeFileSync(file, [`listen: 127.0.0.1:${listen}`, `admin: 127.0.0.1:${admin}`, `upstream: 127.0.0.1:${broker.port}`, 'broker: none', `shutdownGrace: ${GRACE}`, ''].join('\n'));
  const proxy = spawnCli(['--config', file]);
  t.teardown(() => { proxy.proc.kill('SIGKILL'); });
  await proxy.waitFor((l) => l.msg === 'admin server listening', 20_000, 'proxy started');

  // A client that never finishes its side, left half-closed by the broker (session takeover):
  // the proxy is waiting out its 10 s linger, so only the grace can end it.
  const stubborn = net.connect({ host: '127.0.0.1', port: listen, allowHalfOpen: true });
  stubborn.on('error', () => {});
  t.teardown(() => { stubborn.destroy(); });
  let got = 0;
  let finAt = -1;
  stubborn.on('data', (d: Buffer) => { got += d.length; });
  stubborn.on('end', () => { finAt = performance.now(); });
  await new Promise((resolve) => stubborn.once('connect', resolve));
  stubborn.write(connectFrame({ clientId: 'stubborn1', keepalive: 60 }));
  await eventually(() => got >= 4, 5_000, 'CONNACK');
  const intruder = await connectClient(`mqtt://127.0.0.1:${broker.port}`, { clientId: 'stubborn1' });
  t.teardown(() => intruder.end(true));
  await eventually(() => finAt > 0, 5_000, 'the broker\'s FIN passed on');

  const sigterm = performance.now();
  proxy.proc.kill('SIGTERM');
  const code = await proxy.exited;
  const exitedAfter = performance.now() - sigterm;
  t.equal(code, 0, 'exit code 0');
  const closed = proxy.lines.find((l) => l.event === 'shutdown_closed');
  t.match(closed, { connections: 1 });
  // One connection, counted once (its admitted socket is the connection's, not a second one to cut).
  t.equal(closed?.cutAfterGrace, 1, `the connection was cut after the grace, counted once (cutAfterGrace ${String(closed?.cutAfterGrace)})`);
  t.ok(Number(closed?.elapsedMs) >= GRACE * 1000, `after ${String(closed?.elapsedMs)} ms (the proxy's clock): not before shutdownGrace ${GRACE} s`);
  t.ok(exitedAfter >= GRACE * 1000, `exit ${Math.round(exitedAfter)} ms after SIGTERM: not before the grace`);
  t.ok(exitedAfter < GRACE * 1000 + 5_000, 'and not long after it');
  rmSync(dir, { recursive: true, force: true });
});
