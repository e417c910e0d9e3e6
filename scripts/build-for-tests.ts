/**
 * tap's `before` step: compile proxy/src into dist/ (incremental) so the tests
 * that spawn proxy/bin run the JavaScript of the sources under test, never a
 * stale build.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
process.exit(r.status ?? 1);
