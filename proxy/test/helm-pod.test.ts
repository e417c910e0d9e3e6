/**
 * Pod simulation: the chart's broker pod run as local processes, from what
 * `helm template` renders and nothing else. Mosquitto gets the mosquitto.conf
 * of its ConfigMap (and the password file of its Secret), the proxy gets the
 * rendered command, args, env and config file; mounted files are written under
 * a temporary root at their mount paths. Only ports change: each container
 * port and the broker's loopback port get a free local port, rewritten
 * consistently in both configurations. Then the declared probe paths must
 * answer 200, the ServiceMonitor's port and path must serve metrics, an MQTT
 * client must get through the MQTT Service's target port, and the `helm test`
 * pod's own script must pass against the local ports.
 */
import t, { type Test } from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import { request } from 'undici';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { CHART, ROOT, findObject, render, type K8sObject } from '../../scripts/helm.ts';
import { freePort } from './helpers/mosquitto.ts';

interface Container {
  name: string;
  command?: string[];
  args?: string[];
  env?: Array<{ name: string; value?: string }>;
  ports?: Array<{ name: string; containerPort: number }>;
  startupProbe?: { httpGet?: { path: string; port: string | number } };
  livenessProbe?: { httpGet?: { path: string; port: string | number }; exec?: { command: string[] } };
  readinessProbe?: { httpGet?: { path: string; port: string | number } };
  volumeMounts?: Array<{ name: string; mountPath: string; subPath?: string }>;
}
interface Volume {
  name: string;
  configMap?: { name: string };
  secret?: { secretName: string; items?: Array<{ key: string; path: string }> };
  emptyDir?: object;
}
interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  volumes: Volume[];
}
type Svc = K8sObject & { spec: { ports: Array<{ name: string; port: number; targetPort: string | number }> } };

function podOf(objects: K8sObject[]): PodSpec {
  const w = objects.find((o) => o.kind === 'Deployment' || o.kind === 'StatefulSet') as unknown as { spec: { template: { spec: PodSpec } } };
  return w.spec.template.spec;
}

function containerOf(pod: PodSpec, name: string): Container {
  const c = [...(pod.initContainers ?? []), ...pod.containers].find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name}`);
  return c;
}

/** Files of a ConfigMap or Secret volume: relative path -> content. */
function volumeFiles(objects: K8sObject[], volume: Volume): Map<string, string> {
  const out = new Map<string, string>();
  if (volume.configMap) {
    const cm = findObject(objects, 'ConfigMap', (o) => o.metadata.name === volume.configMap!.name) as K8sObject & { data: Record<string, string> };
    for (const [k, v] of Object.entries(cm.data)) out.set(k, v);
  } else if (volume.secret) {
    const s = findObject(objects, 'Secret', (o) => o.metadata.name === volume.secret!.secretName) as K8sObject & { stringData?: Record<string, string>; data?: Record<string, string> };
    const data: Record<string, string> = { ...Object.fromEntries(Object.entries(s.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString()])), ...s.stringData };
    const items = volume.secret.items ?? Object.keys(data).map((key) => ({ key, path: key }));
    for (const { key, path: p } of items) out.set(p, data[key]);
  }
  return out;
}

/** Local directories of a container's mounts under root: mountPath -> local dir. */
function mountsOf(pod: PodSpec, container: Container, root: string): Map<string, string> {
  const mounts = new Map<string, string>();
  for (const m of container.volumeMounts ?? []) mounts.set(m.mountPath, path.join(root, container.name, m.mountPath));
  return mounts;
}

/**
 * Writes a container's ConfigMap/Secret mounts under root, as the kubelet
 * would mount them. `edit` sees each file with its container path.
 */
function materialize(objects: K8sObject[], pod: PodSpec, container: Container, mounts: Map<string, string>, edit: (file: string, text: string) => string): void {
  for (const m of container.volumeMounts ?? []) {
    const volume = pod.volumes.find((v) => v.name === m.name);
    if (!volume) throw new Error(`${container.name}: volumeMount ${m.name} has no volume`);
    const local = mounts.get(m.mountPath)!;
    mkdirSync(local, { recursive: true });
    if (volume.emptyDir) continue;
    for (const [file, text] of volumeFiles(objects, volume)) {
      writeFileSync(path.join(local, file), edit(`${m.mountPath}/${file}`, text));
    }
  }
}

/** A container path mapped to the local tree (mounts) or the repository (/app, the image's WORKDIR). */
function localPath(p: string, mounts: Map<string, string>): string {
  for (const [mountPath, local] of mounts) if (p === mountPath || p.startsWith(`${mountPath}/`)) return local + p.slice(mountPath.length);
  if (p.startsWith('/app/')) return path.join(ROOT, p.slice('/app/'.length));
  return p;
}

function mapArgs(args: string[], mounts: Map<string, string>): string[] {
  return args.map((a) => (a.startsWith('/') ? localPath(a, mounts) : a));
}

async function httpGet(port: number, p: string): Promise<{ status: number; body: string }> {
  const res = await request(`http://127.0.0.1:${port}${p}`, { signal: AbortSignal.timeout(5000) });
  return { status: res.statusCode, body: await res.body.text() };
}

