/**
 * The proxy in-process, in front of a given broker, on a free port, with its
 * logs captured as parsed JSON lines.
 */
import { Writable } from 'node:stream';
import { validateConfig } from '../src/config/load.ts';
import type { ConfigInput } from '../src/config/types.ts';
import { createLogger } from '../src/log.ts';
import { startApp, type App } from '../src/app.ts';
import type { CloseEvent } from '../src/relay/events.ts';

export interface TestProxy {
  app: App;
  host: string;
  port: number;
  url: string;
  /** Base URL of the admin server (/metrics, /livez, /readyz, /connections). */
  adminUrl: string;
  logs: Array<Record<string, unknown>>;
  /** Every connection end seen so far. */
  closes: CloseEvent[];
  /** Resolves with the next close event matching the predicate. */
  nextClose(match?: (e: CloseEvent) => boolean, timeoutMs?: number): Promise<CloseEvent>;
  stop(): Promise<void>;
}

export async function startProxy(upstreamPort: number, overrides: ConfigInput = {}, upstreamHost = '127.0.0.1'): Promise<TestProxy> {
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const config = validateConfig({
    listen: '127.0.0.1:0',
    admin: '127.0.0.1:0',
    upstream: `${upstreamHost}:${upstreamPort}`,
    broker: 'none',
    logLevel: 'debug',
    ...overrides,
  }, 'test');
  const app = await startApp(config, createLogger(config.logLevel, sink));
  const closes: CloseEvent[] = [];
  app.proxy.events.on('close', (e) => closes.push(e));
  const address = app.proxy.address();
  return {
    app,
    host: '127.0.0.1',
    port: address.port,
    url: `mqtt://127.0.0.1:${address.port}`,
    adminUrl: app.admin.url,
    logs,
    closes,
    nextClose(match = () => true, timeoutMs = 30_000) {
      const seen = closes.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          app.proxy.events.off('close', on);
          reject(new Error(`no matching connection end within ${timeoutMs} ms`));
        }, timeoutMs);
        const on = (e: CloseEvent): void => {
          if (!match(e)) return;
          clearTimeout(timer);
          app.proxy.events.off('close', on);
          resolve(e);
        };
        app.proxy.events.on('close', on);
      });
    },
    stop: () => app.stop(),
  };
}
