/**
 * The chart's operator-facing details: the generated chart README (what
 * `helm show readme` prints) in step with values.yaml and the schema; a
 * description on every schema property; Chart.yaml metadata; a proxy-only
 * change that leaves the broker alone; set_tcp_nodelay; secrets from an
 * existing Secret; extra volumes, env sources and the image registry.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { CHART, findObject, helm, render, templateArgs, type K8sObject } from '../../scripts/helm.ts';
import { CHART_README, chartReadme } from '../../scripts/chart-readme.ts';
import { REPO_URL } from '../../scripts/project.ts';

interface Container { name: string; image: string; env?: Array<{ name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }>; envFrom?: unknown[]; volumeMounts?: Array<{ name: string; mountPath: string }> }
type Workload = K8sObject & { spec: { template: { metadata: { annotations: Record<string, string> }; spec: { containers: Container[]; initContainers?: Container[]; volumes: Array<{ name: string; configMap?: { name: string }; secret?: unknown }> } } } };

const workload = (objects: K8sObject[]) => findObject(objects, 'Deployment') as Workload;
const container = (w: Workload, name: string) => [...(w.spec.template.spec.initContainers ?? []), ...w.spec.template.spec.containers].find((c) => c.name === name)!;

t.test('the chart README is generated from values.yaml and the schema, and helm show readme prints it', async (t) => {
  const committed = readFileSync(CHART_README, 'utf8');
  t.equal(committed, chartReadme(), 'charts/mqtt-liveness-proxy/README.md is up to date (npx tsx scripts/chart-readme.ts)');
  const shown = helm(['show', 'readme', CHART]);
  t.equal(shown.status, 0, shown.stderr);
  t.equal(shown.stdout.trimEnd(), committed.trimEnd(), 'helm show readme prints it');
  // Every leaf of values.yaml has its row (a value the schema did not know would be refused anyway).
  const rows = new Set([...committed.matchAll(/^\| `([^`]+)` \|/gm)].map((m) => m[1]));
  const leaves: string[] = [];
  const walk = (v: unknown, key: string[]): void => {
    if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length > 0 && !rows.has(key.join('.'))) {
      for (const [k, child] of Object.entries(v)) walk(child, [...key, k]);
    } else leaves.push(key.join('.'));
  };
  walk(parseYaml(readFileSync(path.join(CHART, 'values.yaml'), 'utf8')), []);
  t.ok(leaves.length > 80, `${leaves.length} values`);
  // An empty map in values.yaml (proxy.config.tcp: {}) is covered by the rows of its keys.
  const covered = (k: string) => rows.has(k) || [...rows].some((r) => r.startsWith(`${k}.`));
  t.same(leaves.filter((k) => !covered(k)), [], 'every value of values.yaml is in the README table');
});

t.test('every values.schema.json property has a description', async (t) => {
  const schema = JSON.parse(readFileSync(path.join(CHART, 'values.schema.json'), 'utf8')) as Record<string, unknown>;
  const missing: string[] = [];
  let count = 0;
  const walk = (node: unknown, at: string): void => {
    if (!node || typeof node !== 'object') return;
    const n = node as Record<string, unknown>;
    for (const [k, v] of Object.entries((n.properties ?? {}) as Record<string, Record<string, unknown>>)) {
      count++;
      if (typeof v.description !== 'string' || v.description.length < 8) missing.push(`${at}/properties/${k}`);
    }
    // if/then only constrain properties declared (and described) elsewhere.
    for (const [k, v] of Object.entries(n)) if (k !== 'if' && k !== 'then') walk(v, `${at}/${k}`);
  };
  walk(schema, '#');
  t.ok(count > 150, `${count} properties`);
  t.same(missing, [], 'described');
});

t.test('Chart.yaml: home, sources and maintainers point at the project', async (t) => {
  const chart = parseYaml(readFileSync(path.join(CHART, 'Chart.yaml'), 'utf8')) as { home: string; sources: string[]; maintainers: Array<{ name: string; url?: string }> };
  t.equal(chart.home, REPO_URL);
  t.same(chart.sources, [REPO_URL]);
  t.ok(chart.maintainers.length > 0 && chart.maintainers.every((m) => m.name), 'maintainers named');
  const lint = helm(['lint', '--strict', CHART]);
  t.equal(lint.status, 0, lint.stdout + lint.stderr);
});

t.test('a proxy-only change leaves the broker alone; the broker checksum follows Mosquitto\'s files', async (t) => {
  const base = workload(render({}));
  const sums = base.spec.template.metadata.annotations;
  for (const set of [['proxy.config.keepAlive.max=30'], ['proxy.config.tcp.idle=3', 'proxy.config.logLevel=debug'], ['proxy.config.limits.maxConnections=10']]) {
    const other = workload(render({ set }));
    t.equal(other.spec.template.metadata.annotations['checksum/broker-config'], sums['checksum/broker-config'], `${set.join(' ')}: broker checksum unchanged`);
    t.same(other.spec.template, base.spec.template, `${set.join(' ')}: pod template unchanged, nothing restarts (the proxy reloads its file)`);
  }
  const canary = workload(render({ set: ['proxy.config.probes.interval=3'] })).spec.template.metadata.annotations;
  t.equal(canary['checksum/broker-config'], sums['checksum/broker-config'], 'a canary setting: broker checksum unchanged');
  t.not(canary['checksum/proxy-config'], sums['checksum/proxy-config'], 'a canary setting (not reloadable) rolls the pod');
  const auth = ['broker.auth.enabled=true', 'proxy.config.probes.username=c', 'proxy.config.probes.password=p'];
  const a = workload(render({ set: [...auth, 'broker.auth.passwordFile=u:$7$1'] })).spec.template.metadata.annotations;
  const b = workload(render({ set: [...auth, 'broker.auth.passwordFile=u:$7$2'] })).spec.template.metadata.annotations;
  t.not(a['checksum/broker-config'], b['checksum/broker-config'], 'a new password file rolls the broker (Mosquitto reads it at start)');
});

t.test('the generated mosquitto.conf sets TCP_NODELAY', async (t) => {
  const objects = render({});
  const cm = findObject(objects, 'ConfigMap', (o) => o.metadata.name.endsWith('-mosquitto')) as K8sObject & { data: Record<string, string> };
  t.match(cm.data['mosquitto.conf'], /^set_tcp_nodelay true$/m);
  t.match(readFileSync(path.join(CHART, '../../broker/mosquitto.conf'), 'utf8'), /^set_tcp_nodelay true$/m, 'as the bundled broker/mosquitto.conf');
});

t.test('existingSecret: the token and the password come from a Secret as MLP_ variables, the config stays a ConfigMap', async (t) => {
  const objects = render({ valuesFiles: [path.join(CHART, 'ci/extras-values.yaml')] });
  const w = workload(objects);
  const proxy = container(w, 'proxy');
  const fromSecret = Object.fromEntries((proxy.env ?? []).filter((e) => e.valueFrom?.secretKeyRef).map((e) => [e.name, e.valueFrom!.secretKeyRef]));
  t.same(fromSecret, {
    MLP_ADMIN_TOKEN: { name: 'mqtt-liveness-proxy-secrets', key: 'admin-token' },
    MLP_PROBES__PASSWORD: { name: 'mqtt-liveness-proxy-secrets', key: 'probes-password' },
  });
  t.ok(w.spec.template.spec.volumes.find((v) => v.name === 'proxy-config')?.configMap, 'no secret in values: the config is a ConfigMap');
  t.notOk(objects.some((o) => o.kind === 'Secret'), 'the chart creates no Secret');
  const refused: Array<[string[], RegExp]> = [
    [['proxy.existingSecret.name=s'], /needs adminTokenKey and\/or probesPasswordKey/],
    [['proxy.existingSecret.adminTokenKey=k'], /need proxy\.existingSecret\.name/],
    [['proxy.existingSecret.name=s', 'proxy.existingSecret.adminTokenKey=k', 'proxy.config.adminToken=x'], /either in proxy\.config\.adminToken or in proxy\.existingSecret/],
    [['proxy.existingSecret.name=s', 'proxy.existingSecret.probesPasswordKey=k', 'proxy.config.probes.password=x'], /either in proxy\.config\.probes\.password or in proxy\.existingSecret/],
  ];
  for (const [set, message] of refused) {
    const r = helm(templateArgs({ set }));
    t.not(r.status, 0, `${set.join(' ')}: refused`);
    t.match(r.stderr, message);
  }
});

t.test('extraVolumes, extraVolumeMounts, envFrom and the image registry', async (t) => {
  const objects = render({ valuesFiles: [path.join(CHART, 'ci/extras-values.yaml')] });
  const w = workload(objects);
  t.ok(w.spec.template.spec.volumes.some((v) => v.name === 'ca-bundle' && v.configMap?.name === 'ca-bundle'), 'extra volume');
  t.ok(container(w, 'proxy').volumeMounts?.some((m) => m.name === 'ca-bundle' && m.mountPath === '/etc/ssl/extra'), 'proxy mount');
  t.ok(container(w, 'mosquitto').volumeMounts?.some((m) => m.name === 'ca-bundle' && m.mountPath === '/mosquitto/extra'), 'broker mount');
  t.same(container(w, 'proxy').envFrom, [{ configMapRef: { name: 'mqtt-liveness-proxy-env' } }]);
  // global.imageRegistry wins over proxy.image.registry, for every image (the helm test pod too).
  t.equal(container(w, 'proxy').image, 'registry.example.com/mirror/mqtt-liveness-proxy:0.1.0');
  t.equal(container(w, 'mosquitto').image, 'registry.example.com/mirror/eclipse-mosquitto:2');
  const testPod = findObject(objects, 'Pod') as K8sObject & { spec: { containers: Container[] } };
  t.equal(testPod.spec.containers[0].image, 'registry.example.com/mirror/mqtt-liveness-proxy:0.1.0');
  const own = workload(render({ set: ['proxy.image.registry=registry.example.com/', 'proxy.image.digest=sha256:' + 'a'.repeat(64)] }));
  t.equal(container(own, 'proxy').image, `registry.example.com/mqtt-liveness-proxy@sha256:${'a'.repeat(64)}`, 'image.registry alone, with a digest');
  t.equal(container(own, 'mosquitto').image, 'eclipse-mosquitto:2', 'the broker image keeps no registry');
});