async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs: number, context: () => string, procs: Proc[] = []): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    const dead = procs.find((p) => p.proc.exitCode !== null || p.proc.signalCode !== null);
    if (dead) throw new Error(`${dead.proc.spawnfile} exited (${dead.proc.exitCode ?? dead.proc.signalCode}) while waiting for ${what}\n${context()}`);
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}\n${context()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

interface Proc {
  proc: ChildProcess;
  output: () => string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

function run(cmd: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv }): Proc {
  const proc = spawn(cmd, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  proc.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return {
    proc,
    output: () => out,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), 15_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

interface Simulation {
  objects: K8sObject[];
  /** containerPort -> local port */
  ports: Map<number, number>;
  brokerPort: number;
  proxy: Proc;
  mosquitto: Proc;
  root: string;
  /** Service port -> local port, through targetPort and the proxy's container ports. */
  servicePort(svc: Svc, name: string): number;
  stop(): Promise<{ proxy: number | null }>;
}

async function simulate(objects: K8sObject[]): Promise<Simulation> {
  const pod = podOf(objects);
  const proxyC = containerOf(pod, 'proxy');
  const mosqC = containerOf(pod, 'mosquitto');

  // Free local ports for every declared container port and the broker's loopback listener.
  const ports = new Map<number, number>();
  for (const p of proxyC.ports ?? []) ports.set(p.containerPort, await freePort());
  const brokerPort = await freePort();
  let declaredBrokerPort = 0;

  const root = mkdtempSync(path.join(os.tmpdir(), 'mlp-helm-pod-'));
  const mosqMounts = mountsOf(pod, mosqC, root);
  const proxyMounts = mountsOf(pod, proxyC, root);
  materialize(objects, pod, mosqC, mosqMounts, (file, text) => {
    if (!file.endsWith('.conf')) return text;
    const m = /^listener (\d+) (\S+)$/m.exec(text);
    if (!m) throw new Error('mosquitto.conf has no listener');
    declaredBrokerPort = Number(m[1]);
    // The port changes; file paths follow their mounts (as inside the container).
    return text
      .replace(m[0], `listener ${brokerPort} ${m[2]}`)
      .replace(/^(password_file|persistence_location|acl_file) (\/\S+)$/gm, (_all, key: string, p: string) => `${key} ${localPath(p, mosqMounts)}`);
  });
  materialize(objects, pod, proxyC, proxyMounts, (file, text) => {
    if (!file.endsWith('config.yaml')) return text;
    const config = parseYaml(text) as Record<string, string>;
    const swap = (hostPort: string, to: number): string => hostPort.replace(/:\d+$/, `:${to}`);
    const portOf = (hostPort: string): number => Number(/:(\d+)$/.exec(hostPort)![1]);
    for (const key of ['listen', 'admin']) {
      const local = ports.get(portOf(config[key]));
      if (!local) throw new Error(`proxy config ${key} ${config[key]} is not a declared container port`);
      config[key] = swap(config[key], local);
    }
    if (portOf(config.upstream) !== declaredBrokerPort) throw new Error(`proxy upstream ${config.upstream} is not Mosquitto's listener port ${declaredBrokerPort}`);
    config.upstream = swap(config.upstream, brokerPort);
    return stringifyYaml(config);
  });
  // Mosquitto drops root privileges to its own user: keep the tree readable.
  spawnSync('chmod', ['-R', 'a+rX', root]);

  // Mosquitto, with the rendered command.
  const [mosqBin, ...mosqArgs] = [...(mosqC.command ?? []), ...(mosqC.args ?? [])];
  if (!existsSync(mosqBin)) throw new Error(`${mosqBin} (the rendered Mosquitto command) is missing: apt-get install -y mosquitto`);
  const mosquitto = run(mosqBin, mapArgs(mosqArgs, mosqMounts), {});

  // The proxy, with the rendered command, args and env; the image's WORKDIR is /app.
  const dockerfile = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
  if (!/^WORKDIR \/app$/m.test(dockerfile)) throw new Error('the Dockerfile no longer uses WORKDIR /app, which the chart command assumes');
  const [node, ...proxyArgs] = [...(proxyC.command ?? []), ...(proxyC.args ?? [])];
  if (node !== 'node') throw new Error(`unexpected proxy command ${node}`);
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const e of proxyC.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
  const proxy = run(process.execPath, mapArgs(proxyArgs, proxyMounts), { cwd: ROOT, env });

  const servicePort = (svc: Svc, name: string): number => {
    const sp = svc.spec.ports.find((p) => p.name === name);
    if (!sp) throw new Error(`${svc.metadata.name} has no port ${name}`);
    const cp = typeof sp.targetPort === 'number' ? sp.targetPort : proxyC.ports?.find((p) => p.name === sp.targetPort)?.containerPort;
    const local = cp === undefined ? undefined : ports.get(cp);
    if (!local) throw new Error(`${svc.metadata.name}:${name} targets ${sp.targetPort}, not a proxy container port`);
    return local;
  };

  return {
    objects,
    ports,
    brokerPort,
    proxy,
    mosquitto,
    root,
    servicePort,
    async stop() {
      const code = await proxy.stop();
      await mosquitto.stop();
      rmSync(root, { recursive: true, force: true });
      return { proxy: code };
    },
  };
}

function probePort(c: Container, probe: { httpGet?: { port: string | number } } | undefined, ports: Map<number, number>): number {
  const port = probe?.httpGet?.port;
  const cp = typeof port === 'number' ? port : c.ports?.find((p) => p.name === port)?.containerPort;
  const local = cp === undefined ? undefined : ports.get(cp);
  if (!local) throw new Error(`probe port ${port} is not a declared container port`);
  return local;
}

async function checkPod(t: Test, valuesFiles: string[], expectConnack: number): Promise<void> {
  const objects = render({ valuesFiles, set: ['serviceMonitor.enabled=true', 'broker.livenessProbe.enabled=false'] });
  const sim = await simulate(objects);
  const context = (): string => `\n--- proxy output ---\n${sim.proxy.output().slice(-4000)}\n--- mosquitto output ---\n${sim.mosquitto.output().slice(-2000)}`;
  t.teardown(async () => {
    await sim.stop();
  });
  const pod = podOf(objects);
  const proxyC = containerOf(pod, 'proxy');

  // Startup probe first (the kubelet waits for it), then readiness and liveness.
  const startup = proxyC.startupProbe!.httpGet!;
  await until(`startup probe ${startup.path}`, async () => (await httpGet(probePort(proxyC, proxyC.startupProbe, sim.ports), startup.path)).status === 200, 60_000, context, [sim.proxy, sim.mosquitto]);
  t.pass(`startup probe GET ${startup.path} answers 200`);
  const ready = proxyC.readinessProbe!.httpGet!;
  const readyRes = await until(`readiness probe ${ready.path}`, async () => {
    const r = await httpGet(probePort(proxyC, proxyC.readinessProbe, sim.ports), ready.path);
    return r.status === 200 ? r : null;
  }, 30_000, context, [sim.proxy, sim.mosquitto]);
  t.pass(`readiness probe GET ${ready.path} answers 200: ${readyRes.body.trim().slice(0, 200)}`);
  const live = proxyC.livenessProbe!.httpGet!;
  t.equal((await httpGet(probePort(proxyC, proxyC.livenessProbe, sim.ports), live.path)).status, 200, `liveness probe GET ${live.path} answers 200`);

  // The ServiceMonitor's endpoint, through the metrics Service.
  const sm = findObject(objects, 'ServiceMonitor') as K8sObject & { spec: { selector: { matchLabels: Record<string, string> }; endpoints: Array<{ port: string; path: string }> } };
  const metricsSvc = findObject(objects, 'Service', (o) => Object.entries(sm.spec.selector.matchLabels).every(([k, v]) => o.metadata.labels?.[k] === v)) as Svc;
  const endpoint = sm.spec.endpoints[0];
  const metrics = await httpGet(sim.servicePort(metricsSvc, endpoint.port), endpoint.path);
  t.equal(metrics.status, 200, `ServiceMonitor endpoint ${metricsSvc.metadata.name}:${endpoint.port}${endpoint.path} answers 200`);
  t.match(metrics.body, /^mqtt_liveness_build_info\{version="[^"]+"\} 1$/m, 'and serves the proxy metrics');
  t.match(metrics.body, /^# TYPE mqtt_liveness_connections_open gauge$/m);

  // An MQTT client through the MQTT Service's target port.
  const mqttSvc = findObject(objects, 'Service', (o) => o.metadata.labels?.['app.kubernetes.io/component'] === 'mqtt') as Svc;
  const mqttPort = sim.servicePort(mqttSvc, 'mqtt');
  if (expectConnack === 0) {
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${mqttPort}`, { protocolVersion: 5, clientId: 'helm-pod-test', keepalive: 10, reconnectPeriod: 0, connectTimeout: 10_000 }, false);
    try {
      await client.subscribeAsync('helm/pod', { qos: 1 });
      const got = new Promise<string>((resolve) => client.once('message', (_topic, payload) => resolve(payload.toString())));
      await client.publishAsync('helm/pod', 'through the Service', { qos: 1 });
      t.equal(await got, 'through the Service', `MQTT publish/subscribe through ${mqttSvc.metadata.name}:mqtt`);
    } finally {
      await client.endAsync();
    }
  } else {
    const err = await mqtt.connectAsync(`mqtt://127.0.0.1:${mqttPort}`, { protocolVersion: 4, clientId: 'helm-pod-anon', reconnectPeriod: 0, connectTimeout: 10_000 }, false).then(
      async (c) => {
        await c.endAsync();
        return null;
      },
      (e: Error & { code?: number }) => e,
    );
    t.equal(err?.code, expectConnack, `an anonymous client reaches Mosquitto through the proxy and is refused by it (CONNACK ${expectConnack})`);
    // The canary's credentials from the rendered proxy config are in the rendered password file.
    const configVolume = pod.volumes.find((v) => v.name === 'proxy-config')!;
    const config = parseYaml(volumeFiles(objects, configVolume).get('config.yaml')!) as { probes: { username: string; password: string } };
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${mqttPort}`, {
      protocolVersion: 4, clientId: 'helm-pod-auth', username: config.probes.username, password: config.probes.password, reconnectPeriod: 0, connectTimeout: 10_000,
    }, false);
    t.pass(`${config.probes.username} connects with the password of the rendered Secret`);
    await client.endAsync();
  }

  // The broker is on loopback only: not reachable on another local address.
  const external = Object.values(os.networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal);
  if (external) {
    const reached = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: external.address, port: sim.brokerPort }, () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    t.notOk(reached, `Mosquitto is not reachable on ${external.address}`);
  } else t.comment('no non-loopback IPv4 address here: the loopback-only check of Mosquitto has nothing to try');

  // The `helm test` pod's own script, with Service names mapped to the local ports.
  const testPod = findObject(objects, 'Pod') as K8sObject & { spec: { containers: Container[] } };
  const tc = testPod.spec.containers[0];
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH };
  for (const e of tc.env ?? []) env[e.name] = e.value;
  const svcByHost = (hostPort: string): number => {
    const [host, port] = hostPort.split(':');
    const svc = objects.find((o) => o.kind === 'Service' && host.startsWith(`${o.metadata.name}.`)) as Svc | undefined;
    if (!svc) throw new Error(`${hostPort} is no Service of the chart`);
    const sp = svc.spec.ports.find((p) => p.port === Number(port));
    if (!sp) throw new Error(`${hostPort}: no such Service port`);
    return sim.servicePort(svc, sp.name);
  };
  env.ADMIN = `127.0.0.1:${svcByHost(env.ADMIN!)}`;
  env.MQTT = `127.0.0.1:${svcByHost(env.MQTT!)}`;
  const [cmd, ...cmdArgs] = [...(tc.command ?? []), ...(tc.args ?? [])];
  t.equal(cmd, 'node');
  const helmTest = spawnSync(process.execPath, cmdArgs, { env, encoding: 'utf8', timeout: 30_000 });
  t.equal(helmTest.status, 0, `helm test script passes locally:\n${helmTest.stdout}${helmTest.stderr}`);
  t.match(helmTest.stdout, /ok \/readyz\nok \/metrics\nok MQTT CONNACK \d+/);

  // The optional exec probe of the broker container works against this Mosquitto.
  if (expectConnack === 0) {
    const withProbe = render({ valuesFiles, set: ['broker.livenessProbe.enabled=true'] });
    const probe = containerOf(podOf(withProbe), 'mosquitto').livenessProbe?.exec?.command;
    t.ok(probe, 'broker.livenessProbe renders an exec probe');
    if (probe) {
      // Only the port after -p changes.
      const portAt = probe.indexOf('-p') + 1;
      const args = probe.map((a, i) => (i === portAt ? String(sim.brokerPort) : a)).slice(1);
      const r = spawnSync(probe[0], args, { encoding: 'utf8', timeout: 15_000 });
      t.equal(r.status, 0, `broker exec probe (${probe.join(' ')}) exits 0 against the running Mosquitto: ${r.stderr}`);
    }
  }

  // SIGTERM: the proxy drains and exits 0.
  const { proxy } = await sim.stop();
  t.equal(proxy, 0, 'the proxy exits 0 on SIGTERM');
}

t.test('broker pod from the default values', async (t) => {
  await checkPod(t, [], 0);
});

t.test('broker pod with a password file and canary credentials (config in a Secret)', async (t) => {
  await checkPod(t, [path.join(CHART, 'ci/auth-values.yaml')], 5);
});

t.test('native sidecar pod', async (t) => {
  await checkPod(t, [path.join(CHART, 'ci/native-sidecar-values.yaml')], 0);
});

