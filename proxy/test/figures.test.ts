/**
 * Published numbers and figures come from committed measured results:
 * - docs/figures/*.svg are what scripts/figures.ts draws from docs/results/*.json;
 * - README's detection table, headline and advantage comparison equal
 *   docs/results/detect.json (npm run bench:detect -- --out docs/results/detect.json);
 * - the result files are complete runs of what they claim to measure.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../../scripts/sync-chart.ts';
import { renderFigures } from '../../scripts/figures.ts';
import { readDetect } from '../../scripts/figure-timeline.ts';
import { readPanels } from '../../scripts/figure-panels.ts';

const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const detect = readDetect(path.join(ROOT, 'docs/results/detect.json'));
type R = (typeof detect.results)[number] & { willAfterMs: number | null; verdict: { reason: string; advantageSeconds: number | null } | null };
const results = detect.results as R[];
const s1 = (ms: number) => (ms / 1000).toFixed(1);
const find = (p: string, keepAlive: number, v: number, traffic: string) => {
  const r = results.find((x) => x.path === p && x.keepAlive === keepAlive && x.protocolVersion === v && x.traffic === traffic);
  if (!r) throw new Error(`no ${p} keep-alive ${keepAlive} v${v} ${traffic} in docs/results/detect.json`);
  return r;
};

t.test('the figures are drawn from the committed results (npm run figures)', async (t) => {
  t.same(renderFigures(true), [], 'docs/figures/*.svg up to date');
  t.match(readme, /!\[[^\]]+\]\(docs\/figures\/pulled-cable-timeline\.svg\)/, 'README shows the timeline');
  const docs = readFileSync(path.join(ROOT, 'docs/deploy.md'), 'utf8');
  t.match(docs, /!\[[^\]]+\]\((\.\/)?figures\/dashboard-panels\.svg\)/, 'docs/deploy.md shows the dashboard panels');
});

t.test('docs/results/detect.json is a complete run', async (t) => {
  t.equal(results.length, 12);
  for (const r of results) {
    const id = `${r.path} keep-alive ${r.keepAlive} v${r.protocolVersion} ${r.traffic}`;
    t.ok(r.willAfterMs !== null && r.timeline.pulledAt !== null && r.timeline.lastPacketAt !== null && r.timeline.willAt !== null, `${id}: complete`);
    if (r.path === 'proxy') {
      // Keep-alive 10 on a new connection: the MQTT deadline (KA + adaptive grace) and the TCP one
      // (idle + 10 probes) both fall ~15 s after the last packet; either verdict is the proxy's own.
      const expected = r.traffic !== 'idle' ? ['tcp_user_timeout'] : r.keepAlive <= 10 ? ['tcp_keepalive', 'keepalive_timeout'] : ['tcp_keepalive'];
      t.ok(expected.includes(r.verdict?.reason ?? ''), `${id}: verdict reason ${r.verdict?.reason}`);
      // Both stamped in whole milliseconds by two processes (the proxy's event, the watcher's receipt).
      t.ok(r.timeline.verdictAt! <= r.timeline.willAt! + 2, `${id}: verdict before the Will (${r.timeline.willAt! - r.timeline.verdictAt!} ms)`);
    } else {
      t.ok(r.willAfterMs! > r.keepAlive * 1000, `${id}: Mosquitto alone waits longer than the keep-alive`);
    }
  }
});

t.test('README detection table = docs/results/detect.json', async (t) => {
  const rows = [...readme.matchAll(/^\| (\d+) s \| (3\.1\.1|5) \| (idle|being sent data) \| ([\d.]+) s \| \*\*([\d.]+) s\*\* \| `(\w+)` \|$/gm)];
  t.equal(rows.length, 6, 'six rows');
  for (const [, ka, proto, traffic, direct, proxied, reason] of rows) {
    const v = proto === '5' ? 5 : 4;
    const tr = traffic === 'idle' ? 'idle' : 'receiving';
    const d = find('direct', Number(ka), v, tr);
    const p = find('proxy', Number(ka), v, tr);
    t.equal(direct, s1(d.willAfterMs!), `keep-alive ${ka} ${proto} ${traffic}: Mosquitto alone`);
    t.equal(proxied, s1(p.willAfterMs!), `keep-alive ${ka} ${proto} ${traffic}: through the proxy`);
    t.equal(reason, p.verdict?.reason);
  }
  const headline = /\*\*([\d.]+) s\*\* after the pull through the proxy \(([\d.]+) s if it was being sent data\), ([\d.]+) s with Mosquitto alone/.exec(readme);
  t.ok(headline, 'headline');
  t.same(headline?.slice(1), [s1(find('proxy', 60, 4, 'idle').willAfterMs!), s1(find('proxy', 60, 4, 'receiving').willAfterMs!), s1(find('direct', 60, 4, 'idle').willAfterMs!)]);
  // The proxy's own advantage estimate against the measured difference between the two Wills.
  const adv = /own estimate of its advantage[\s\S]{0,200}?was ([\d.]+) s, while the measured difference between the two Wills is\s+([\d.]+) s/.exec(readme);
  t.ok(adv, 'advantage comparison');
  const p = find('proxy', 60, 4, 'idle');
  t.equal(adv?.[1], p.verdict!.advantageSeconds!.toFixed(1));
  t.equal(adv?.[2], s1(find('direct', 60, 4, 'idle').willAfterMs! - p.willAfterMs!));
});

t.test('docs/results/dashboard-panels.json comes from a real scrape with data in every panel', async (t) => {
  const panels = readPanels(path.join(ROOT, 'docs/results/dashboard-panels.json'));
  t.ok(panels.end - panels.start >= 60, 'at least a minute scraped');
  t.ok(panels.panels.length >= 6);
  for (const p of panels.panels) t.ok(p.series.some((s) => s.values.some(([, v]) => Number.isFinite(v) && v > 0)), `${p.title}: data`);
});
