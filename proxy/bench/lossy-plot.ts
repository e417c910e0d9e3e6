/**
 * `npm run bench:lossy:plot -- [FILE] [--out SVG] [--markdown]`: the lossy-link bench's JSON
 * (default bench-results/lossy-full.json) as an SVG (default
 * docs/liveness-lossy.svg): pulled-cable detection time and false deaths
 * against loss, for Mosquitto alone, HAProxy and the proxy. Detection is drawn
 * twice when the file has both: established connections (laneAgeMs > 0, solid)
 * and new ones (dashed); files without laneAgeMs only have new connections.
 * The newcomers condition plots the newcomers' own false deaths. Plain SVG written
 * by hand: no browser, no dependency. --markdown also prints the results as a
 * Markdown table (for BENCHMARKS.md and docs/liveness.md).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT } from './lib/services.ts';
import { isPullSample } from './lib/lossy-cell.ts';

interface Cell {
  system: 'mosquitto' | 'haproxy' | 'proxy';
  clients: { connected: number };
  falseDeaths: { clients: number; wills: number };
  frontEnds: Record<string, number>;
  brokerTimeouts: number;
  probes: { perIdleClientHour: number | null };
  /** laneAgeMs: absent in files from before the established lane (all new connections then). */
  pulled: Array<{ willAfterMs: number | null; invalid?: string; laneAgeMs?: number; ageAtPullMs?: number }>;
  newcomers?: { lossPercent: number; connections: number; falseDeaths: number; reasons: Record<string, number>; samples: string[] };
}
interface Bench {
  date: string;
  command?: string;
  settings: { clients: number; durationMs: number; pullAgeMs?: number };
  results: Array<{ condition: string; lossPercent: number; outages: unknown[]; cells: Cell[] }>;
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { out: { type: 'string' }, markdown: { type: 'boolean', default: false } } });
const input = path.resolve(positionals[0] ?? path.join(ROOT, 'bench-results', 'lossy-full.json'));
const output = path.resolve(values.out ?? path.join(ROOT, 'docs', 'liveness-lossy.svg'));
const bench = JSON.parse(readFileSync(input, 'utf8')) as Bench;

const SERIES = [
  { system: 'mosquitto', label: 'Mosquitto 2.0.11 alone', color: '#6b6b6b', marker: 'circle' },
  { system: 'haproxy', label: 'HAProxy, clitcpka 5 s / 1 s x 3', color: '#d95f02', marker: 'square' },
  { system: 'proxy', label: 'mqtt-liveness-proxy', color: '#1f6fb4', marker: 'triangle' },
] as const;

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const niceMax = (v: number) => {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return ([1, 2, 2.5, 5, 10].find((k) => k * p >= v) ?? 10) * p;
};

const newcomerLoss = bench.results.flatMap((r) => r.cells).find((c) => c.newcomers)?.newcomers?.lossPercent ?? 20;
const conditions = bench.results.map((r) => {
  const outage = r.condition === 'outage';
  const newcomers = r.condition === 'newcomers';
  const label = outage ? `outages ${r.outages.length}x 1-4 s` : newcomers ? `newcomers (${newcomerLoss} % link)` : `${r.lossPercent}%`;
  // Axis labels: two lines at most, a slot is ~60 px wide.
  const axis = outage ? ['outages'] : newcomers ? ['newcomers', `(${newcomerLoss} % link)`] : [label];
  // Not a loss level: off the loss line, behind a separator.
  return { label, axis, apart: outage || newcomers, newcomers, r };
});

/** Missing laneAgeMs: a file from before the established lane, where every pull was a new connection. */
const established = (p: Cell['pulled'][number]) => (p.laneAgeMs ?? 0) > 0;
const hasEstablished = bench.results.some((r) => r.cells.some((c) => c.pulled.some(established)));
const ages = bench.results.flatMap((r) => r.cells.flatMap((c) => c.pulled.filter(established).map((p) => p.laneAgeMs!)));
const pullAgeS = bench.settings.pullAgeMs ? bench.settings.pullAgeMs / 1000 : ages.length ? Math.min(...ages) / 1000 : undefined;

