/**
 * The container image, built and run for real (root: buildah and podman need
 * it). No image registry is reachable, so scripts/image-base.sh builds the
 * base from a debootstrap root filesystem (cached in /var/cache/mlp-image-base)
 * with Node from the npm registry; the repository's Dockerfile is built on it
 * with buildah, passing the base as BUILD_IMAGE/RUNTIME_IMAGE. The container
 * runs with podman (runc) as the image's non-root user with a read-only root
 * filesystem (no tmpfs either), host networking, in front of a real Mosquitto:
 * /readyz 200, an MQTT client publishes and receives through it, and SIGTERM
 * drains (an MQTT 5 client gets DISCONNECT 0x8B) and exits 0. The image and
 * containers it creates are removed; the base image stays as a cache.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { request } from 'undici';
import { PACKAGE_ROOT } from '../src/package.ts';
import { freePort, startMosquitto } from './helpers/mosquitto.ts';
import { connectClient, eventually, nextMessages } from './helpers/clients.ts';
import { run } from './helpers/run.ts';

// The first run on a machine pays for debootstrap (~2 min) and a cold npm ci.
t.setTimeout(15 * 60_000);

async function mustRun(cmd: string, args: string[], timeoutMs?: number): Promise<string> {
  const r = await run(cmd, args, { cwd: PACKAGE_ROOT, timeoutMs });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${r.stderr.slice(-3000)}\n${r.stdout.slice(-2000)}`);
  return r.stdout.trim();
}

/**
 * runc sets the container's rlimits; raising RLIMIT_NPROC (podman's default)
 * is refused in this sandbox, so give limits within ours.
 */
const ULIMITS = ['--ulimit', 'nofile=16384:16384', '--ulimit', 'nproc=4096:4096'];
const PODMAN = ['--runtime', 'runc'];

