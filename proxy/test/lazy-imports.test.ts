/**
 * undici (webhooks), ws (the WebSocket listener) and Aedes (the embedded broker)
 * are loaded only by the proxies that use them: together about 9 MB of heap that
 * every major GC of every other proxy would walk (BENCHMARKS.md, issue 13).
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import path from 'node:path';
import { PACKAGE_ROOT } from '../src/package.ts';
import { freePort } from './helpers/mosquitto.ts';

const run = promisify(execFile);
const CHILD = path.join(PACKAGE_ROOT, 'proxy/test/helpers/loaded-packages.ts');

async function loadedWith(overrides: Record<string, unknown>): Promise<string[]> {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', CHILD, JSON.stringify(overrides), String(await freePort())], { cwd: PACKAGE_ROOT, timeout: 60_000 });
  return JSON.parse(stdout.trim().split('\n').pop()!) as string[];
}

t.test('a plain proxy loads none of the optional packages', async (t) => {
  t.same(await loadedWith({}), []);
});

t.test('a webhook loads undici, a WebSocket listener ws, the embedded broker Aedes', async (t) => {
  t.same(await loadedWith({ events: { webhook: 'http://127.0.0.1:9/events' } }), ['undici']);
  t.same(await loadedWith({ websocket: { listen: '127.0.0.1:0' } }), ['ws']);
  t.same(await loadedWith({ broker: 'embedded' }), ['aedes']);
});
