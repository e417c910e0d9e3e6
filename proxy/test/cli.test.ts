/**
 * The command line as a user runs it: flags, check-config, the bundled broker
 * (Mosquitto and the embedded fallback), restart of a dead broker, SIGTERM.
 */
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './helpers/mosquitto.ts';
import { connectClient, eventually, nextMessages } from './helpers/clients.ts';
import { PACKAGE_ROOT } from '../src/package.ts';

const BIN = path.join(PACKAGE_ROOT, 'proxy/bin/mqtt-liveness-proxy.js');
const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-cli-'));

function cli(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', cwd: PACKAGE_ROOT, env: { ...process.env, ...env } });
}

interface Running { proc: ChildProcess; lines: Array<Record<string, unknown>>; exited: Promise<number | null> }

function start(args: string[]): Running {
  const proc = spawn(process.execPath, [BIN, ...args], { cwd: PACKAGE_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Array<Record<string, unknown>> = [];
  let buf = '';
  proc.stdout.on('data', (d: Buffer) => {
    const parts = (buf + d.toString()).split('\n');
    buf = parts.pop()!;
    for (const p of parts) if (p) lines.push(JSON.parse(p) as Record<string, unknown>);
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  t.teardown(() => { proc.kill('SIGKILL'); });
  return { proc, lines, exited };
}

t.test('--help, --version, bad flags', async (t) => {
  const help = cli(['--help']);
  t.equal(help.status, 0);
  t.match(help.stdout, /--listen HOST:PORT/);
  t.match(help.stdout, /check-config FILE/);
  t.match(help.stdout, /Exit codes:\n {2}0 .*\n {2}1 .*\n {2}2 /, 'exit codes documented in --help');
  t.match(help.stdout, /MLP_KEEP_ALIVE__MAX/, 'the environment convention too');
  const version = cli(['--version']);
  t.equal(version.stdout.trim(), '0.1.0');
  const bad = cli(['--lisen', 'x']);
  t.equal(bad.status, 2);
  t.match(bad.stderr, /Unknown option '--lisen'/);
  const badValue = cli(['--broker', 'rabbit']);
  t.equal(badValue.status, 2);
  t.match(badValue.stderr, /command line: broker: expected one of auto, mosquitto, embedded, none/);
});

t.test('check-config prints the effective configuration or names the bad line', async (t) => {
  const good = path.join(dir, 'good.yaml');
  writeFileSync(good, 'listen: 127.0.0.1:1999\nprobes:\n  password: s3cret-value\n');
  const ok = cli(['check-config', good]);
  t.equal(ok.status, 0);
  t.equal(ok.stderr, `${good}: valid\n`, 'the verdict on stderr');
  const effective = JSON.parse(ok.stdout) as { listen: string; tcp: { idle: number }; probes: { password: string } };
  t.equal(effective.listen, '127.0.0.1:1999');
  t.equal(effective.tcp.idle, null, 'unset: from liveness.profile');
  t.equal(effective.probes.password, '[set]');
  t.notMatch(ok.stdout, /s3cret-value/, 'secrets are not printed');
  const bad = path.join(dir, 'bad.yaml');
  writeFileSync(bad, 'listen: 127.0.0.1:1999\ntcp:\n  idel: 3\n');
  const no = cli(['check-config', bad]);
  t.equal(no.status, 2);
  t.match(no.stderr, /bad\.yaml:3: tcp\.idel: unknown key/);
  t.equal(no.stdout, '', 'nothing on stdout for an invalid file');
});

t.test('check-config with the environment: MLP_ variables over the file, flags over both; a bad value names the variable', async (t) => {
  const file = path.join(dir, 'env.yaml');
  writeFileSync(file, 'keepAlive:\n  max: 60\ntcp:\n  idle: 3\n');
  const ok = cli(['check-config', file], { MLP_KEEP_ALIVE__MAX: '30', MLP_TCP__USER_TIMEOUT: '4', MLP_UPSTREAM: 'broker:1885', MLP_ADMIN_TOKEN: 'env-secret-token' });
  t.equal(ok.status, 0, ok.stderr);
  const effective = JSON.parse(ok.stdout) as { keepAlive: { max: number }; tcp: { idle: number; userTimeout: number }; upstream: string; adminToken: string };
  t.equal(effective.keepAlive.max, 30, 'MLP_KEEP_ALIVE__MAX=30 wins over the file');
  t.equal(effective.tcp.idle, 3, 'the file fills the rest');
  t.equal(effective.tcp.userTimeout, 4);
  t.equal(effective.upstream, 'broker:1885', 'addresses printed as HOST:PORT');
  t.equal(effective.adminToken, '[set]');
  t.notMatch(ok.stdout, /env-secret-token/);
  const flagWins = cli(['check-config', file, '--upstream', 'other:1886'], { MLP_UPSTREAM: 'broker:1885' });
  t.equal((JSON.parse(flagWins.stdout) as { upstream: string }).upstream, 'other:1886', 'the flag wins over the environment');

  const bad = cli(['check-config', file], { MLP_KEEP_ALIVE__MAX: 'thirty' });
  t.equal(bad.status, 2);
  t.match(bad.stderr, /MLP_KEEP_ALIVE__MAX: keepAlive\.max: expected a number, got string "thirty"/);
  t.equal(bad.stdout, '');
  const typo = cli(['check-config', file], { MLP_TCP__IDEL: '2' });
  t.equal(typo.status, 2);
  t.match(typo.stderr, /MLP_TCP__IDEL: no such key/);
  const fromEnv = cli(['check-config'], { MLP_CONFIG: file });
  t.equal(fromEnv.status, 0, 'MLP_CONFIG names the file');
  t.equal((JSON.parse(fromEnv.stdout) as { keepAlive: { max: number } }).keepAlive.max, 60);
});

for (const mode of ['mosquitto', 'embedded'] as const) {
  t.test(`--broker ${mode}: serves clients, and SIGTERM stops everything with exit 0`, async (t) => {
    const [listen, upstream, admin] = [await freePort(), await freePort(), await freePort()];
    // The bundled Mosquitto config has a fixed port; use a copy with the test's port.
    const conf = path.join(dir, `mosquitto-${upstream}.conf`);
    writeFileSync(conf, `listener ${upstream} 127.0.0.1\nallow_anonymous true\n`);
    const cfgFile = path.join(dir, `proxy-${upstream}.yaml`);
    writeFileSync(cfgFile, `mosquittoConfig: ${conf}\nlogLevel: debug\n`);
    const run = start(['--config', cfgFile, '--listen', `127.0.0.1:${listen}`, '--upstream', `127.0.0.1:${upstream}`, '--admin', `127.0.0.1:${admin}`, '--broker', mode]);
    await eventually(() => run.lines.some((l) => l.msg === 'proxy listening'), 20_000, 'proxy listening');
    t.ok(run.lines.some((l) => (mode === 'mosquitto' ? l.msg === 'started Mosquitto' : l.broker === 'embedded')), `log says ${mode}`);
    const sub = await connectClient(`mqtt://127.0.0.1:${listen}`);
    // Aedes (the embedded fallback) speaks MQTT 3.1.1 only.
    const v5ok = mode === 'mosquitto';
    const pub = await connectClient(`mqtt://127.0.0.1:${listen}`, { protocolVersion: v5ok ? 5 : 4 });
    await sub.subscribeAsync('cli/t');
    const got = nextMessages(sub, 1);
    await pub.publishAsync('cli/t', 'through the CLI', { qos: 1 });
    t.equal((await got)[0].payload.toString(), 'through the CLI');

    if (mode === 'mosquitto') {
      // A broker that dies is restarted.
      const pid = run.lines.find((l) => l.msg === 'started Mosquitto')?.pid as number;
      process.kill(pid, 'SIGKILL');
      await eventually(() => run.lines.filter((l) => l.msg === 'started Mosquitto').length === 2, 20_000, 'Mosquitto restarted');
      t.ok(run.lines.some((l) => l.msg === 'Mosquitto exited; restarting'), 'the death is logged');
      const again = await eventually(async () => connectClient(`mqtt://127.0.0.1:${listen}`).catch(() => null), 20_000, 'reconnect after restart');
      again!.end(true);
    }
    sub.end(true);
    pub.end(true);
    const last = await connectClient(`mqtt://127.0.0.1:${listen}`, { protocolVersion: v5ok ? 5 : 4 });
    const v5Closed = new Promise<number | undefined>((resolve) => {
      last.once('disconnect', (p) => resolve(p.reasonCode));
      last.once('close', () => resolve(undefined));
    });
    run.proc.kill('SIGTERM');
    t.equal(await run.exited, 0, 'exit 0 on SIGTERM');
    if (v5ok) t.equal(await v5Closed, 0x8b, 'the MQTT 5 client was told: server shutting down');
    else t.equal(await v5Closed, undefined, 'the 3.1.1 client was closed');
    const brokerAlive = await connectClient(`mqtt://127.0.0.1:${upstream}`, { connectTimeout: 1000 }).then((c) => { c.end(true); return true; }, () => false);
    t.equal(brokerAlive, false, 'the bundled broker is stopped too');
  });
}
