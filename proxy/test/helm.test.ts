/**
 * The Helm chart: helm lint --strict and helm template for the defaults and
 * every ci/*-values.yaml; every rendered object validated with
 * kubernetes-models (plus an unknown-field check); the chart's own promises
 * (security defaults, probes, ports, config, monitoring objects) asserted;
 * values rejected by values.schema.json and by the templates' checks.
 * helm 4 comes from scripts/helm.sh (devDependency zip, offline).
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Pod } from 'kubernetes-models/v1/Pod';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import { CHART, ROOT, findObject, helm, render, templateArgs, type K8sObject } from '../../scripts/helm.ts';
import { unknownFields } from '../../scripts/k8s-strict.ts';
import { syncChart } from '../../scripts/sync-chart.ts';
import { loadConfigFile } from '../src/config/load.ts';
import { formatHostPort } from '../src/config/types.ts';

// ---------------------------------------------------------------- helpers

type Validator = (o: K8sObject) => void;
const MODELS: Record<string, Validator> = {
  'v1/ConfigMap': (o) => new ConfigMap(o).validate(),
  'v1/Secret': (o) => new Secret(o).validate(),
  'v1/Service': (o) => new Service(o).validate(),
  'v1/ServiceAccount': (o) => new ServiceAccount(o).validate(),
  'v1/Pod': (o) => new Pod(o).validate(),
  'apps/v1/Deployment': (o) => new Deployment(o).validate(),
  'apps/v1/StatefulSet': (o) => new StatefulSet(o).validate(),
  'networking.k8s.io/v1/NetworkPolicy': (o) => new NetworkPolicy(o).validate(),
  'policy/v1/PodDisruptionBudget': (o) => new PodDisruptionBudget(o).validate(),
  'monitoring.coreos.com/v1/ServiceMonitor': (o) => new ServiceMonitor(o as never).validate(),
  'monitoring.coreos.com/v1/PrometheusRule': (o) => new PrometheusRule(o as never).validate(),
};

interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  restartPolicy?: string;
  ports?: Array<{ name: string; containerPort: number }>;
  securityContext?: Record<string, unknown> & { capabilities?: { drop?: string[] }; seccompProfile?: { type: string } };
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  volumeMounts?: Array<{ name: string; mountPath: string }>;
}
interface Probe {
  httpGet?: { path: string; port: string | number };
  exec?: { command: string[] };
}
interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  securityContext?: Record<string, unknown> & { seccompProfile?: { type: string } };
  volumes?: Array<{ name: string; configMap?: { name: string }; secret?: { secretName: string } }>;
  serviceAccountName?: string;
}

const CI_DIR = path.join(CHART, 'ci');
const CI_FILES = readdirSync(CI_DIR).filter((f) => f.endsWith('-values.yaml')).sort();
const SETS: Array<{ name: string; valuesFiles: string[] }> = [
  { name: 'chart defaults', valuesFiles: [] },
  ...CI_FILES.map((f) => ({ name: `ci/${f}`, valuesFiles: [path.join(CI_DIR, f)] })),
];

function workload(objects: K8sObject[]): K8sObject & { spec: { replicas: number; template: { metadata: { annotations: Record<string, string>; labels: Record<string, string> }; spec: PodSpec } } } {
  const found = objects.filter((o) => o.kind === 'Deployment' || o.kind === 'StatefulSet');
  if (found.length !== 1) throw new Error(`expected one Deployment or StatefulSet, got ${found.length}`);
  return found[0] as never;
}

function proxyContainer(spec: PodSpec): Container {
  const all = [...(spec.initContainers ?? []), ...spec.containers].filter((c) => c.name === 'proxy');
  if (all.length !== 1) throw new Error(`expected one proxy container, got ${all.length}`);
  return all[0];
}

/** The proxy's configuration file as rendered (ConfigMap or Secret). */
function proxyConfigText(objects: K8sObject[], spec: PodSpec): string {
  const volume = spec.volumes?.find((v) => v.name === 'proxy-config');
  if (!volume) throw new Error('no proxy-config volume');
  if (volume.configMap) {
    const cm = findObject(objects, 'ConfigMap', (o) => o.metadata.name === volume.configMap!.name) as K8sObject & { data: Record<string, string> };
    return cm.data['config.yaml'];
  }
  const secret = findObject(objects, 'Secret', (o) => o.metadata.name === volume.secret!.secretName) as K8sObject & { stringData: Record<string, string> };
  return secret.stringData['config.yaml'];
}

