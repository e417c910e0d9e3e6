/**
 * Writes grafana/mqtt-liveness-proxy.json from grafana/dashboard.ts.
 *
 *   npx tsx grafana/build-dashboard.ts           write it
 *   npx tsx grafana/build-dashboard.ts --check   exit 1 if the committed file differs
 *
 * Then `npx tsx scripts/sync-chart.ts` copies it into the Helm chart.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { dashboardJson } from './dashboard.ts';

export const DASHBOARD_FILE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'mqtt-liveness-proxy.json');

const wanted = dashboardJson();
let current = '';
try {
  current = readFileSync(DASHBOARD_FILE, 'utf8');
} catch {
  // not written yet
}
if (process.argv.includes('--check')) {
  if (current !== wanted) {
    process.stderr.write(`${DASHBOARD_FILE} is out of date: run npx tsx grafana/build-dashboard.ts\n`);
    process.exit(1);
  }
} else if (current !== wanted) {
  writeFileSync(DASHBOARD_FILE, wanted);
  process.stdout.write(`wrote ${DASHBOARD_FILE}\n`);
}
