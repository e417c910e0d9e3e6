/**
 * The image the chart runs, without Docker (no engine here): the Dockerfile's
 * runtime stage is replayed into a temporary /app — its COPY sources, filtered
 * by .dockerignore, plus the production dependencies of package-lock.json only
 * (what `npm ci --omit=dev` installs) — and the chart's command runs from
 * there: it answers --version, then relays MQTT with the embedded broker. A
 * runtime import of a devDependency would fail here. Also checks that the
 * Dockerfile and the chart agree (user, ports, entrypoint, WORKDIR).
 */
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import { request } from 'undici';
import { ROOT, findObject, render } from '../../scripts/helm.ts';
import { freePort } from './helpers/mosquitto.ts';

const dockerfile = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
const dockerignore = readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));

/** The runtime stage: everything after the last FROM. */
const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));

/** A .dockerignore pattern as a regular expression (a match also covers everything below it). */
function patternRegex(pattern: string): RegExp {
  const segments = pattern.replace(/\/$/, '').split('/');
  let re = '';
  segments.forEach((seg, i) => {
    if (seg === '**') {
      re += '(?:.*/)?';
      return;
    }
    re += seg.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]');
    if (i < segments.length - 1) re += '/';
  });
  return new RegExp(`^${re}(?:/.*)?$`);
}

/** .dockerignore as Docker applies it: the last matching rule wins. */
function ignored(rel: string): boolean {
  let result = false;
  for (const rule of dockerignore) {
    const negate = rule.startsWith('!');
    if (patternRegex(negate ? rule.slice(1) : rule).test(rel)) result = !negate;
  }
  return result;
}

t.test('Dockerfile and chart agree', async (t) => {
  t.match(dockerfile, /^FROM node:\$\{NODE_VERSION\}-bookworm AS deps$/m, 'multi-stage: a deps stage');
  t.match(dockerfile, /^ARG NODE_VERSION=(2[2-9]|[3-9]\d)$/m, 'a current Node LTS line');
  t.match(dockerfile, /npm ci --omit=dev/, 'production dependencies only');
  t.match(runtime, /^FROM node:\$\{NODE_VERSION\}-bookworm-slim AS runtime$/m);
  t.match(runtime, /^WORKDIR \/app$/m);
  const user = /^USER (\d+):(\d+)$/m.exec(runtime);
  t.ok(user && Number(user[1]) > 0, 'numeric non-root USER');
  const objects = render({});
  const w = objects.find((o) => o.kind === 'Deployment') as unknown as { spec: { template: { spec: { containers: Array<{ name: string; command: string[]; securityContext: { runAsUser: number }; ports: Array<{ containerPort: number }> }> } } } };
  const proxy = w.spec.template.spec.containers.find((c) => c.name === 'proxy')!;
  t.equal(proxy.securityContext.runAsUser, Number(user?.[1]), 'the chart runs as the image user');
  const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(runtime);
  t.same(entrypoint ? JSON.parse(entrypoint[1]) : null, proxy.command, 'the chart command is the image ENTRYPOINT');
  const exposed = (/^EXPOSE (.+)$/m.exec(runtime)?.[1] ?? '').split(/\s+/).map(Number);
  t.same(exposed.sort(), proxy.ports.map((p) => p.containerPort).sort(), 'EXPOSE = the chart container ports');
  findObject(objects, 'ConfigMap', (o) => o.metadata.name.endsWith('-proxy'));
});