/** Detection times (s) of one lane of a cell, and how many valid pulls had no Will. */
function pulls(cell: Cell, lane: 'new' | 'established') {
  const valid = cell.pulled.filter((p) => isPullSample(p) && established(p) === (lane === 'established'));
  const got = valid.filter((p) => p.willAfterMs !== null).map((p) => p.willAfterMs! / 1000);
  return { got, missed: valid.length - got.length };
}

interface Point { x: number; y: number; lo?: number; hi?: number; apart: boolean; note?: string }
interface Series { color: string; marker: string; hollow: boolean; dx: number; pts: Point[] }

function detectSeries(): Series[] {
  const lanes = hasEstablished ? (['established', 'new'] as const) : (['new'] as const);
  return SERIES.flatMap((s, k) => lanes.map((lane) => {
    const pts: Point[] = [];
    conditions.forEach((c, i) => {
      const cell = c.r.cells.find((x) => x.system === s.system);
      if (!cell) return;
      const { got, missed } = pulls(cell, lane);
      if (got.length) pts.push({ x: i, y: median(got), lo: Math.min(...got), hi: Math.max(...got), apart: c.apart, ...(missed ? { note: `${missed} missed` } : {}) });
    });
    // Two lanes: the pair of a system side by side, so equal values (Mosquitto's 90 s) stay visible.
    const dx = lanes.length === 1 ? (k - 1) * 7 : (k - 1) * 14 + (lane === 'new' ? 3.5 : -3.5);
    return { color: s.color, marker: s.marker, hollow: lanes.length > 1 && lane === 'new', dx, pts };
  }));
}

function deathSeries(): Series[] {
  return SERIES.map((s, k) => {
    const pts: Point[] = [];
    conditions.forEach((c, i) => {
      const cell = c.r.cells.find((x) => x.system === s.system);
      const n = cell?.newcomers;
      // Newcomers: what matters is the newcomers' own deaths, the clean fleet is the control.
      if (c.newcomers && n && n.connections > 0) pts.push({ x: i, y: (100 * n.falseDeaths) / n.connections, apart: true });
      else if (cell && cell.clients.connected > 0) pts.push({ x: i, y: (100 * cell.falseDeaths.clients) / cell.clients.connected, apart: c.apart });
    });
    return { color: s.color, marker: s.marker, hollow: false, dx: (k - 1) * 7, pts };
  });
}

const W = 980;
const H = 486;
const panelW = 400;
const panelH = 270;
const top = 126;

/** Hollow (white inside) for the new-connection lane, so it reads apart from the solid one where they overlap. */
function marker(kind: string, x: number, y: number, color: string, hollow = false): string {
  const paint = hollow ? `fill="#fff" stroke="${color}" stroke-width="1.5"` : `fill="${color}"`;
  if (kind === 'circle') return `<circle cx="${x}" cy="${y}" r="4.5" ${paint}/>`;
  if (kind === 'square') return `<rect x="${x - 4}" y="${y - 4}" width="8" height="8" ${paint}/>`;
  return `<path d="M${x},${y - 5.5} L${x + 5},${y + 3.5} L${x - 5},${y + 3.5} Z" ${paint}/>`;
}

