/**
 * Renders the figures of README and docs from committed measured results:
 *   docs/results/detect.json           (npm run bench:detect -- --out docs/results/detect.json)
 *     -> docs/figures/pulled-cable-timeline.svg
 *   docs/results/dashboard-panels.json (npm run figures:capture, a real Prometheus scrape)
 *     -> docs/figures/dashboard-panels.svg
 *
 *   npm run figures             rewrite the SVGs
 *   npm run figures -- --check  exit 1 if an SVG differs from what its result file gives
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ROOT } from './sync-chart.ts';
import { readDetect, timelineSvg } from './figure-timeline.ts';
import { panelsSvg, readPanels } from './figure-panels.ts';

export const FIGURES: Array<{ source: string; figure: string; render: (file: string) => string }> = [
  { source: 'docs/results/detect.json', figure: 'docs/figures/pulled-cable-timeline.svg', render: (f) => timelineSvg(readDetect(f)) },
  { source: 'docs/results/dashboard-panels.json', figure: 'docs/figures/dashboard-panels.svg', render: (f) => panelsSvg(readPanels(f)) },
];

/** The figures that differ from their source (written, unless check). */
export function renderFigures(check: boolean): string[] {
  const stale: string[] = [];
  for (const { source, figure, render } of FIGURES) {
    const text = render(path.join(ROOT, source));
    const file = path.join(ROOT, figure);
    if (existsSync(file) && readFileSync(file, 'utf8') === text) continue;
    stale.push(figure);
    if (!check) writeFileSync(file, text);
  }
  return stale;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const check = process.argv.includes('--check');
  const stale = renderFigures(check);
  for (const f of stale) process.stdout.write(`${check ? 'out of date' : 'written'}: ${f}\n`);
  if (check && stale.length > 0) process.exit(1);
}
