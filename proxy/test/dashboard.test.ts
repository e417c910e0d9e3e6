/**
 * The Grafana dashboard: the committed grafana/mqtt-liveness-proxy.json is
 * what grafana/dashboard.ts generates (and the chart's copy is the same), and
 * it passes dashboard-linter style rules: a datasource variable used by every
 * panel and query, namespace/job/instance variables and matchers on every selector,
 * $__rate_interval in every rate, _total only inside rate/increase, _bucket
 * only inside histogram_quantile or heatmap-format queries, a unit and a
 * description on every panel, metric names from docs/METRICS-CONTRACT.md.
 * Every query must also parse: promtool checks them as recording rules.
 * (dashboard-data.test.ts runs them against a real Prometheus.)
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stringify as stringifyYaml } from 'yaml';
import { dashboardJson } from '../../grafana/dashboard.ts';
import { ROOT } from '../../scripts/sync-chart.ts';
import { findExecutable } from '../src/broker/supervisor.ts';

interface Target {
  expr: string;
  legendFormat?: string;
  format?: string;
  refId: string;
  datasource?: { type: string; uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  description?: string;
  datasource?: { type: string; uid: string };
  fieldConfig?: { defaults?: { unit?: string } };
  options?: { yAxis?: { unit?: string }; calculate?: boolean };
  targets?: Target[];
  repeat?: string;
}
interface Variable {
  type: string;
  name: string;
  query: string | { query: string };
  datasource?: { uid: string };
  multi?: boolean;
  includeAll?: boolean;
  allValue?: string;
}

const FILE = path.join(ROOT, 'grafana/mqtt-liveness-proxy.json');
const committed = readFileSync(FILE, 'utf8');
const dashboard = JSON.parse(committed) as { uid: string; title: string; tags: string[]; panels: Panel[]; templating: { list: Variable[] } };
const panels = dashboard.panels.filter((p) => p.type !== 'row');
const CONTRACT = readFileSync(path.join(ROOT, 'docs/METRICS-CONTRACT.md'), 'utf8');
const METRIC = /\b(mqtt_liveness_[a-z_]+|process_[a-z_]+|nodejs_[a-z0-9_]+)\b/g;

t.test('the committed JSON is the generated one, and the chart has the same', async (t) => {
  t.equal(committed, dashboardJson(), 'grafana/mqtt-liveness-proxy.json is up to date (npx tsx grafana/build-dashboard.ts)');
  t.equal(readFileSync(path.join(ROOT, 'charts/mqtt-liveness-proxy/files/mqtt-liveness-proxy.json'), 'utf8'), committed, 'chart copy (npx tsx scripts/sync-chart.ts)');
});

t.test('dashboard metadata', async (t) => {
  t.equal(dashboard.uid, 'mqtt-liveness-proxy');
  t.ok(dashboard.title);
  t.ok(dashboard.tags.includes('mqtt'));
  const ids = dashboard.panels.map((p) => p.id);
  t.same(ids.filter((id, i) => ids.indexOf(id) !== i), [], 'unique panel ids');
  t.ok(panels.length >= 20, `${panels.length} panels`);
});

t.test('variables', async (t) => {
  const vars = new Map(dashboard.templating.list.map((v) => [v.name, v]));
  const ds = vars.get('datasource');
  t.equal(ds?.type, 'datasource', 'a datasource variable');
  t.equal(ds?.query, 'prometheus');
  t.same(dashboard.templating.list.map((v) => v.name).slice(0, 4), ['datasource', 'namespace', 'job', 'instance'], 'namespace, job, instance: each narrows the next');
  for (const name of ['namespace', 'job', 'instance']) {
    const v = vars.get(name);
    t.equal(v?.type, 'query', `${name} variable`);
    t.equal(v?.datasource?.uid, '${datasource}', `${name} uses the datasource variable`);
    t.ok(v?.multi && v.includeAll && v.allValue === '.*', `${name}: multi, All = .*`);
  }
  t.match((vars.get('namespace')?.query as { query: string }).query, /^label_values\(mqtt_liveness_build_info, namespace\)$/);
  t.match((vars.get('job')?.query as { query: string }).query, /^label_values\(mqtt_liveness_build_info\{namespace=~"\$namespace"\}, job\)$/);
  t.match((vars.get('instance')?.query as { query: string }).query, /^label_values\(mqtt_liveness_build_info\{namespace=~"\$namespace", job=~"\$job"\}, instance\)$/);
  for (const p of panels) if (p.repeat) t.ok(vars.has(p.repeat), `${p.title}: repeats over an existing variable`);
});

t.test('every panel: datasource variable, unit, description, queries', async (t) => {
  for (const p of panels) {
    const id = `panel ${p.id} "${p.title}"`;
    t.equal(p.datasource?.uid, '${datasource}', `${id}: datasource variable`);
    t.ok(p.fieldConfig?.defaults?.unit, `${id}: unit`);
    t.ok((p.description ?? '').length >= 20, `${id}: description`);
    t.ok(p.targets && p.targets.length > 0, `${id}: queries`);
    for (const target of p.targets ?? []) {
      const tid = `${id} ${target.refId}`;
      t.equal(target.datasource?.uid, '${datasource}', `${tid}: datasource variable`);
      t.ok(target.legendFormat, `${tid}: legend`);
      lintExpr(t, target.expr, p, target, tid);
    }
    if (p.type === 'heatmap') {
      t.equal(p.options?.calculate, false, `${id}: buckets from Prometheus, not calculated`);
      t.ok(p.options?.yAxis?.unit, `${id}: y axis unit`);
    }
  }
});

function lintExpr(t: Test, expr: string, p: Panel, target: Target, id: string): void {
  // Every selector names a metric and carries the namespace, job and instance matchers.
  const names = [...expr.matchAll(METRIC)];
  t.ok(names.length > 0, `${id}: uses a metric`);
  for (const m of names) {
    const after = expr.slice(m.index + m[0].length);
    const selector = /^\{([^}]*)\}/.exec(after);
    t.ok(selector, `${id}: ${m[0]} has a label selector`);
    t.match(selector?.[1] ?? '', /(^|, )namespace=~"\$namespace"(,|$)/, `${id}: ${m[0]} has namespace=~"$namespace"`);
    t.match(selector?.[1] ?? '', /(^|, )job=~"\$job"(,|$)/, `${id}: ${m[0]} has job=~"$job"`);
    t.match(selector?.[1] ?? '', /(^|, )instance=~"\$instance"(,|$)/, `${id}: ${m[0]} has instance=~"$instance"`);
    const base = m[0].replace(/_(bucket|sum|count)$/, '');
    if (base.startsWith('mqtt_liveness_')) t.ok(CONTRACT.includes(`| ${base} |`), `${id}: ${base} is in docs/METRICS-CONTRACT.md`);
    // _total only inside rate()/increase(), _bucket only for quantiles or heatmaps.
    const before = expr.slice(0, m.index);
    if (m[0].endsWith('_total') || m[0].endsWith('_bucket') || m[0] === 'process_cpu_seconds_total') {
      t.match(before, /(rate|increase)\($/, `${id}: ${m[0]} is inside rate() or increase()`);
    }
    if (m[0].endsWith('_bucket')) {
      const heatmap = p.type === 'heatmap' && target.format === 'heatmap';
      t.ok(heatmap || /^histogram_quantile\(0?\.\d+, sum by \(le[,)]/.test(expr), `${id}: ${m[0]} only in histogram_quantile (keeping le) or a heatmap-format query`);
      if (heatmap) t.match(expr, /^sum by \(le\) \(increase\(/, `${id}: heatmap counts per bucket`);
    }
  }
  // Every range is $__rate_interval.
  const ranges = [...expr.matchAll(/\[([^\]]*)\]/g)].map((r) => r[1]);
  t.ok(ranges.every((r) => r === '$__rate_interval'), `${id}: ranges use $__rate_interval (${ranges.join(', ') || 'none'})`);
  if (/\b(rate|increase|irate)\(/.test(expr)) t.ok(ranges.length > 0, `${id}: rates have a range`);
  t.notMatch(expr, /\birate\(/, `${id}: rate, not irate`);
}

t.test('every query parses (promtool check rules)', async (t) => {
  const promtool = existsSync('/usr/bin/promtool') ? '/usr/bin/promtool' : findExecutable('promtool');
  if (!promtool) {
    t.fail('promtool is not installed: apt-get install -y prometheus');
    return;
  }
  const rules = panels.flatMap((p) => (p.targets ?? []).map((target) => ({ record: `dashboard:panel_${p.id}_${target.refId}:check`, expr: substitute(target.expr) })));
  const variables = dashboard.templating.list.filter((v) => typeof v.query === 'object').map((v, i) => ({ record: `dashboard:variable_${i}:check`, expr: substitute((v.query as { query: string }).query.replace(/^label_values\((.*), \w+\)$/, '$1')) }));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-dashboard-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'queries.yaml');
  writeFileSync(file, stringifyYaml({ groups: [{ name: 'dashboard', rules: [...rules, ...variables] }] }));
  const r = spawnSync(promtool, ['check', 'rules', file], { encoding: 'utf8' });
  t.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  t.match(r.stdout, new RegExp(`SUCCESS: ${rules.length + variables.length} rules found`));
});

/** Grafana's variables as the data test substitutes them (All = .*). */
function substitute(expr: string): string {
  return expr.replaceAll('$__rate_interval', '1m').replaceAll('$namespace', '.*').replaceAll('$job', '.*').replaceAll('$instance', '.*').replaceAll('$reason', '.*');
}