function panel(left: number, title: string, yLabel: string, data: Series[], scale: { max?: number; log?: boolean } = {}): string {
  const all = data.flatMap((d) => d.pts);
  const yMax = scale.max ?? niceMax(Math.max(...all.map((p) => p.hi ?? p.y), 1) * 1.05);
  const n = conditions.length;
  const xAt = (i: number) => left + ((i + 0.5) / n) * panelW;
  // Log scale from 1 (seconds): 5 s and 90 s on one axis.
  const frac = (v: number) => (scale.log ? Math.log10(Math.max(1, Math.min(v, yMax))) / Math.log10(yMax) : Math.min(v, yMax) / yMax);
  const yAt = (v: number) => top + panelH - frac(v) * panelH;
  // 7 conditions leave ~57 px a slot: 'outages' beside 'newcomers' only fit at 10 px.
  const axisFont = panelW / n < 60 ? 10 : 11;
  const ticks = scale.log
    ? [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000].filter((v) => v <= yMax)
    : Array.from({ length: 6 }, (_, k) => (yMax * k) / 5);
  const parts: string[] = [];
  parts.push(`<text x="${left + panelW / 2}" y="${top - 14}" text-anchor="middle" font-weight="bold">${esc(title)}</text>`);
  for (const v of ticks) {
    const y = yAt(v);
    parts.push(`<line x1="${left}" x2="${left + panelW}" y1="${y}" y2="${y}" stroke="#e3e3e3"/>`);
    parts.push(`<text x="${left - 6}" y="${y + 4}" text-anchor="end" font-size="11">${Number.isInteger(v) ? v : v.toFixed(1)}</text>`);
  }
  parts.push(`<line x1="${left}" x2="${left}" y1="${top}" y2="${top + panelH}" stroke="#333"/>`);
  parts.push(`<line x1="${left}" x2="${left + panelW}" y1="${top + panelH}" y2="${top + panelH}" stroke="#333"/>`);
  parts.push(`<text transform="translate(${left - 40},${top + panelH / 2}) rotate(-90)" text-anchor="middle" font-size="12">${esc(yLabel)}</text>`);
  conditions.forEach((c, i) => {
    c.axis.forEach((line, j) => parts.push(`<text x="${xAt(i)}" y="${top + panelH + 16 + 13 * j}" text-anchor="middle" font-size="${axisFont}">${esc(line)}</text>`));
    if (c.apart && i > 0) {
      const xs = (xAt(i - 1) + xAt(i)) / 2;
      parts.push(`<line x1="${xs}" x2="${xs}" y1="${top}" y2="${top + panelH}" stroke="#999" stroke-dasharray="4 3"/>`);
    }
  });
  // Below a second line of condition labels, if any.
  const axisY = top + panelH + 21 + 13 * Math.max(...conditions.map((c) => c.axis.length));
  parts.push(`<text x="${left + panelW / 2}" y="${axisY}" text-anchor="middle" font-size="12">random packet loss, each direction</text>`);
  for (const s of data) {
    const { dx, pts } = s; // side by side (dx), so equal values stay visible
    const dash = s.hollow ? ' stroke-dasharray="5 3"' : '';
    const line = pts.filter((p) => !p.apart).map((p) => `${xAt(p.x) + dx},${yAt(p.y)}`).join(' ');
    if (line) parts.push(`<polyline points="${line}" fill="none" stroke="${s.color}" stroke-width="2"${dash} opacity="${s.hollow ? 0.6 : 0.85}"/>`);
    for (const p of pts) {
      const x = xAt(p.x) + dx;
      if (p.lo !== undefined && p.hi !== undefined && p.hi > p.lo) parts.push(`<line x1="${x}" x2="${x}" y1="${yAt(p.lo)}" y2="${yAt(p.hi)}" stroke="${s.color}" stroke-width="1.5"${s.hollow ? ' opacity="0.6"' : ''}/>`);
      parts.push(marker(s.marker, x, yAt(p.y), s.color, s.hollow));
      if (p.note) parts.push(`<text x="${x + 6}" y="${yAt(p.y) - 6}" font-size="10" fill="${s.color}">${esc(p.note)}</text>`);
    }
  }
  return parts.join('\n');
}

const s = bench.settings;
const subtitle = `${s.clients} healthy clients per system and condition, ${Math.round(s.durationMs / 60000 * 10) / 10} min each; MQTT 3.1.1 and 5, keep-alive 30/60, half idle; ${bench.date.slice(0, 10)}`;
const legend = SERIES.map((x, i) => `${marker(x.marker, 90 + i * 290, 66, x.color)}<text x="${100 + i * 290}" y="70" font-size="12">${esc(x.label)}</text>`).join('\n');
/** Which line is which lane in the detection panel: a black line, no marker (a grey circle would read as Mosquitto). */
const laneKey = (x: number, hollow: boolean, text: string) =>
  `<line x1="${x - 6}" x2="${x + 20}" y1="88" y2="88" stroke="#222" stroke-width="2"${hollow ? ' stroke-dasharray="5 3" opacity="0.6"' : ''}/><text x="${x + 26}" y="92" font-size="11">${esc(text)}</text>`;
