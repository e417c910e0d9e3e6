/**
 * Every alert of grafana/rules.yaml (and of the chart's copy) carries a
 * runbook_url under RUNBOOKS_URL (scripts/project.ts) whose anchor is a
 * heading of docs/runbooks.md, and every runbook section says what the alert
 * means, what to check first, how to fix it and how to silence it safely.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ROOT } from '../../scripts/sync-chart.ts';
import { RUNBOOKS_URL } from '../../scripts/project.ts';

interface Rule { alert?: string; annotations?: Record<string, string> }
const alertsOf = (file: string) =>
  (parseYaml(readFileSync(path.join(ROOT, file), 'utf8')) as { groups: Array<{ rules: Rule[] }> }).groups.flatMap((g) => g.rules).filter((r) => r.alert);

const runbooks = readFileSync(path.join(ROOT, 'docs/runbooks.md'), 'utf8');

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens. */
function githubAnchor(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
}

// Sections: "## Heading" up to the next "## ".
const sections = new Map<string, string>();
for (const part of runbooks.split(/^## /m).slice(1)) {
  const [heading, ...body] = part.split('\n');
  sections.set(githubAnchor(heading), body.join('\n'));
}

for (const file of ['grafana/rules.yaml', 'charts/mqtt-liveness-proxy/files/rules.yaml']) {
  t.test(`${file}: every alert links its runbook`, async (t) => {
    const alerts = alertsOf(file);
    t.ok(alerts.length >= 12, `${alerts.length} alerts`);
    for (const a of alerts) {
      const url = a.annotations?.runbook_url ?? '';
      t.ok(url.startsWith(`${RUNBOOKS_URL}#`), `${a.alert}: runbook_url under ${RUNBOOKS_URL}`);
      const anchor = url.slice(RUNBOOKS_URL.length + 1);
      t.ok(sections.has(anchor), `${a.alert}: #${anchor} is a heading of docs/runbooks.md`);
      t.equal(anchor, githubAnchor(a.alert!), `${a.alert}: its own section`);
    }
  });
}

t.test('every runbook section is complete and belongs to an alert', async (t) => {
  const alerts = new Set(alertsOf('grafana/rules.yaml').map((a) => githubAnchor(a.alert!)));
  for (const [anchor, body] of sections) {
    t.ok(alerts.has(anchor), `#${anchor} is an alert`);
    for (const part of ['**What it means.**', '**Check first.**', '**How to fix.**', '**Silence safely.**']) {
      t.ok(body.includes(part), `#${anchor}: ${part}`);
    }
  }
  // Links inside the page resolve.
  for (const m of runbooks.matchAll(/\]\(#([^)]+)\)/g)) t.ok(sections.has(m[1]), `link #${m[1]} resolves`);
});

t.test('README links the runbooks as its troubleshooting page', async (t) => {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  t.match(readme, /\[[^\]]*\]\(docs\/runbooks\.md\)/);
  t.match(readme, /troubleshooting/i);
});
