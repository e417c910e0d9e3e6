/** README's configuration table stays in step with the schema, and its commands exist. */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { configKeys } from '../src/config/describe.ts';
import { expectedReadme } from '../../scripts/sync-readme.ts';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> };

t.test('the configuration table is the one generated from the schema', async (t) => {
  t.ok(readme === expectedReadme(readme), 'README table up to date (else run: npx tsx scripts/sync-readme.ts)');
  for (const key of configKeys()) {
    const row = readme.split('\n').find((line) => line.startsWith(`| \`${key.key}\` |`));
    if (!row) {
      t.fail(`README has no row for ${key.key}`);
      continue;
    }
    t.ok(row.includes(`\`${key.env}\``), `${key.key}: its variable ${key.env}`);
    const d = key.schema.default;
    if (typeof d === 'string' || typeof d === 'number' || typeof d === 'boolean') t.ok(row.includes(`\`${String(d)}\``), `${key.key} default ${String(d)} in README`);
  }
  t.ok(configKeys().some((k) => k.env === 'MLP_KEEP_ALIVE__MAX') && configKeys().some((k) => k.env === 'MLP_TCP__USER_TIMEOUT'), 'the documented examples exist');
});

t.test('exit codes are documented', async (t) => {
  t.match(readme, /Exit codes/);
});

t.test('the two newcomer commands are there and exist', async (t) => {
  t.match(readme, /npm ci && npm start/);
  t.match(readme, /npm test/);
  t.ok(pkg.scripts.start && pkg.scripts.test && pkg.scripts.bench && pkg.scripts['bench:detect']);
});