const lanesLegend = hasEstablished
  ? `${laneKey(90, false, `solid, filled: connections >= ${pullAgeS} s old`)}\n${laneKey(350, true, 'dashed, hollow: new connections (pulled a few s after connecting)')}`
  : laneKey(90, false, 'new connections (cable pulled a few s after connecting)');
const detect = detectSeries();
const deaths = deathSeries();
const hasNewcomers = conditions.some((c) => c.newcomers);
const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">
<rect width="${W}" height="${H}" fill="#fff"/>
<text x="${W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">Detection time and false deaths on lossy links</text>
<text x="${W / 2}" y="44" text-anchor="middle" font-size="11" fill="#444">${esc(subtitle)}</text>
${legend}
${lanesLegend}
${panel(80, 'Pulled cable (keep-alive 60) to Will', 'seconds, log scale (median; bar: min-max)', detect, { log: true, max: Math.max(100, niceMax(Math.max(...detect.flatMap((d) => d.pts).map((p) => p.hi ?? p.y)))) })}
${panel(560, 'False deaths: healthy clients whose Will fired', hasNewcomers ? '% of healthy clients, or of newcomers' : '% of healthy clients', deaths, { max: Math.max(10, niceMax(Math.max(...deaths.flatMap((d) => d.pts).map((p) => p.y), 0) * 1.05)) })}
<text x="${W / 2}" y="${H - 12}" text-anchor="middle" font-size="10" fill="#666">${esc(`generated by npm run bench:lossy:plot from ${path.relative(ROOT, input)}${bench.command ? ` (${bench.command})` : ''}`)}</text>
</svg>
`;
writeFileSync(output, svg);
console.log(`written ${output}`);

if (values.markdown) {
  const oldCol = pullAgeS === undefined ? 'pulled, established connection' : `pulled, >= ${pullAgeS} s old`;
  const md = [`| condition | system | false deaths | front ends of healthy clients | pulled, new connection -> Will, median (min-max, n) | ${oldCol} -> Will, median (min-max, n) | probes / idle client-hour |`, '| --- | --- | --- | --- | --- | --- | --- |'];
  const pulled = (cell: Cell, lane: 'new' | 'established') => {
    const { got, missed } = pulls(cell, lane);
    if (!got.length) return missed ? `none in ${missed}` : '-';
    return `${median(got).toFixed(1)} s (${Math.min(...got).toFixed(1)}-${Math.max(...got).toFixed(1)}, ${got.length}${missed ? `, ${missed} missed` : ''})`;
  };
  for (const c of conditions) {
    for (const x of SERIES) {
      const cell = c.r.cells.find((k) => k.system === x.system);
      if (!cell) continue;
      const ends = [...Object.entries(cell.frontEnds).map(([k, v]) => `${k} ${v}`), ...(cell.brokerTimeouts ? [`broker timeout ${cell.brokerTimeouts}`] : [])].join(', ') || '-';
      const n = cell.newcomers;
      const deaths = `${cell.falseDeaths.clients} of ${cell.clients.connected}${cell.falseDeaths.wills > cell.falseDeaths.clients ? ` (${cell.falseDeaths.wills} Wills)` : ''}${n ? `; newcomers ${n.falseDeaths} of ${n.connections}` : ''}`;
      // Newcomers: their probes count in the server namespace too, so the figure would not be per idle healthy client.
      const probes = c.newcomers || cell.probes.perIdleClientHour === null || !Number.isFinite(cell.probes.perIdleClientHour) ? '-' : String(Math.round(cell.probes.perIdleClientHour));
      md.push(`| ${c.apart ? c.label : `${c.label} loss`} | ${x.label} | ${deaths} | ${ends} | ${pulled(cell, 'new')} | ${pulled(cell, 'established')} | ${probes} |`);
    }
  }
  console.log(md.join('\n'));
}
