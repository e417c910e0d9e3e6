/**
 * The npm package as a user gets it: `npm pack` (of the dist/ that tap's
 * before-step just built), the tarball installed into an empty directory with
 * its dependencies from npm's cache (--prefer-offline), then the installed
 * `npx mqtt-liveness-proxy` answers --version and relays MQTT between real
 * clients and a real Mosquitto, and its embedded broker runs from the package.
 * The tarball holds only what a user needs.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { PACKAGE_ROOT } from '../src/package.ts';
import { defaultConfig } from '../src/config/load.ts';
import { freePort, startMosquitto } from './helpers/mosquitto.ts';
import { connectClient, eventually, nextMessages } from './helpers/clients.ts';
import { binNodeFlags } from '../bench/lib/services.ts';
import { run } from './helpers/run.ts';

t.setTimeout(10 * 60_000);

const pkg = JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { name: string; version: string; bin: Record<string, string> };

async function mustRun(cmd: string, args: string[], cwd: string): Promise<string> {
  const r = await run(cmd, args, { cwd });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${r.stderr.slice(-3000)}`);
  return r.stdout.trim();
}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'mlp-package-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

/** A file of the tarball is allowed if a user of the CLI needs it. */
function shipped(file: string): boolean {
  if (['package.json', 'README.md', 'LICENSE', 'broker/mosquitto.conf'].includes(file)) return true;
  if (file.startsWith('proxy/bin/')) return true;
  // Compiled JavaScript only, each from a source that exists (no stale output).
  const js = /^dist\/(.*)\.js$/.exec(file);
  return js !== null && existsSync(path.join(PACKAGE_ROOT, `${js[1]}.ts`));
}

let tarball = '';

t.test('npm pack ships the compiled CLI and nothing a user does not need', async (t) => {
  // --ignore-scripts: prepack would delete dist/ under tests running in parallel; dist/ is fresh from tap's before-step.
  const out = await mustRun('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], PACKAGE_ROOT);
  const [info] = JSON.parse(out) as Array<{ filename: string; entryCount: number; unpackedSize: number; files: Array<{ path: string }> }>;
  tarball = path.join(tmp, info.filename);
  const files = info.files.map((f) => f.path);
  t.comment(`${info.entryCount} files, ${(info.unpackedSize / 1024).toFixed(0)} KiB unpacked`);
  t.same(files.filter((f) => !shipped(f)), [], 'no tests, benchmarks, sources, source maps, charts or CI scripts');
  for (const need of ['LICENSE', 'README.md', 'broker/mosquitto.conf', pkg.bin['mqtt-liveness-proxy'], 'dist/proxy/src/cli.js']) t.ok(files.includes(need), `ships ${need}`);
  t.match(readFileSync(path.join(PACKAGE_ROOT, 'LICENSE'), 'utf8'), /Apache License\s+Version 2\.0, January 2004[\s\S]*END OF TERMS AND CONDITIONS/, 'LICENSE: the Apache-2.0 text');
});

t.test('the installed tarball answers --version and relays MQTT to a real Mosquitto', async (t) => {
  t.ok(tarball, 'packed');
  const app = path.join(tmp, 'consumer');
  await mustRun('mkdir', ['-p', app], tmp);
  writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true }));
  await mustRun('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--omit=dev', tarball], app);
  const installed = path.join(app, 'node_modules', pkg.name);
  for (const dev of ['typescript', 'tsx', 'tap', 'mqtt']) t.notOk(existsSync(path.join(app, 'node_modules', dev)), `no ${dev} installed with it`);
  t.ok(existsSync(path.resolve(installed, defaultConfig().mosquittoConfig)), 'the bundled Mosquitto config resolves inside the installed package');

  t.equal(await mustRun('npx', ['--no-install', 'mqtt-liveness-proxy', '--version'], app), pkg.version, 'npx mqtt-liveness-proxy --version');

  const broker = await startMosquitto();
  t.teardown(() => broker.stop());
  const bin = path.join(app, 'node_modules/.bin/mqtt-liveness-proxy');
  for (const mode of ['none', 'embedded'] as const) {
    const [listen, admin] = [await freePort(), await freePort()];
    const upstream = mode === 'none' ? broker.port : await freePort();
    const proc = spawn(bin, ['--broker', mode, '--upstream', `127.0.0.1:${upstream}`, '--listen', `127.0.0.1:${listen}`, '--admin', `127.0.0.1:${admin}`], { cwd: app, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    for (const stream of [proc.stdout, proc.stderr]) stream.on('data', (d: Buffer) => { log += d.toString(); });
    const output = (): string => log.slice(-2000);
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    const kill = (): void => { proc.kill('SIGKILL'); };
    process.once('exit', kill);
    t.teardown(() => { process.off('exit', kill); if (proc.exitCode === null) proc.kill('SIGKILL'); });
    const ready = await eventually(() => request(`http://127.0.0.1:${admin}/readyz`).then((r) => { void r.body.dump().catch(() => undefined); return r.statusCode === 200; }, () => false), 30_000, `/readyz (${output()})`);
    t.ok(ready, `--broker ${mode}: /readyz 200`);
    // npm's bin link keeps the shebang's node flags (launch-flags.test.ts): node got them.
    const argv = readFileSync(`/proc/${proc.pid}/cmdline`, 'utf8').split('\0');
    for (const flag of binNodeFlags(path.join(installed, pkg.bin['mqtt-liveness-proxy']))) t.ok(argv.includes(flag), `--broker ${mode}: node runs with ${flag}`);
    const url = `mqtt://127.0.0.1:${listen}`;
    const [sub, pub] = [await connectClient(url, { clientId: `pkg-sub-${mode}` }), await connectClient(url, { clientId: `pkg-pub-${mode}` })];
    await sub.subscribeAsync('package/test', { qos: 1 });
    const got = nextMessages(sub, 1);
    await pub.publishAsync('package/test', `via ${mode}`, { qos: 1 });
    t.equal((await got)[0].payload.toString(), `via ${mode}`, `--broker ${mode}: published and received through the installed package`);
    await Promise.all([sub.endAsync(), pub.endAsync()]);
    if (mode === 'none') t.match(broker.log(), /New client connected from 127\.0\.0\.1:\d+ as pkg-sub-none/, 'the Mosquitto on the host saw the client');
    proc.kill('SIGTERM');
    t.equal(await exited, 0, `--broker ${mode}: exits 0 on SIGTERM`);
  }
});
