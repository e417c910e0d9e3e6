/**
 * The node flags the proxy is measured with (a semi-space of 8 MB whatever the
 * pod's memory limit makes V8 choose; see BENCHMARKS.md, which also says why the
 * larger initial old space went once reads stopped allocating) sit on every real
 * launch command: the bin's shebang (npm's bin link, npx), `npm start`, the
 * Dockerfile ENTRYPOINT and the chart's command.
 * Node refuses them in NODE_OPTIONS, so each command carries them itself; this
 * keeps the four in step and checks that the kernel's shebang handling really
 * hands them to node.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { request } from 'undici';
import { PACKAGE_ROOT } from '../src/package.ts';
import { binNodeFlags } from '../bench/lib/services.ts';
import { freePort } from './helpers/mosquitto.ts';
import { eventually } from './helpers/clients.ts';

const BIN = path.join(PACKAGE_ROOT, 'proxy/bin/mqtt-liveness-proxy.js');
const flags = binNodeFlags(BIN);
const read = (file: string): string => readFileSync(path.join(PACKAGE_ROOT, file), 'utf8');

t.test('the bin carries the heap flags in its shebang', async (t) => {
  t.match(read('proxy/bin/mqtt-liveness-proxy.js').split('\n', 1)[0], /^#!\/usr\/bin\/env -S node /, 'env -S shebang');
  t.same(flags, ['--max-semi-space-size=8'], `flags: ${flags.join(' ')}`);
});

t.test('npm start, the Dockerfile and the chart launch node with the same flags', async (t) => {
  const pkg = JSON.parse(read('package.json')) as { scripts: Record<string, string> };
  t.match(pkg.scripts.start, `node ${flags.join(' ')} proxy/bin/mqtt-liveness-proxy.js`, 'npm start');
  const entry = /^ENTRYPOINT (\[.*\])$/m.exec(read('Dockerfile'));
  t.same(entry && JSON.parse(entry[1]), ['node', ...flags, '/app/proxy/bin/mqtt-liveness-proxy.js'], 'Dockerfile ENTRYPOINT');
  const command = /^\s*command: (\[.*\])$/m.exec(read('charts/mqtt-liveness-proxy/templates/_proxy.tpl'));
  t.same(command && JSON.parse(command[1]), ['node', ...flags, '/app/proxy/bin/mqtt-liveness-proxy.js'], 'chart proxy command');
});

t.test('run as an executable, the bin hands the flags to node', async (t) => {
  const [listen, admin, upstream] = [await freePort(), await freePort(), await freePort()];
  const proc = spawn(BIN, ['--broker', 'none', '--upstream', `127.0.0.1:${upstream}`, '--listen', `127.0.0.1:${listen}`, '--admin', `127.0.0.1:${admin}`, '--log-level', 'warn'], { stdio: 'ignore' });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', resolve));
  t.teardown(() => { if (proc.exitCode === null) proc.kill('SIGKILL'); });
  const argv = (): string[] => { try { return readFileSync(`/proc/${proc.pid}/cmdline`, 'utf8').split('\0'); } catch { return []; } };
  // env execs node in the same process: wait until the exec has happened.
  t.ok(await eventually(() => Promise.resolve(path.basename(argv()[0] ?? '').startsWith('node')), 10_000, `node started: ${argv().join(' ')}`), 'env exec()s node, which runs the bin');
  const args = argv();
  for (const f of flags) t.ok(args.includes(f), `node got ${f}`);
  // SIGTERM once the CLI is up (its handler installed), so a clean exit is the CLI's own.
  const up = await eventually(() => request(`http://127.0.0.1:${admin}/livez`).then((r) => { void r.body.dump().catch(() => undefined); return r.statusCode === 200; }, () => false), 30_000, '/livez');
  t.ok(up, '/livez 200');
  proc.kill('SIGTERM');
  t.equal(await exited, 0, 'exits 0 on SIGTERM');
});
