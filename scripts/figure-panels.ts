/**
 * Key panels of the Grafana dashboard drawn as SVG line charts
 * (docs/figures/dashboard-panels.svg) from query_range results of a real
 * Prometheus (docs/results/dashboard-panels.json, written by
 * scripts/capture-dashboard.ts). Grafana itself cannot run here (it is not in
 * Debian); the queries are the dashboard's own, with its variables set to All.
 */
import { readFileSync } from 'node:fs';

export interface PanelData {
  title: string;
  unit: string;
  series: Array<{ legend: string; values: Array<[number, number]> }>;
}
export interface PanelsFile { date: string; command: string; scenario: string; rateInterval: string; start: number; end: number; panels: PanelData[] }

export function readPanels(file: string): PanelsFile {
  return JSON.parse(readFileSync(file, 'utf8')) as PanelsFile;
}

const COLOURS = ['#73bf69', '#f2cc0c', '#5794f2', '#ff780a', '#b877d9', '#f2495c', '#8ab8ff', '#96d98d'];
const esc = (s: string) => s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');

/** A round grid step with at most four steps up to v. */
function niceStep(v: number): number {
  if (v <= 0) return 0.25;
  const raw = v / 4, p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function fmt(v: number, unit: string): string {
  const n = Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1).replace(/\.0$/, '') : v.toFixed(2).replace(/\.?0+$/, '');
  switch (unit) {
    case 's': return `${n} s`;
    case 'cps': return `${n}/s`;
    case 'cpm': return `${n}/min`;
    default: return n;
  }
}

function panel(all: PanelData, x0: number, y0: number, w: number, h: number, start: number, end: number): string {
  // Series that never leave zero (counters of reasons that did not happen) only crowd the legend.
  const p = { ...all, series: all.series.filter((s) => s.values.some(([, v]) => Number.isFinite(v) && v !== 0)) };
  const out: string[] = [];
  const padL = 58, padR = 12, padT = 30, legendH = 18 * Math.ceil(p.series.length / 2), padB = 26 + legendH;
  const pw = w - padL - padR, ph = h - padT - padB;
  const top = Math.max(0, ...p.series.flatMap((s) => s.values.map(([, v]) => v)).filter(Number.isFinite));
  const step = niceStep(top), steps = Math.max(1, Math.ceil(top / step - 1e-9)), ymax = step * steps;
  const X = (t: number) => x0 + padL + ((t - start) / (end - start)) * pw;
  const Y = (v: number) => y0 + padT + ph - (v / ymax) * ph;
  out.push(`<rect x="${x0}" y="${y0}" width="${w}" height="${h}" rx="4" fill="#181b1f" stroke="#2c3235"/>`);
  out.push(`<text x="${x0 + 10}" y="${y0 + 19}" fill="#ccccdc" font-size="13" font-weight="bold">${esc(p.title)}</text>`);
  for (let i = 0; i <= steps; i++) {
    const v = step * i;
    out.push(`<line x1="${x0 + padL}" y1="${Y(v)}" x2="${x0 + padL + pw}" y2="${Y(v)}" stroke="#2c3235"/>`);
    out.push(`<text x="${x0 + padL - 6}" y="${Y(v) + 4}" text-anchor="end" fill="#9fa7b3" font-size="10">${fmt(v, p.unit)}</text>`);
  }
  const span = end - start;
  const tick = span > 240 ? 60 : 30;
  for (let t = 0; t <= span; t += tick) {
    out.push(`<text x="${X(start + t)}" y="${y0 + padT + ph + 14}" text-anchor="middle" fill="#9fa7b3" font-size="10">${t} s</text>`);
  }
  p.series.forEach((s, i) => {
    const c = COLOURS[i % COLOURS.length];
    // Gaps (no sample) break the line, as Grafana draws them.
    const parts: string[] = [];
    let prev: number | null = null;
    for (const [t, v] of s.values) {
      if (!Number.isFinite(v)) { prev = null; continue; }
      parts.push(`${prev === null || t - prev > 5 ? 'M' : 'L'} ${X(t).toFixed(1)} ${Y(v).toFixed(1)}`);
      prev = t;
    }
    if (parts.length > 0) out.push(`<path d="${parts.join(' ')}" fill="none" stroke="${c}" stroke-width="1.6"/>`);
    if (s.values.filter(([, v]) => Number.isFinite(v)).length === 1) {
      const [t, v] = s.values.find(([, v]) => Number.isFinite(v))!;
      out.push(`<circle cx="${X(t)}" cy="${Y(v)}" r="2.5" fill="${c}"/>`);
    }
    const lx = x0 + padL + (i % 2) * (pw / 2), ly = y0 + h - legendH - 2 + Math.floor(i / 2) * 18 + 12;
    out.push(`<rect x="${lx}" y="${ly - 8}" width="12" height="3" fill="${c}"/><text x="${lx + 16}" y="${ly - 3}" fill="#ccccdc" font-size="11">${esc(s.legend)}</text>`);
  });
  if (p.series.length === 0) out.push(`<text x="${x0 + w / 2}" y="${y0 + h / 2}" text-anchor="middle" fill="#9fa7b3">no data</text>`);
  return out.join('\n');
}

export function panelsSvg(data: PanelsFile): string {
  const cols = 2, W = 1000, pw = (W - 30) / cols, ph = 250, top = 80;
  const rows = Math.ceil(data.panels.length / cols);
  const H = top + rows * (ph + 10) + 26;
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Arial, sans-serif">`];
  out.push(`<rect width="${W}" height="${H}" fill="#111217"/>`);
  out.push(`<text x="12" y="24" fill="#ccccdc" font-size="16" font-weight="bold">MQTT liveness proxy dashboard: key panels from a real Prometheus scrape</text>`);
  out.push(`<text x="12" y="46" fill="#9fa7b3" font-size="11">Scenario: ${esc(data.scenario)}</text>`);
  out.push(`<text x="12" y="64" fill="#9fa7b3" font-size="11">${esc(data.command)}, ${esc(data.date.slice(0, 10))}: the dashboard's own queries, variables All, $__rate_interval = ${esc(data.rateInterval)}.</text>`);
  data.panels.forEach((p, i) => {
    out.push(panel(p, 10 + (i % cols) * (pw + 10), top + Math.floor(i / cols) * (ph + 10), pw, ph, data.start, data.end));
  });
  out.push(`<text x="12" y="${H - 8}" fill="#9fa7b3" font-size="11">Drawn by scripts/figure-panels.ts from docs/results/dashboard-panels.json (Grafana is not available here; same PromQL, same legends; series that stay at zero are left out).</text>`);
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
