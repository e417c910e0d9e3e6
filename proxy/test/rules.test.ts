/**
 * grafana/rules.yaml: promtool check rules and promtool test rules
 * (grafana/rules.test.yaml), every alert unit-tested, and the mixin
 * conventions (names, severity, summary and description, for:). promtool
 * missing is a failure: CI installs Debian's prometheus package.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { findExecutable } from '../src/broker/supervisor.ts';
import { ROOT } from '../../scripts/sync-chart.ts';

const PROMTOOL = existsSync('/usr/bin/promtool') ? '/usr/bin/promtool' : findExecutable('promtool');
const RULES = path.join(ROOT, 'grafana/rules.yaml');
const TESTS = path.join(ROOT, 'grafana/rules.test.yaml');

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const groups = (parseYaml(readFileSync(RULES, 'utf8')) as { groups: Array<{ name: string; rules: Rule[] }> }).groups;
const alerts = groups.flatMap((g) => g.rules).filter((r) => r.alert);
const records = groups.flatMap((g) => g.rules).filter((r) => r.record);

function promtool(args: string[]): { status: number | null; out: string } {
  if (!PROMTOOL) throw new Error('promtool is not installed: apt-get install -y prometheus (it ships /usr/bin/promtool)');
  const r = spawnSync(PROMTOOL, args, { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  if (r.error) throw r.error;
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

t.test('promtool is installed', async (t) => {
  t.ok(PROMTOOL, 'promtool is not installed: apt-get install -y prometheus');
});

t.test('promtool check rules', async (t) => {
  const r = promtool(['check', 'rules', RULES]);
  t.equal(r.status, 0, r.out);
  t.match(r.out, new RegExp(`SUCCESS: ${alerts.length + records.length} rules found`));
});

t.test('promtool test rules', async (t) => {
  const r = promtool(['test', 'rules', TESTS]);
  t.equal(r.status, 0, r.out);
  t.match(r.out, /SUCCESS/);
});

t.test('every alert has a unit test that fires it', async (t) => {
  const tests = (parseYaml(readFileSync(TESTS, 'utf8')) as { tests: Array<{ alert_rule_test?: Array<{ alertname: string; exp_alerts: unknown[] }> }> }).tests;
  const fired = new Set(tests.flatMap((x) => x.alert_rule_test ?? []).filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname));
  for (const a of alerts) t.ok(fired.has(a.alert!), `${a.alert} fires in a test`);
  const known = new Set(alerts.map((a) => a.alert));
  for (const name of fired) t.ok(known.has(name), `${name} (tested) exists`);
});

t.test('mixin conventions', async (t) => {
  t.ok(alerts.length >= 8, `${alerts.length} alerts`);
  for (const a of alerts) {
    t.match(a.alert, /^MqttLiveness[A-Z][A-Za-z]+$/, `${a.alert}: name`);
    t.ok(['critical', 'warning', 'info'].includes(a.labels?.severity ?? ''), `${a.alert}: labels.severity`);
    t.ok(a.annotations?.summary && a.annotations.description, `${a.alert}: summary and description`);
    t.match(a.for ?? '', /^\d+[smh]$/, `${a.alert}: for`);
    t.match(a.expr, /mqtt_liveness_|up\{|process_|nodejs_/, `${a.alert}: uses the proxy's series`);
  }
  for (const r of records) t.match(r.record, /^[a-z_]+:mqtt_liveness_[a-z_]+:[a-z0-9_]+$/, `${r.record}: level:metric:operation`);
  // Every metric the rules use is in the contract (or a standard process/node/up series).
  const contract = readFileSync(path.join(ROOT, 'docs/METRICS-CONTRACT.md'), 'utf8');
  const used = new Set([...groups.flatMap((g) => g.rules).map((r) => r.expr).join('\n').matchAll(/\bmqtt_liveness_[a-z_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, '')));
  for (const m of used) t.ok(contract.includes(`| ${m} |`), `${m} is in docs/METRICS-CONTRACT.md`);
});
