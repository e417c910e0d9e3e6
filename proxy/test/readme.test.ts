/** README's configuration table stays in step with the schema, and its commands exist. */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { SCHEMA, type Field } from '../src/config/schema.ts';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> };

function keys(fields: Record<string, Field>, prefix = ''): Array<[string, Field]> {
  return Object.entries(fields).flatMap(([k, f]) => (f.type === 'object' ? keys(f.fields, `${prefix}${k}.`) : [[`${prefix}${k}`, f] as [string, Field]]));
}

t.test('every configuration key is documented with its default', async (t) => {
  for (const [key, field] of keys(SCHEMA)) {
    const row = readme.split('\n').find((line) => line.startsWith(`| \`${key}\` |`));
    if (!row) {
      t.fail(`README has no row for ${key}`);
      continue;
    }
    if ('default' in field && field.default !== null && !Array.isArray(field.default)) {
      t.ok(row.includes(`\`${String(field.default)}\``), `${key} default ${String(field.default)} in README`);
    }
  }
});

t.test('the two newcomer commands are there and exist', async (t) => {
  t.match(readme, /npm ci && npm start/);
  t.match(readme, /npm test/);
  t.ok(pkg.scripts.start && pkg.scripts.test && pkg.scripts.bench && pkg.scripts['bench:detect']);
});
