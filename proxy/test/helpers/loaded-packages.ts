/**
 * Child process for lazy-imports.test.ts: starts the proxy in-process with the
 * config overrides given as JSON in argv[2] (against a broker port that need not
 * answer), then prints which of the optional packages were loaded, and stops.
 * CommonJS packages imported from ES modules land in the require cache.
 */
import { createRequire } from 'node:module';
import { startProxy } from '../../harness/proxy.ts';

// Aedes itself is an ES module; its persistence package is CommonJS and comes with it.
const OPTIONAL: Record<string, string> = { undici: 'undici', ws: 'ws', aedes: 'aedes-persistence' };
const overrides = JSON.parse(process.argv[2] ?? '{}') as Record<string, unknown>;
const proxy = await startProxy(Number(process.argv[3] ?? 1), overrides);
const cache = Object.keys(createRequire(import.meta.url).cache);
const loaded = Object.keys(OPTIONAL).filter((name) => cache.some((file) => file.includes(`/node_modules/${OPTIONAL[name]}/`)));
process.stdout.write(`${JSON.stringify(loaded)}\n`);
await proxy.stop();