function mosquittoConf(objects: K8sObject[], spec: PodSpec): string {
  const volume = spec.volumes?.find((v) => v.name === 'mosquitto-config');
  if (!volume?.configMap) throw new Error('no mosquitto-config volume');
  const cm = findObject(objects, 'ConfigMap', (o) => o.metadata.name === volume.configMap!.name) as K8sObject & { data: Record<string, string> };
  return cm.data['mosquitto.conf'];
}

function labelsMatch(selector: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

function readValues(files: string[]): Record<string, unknown> {
  const merged: Record<string, unknown> = {};
  for (const f of files) Object.assign(merged, parseYaml(readFileSync(f, 'utf8')) ?? {});
  return merged;
}

// ------------------------------------------------------------------ tests

t.test('helm is available offline from the devDependency', async (t) => {
  const r = helm(['version', '--short']);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^v4\./, 'helm 4');
});

t.test('chart copies and the generated schema part are in sync', async (t) => {
  const stale = syncChart('check');
  t.same(stale, [], `out of date: ${stale.join(', ')} (run npx tsx scripts/sync-chart.ts)`);
});

t.test('Chart.yaml', async (t) => {
  const chart = parseYaml(readFileSync(path.join(CHART, 'Chart.yaml'), 'utf8')) as Record<string, string>;
  t.equal(chart.apiVersion, 'v2');
  t.equal(chart.name, 'mqtt-liveness-proxy');
  t.equal(chart.kubeVersion, '>=1.25.0-0');
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  t.equal(chart.appVersion, pkg.version, 'appVersion follows package.json (image tag default)');
  const schema = JSON.parse(readFileSync(path.join(CHART, 'values.schema.json'), 'utf8')) as Record<string, unknown>;
  t.equal(schema.$schema, 'http://json-schema.org/draft-07/schema#');
  t.equal(schema.additionalProperties, false);
  const refs = JSON.stringify(schema).match(/"\$ref":"[^"]+"/g) ?? [];
  t.ok(refs.length > 0 && refs.every((r) => r.startsWith('"$ref":"#/definitions/')), 'only local refs');
  // every object schema with properties closes them
  const open: string[] = [];
  const walk = (node: unknown, at: string): void => {
    if (!node || typeof node !== 'object') return;
    const n = node as Record<string, unknown>;
    // global is shared with parent charts: other charts' keys must pass.
    if (n.properties && n.additionalProperties !== false && at !== '#/properties/global') open.push(at);
    // if/then only add constraints to properties declared elsewhere
    for (const [k, v] of Object.entries(n)) if (k !== 'if' && k !== 'then') walk(v, `${at}/${k}`);
  };
  walk(schema, '#');
  t.same(open, [], 'additionalProperties: false wherever properties are declared');
});