t.test('the Dockerfile builds on a registry-free base and the image proxies MQTT', async (t) => {
  if (process.getuid?.() !== 0) throw new Error('image.test.ts builds and runs containers: run it as root');
  const base = (await mustRun(path.join(PACKAGE_ROOT, 'scripts/image-base.sh'), [])).split('\n').pop()!;
  t.match(base, /^localhost\/mlp-node-base:/, `base image ${base}`);

  const tag = `localhost/mlp-image-test:${process.pid}`;
  const started = performance.now();
  t.teardown(() => run('podman', ['rmi', '--force', tag], { cwd: PACKAGE_ROOT }).then(() => undefined));
  await mustRun('buildah', ['build', '--network', 'host', ...ULIMITS, '--build-arg', `BUILD_IMAGE=${base}`, '--build-arg', `RUNTIME_IMAGE=${base}`, '-t', tag, '.']);
  t.comment(`buildah build: ${((performance.now() - started) / 1000).toFixed(1)} s`);

  const [info] = JSON.parse(await mustRun('podman', ['image', 'inspect', tag])) as Array<{ Size: number; Config: { User: string; Entrypoint: string[] } }>;
  const [baseInfo] = JSON.parse(await mustRun('podman', ['image', 'inspect', base])) as Array<{ Size: number }>;
  const added = info.Size - baseInfo.Size;
  t.comment(`image size ${(info.Size / 1e6).toFixed(1)} MB (base ${(baseInfo.Size / 1e6).toFixed(1)} MB + ${(added / 1e6).toFixed(1)} MB of proxy and production dependencies)`);
  // Production dependencies only: the devDependencies (typescript, tap, tsx, ...) alone would add well over 100 MB.
  t.ok(added > 1e6 && added < 60e6, `the proxy adds ${(added / 1e6).toFixed(1)} MB to the base (expected 1-60 MB)`);
  t.equal(info.Config.User, '1000:1000', 'numeric non-root USER');
  const pkgVersion = (JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  const listing = await mustRun('podman', [...PODMAN, 'run', '--rm', ...ULIMITS, '--network', 'none', '--entrypoint', 'sh', tag, '-c', 'ls /app; echo --; ls /app/node_modules']);
  const [app, modules] = listing.split('--').map((s) => s.trim().split(/\s+/));
  t.same(app, ['broker', 'dist', 'node_modules', 'package.json', 'proxy'], '/app: the compiled proxy, its assets and dependencies');
  for (const dev of ['typescript', 'tsx', 'tap', 'mqtt', 'esbuild']) t.notOk(modules.includes(dev), `no ${dev} in the image`);
  t.ok(modules.includes('pino') && modules.includes('koffi'), 'production dependencies are there');
  const version = await mustRun('podman', [...PODMAN, 'run', '--rm', ...ULIMITS, '--network', 'none', '--read-only', tag, '--version']);
  t.equal(version, pkgVersion, '--version');

  const broker = await startMosquitto();
  t.teardown(() => broker.stop());
  const [listen, admin] = [await freePort(), await freePort()];
  const name = `mlp-image-test-${process.pid}`;
  t.teardown(() => run('podman', ['rm', '--force', '--time', '0', name], { cwd: PACKAGE_ROOT }).then(() => undefined));
  // --read-only-tmpfs=false: not even /tmp, /var/tmp and /run are writable (podman mounts tmpfs there by default).
  await mustRun('podman', [...PODMAN, 'run', '--detach', '--name', name, '--network', 'host', '--read-only', '--read-only-tmpfs=false', ...ULIMITS, tag,
    '--broker', 'none', '--upstream', `127.0.0.1:${broker.port}`, '--listen', `127.0.0.1:${listen}`, '--admin', `127.0.0.1:${admin}`]);
  const logs = async (): Promise<string> => { const r = await run('podman', ['logs', name], { cwd: PACKAGE_ROOT }); return r.stdout + r.stderr; };

  const readyz = async (): Promise<number> => request(`http://127.0.0.1:${admin}/readyz`).then((r) => { void r.body.dump().catch(() => undefined); return r.statusCode; }, () => 0);
  await eventually(async () => (await readyz()) === 200, 60_000, '/readyz 200').catch(async (err: Error) => { throw new Error(`${err.message}\n${await logs()}`); });
  t.equal(await readyz(), 200, '/readyz 200 once the broker answers');

  const pid = Number(await mustRun('podman', ['inspect', '--format', '{{.State.Pid}}', name]));
  const uids = /^Uid:\s+(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1].split(/\s+/);
  t.same(uids, ['1000', '1000', '1000', '1000'], 'the proxy process runs as uid 1000 (real, effective, saved, fs)');
  for (const dir of ['/app', '/tmp', '/']) {
    const write = await run('podman', ['exec', name, 'sh', '-c', `echo x > ${dir}/probe`], { cwd: PACKAGE_ROOT });
    t.not(write.code, 0, `${dir} is read-only (${write.stderr.trim()})`);
  }

  const url = `mqtt://127.0.0.1:${listen}`;
  const sub = await connectClient(url, { clientId: 'image-sub', protocolVersion: 5 });
  const pub = await connectClient(url, { clientId: 'image-pub' });
  await sub.subscribeAsync('image/test', { qos: 1 });
  const got = nextMessages(sub, 1);
  await pub.publishAsync('image/test', 'through the container', { qos: 1 });
  t.equal((await got)[0].payload.toString(), 'through the container', 'published and received through the container');
  await pub.endAsync();

  // SIGTERM as Kubernetes sends it: the MQTT 5 client is told why, the process exits 0.
  const disconnect = new Promise<number | undefined>((resolve) => sub.once('disconnect', (p) => resolve(p.reasonCode)));
  const closed = new Promise<void>((resolve) => sub.once('close', () => resolve()));
  await mustRun('podman', ['kill', '--signal', 'TERM', name]);
  t.equal(await disconnect, 0x8b, 'DISCONNECT 0x8B (server shutting down) to the MQTT 5 client');
  await closed;
  t.equal(await mustRun('podman', ['wait', name], 60_000), '0', 'the container exits 0');
  t.match(await logs(), /"msg":"stopped"/, 'logged its orderly stop');
  sub.end(true);
});
