/**
 * Configuration reload of the running CLI (in front of a real Mosquitto):
 * SIGHUP with a valid file changes the policy for new connections while open
 * ones keep theirs; SIGHUP with an invalid file keeps the running
 * configuration and logs the file and line; a changed file is picked up
 * without a signal; a moved listener is reported as needing a restart. The
 * process keeps serving throughout and exits 0 on SIGTERM.
 */
import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { freePort, startMosquitto } from './helpers/mosquitto.ts';
import { connectFrame } from './helpers/clients.ts';
import { planReload } from '../src/config/reload.ts';
import { validateConfig } from '../src/config/load.ts';
import { spawnCli, type LogLine } from './helpers/cli.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-reload-'));
const broker = await startMosquitto();
t.teardown(() => broker.stop());
const [listen, admin, otherPort] = [await freePort(), await freePort(), await freePort()];
const file = path.join(dir, 'proxy.yaml');

function configText(keepAlive: string, listenPort = listen): string {
  return [
    `listen: 127.0.0.1:${listenPort}`,
    `admin: 127.0.0.1:${admin}`,
    `upstream: 127.0.0.1:${broker.port}`,
    'broker: none',
    'logLevel: info',
    'probes:',
    '  enabled: false',
    'keepAlive:',
    keepAlive,
    '',
  ].join('\n');
}

/** A raw MQTT 3.1.1 CONNECT with the given keep-alive; resolves with the CONNACK return code (the socket stays open when accepted). */
const open: net.Socket[] = [];
t.teardown(() => { for (const s of open) s.destroy(); });
function connack(keepalive: number, clientId: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port: listen });
    open.push(socket);
    let got = Buffer.alloc(0);
    socket.on('error', reject);
    socket.once('connect', () => socket.write(connectFrame({ clientId, keepalive, protocolVersion: 4 })));
    socket.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (got.length >= 4) resolve(got[3]);
    });
    socket.once('close', () => reject(new Error(`closed before a CONNACK (${got.toString('hex')})`)));
  });
}

async function ready(): Promise<number> {
  const res = await request(`http://127.0.0.1:${admin}/readyz`);
  await res.body.text();
  return res.statusCode;
}

writeFileSync(file, configText('  max: 60\n  aboveMax: accept'));
const run = spawnCli(['--config', file]);
t.teardown(() => { run.proc.kill('SIGKILL'); });
await run.waitFor((l) => l.msg === 'admin server listening', 20_000, 'proxy started');

const reloads = (): LogLine[] => run.lines.filter((l) => l.event === 'config_reloaded' || l.event === 'config_reload_failed');

t.test('SIGHUP with a valid file: keepAlive.max with aboveMax reject applies to new connections', async (t) => {
  t.equal(await connack(300, 'before'), 0, 'keep-alive 300 accepted under aboveMax: accept');
  const before = open.at(-1)!;
  writeFileSync(file, configText('  max: 60\n  aboveMax: reject'));
  const sent = performance.now();
  run.proc.kill('SIGHUP');
  const line = await run.waitFor((l) => l.event === 'config_reloaded');
  t.comment(`reloaded ${Math.round(line.receivedAt - sent)} ms after SIGHUP (log line received)`);
  t.match(line, { level: 'info', trigger: 'SIGHUP', file, changed: ['keepAlive.aboveMax'] });
  t.equal(await connack(300, 'after'), 2, 'a v3 client with keep-alive 300 now gets return code 2');
  t.equal(await connack(30, 'small'), 0, 'keep-alive 30 is still accepted');
  t.notOk(before.destroyed, 'the connection accepted before the reload is still open');
  await new Promise((r) => setTimeout(r, 1800)); // past a poll of the file watcher
  t.equal(reloads().length, 1, 'the file watcher did not load the same text again');
});