for (const set of SETS) {
  t.test(`helm lint --strict: ${set.name}`, async (t) => {
    const args = ['lint', '--strict', CHART];
    for (const f of set.valuesFiles) args.push('-f', f);
    const r = helm(args);
    t.equal(r.status, 0, r.status === 0 ? 'lint passes' : `${r.stdout}\n${r.stderr}`);
    t.notMatch(r.stdout, /\[(WARNING|ERROR)\]/, 'no warnings');
  });

  t.test(`helm install --dry-run=client and NOTES.txt: ${set.name}`, async (t) => {
    const args = ['install', 'notes', CHART, '--dry-run=client', '--namespace', 'mqtt'];
    for (const f of set.valuesFiles) args.push('-f', f);
    const r = helm(args);
    t.equal(r.status, 0, r.status === 0 ? 'a client-side dry-run install succeeds' : r.stderr);
    const notes = r.stdout.slice(r.stdout.indexOf('NOTES:'));
    t.match(notes, /MQTT clients connect to:\n\s+[a-z0-9-]+\.mqtt\.svc:\d+/, 'NOTES name the MQTT Service');
    t.match(notes, /helm test notes -n mqtt/);
    t.notMatch(r.stdout, /<no value>|%!/, 'no unset template values anywhere');
  });

  t.test(`helm template: ${set.name}`, async (t) => {
    const objects = render({ valuesFiles: set.valuesFiles });
    const values = readValues(set.valuesFiles) as {
      mode?: string;
      proxy?: { nativeSidecar?: boolean; upstream?: string; tls?: { enabled?: boolean } };
      broker?: { persistence?: { enabled?: boolean }; auth?: { enabled?: boolean }; livenessProbe?: { enabled?: boolean } };
    };
    const mode = values.mode ?? 'broker';

    t.test('every object is a valid Kubernetes object', async (t) => {
      for (const o of objects) {
        const id = `${o.kind}/${o.metadata.name}`;
        const validate = MODELS[`${o.apiVersion}/${o.kind}`];
        if (!validate) {
          t.fail(`${id}: no model for ${o.apiVersion} ${o.kind}`);
          continue;
        }
        t.doesNotThrow(() => validate(o), `${id} validates`);
        t.same(unknownFields(o), [], `${id} has no unknown fields`);
        for (const label of ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/version', 'app.kubernetes.io/managed-by', 'helm.sh/chart']) {
          t.ok(o.metadata.labels?.[label], `${id} has label ${label}`);
        }
        t.ok(o.metadata.name.length <= 63, `${id}: name fits 63 characters`);
      }
      const names = objects.map((o) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`);
      t.same(names.filter((n, i) => names.indexOf(n) !== i), [], 'no duplicate objects');
    });

    const w = workload(objects);
    const pod = w.spec.template.spec;
    const proxy = proxyContainer(pod);

    t.test('workload kind and containers for the mode', async (t) => {
      const names = pod.containers.map((c) => c.name);
      if (mode === 'standalone') {
        t.equal(w.kind, 'Deployment');
        t.same(names, ['proxy'], 'the proxy alone');
        t.notOk(objects.some((o) => o.metadata.name.endsWith('-mosquitto')), 'no Mosquitto config');
      } else {
        t.equal(w.kind, values.broker?.persistence?.enabled ? 'StatefulSet' : 'Deployment');
        t.equal(w.spec.replicas, 1, 'one broker pod');
        t.ok(names.includes('mosquitto'));
        const mosquitto = pod.containers.find((c) => c.name === 'mosquitto')!;
        t.match(mosquitto.image, /^([^/]+\/)*eclipse-mosquitto[:@]/, 'the eclipse-mosquitto image (behind image.registry if set)');
        t.same(mosquitto.command, ['/usr/sbin/mosquitto', '-c', '/mosquitto/config/mosquitto.conf']);
        t.notOk(mosquitto.ports?.length, 'Mosquitto exposes no port: clients go through the proxy');
        if (values.proxy?.nativeSidecar) {
          t.same(pod.initContainers?.map((c) => c.name), ['proxy'], 'native sidecar');
          t.equal(proxy.restartPolicy, 'Always');
          t.notOk(names.includes('proxy'));
        } else {
          t.notOk(pod.initContainers, 'no init containers');
          t.ok(names.includes('proxy'));
          t.notOk(proxy.restartPolicy);
        }
        if (values.broker?.livenessProbe?.enabled) t.ok(mosquitto.livenessProbe?.exec, 'optional exec probe on the broker');
        else t.notOk(mosquitto.livenessProbe, 'broker health comes from the proxy');
      }
      if (w.kind === 'StatefulSet') {
        const sts = w as unknown as { spec: { serviceName: string; volumeClaimTemplates: Array<{ metadata: { name: string } }> } };
        t.same(sts.spec.volumeClaimTemplates.map((v) => v.metadata.name), ['data']);
        t.ok(objects.some((o) => o.kind === 'Service' && o.metadata.name === sts.spec.serviceName), 'the governing Service exists');
        t.ok(pod.containers.find((c) => c.name === 'mosquitto')!.volumeMounts!.some((m) => m.name === 'data' && m.mountPath === '/mosquitto/data'));
      }
    });

    t.test('security defaults', async (t) => {
      const pods: Array<[string, PodSpec]> = [[`${w.kind}`, pod]];
      for (const o of objects.filter((x) => x.kind === 'Pod')) pods.push([`Pod/${o.metadata.name}`, (o as unknown as { spec: PodSpec }).spec]);
      for (const [where, spec] of pods) {
        t.equal(spec.securityContext?.runAsNonRoot, true, `${where}: pod runAsNonRoot`);
        t.equal(spec.securityContext?.seccompProfile?.type, 'RuntimeDefault', `${where}: pod seccomp RuntimeDefault`);
        for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
          const sc = c.securityContext ?? {};
          const id = `${where} container ${c.name}`;
          t.equal(sc.runAsNonRoot, true, `${id}: runAsNonRoot`);
          t.ok(typeof sc.runAsUser === 'number' && sc.runAsUser > 0, `${id}: numeric non-root runAsUser`);
          t.equal(sc.readOnlyRootFilesystem, true, `${id}: readOnlyRootFilesystem`);
          t.equal(sc.allowPrivilegeEscalation, false, `${id}: allowPrivilegeEscalation false`);
          t.same(sc.capabilities?.drop, ['ALL'], `${id}: drops ALL capabilities`);
          t.equal(sc.seccompProfile?.type, 'RuntimeDefault', `${id}: seccomp RuntimeDefault`);
        }
      }
      const podMeta = pod as unknown as { automountServiceAccountToken: boolean };
      t.equal(podMeta.automountServiceAccountToken, false, 'no API token in the pod');
      t.notOk(proxy.volumeMounts?.some((m) => m.mountPath === '/tmp'), 'compiled JavaScript: no writable /tmp (tsx cache) needed');
    });

    t.test('proxy container: command, config, probes, ports', async (t) => {
      t.same(proxy.command, ['node', '--max-semi-space-size=8', '/app/proxy/bin/mqtt-liveness-proxy.js'], 'node with the heap flags of the bin (launch-flags.test.ts)');
      t.same(proxy.args?.slice(0, 2), ['--config', '/etc/mqtt-liveness-proxy/config/config.yaml']);
      t.ok(proxy.volumeMounts?.some((m) => m.name === 'proxy-config' && m.mountPath === '/etc/mqtt-liveness-proxy/config'));
      t.same(proxy.startupProbe?.httpGet, { path: '/livez', port: 'admin' }, 'startup probe on /livez (must not wait for the broker)');
      t.same(proxy.livenessProbe?.httpGet, { path: '/livez', port: 'admin' });
      t.same(proxy.readinessProbe?.httpGet, { path: '/readyz', port: 'admin' });
      const ports = Object.fromEntries((proxy.ports ?? []).map((p) => [p.name, p.containerPort]));
      t.ok(ports.mqtt && ports.admin, 'mqtt and admin ports are declared');
      if (values.proxy?.tls?.enabled) t.ok(ports.mqtts, 'mqtts port');

      // The rendered configuration is valid for the proxy itself.
      const text = proxyConfigText(objects, pod);
      const config = loadConfigFile('rendered config.yaml', text);
      t.equal(config.broker, 'none', 'Mosquitto runs in its own container (or elsewhere)');
      t.equal(formatHostPort(config.listen), `0.0.0.0:${ports.mqtt}`);
      t.equal(formatHostPort(config.admin), `0.0.0.0:${ports.admin}`);
      if (mode === 'standalone') t.equal(formatHostPort(config.upstream), values.proxy?.upstream);
      else {
        const conf = mosquittoConf(objects, pod);
        // With proxyProtocol.upstream v2 the proxy uses the second listener (enable_proxy_protocol 2).
        const pp = (config as { proxyProtocol?: { upstream?: string } }).proxyProtocol?.upstream === 'v2';
        const listeners = [...conf.matchAll(/^listener (\d+) (\S+)$/gm)];
        const listener = pp ? /^listener (\d+) (\S+)\nenable_proxy_protocol 2$/m.exec(conf) : listeners[0];
        t.ok(listener, 'mosquitto.conf has a listener');
        t.ok(listeners.every((l) => l[2] === '127.0.0.1'), 'Mosquitto listens on loopback only');
        t.equal(formatHostPort(config.upstream), `127.0.0.1:${listener?.[1]}`, 'the proxy forwards to that listener');
        t.equal(listeners.length, pp ? 2 : 1, pp ? 'two listeners: plain (probes) and PROXY (the proxy)' : 'one listener');
        if (values.broker?.auth?.enabled) {
          t.match(conf, /^allow_anonymous false$/m);
          t.match(conf, /^password_file \/mosquitto\/auth\//m);
        } else t.match(conf, /^allow_anonymous true$/m);
        t.match(conf, values.broker?.persistence?.enabled ? /^persistence true$/m : /^persistence false$/m);
      }
      if (values.proxy?.tls?.enabled) {
        t.equal(config.tls.listen && formatHostPort(config.tls.listen), `0.0.0.0:${ports.mqtts}`);
        t.ok(config.tls.cert?.startsWith('/etc/mqtt-liveness-proxy/tls/'));
        t.ok(proxy.volumeMounts?.some((m) => m.name === 'tls' && m.mountPath === '/etc/mqtt-liveness-proxy/tls'));
      }
      if (config.adminToken || config.probes.password) {
        t.ok(pod.volumes?.find((v) => v.name === 'proxy-config')?.secret, 'secrets in the config: stored in a Secret');
      }
    });

    t.test('checksums roll the pod only for what the proxy cannot reload, and for the broker\'s files', async (t) => {
      const sums = w.spec.template.metadata.annotations;
      t.match(sums['checksum/proxy-config'], /^[0-9a-f]{64}$/);
      const restart = workload(render({ valuesFiles: set.valuesFiles, set: ['proxy.config.events.webhook=http://hook.example/'] })).spec.template.metadata.annotations;
      t.not(restart['checksum/proxy-config'], sums['checksum/proxy-config'], 'a key the proxy cannot reload changes checksum/proxy-config');
      const reloadable = workload(render({ valuesFiles: set.valuesFiles, set: ['proxy.config.connectTimeout=7'] }));
      t.same(reloadable.spec.template, w.spec.template, 'a reloadable proxy key leaves the pod template as it was');
      if (mode === 'broker') {
        t.match(sums['checksum/broker-config'], /^[0-9a-f]{64}$/);
        t.equal(restart['checksum/broker-config'], sums['checksum/broker-config'], 'a proxy key leaves the broker checksum');
        const other2 = workload(render({ valuesFiles: set.valuesFiles, set: ['broker.extraConfig=max_keepalive 120'] })).spec.template.metadata.annotations;
        t.not(other2['checksum/broker-config'], sums['checksum/broker-config'], 'mosquitto.conf change');
        t.equal(other2['checksum/proxy-config'], sums['checksum/proxy-config'], 'mosquitto.conf change leaves the proxy checksum');
      } else {
        t.notOk('checksum/broker-config' in sums, 'no broker, no broker checksum');
      }
    });

    t.test('Services target declared ports; the ServiceMonitor finds the metrics Service', async (t) => {
      const podPorts = new Map((proxy.ports ?? []).map((p) => [p.name, p.containerPort]));
      const services = objects.filter((o) => o.kind === 'Service') as Array<K8sObject & { spec: { selector: Record<string, string>; ports: Array<{ name: string; port: number; targetPort: string }> } }>;
      for (const svc of services) {
        t.ok(labelsMatch(svc.spec.selector, w.spec.template.metadata.labels), `${svc.metadata.name} selects the pod`);
        for (const p of svc.spec.ports) t.ok(podPorts.has(p.targetPort), `${svc.metadata.name}:${p.name} -> ${p.targetPort} is a proxy port`);
      }
      const mqtt = findObject(objects, 'Service', (o) => o.metadata.labels?.['app.kubernetes.io/component'] === 'mqtt') as (typeof services)[number];
      t.ok(mqtt.spec.ports.every((p) => ['mqtt', 'mqtts', 'ws'].includes(p.targetPort)), 'the MQTT Service exposes only MQTT (TCP, TLS, WebSocket)');
      const metrics = findObject(objects, 'Service', (o) => o.metadata.labels?.['app.kubernetes.io/component'] === 'metrics') as (typeof services)[number];
      t.same(metrics.spec.ports.map((p) => p.targetPort), ['admin']);
      t.equal((metrics.spec as { type?: string }).type, 'ClusterIP', 'the admin port stays inside the cluster');
      const sm = objects.find((o) => o.kind === 'ServiceMonitor') as (K8sObject & { spec: { selector: { matchLabels: Record<string, string> }; endpoints: Array<{ port: string; path: string }>; jobLabel?: string } }) | undefined;
      if (sm) {
        const selected = services.filter((s) => labelsMatch(sm.spec.selector.matchLabels, s.metadata.labels));
        t.same(selected.map((s) => s.metadata.name), [metrics.metadata.name], 'selects exactly the metrics Service');
        t.ok(metrics.spec.ports.some((p) => p.name === sm.spec.endpoints[0].port), 'endpoint port is a port of that Service');
        t.equal(sm.spec.endpoints[0].path, '/metrics');
        t.equal(metrics.metadata.labels?.[sm.spec.jobLabel ?? ''], 'mqtt-liveness-proxy', 'job label = mqtt-liveness-proxy (what grafana/rules.yaml matches)');
      }
    });

    t.test('monitoring objects carry the canonical files', async (t) => {
      const rule = objects.find((o) => o.kind === 'PrometheusRule') as (K8sObject & { spec: unknown }) | undefined;
      if (rule) t.same(rule.spec, parseYaml(readFileSync(path.join(ROOT, 'grafana/rules.yaml'), 'utf8')), 'PrometheusRule spec = grafana/rules.yaml');
      const dash = objects.find((o) => o.metadata.name.endsWith('-dashboard')) as (K8sObject & { data: Record<string, string> }) | undefined;
      if (dash) {
        t.equal(dash.data['mqtt-liveness-proxy.json'], readFileSync(path.join(ROOT, 'grafana/mqtt-liveness-proxy.json'), 'utf8').replace(/\n$/, ''), 'dashboard = grafana/mqtt-liveness-proxy.json');
        const v = readValues(set.valuesFiles) as { grafanaDashboard?: { labelKey?: string; labelValue?: string } };
        t.equal(dash.metadata.labels?.[v.grafanaDashboard?.labelKey ?? 'grafana_dashboard'], v.grafanaDashboard?.labelValue ?? '1', 'sidecar label');
      }
      const enabled = readValues(set.valuesFiles) as { serviceMonitor?: { enabled?: boolean; additionalLabels?: Record<string, string> }; prometheusRule?: { enabled?: boolean; additionalLabels?: Record<string, string> } };
      t.equal(Boolean(objects.find((o) => o.kind === 'ServiceMonitor')), Boolean(enabled.serviceMonitor?.enabled), 'ServiceMonitor only when enabled');
      t.equal(Boolean(rule), Boolean(enabled.prometheusRule?.enabled), 'PrometheusRule only when enabled');
      for (const [kind, extra] of [['ServiceMonitor', enabled.serviceMonitor?.additionalLabels], ['PrometheusRule', enabled.prometheusRule?.additionalLabels]] as const) {
        const o = objects.find((x) => x.kind === kind);
        if (o && extra) t.ok(labelsMatch(extra, o.metadata.labels), `${kind} has additionalLabels`);
      }
    });

    t.test('helm test pod', async (t) => {
      const testPod = objects.find((o) => o.kind === 'Pod') as (K8sObject & { spec: PodSpec & { containers: Array<Container & { env: Array<{ name: string; value: string }> }> } }) | undefined;
      const wanted = (readValues(set.valuesFiles) as { tests?: { enabled?: boolean } }).tests?.enabled ?? true;
      t.equal(Boolean(testPod), wanted);
      if (!testPod) return;
      t.equal(testPod.metadata.annotations?.['helm.sh/hook'], 'test');
      const env = Object.fromEntries(testPod.spec.containers[0].env.map((e) => [e.name, e.value]));
      const metrics = findObject(objects, 'Service', (o) => o.metadata.labels?.['app.kubernetes.io/component'] === 'metrics');
      const mqtt = findObject(objects, 'Service', (o) => o.metadata.labels?.['app.kubernetes.io/component'] === 'mqtt');
      t.match(env.ADMIN, new RegExp(`^${metrics.metadata.name}\\.mqtt\\.svc:\\d+$`), 'checks the metrics Service');
      t.match(env.MQTT, new RegExp(`^${mqtt.metadata.name}\\.mqtt\\.svc:\\d+$`), 'connects through the MQTT Service');
    });
  });
}

t.test('values that must be refused', async (t) => {
  const cases: Array<[string, string[], RegExp, string?]> = [
    ['an unknown top-level key', ['bogus=1'], /additional properties 'bogus' not allowed/],
    ['an unknown key in proxy.config (from schema.ts)', ['proxy.config.keepAlive.gracee=1'], /additional properties 'gracee' not allowed/],
    ['a key the chart owns', ['proxy.config.listen=0.0.0.0:1'], /additional properties 'listen' not allowed/],
    ['an out-of-range proxy value', ['proxy.config.tcp.count=1000'], /tcp\/count.*maximum/],
    ['a wrong enum', ['mode=cluster'], /mode.*(enum|value must be one of)/i],
    ['an unknown key under broker', ['broker.persistance.enabled=true'], /additional properties 'persistance' not allowed/],
    ['standalone without upstream', ['mode=standalone'], /upstream/],
    ['an upstream that is not HOST:PORT', ['mode=standalone', 'proxy.upstream=broker'], /upstream.*pattern|does not match pattern/],
    ['auth without a password file', ['broker.auth.enabled=true', 'proxy.config.probes.username=c'], /existingSecret or broker\.auth\.passwordFile/],
    ['auth without canary credentials', ['broker.auth.enabled=true', 'broker.auth.existingSecret=s'], /canary needs proxy\.config\.probes\.username/],
    ['shutdownGrace not below the pod grace period', ['proxy.config.shutdownGrace=30'], /must be shorter than terminationGracePeriodSeconds/],
    ['shutdownDelay + shutdownGrace not below the pod grace period', ['proxy.config.shutdownGrace=20', 'proxy.config.shutdownDelay=10'], /shutdownDelay \+ shutdownGrace \(10 \+ 20 s\) must be shorter than terminationGracePeriodSeconds \(30 s\)/],
    ['TLS without a Secret', ['proxy.tls.enabled=true'], /proxy\.tls\.secretName/],
  ];
  for (const [name, set, message] of cases) {
    const r = helm(templateArgs({ set }));
    t.not(r.status, 0, `${name}: refused`);
    t.match(r.stderr, message, `${name}: ${r.stderr.trim().split('\n').filter((l) => l && !l.startsWith('Use --debug')).slice(-1)[0]}`);
  }
  const lint = helm(['lint', '--strict', CHART, '--set', 'bogus=1']);
  t.not(lint.status, 0, 'helm lint refuses an unknown key too');

  const old = helm(templateArgs({ set: ['proxy.nativeSidecar=true'], kubeVersion: '1.28.0' }));
  t.not(old.status, 0);
  t.match(old.stderr, /nativeSidecar needs Kubernetes >= 1\.29/, 'native sidecar needs 1.29');
  t.equal(helm(templateArgs({ set: ['proxy.nativeSidecar=true'], kubeVersion: '1.29.0' })).status, 0, 'fine on 1.29');
  const tooOld = helm(templateArgs({ kubeVersion: '1.24.0' }));
  t.not(tooOld.status, 0);
  t.match(tooOld.stderr, /kubeVersion|incompatible/i, 'Chart.yaml kubeVersion refuses 1.24');
});

t.test('every ci values file is schema-valid and exercised', async (t) => {
  // Each toggle of values.yaml that changes the objects is turned on in some ci file.
  const all = CI_FILES.map((f) => readFileSync(path.join(CI_DIR, f), 'utf8')).join('\n');
  for (const needle of ['mode: standalone', 'nativeSidecar: true', 'persistence:', 'auth:', 'existingSecret:', 'tls:', 'serviceMonitor:', 'prometheusRule:', 'grafanaDashboard:', 'networkPolicy:', 'egress:', 'livenessProbe:', 'minAvailable:', 'create: false', 'tests:', 'digest:', 'LoadBalancer', 'NodePort', 'imageRegistry:', 'envFrom:', 'extraVolumes:', 'extraVolumeMounts:', 'adminTokenKey:', 'websocket:', 'proxyProtocol:', 'wsPort:']) {
    t.ok(all.includes(needle), `a ci values file sets ${needle}`);
  }
  t.ok(CI_FILES.includes('default-values.yaml'));
});

t.test('WebSocket port and PROXY out: container and Service ports, mosquitto.conf, the proxy\'s upstream', async (t) => {
  const off = helm(templateArgs({}));
  t.notMatch(off.stdout, /name: ws\b/, 'no ws port by default');
  t.notMatch(off.stdout, /enable_proxy_protocol/, 'no PROXY listener by default');
  const on = helm(templateArgs({ set: ['proxy.websocket.enabled=true', 'proxy.config.proxyProtocol.upstream=v2'] }));
  t.equal(on.status, 0, on.stderr);
  t.match(on.stdout, /- name: ws\n\s+containerPort: 8080/, 'container port ws 8080');
  t.match(on.stdout, /- name: ws\n\s+port: 8080\n\s+targetPort: ws/, 'Service port ws -> ws');
  t.match(on.stdout, /listener 1885 127\.0\.0\.1\n\s*enable_proxy_protocol 2/, 'a second Mosquitto listener with enable_proxy_protocol 2');
  t.match(on.stdout, /listener 1884 127\.0\.0\.1/, 'the plain loopback listener stays (probes)');
  t.match(on.stdout, /upstream: 127\.0\.0\.1:1885/, 'the proxy connects to the PROXY listener');
  t.match(on.stdout, /websocket:\n\s+listen: 0\.0\.0\.0:8080\n\s+path: \/mqtt\n\s+tls: false/, 'websocket section of the proxy config');
  const wss = helm(templateArgs({ set: ['proxy.websocket.enabled=true', 'proxy.websocket.tls=true'] }));
  t.not(wss.status, 0);
  t.match(wss.stderr, /websocket\.tls \(wss\) needs proxy\.tls\.enabled/);
});

t.test('the checksums are sha256 sums of content, not constants', async (t) => {
  const a = workload(render({})).spec.template.metadata.annotations;
  const b = workload(render({ set: ['proxy.config.probes.interval=3', 'broker.extraConfig=max_keepalive 120'] })).spec.template.metadata.annotations;
  for (const key of ['checksum/proxy-config', 'checksum/broker-config']) {
    t.not(a[key], b[key], key);
    t.not(a[key], createHash('sha256').update('').digest('hex'), `${key} is not the sum of nothing`);
  }
});