t.test('the image content runs the proxy', async (t) => {
  const app = path.join(mkdtempSync(path.join(os.tmpdir(), 'mlp-image-')), 'app');
  mkdirSync(app, { recursive: true });
  t.teardown(() => rmSync(path.dirname(app), { recursive: true, force: true }));

  // COPY lines of the runtime stage (except --from=deps: node_modules, below).
  const copies = [...runtime.matchAll(/^COPY (?!--from)(?:--\S+ )*(\S+) (\S+)$/gm)].map((m) => [m[1], m[2]] as const);
  t.ok(copies.length >= 4, 'the runtime stage copies the sources');
  for (const [src, dst] of copies) {
    t.notOk(ignored(src), `${src} is not excluded by .dockerignore`);
    // COPY into a directory (trailing slash) keeps the source's name.
    const target = dst.endsWith('/') ? path.join(app, dst, path.basename(src)) : path.join(app, dst);
    cpSync(path.join(ROOT, src), target, {
      recursive: true,
      filter: (from) => {
        const rel = path.relative(ROOT, from);
        return rel === src || rel === '' || !ignored(rel);
      },
    });
  }
  t.notOk(existsSync(path.join(app, 'proxy/test')), 'no tests in the image');
  t.ok(ignored('proxy/test/helm.test.ts') && ignored('charts/mqtt-liveness-proxy/Chart.yaml') && ignored('node_modules/tap/package.json'), '.dockerignore keeps tests, charts and node_modules out of the context');

  // node_modules as npm ci --omit=dev leaves it: the lock's non-dev packages that are installed here.
  const lock = JSON.parse(readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean; optional?: boolean }> };
  let copied = 0;
  const missing: string[] = [];
  for (const [key, info] of Object.entries(lock.packages)) {
    if (!key.startsWith('node_modules/') || info.dev) continue;
    const from = path.join(ROOT, key);
    if (!existsSync(from)) {
      if (!info.optional) missing.push(key);
      continue;
    }
    cpSync(from, path.join(app, key), { recursive: true, filter: (f) => !path.relative(from, f).split(path.sep).includes('node_modules') || path.relative(from, f) === '' });
    copied++;
  }
  t.same(missing, [], 'only optional (other-platform) packages are absent locally');
  t.ok(copied > 10, `${copied} production packages`);
  t.notOk(existsSync(path.join(app, 'node_modules/mqtt')), 'no devDependencies (mqtt)');
  t.notOk(existsSync(path.join(app, 'node_modules/tap')), 'no devDependencies (tap)');
  t.ok(statSync(path.join(app, 'node_modules/tsx')).isDirectory(), 'tsx is there (runtime dependency)');

  const entry = path.join(app, 'proxy/bin/mqtt-liveness-proxy.js');
  const env = { PATH: process.env.PATH, NODE_ENV: 'production', HOME: path.dirname(app), TMPDIR: path.dirname(app) };
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const version = spawnSync(process.execPath, [entry, '--version'], { cwd: app, env, encoding: 'utf8', timeout: 60_000 });
  t.equal(version.status, 0, version.stderr);
  t.equal(version.stdout.trim(), pkg.version, '--version from /app/package.json');

  // Relay with the embedded broker (no Mosquitto in the image).
  const [mqttPort, adminPort, brokerPort] = [await freePort(), await freePort(), await freePort()];
  const proc = spawn(process.execPath, [entry, '--broker', 'embedded', '--listen', `127.0.0.1:${mqttPort}`, '--admin', `127.0.0.1:${adminPort}`, '--upstream', `127.0.0.1:${brokerPort}`], { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  proc.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  t.teardown(() => { if (proc.exitCode === null) proc.kill('SIGKILL'); });

  const deadline = Date.now() + 60_000;
  let ready = false;
  while (!ready && Date.now() < deadline && proc.exitCode === null) {
    ready = await request(`http://127.0.0.1:${adminPort}/readyz`).then(async (r) => { await r.body.dump(); return r.statusCode === 200; }).catch(() => false);
    if (!ready) await new Promise((r) => setTimeout(r, 200));
  }
  t.ok(ready, `/readyz answers 200${ready ? '' : `\n${out}`}`);
  if (ready) {
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${mqttPort}`, { clientId: 'image-test', reconnectPeriod: 0 });
    await client.subscribeAsync('image/test');
    const got = new Promise<string>((resolve) => client.once('message', (_t, p) => resolve(p.toString())));
    await client.publishAsync('image/test', 'hello');
    t.equal(await got, 'hello', 'MQTT relayed through the image content');
    await client.endAsync();
  }
  proc.kill('SIGTERM');
  t.equal(await exited, 0, 'exits 0 on SIGTERM');
});
