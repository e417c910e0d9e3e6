/**
 * tap's `before` step: compile proxy/src into dist/ (incremental) so that the
 * tests that spawn proxy/bin, and the package test, run the JavaScript of the
 * sources under test, never a stale build. An incremental tsc never deletes:
 * outputs whose source was moved or removed are pruned here.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DIST = path.join(ROOT, 'dist');

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
if (r.status !== 0) process.exit(r.status ?? 1);

// dist/X.js and dist/X.js.map come from X.ts (tsconfig.build.json: rootDir ".").
for (const entry of readdirSync(DIST, { recursive: true, withFileTypes: true })) {
  const match = /^(.*)\.js(\.map)?$/.exec(entry.name);
  if (!entry.isFile() || !match) continue;
  const output = path.join(entry.parentPath, entry.name);
  const source = path.join(ROOT, path.relative(DIST, entry.parentPath), `${match[1]}.ts`);
  if (!existsSync(source)) rmSync(output);
}
