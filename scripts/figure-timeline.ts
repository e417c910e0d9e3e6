/**
 * The pulled-cable timeline (docs/figures/pulled-cable-timeline.svg) from a
 * measured `npm run bench:detect` result (docs/results/detect.json): per
 * scenario the client's last packet, the pull, the proxy's verdict and the
 * Will, Mosquitto alone beside the proxy, on one time axis.
 */
import { readFileSync } from 'node:fs';

interface Result {
  path: 'direct' | 'proxy';
  keepAlive: number;
  protocolVersion: 4 | 5;
  traffic: 'idle' | 'receiving';
  verdict: { reason: string } | null;
  timeline: { lastPacketAt: number | null; pulledAt: number | null; verdictAt: number | null; willAt: number | null };
}
export interface DetectFile { date: string; mosquitto: string; command?: string; results: Result[] }

const esc = (s: string) => s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

export function timelineSvg(data: DetectFile, keepAlive = 60, protocolVersion: 4 | 5 = 4): string {
  const rows = (['idle', 'receiving'] as const).flatMap((traffic) => (['direct', 'proxy'] as const).map((p) => {
    const r = data.results.find((x) => x.path === p && x.traffic === traffic && x.keepAlive === keepAlive && x.protocolVersion === protocolVersion);
    if (!r || r.timeline.pulledAt === null || r.timeline.willAt === null) throw new Error(`no complete result for ${p} ${traffic} keep-alive ${keepAlive}`);
    return r;
  }));
  const W = 960, left = 250, right = 40, top = 96, rowH = 62, H = top + rows.length * rowH + 96;
  const tMin = -4, tMax = Math.ceil(Math.max(...rows.map((r) => (r.timeline.willAt! - r.timeline.pulledAt!) / 1000)) / 10) * 10 + 2;
  const x = (s: number) => left + ((s - tMin) / (tMax - tMin)) * (W - left - right);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Arial, sans-serif" font-size="13">`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="16" y="26" font-size="17" font-weight="bold">A pulled cable: when does the broker publish the Will?</text>`);
  out.push(`<text x="16" y="48" fill="#444">MQTT ${protocolVersion === 5 ? '5' : '3.1.1'} client with keep-alive ${keepAlive} s; its cable is pulled (t = 0) about 3 s after its last packet.</text>`);
  out.push(`<text x="16" y="66" fill="#444">Measured with npm run bench:detect on ${esc(data.date.slice(0, 10))} (Mosquitto ${esc(data.mosquitto)}, proxy defaults); Mosquitto alone waits 1.5 x keep-alive.</text>`);
  // Row backgrounds first, so the grid and the pull line stay visible.
  for (let i = 0; i < rows.length; i += 2) out.push(`<rect x="0" y="${top + i * rowH}" width="${W}" height="${rowH * 2}" fill="${i % 4 === 0 ? '#fafafa' : '#f1f5fa'}"/>`);
  // Axis and grid.
  const axisY = top + rows.length * rowH + 8;
  for (let s = 0; s <= tMax; s += 10) {
    out.push(`<line x1="${x(s)}" y1="${top - 8}" x2="${x(s)}" y2="${axisY}" stroke="#e6e6e6"/>`);
    out.push(`<text x="${x(s)}" y="${axisY + 18}" text-anchor="middle" fill="#444">${s} s</text>`);
  }
  out.push(`<line x1="${x(tMin)}" y1="${axisY}" x2="${x(tMax)}" y2="${axisY}" stroke="#888"/>`);
  out.push(`<text x="${(x(tMin) + x(tMax)) / 2}" y="${axisY + 38}" text-anchor="middle" fill="#444">seconds since the cable was pulled</text>`);
  out.push(`<line x1="${x(0)}" y1="${top - 6}" x2="${x(0)}" y2="${axisY}" stroke="#c0392b" stroke-width="2" stroke-dasharray="5,3"/>`);
  rows.forEach((r, i) => {
    const y = top + i * rowH + rowH / 2;
    const at = (t: number | null) => (t === null ? null : (t - r.timeline.pulledAt!) / 1000);
    const proxy = r.path === 'proxy';
    const colour = proxy ? '#1e8449' : '#7f8c8d';
    out.push(`<text x="16" y="${y - 4}" font-weight="bold" fill="${colour}">${proxy ? 'through the proxy' : 'Mosquitto alone'}</text>`);
    out.push(`<text x="16" y="${y + 13}" fill="#555">${r.traffic === 'idle' ? 'idle client' : 'client being sent data'}</text>`);
    const last = at(r.timeline.lastPacketAt), will = at(r.timeline.willAt)!, verdict = at(r.timeline.verdictAt);
    out.push(`<line x1="${x(0)}" y1="${y}" x2="${x(will)}" y2="${y}" stroke="${colour}" stroke-width="8" stroke-opacity="0.35"/>`);
    if (last !== null) {
      out.push(`<circle cx="${x(last)}" cy="${y}" r="5" fill="#2874a6"/>`);
      if (i === 0) out.push(`<text x="${x(last)}" y="${y - 10}" text-anchor="middle" fill="#2874a6" font-size="11">last packet</text>`);
    }
    if (verdict !== null && r.verdict) {
      out.push(`<path d="M ${x(verdict)} ${y - 8} l 7 8 l -7 8 l -7 -8 z" fill="#d68910"/>`);
      out.push(`<text x="${x(verdict)}" y="${y - 12}" text-anchor="middle" fill="#9c640c" font-size="11">verdict: ${esc(r.verdict.reason)}</text>`);
    }
    out.push(`<path d="M ${x(will)} ${y - 9} l 9 9 l -9 9 z" fill="${colour}"/>`);
    out.push(`<text x="${x(will) + (proxy ? 12 : -12)}" y="${y + 22}" text-anchor="${proxy ? 'start' : 'end'}" font-weight="bold" fill="${colour}">Will ${sec(r.timeline.willAt! - r.timeline.pulledAt!)}</text>`);
  });
  // Legend.
  const ly = H - 14;
  out.push(`<circle cx="20" cy="${ly - 4}" r="5" fill="#2874a6"/><text x="30" y="${ly}">client's last packet</text>`);
  out.push(`<line x1="190" y1="${ly - 12}" x2="190" y2="${ly + 4}" stroke="#c0392b" stroke-width="2" stroke-dasharray="5,3"/><text x="198" y="${ly}">cable pulled</text>`);
  out.push(`<path d="M 320 ${ly - 12} l 7 8 l -7 8 l -7 -8 z" fill="#d68910"/><text x="332" y="${ly}">proxy's verdict</text>`);
  out.push(`<path d="M 460 ${ly - 13} l 9 9 l -9 9 z" fill="#555"/><text x="474" y="${ly}">Will published by the broker (seen by a subscriber)</text>`);
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

export function readDetect(file: string): DetectFile {
  return JSON.parse(readFileSync(file, 'utf8')) as DetectFile;
}
