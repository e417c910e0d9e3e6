/**
 * `mqtt-liveness-proxy status`: asks a running proxy's admin server for its
 * readiness and connections and prints them as tables.
 */
import { request } from 'undici';
import type { ConnectionsBody, ReadyBody } from './server.ts';

export interface StatusOptions {
  /** Admin base URL, or HOST:PORT. */
  admin?: string;
  token?: string;
  limit?: number;
  /** Per request, ms. */
  timeoutMs?: number;
  out?: NodeJS.WritableStream;
}

const DEFAULT_ADMIN_URL = 'http://127.0.0.1:9464';

/** Accept a URL or a bare HOST:PORT (as in the admin config); a wildcard host means this machine. */
function adminBaseUrl(admin: string | undefined): URL {
  let text = admin ?? DEFAULT_ADMIN_URL;
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) text = `http://${text}`;
  const url = new URL(text);
  if (url.hostname === '0.0.0.0') url.hostname = '127.0.0.1';
  else if (url.hostname === '[::]') url.hostname = '[::1]';
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  return url;
}

async function getJson<T>(url: URL, token: string | undefined, timeoutMs: number): Promise<{ status: number; body: T | { error?: string } }> {
  const res = await request(url, {
    method: 'GET',
    headers: { accept: 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.body.text();
  let body: T | { error?: string };
  try {
    body = JSON.parse(text) as T;
  } catch {
    body = { error: `not JSON: ${text.slice(0, 200)}` };
  }
  return { status: res.statusCode, body };
}

/** Prints the status; resolves with the exit code (0: ready and connections listed). */
export async function runStatus(options: StatusOptions = {}): Promise<number> {
  const out = options.out ?? process.stdout;
  const base = adminBaseUrl(options.admin);
  const timeoutMs = options.timeoutMs ?? 5000;
  const token = options.token;
  const print = (line = ''): void => void out.write(`${line}\n`);
  const shownBase = base.href.replace(/\/$/, '');

  let ready: { status: number; body: ReadyBody | { error?: string } };
  try {
    ready = await getJson<ReadyBody>(new URL('readyz', base), token, timeoutMs);
  } catch (err) {
    print(`Proxy at ${shownBase}: unreachable (${describeError(err)})`);
    return 1;
  }
  let code = 0;
  if ('checks' in ready.body) {
    print(`Proxy at ${shownBase}: ${ready.body.status === 'ready' ? 'READY' : 'NOT READY'}`);
    print();
    const rows = Object.entries(ready.body.checks).map(([name, c]) => [name, c.ok ? 'ok' : 'FAIL', c.detail]);
    print(table(['CHECK', 'STATE', 'DETAIL'], rows));
    if (ready.body.status !== 'ready') code = 1;
  } else {
    print(`Proxy at ${shownBase}: /readyz answered HTTP ${ready.status}${ready.body.error ? `: ${ready.body.error}` : ''}`);
    code = 1;
  }
  print();

  const connectionsUrl = new URL('connections', base);
  if (options.limit !== undefined) connectionsUrl.searchParams.set('limit', String(options.limit));
  let conns: { status: number; body: ConnectionsBody | { error?: string } };
  try {
    conns = await getJson<ConnectionsBody>(connectionsUrl, token, timeoutMs);
  } catch (err) {
    print(`Connections: request failed (${describeError(err)})`);
    return 1;
  }
  if (conns.status === 401) {
    print(`Connections: HTTP 401, the proxy requires a token (--token TOKEN or MLP_ADMIN_TOKEN)${token ? '; the one given was refused' : ''}`);
    return 1;
  }
  if (!('connections' in conns.body)) {
    print(`Connections: HTTP ${conns.status}${conns.body.error ? `: ${conns.body.error}` : ''}`);
    return 1;
  }
  const { total, shown, connections } = conns.body;
  print(`Connections: ${total} open${shown < total ? `, showing ${shown}` : ''}`);
  if (connections.length > 0) {
    print();
    print(table(
      ['ID', 'CLIENT ID', 'USERNAME', 'REMOTE', 'PROTO', 'KEEPALIVE', 'ENFORCED', 'SILENT', 'DEADLINE IN', 'BYTES IN', 'BYTES OUT'],
      connections.map((c) => [
        String(c.id),
        c.clientId === null ? '(no CONNECT yet)' : c.clientId === '' ? '(empty)' : c.clientId,
        c.username ?? '-',
        c.remoteAddress.includes(':') ? `[${c.remoteAddress}]:${c.remotePort}` : `${c.remoteAddress}:${c.remotePort}`,
        c.protocol ?? '-',
        c.keepAlive === null ? '-' : `${c.keepAlive}s`,
        c.effectiveKeepAlive === null ? '-' : c.effectiveKeepAlive === 0 ? 'none' : `${c.effectiveKeepAlive}s`,
        `${c.secondsSinceLastPacket.toFixed(1)}s`,
        c.secondsToDeadline === null ? '-' : `${c.secondsToDeadline.toFixed(1)}s`,
        bytes(c.bytesFromClient),
        bytes(c.bytesToClient),
      ]),
      new Set([0, 5, 6, 7, 8, 9, 10]),
    ));
  }
  return code;
}

function describeError(err: unknown): string {
  const e = err as { code?: string; message?: string; cause?: { code?: string } };
  return e.code ?? e.cause?.code ?? e.message ?? String(err);
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(1)} GiB`;
}

/** A plain text table; control characters in cells (C0, DEL and C1, e.g. CSI 0x9b) are shown escaped. */
export function table(header: string[], rows: string[][], rightAligned: ReadonlySet<number> = new Set()): string {
  const clean = (s: string): string => s.replace(/\p{Cc}/gu, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`);
  const all = [header, ...rows.map((r) => r.map(clean))];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all
    .map((r) => r.map((cell, i) => (rightAligned.has(i) ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))).join('  ').trimEnd())
    .join('\n');
}