t.test('SIGHUP with an invalid file: the running configuration stays, the error names file and line', async (t) => {
  writeFileSync(file, configText('  max: -5\n  aboveMax: accept'));
  run.proc.kill('SIGHUP');
  const line = await run.waitFor((l) => l.event === 'config_reload_failed');
  t.match(line, { level: 'error', trigger: 'SIGHUP', file, error: `${file}:9: keepAlive.max: must be at least 0, got -5` });
  t.equal(await connack(300, 'still-rejected'), 2, 'aboveMax: reject still holds (the invalid file set accept)');
  t.equal(await ready(), 200, '/readyz still 200');
  writeFileSync(file, configText('  max: 60\n  aboveMax: [oops'));
  run.proc.kill('SIGHUP');
  const yaml = await run.waitFor((l) => l.event === 'config_reload_failed' && /invalid YAML/.test(String(l.error)));
  t.match(yaml.error, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+: invalid YAML`), `YAML error with a line: ${String(yaml.error)}`);
  t.equal(await connack(30, 'serving'), 0, 'the process keeps serving');
});

t.test('a changed file is reloaded without a signal (debounced)', async (t) => {
  const before = reloads().length;
  const written = performance.now();
  writeFileSync(file, configText('  max: 60\n  aboveMax: accept'));
  const line = await run.waitFor((l) => l.event === 'config_reloaded' && l.trigger === 'file changed', 10_000);
  t.comment(`file change picked up ${Math.round(line.receivedAt - written)} ms after the write`);
  t.same(line.changed, ['keepAlive.aboveMax']);
  t.equal(reloads().length, before + 1, 'one reload for one write');
  t.equal(await connack(300, 'accepted-again'), 0, 'keep-alive 300 accepted again');
});

t.test('listener addresses cannot move on reload: logged, the old listener keeps serving', async (t) => {
  writeFileSync(file, configText('  max: 30\n  aboveMax: reject', otherPort));
  run.proc.kill('SIGHUP');
  const warn = await run.waitFor((l) => l.event === 'config_restart_needed');
  t.match(warn, { level: 'warn', keys: ['listen'], msg: /listener addresses cannot change on reload; restart to move listen/ });
  const line = await run.waitFor((l) => l.event === 'config_reloaded' && Array.isArray(l.changed) && (l.changed as string[]).includes('keepAlive.max'));
  t.same(line.changed, ['keepAlive.max', 'keepAlive.aboveMax'], 'the rest of the file applied');
  t.equal(await connack(45, 'old-listener'), 2, 'the old listener serves with the new max 30');
  const moved = await new Promise<string>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port: otherPort });
    s.once('connect', () => { s.destroy(); resolve('connected'); });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
  t.equal(moved, 'ECONNREFUSED', 'nothing listens on the new address');
});

t.test('SIGTERM after all that: exit 0', async (t) => {
  run.proc.kill('SIGTERM');
  t.equal(await run.exited, 0);
});

t.test('unit: what a reload applies and what waits for a restart', async (t) => {
  const running = validateConfig({ listen: '127.0.0.1:1883', probes: { interval: 5 } });
  const next = validateConfig({
    listen: '127.0.0.1:1999',
    upstream: '127.0.0.1:2000',
    keepAlive: { max: 60 },
    rules: [{ match: { clientId: 'x*' }, keepAlive: { grace: 1 } }],
    limits: { maxConnections: 10 },
    tcp: { idle: 3 },
    logLevel: 'debug',
    events: { webhook: 'http://127.0.0.1:9/hook' },
    probes: { interval: 7, onBrokerDown: 'close', upstreamProbeIdle: 4 },
  });
  const plan = planReload(running, next);
  t.same(plan.changed, ['logLevel', 'keepAlive.max', 'rules', 'tcp.idle', 'probes.onBrokerDown', 'probes.upstreamProbeIdle', 'limits.maxConnections']);
  t.same(plan.restartNeeded, ['listen', 'upstream', 'probes.interval', 'events.webhook']);
  t.same(plan.config.listen, { host: '127.0.0.1', port: 1883 }, 'restart-only keys keep their running values');
  t.same(plan.config.upstream, running.upstream);
  t.equal(plan.config.probes.interval, 5);
  t.equal(plan.config.events.webhook, null);
  t.equal(plan.config.keepAlive.max, 60, 'the rest is the new configuration');
  t.equal(plan.config.probes.onBrokerDown, 'close');
  t.same(planReload(running, running), { config: running, changed: [], restartNeeded: [] }, 'an unchanged file changes nothing');
});
