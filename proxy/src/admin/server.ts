/**
 * The admin HTTP server: GET /metrics, /livez, /readyz and /connections.
 *
 * Readiness is a set of named checks; the proxy registers "listener" and
 * "upstream", and other parts (the broker canary) add theirs with
 * addReadinessCheck(). /connections lists client ids, so it can require a
 * bearer token (config adminToken).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { formatHostPort, type HostPort } from '../config/types.ts';
import { listen } from '../net/listen.ts';
import { probeTcp } from '../net/tcp-probe.ts';
import type { Clock } from '../liveness/clock.ts';
import type { ProxyMetrics } from '../metrics.ts';
import { identityOf, type ConnectionIdentity } from '../events/connection-identity.ts';
import type { ProxyServer } from '../relay/server.ts';

export interface CheckResult {
  ok: boolean;
  detail: string;
}

export type ReadinessCheck = () => CheckResult | Promise<CheckResult>;

export interface AdminServerOptions {
  /** Where to listen. */
  listen: HostPort;
  proxy: ProxyServer;
  metrics: ProxyMetrics;
  clock: Clock;
  log: Logger;
  /** Bearer token for /connections; null: none. */
  token: string | null;
  /** TCP connect timeout of the upstream readiness check, ms. */
  upstreamTimeoutMs?: number;
  /** How long an upstream check result is reused, ms. */
  upstreamCacheMs?: number;
  /** /livez fails when the event loop stalled longer than this, ms. */
  maxEventLoopDelayMs?: number;
}

/** One row of GET /connections. */
export interface ConnectionRow extends ConnectionIdentity {
  id: number;
  secondsSinceLastPacket: number;
  /** Seconds until the keep-alive verdict; null when no keep-alive is enforced. */
  secondsToDeadline: number | null;
  bytesFromClient: number;
  bytesToClient: number;
  connectedAt: string;
  /** alive or suspect (keep-alive or TCP silence beyond the first missed answer); dead ends the connection. */
  state: 'alive' | 'suspect';
  /** ISO time the current suspicion began; null when alive. */
  suspectSince: string | null;
  /** The link estimate (docs/liveness.md): kernel's smoothed RTT and variance, loss = 95% upper bound of q, samples read. */
  link: { srttMs: number; rttvarMs: number; loss: number; newcomerProbes: number; samples: number };
  /** What the model derived for this connection: probes n, TCP verdict times, keep-alive grace. */
  deadlines: { probes: number; idleDeadAfterMs: number; dataDeadAfterMs: number; keepAliveGraceMs: number };
}

export interface ConnectionsBody {
  total: number;
  shown: number;
  connections: ConnectionRow[];
}

export interface ReadyBody {
  status: 'ready' | 'not_ready';
  checks: Record<string, CheckResult>;
  /** When shutdown began (ISO time); /readyz has answered 503 since. */
  drainingSince?: string;
}

const DEFAULT_LIMIT = 1000;
const MAX_LIMIT = 100_000;
/** Window over which /livez looks at event-loop delay. */
const LIVENESS_WINDOW_MS = 10_000;

export class AdminServer {
  private readonly server: http.Server;
  private readonly checks = new Map<string, ReadinessCheck>();
  private readonly loopDelay: IntervalHistogram;
  private readonly rotateTimer: NodeJS.Timeout;
  /** Max and p99 of event-loop delay of the previous window, ns. */
  private previousMax = 0;
  private previousP99 = 0;
  private readonly tokenDigest: Buffer | null;
  private upstreamCache: { at: number; result: Promise<CheckResult> } | null = null;
  private drainingSince: Date | null = null;

  constructor(private readonly options: AdminServerOptions) {
    this.tokenDigest = options.token ? digest(options.token) : null;
    this.loopDelay = monitorEventLoopDelay({ resolution: 20 });
    this.loopDelay.enable();
    this.rotateTimer = setInterval(() => {
      this.previousMax = this.loopDelay.max;
      this.previousP99 = this.loopDelay.percentile(99);
      this.loopDelay.reset();
    }, LIVENESS_WINDOW_MS);
    this.rotateTimer.unref();

    this.addReadinessCheck('listener', () => (options.proxy.accepting
      ? { ok: true, detail: `accepting MQTT connections on port ${safePort(options.proxy)}` }
      : { ok: false, detail: 'the MQTT listener is not accepting connections' }));
    this.addReadinessCheck('upstream', () => this.checkUpstream());

    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        options.log.error({ err }, 'admin request failed');
        if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
        else res.destroy();
      });
    });
    this.server.keepAliveTimeout = 5000;
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 30_000;
  }

  /**
   * Add a named readiness check; /readyz is 200 only when every check is ok.
   * A check that throws or takes longer than 2 s counts as failed.
   * Returns a function that removes it.
   */
  addReadinessCheck(name: string, check: ReadinessCheck): () => void {
    this.checks.set(name, check);
    return () => {
      if (this.checks.get(name) === check) this.checks.delete(name);
    };
  }

  async listen(): Promise<net.AddressInfo> {
    const { host, port } = this.options.listen;
    await listen(this.server, { host, port });
    this.server.on('error', (err) => this.options.log.error({ err }, 'admin server error'));
    const address = this.address();
    this.options.log.info({ admin: `${address.address}:${address.port}` }, 'admin server listening');
    return address;
  }

  address(): net.AddressInfo {
    return this.server.address() as net.AddressInfo;
  }

  /** Base URL to reach the server (a wildcard address becomes loopback). */
  get url(): string {
    const { address, port, family } = this.address();
    let host = address;
    if (address === '0.0.0.0') host = '127.0.0.1';
    else if (address === '::') host = '::1';
    return family === 'IPv6' || host.includes(':') ? `http://[${host}]:${port}` : `http://${host}:${port}`;
  }

  async close(): Promise<void> {
    clearInterval(this.rotateTimer);
    this.loopDelay.disable();
    if (!this.server.listening) return;
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
      // Scrapes in flight get a moment; then every socket goes.
      setTimeout(() => this.server.closeAllConnections(), 1000).unref();
    });
  }

  // ---- routing ---------------------------------------------------------------

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const route = ROUTES[url.pathname];
    if (!route) {
      sendJson(res, 404, { error: 'not found', paths: Object.keys(ROUTES) });
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      sendJson(res, 405, { error: `method ${req.method} not allowed`, allow: ['GET', 'HEAD'] });
      return;
    }
    switch (route) {
      case 'metrics': {
        const body = await this.options.metrics.metrics();
        res.writeHead(200, { 'Content-Type': this.options.metrics.contentType, 'Cache-Control': 'no-store' });
        res.end(body);
        return;
      }
      case 'livez':
        return this.livez(res);
      case 'readyz': {
        const body = await this.readiness();
        sendJson(res, body.status === 'ready' ? 200 : 503, body);
        return;
      }
      case 'connections':
        if (!this.authorized(req)) {
          res.setHeader('WWW-Authenticate', 'Bearer realm="mqtt-liveness-proxy"');
          sendJson(res, 401, { error: 'a bearer token is required (Authorization: Bearer <adminToken>)' });
          return;
        }
        return this.connections(url, res);
    }
  }

  private livez(res: http.ServerResponse): void {
    const max = Math.max(this.loopDelay.max, this.previousMax) / 1e6;
    const p99 = Math.max(this.loopDelay.count > 0 ? this.loopDelay.percentile(99) : 0, this.previousP99) / 1e6;
    const limit = this.options.maxEventLoopDelayMs ?? 5000;
    const ok = max <= limit;
    sendJson(res, ok ? 200 : 503, {
      status: ok ? 'ok' : 'event_loop_blocked',
      eventLoopDelayMs: round(p99),
      eventLoopDelayMaxMs: round(max),
      ...(ok ? {} : { detail: `the event loop stalled for ${Math.round(max)} ms (limit ${limit} ms) in the last ${LIVENESS_WINDOW_MS / 1000}-${(2 * LIVENESS_WINDOW_MS) / 1000} s` }),
    });
  }

  /**
   * Shutdown began: from now on /readyz answers 503 at once, without running
   * the checks, so a load balancer stops sending new clients here.
   */
  setDraining(): void {
    this.drainingSince ??= new Date();
  }

  get draining(): boolean {
    return this.drainingSince !== null;
  }

  /** Run every readiness check (in parallel, 2 s each at most). */
  async readiness(): Promise<ReadyBody> {
    if (this.drainingSince) {
      const since = this.drainingSince.toISOString();
      return { status: 'not_ready', checks: { draining: { ok: false, detail: `shutting down since ${since}` } }, drainingSince: since };
    }
    const entries = [...this.checks.entries()];
    const results = await Promise.all(entries.map(async ([, check]) => runCheck(check)));
    const checks: Record<string, CheckResult> = {};
    entries.forEach(([name], i) => { checks[name] = results[i]; });
    return { status: results.every((r) => r.ok) ? 'ready' : 'not_ready', checks };
  }

  /** Does the upstream accept a TCP connection? Cached briefly so probes cost the broker little. */
  private checkUpstream(): Promise<CheckResult> {
    // Monotonic: with the wall clock, a step back would keep a stale answer for as long as the step.
    const now = this.options.clock.now();
    const cacheMs = this.options.upstreamCacheMs ?? 1000;
    if (this.upstreamCache && now - this.upstreamCache.at < cacheMs) return this.upstreamCache.result;
    const result = tcpCheck(this.options.proxy.config.upstream, this.options.upstreamTimeoutMs ?? 1000);
    this.upstreamCache = { at: now, result };
    return result;
  }

  private authorized(req: http.IncomingMessage): boolean {
    if (!this.tokenDigest) return true;
    const header = req.headers.authorization ?? '';
    const match = /^Bearer\s+(.+)$/i.exec(header.trim());
    if (!match) return false;
    // Digests have equal length, so the comparison time does not depend on the token.
    return timingSafeEqual(digest(match[1]), this.tokenDigest);
  }

  private connections(url: URL, res: http.ServerResponse): void {
    const raw = url.searchParams.get('limit');
    let limit = DEFAULT_LIMIT;
    if (raw !== null) {
      limit = Number(raw);
      if (!Number.isInteger(limit) || limit < 0) {
        sendJson(res, 400, { error: `limit must be a whole number >= 0, got ${JSON.stringify(raw)}` });
        return;
      }
      limit = Math.min(limit, MAX_LIMIT);
    }
    const now = this.options.clock.now();
    const rows: ConnectionRow[] = [];
    const proxy = this.options.proxy;
    for (const conn of proxy.connections) {
      if (rows.length >= limit) break;
      const d = conn.deadlines;
      const silenceMs = Math.max(0, now - d.lastClientActivity);
      const deadAfterMs = conn.liveness.keepAliveDeadAfterMs();
      const deadline = d.allowedSilenceMs === Infinity ? null : d.lastClientActivity + deadAfterMs - now;
      const live = conn.liveness;
      const snap = live.model.snapshot();
      const tcpSince = snap.suspectSince;
      const since = live.keepAliveSuspectSince >= 0 ? (tcpSince === null ? live.keepAliveSuspectSince : Math.min(tcpSince, live.keepAliveSuspectSince)) : tcpSince;
      const wall = Date.now();
      rows.push({
        id: conn.id,
        ...identityOf(conn.facts()),
        secondsSinceLastPacket: round(silenceMs / 1000),
        secondsToDeadline: deadline === null ? null : round(Math.max(0, deadline) / 1000),
        bytesFromClient: conn.bytesFromClient,
        bytesToClient: conn.bytesToClient,
        connectedAt: new Date(conn.startedAt).toISOString(),
        state: since === null ? 'alive' : 'suspect',
        suspectSince: since === null ? null : new Date(wall - (now - since)).toISOString(),
        link: { srttMs: round(snap.link.srttMs), rttvarMs: round(snap.link.rttvarMs), loss: Number(snap.link.loss.toPrecision(3)), newcomerProbes: snap.link.newcomerProbes, samples: snap.link.samples },
        deadlines: {
          probes: snap.deadlines.probes,
          idleDeadAfterMs: Math.round(snap.deadlines.idleDeadAfterMs),
          dataDeadAfterMs: Math.round(snap.deadlines.dataDeadAfterMs),
          keepAliveGraceMs: d.allowedSilenceMs === Infinity ? 0 : Math.round(deadAfterMs - (conn.effectiveKeepAlive ?? 0) * 1000),
        },
      });
    }
    const body: ConnectionsBody = { total: proxy.connections.size, shown: rows.length, connections: rows };
    sendJson(res, 200, body);
  }
}

const ROUTES: Record<string, 'metrics' | 'livez' | 'readyz' | 'connections'> = {
  '/metrics': 'metrics',
  '/livez': 'livez',
  '/readyz': 'readyz',
  '/connections': 'connections',
};

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}

function safePort(proxy: ProxyServer): string {
  try {
    return String(proxy.address().port);
  } catch {
    return '?';
  }
}

async function runCheck(check: ReadinessCheck): Promise<CheckResult> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      Promise.resolve().then(check),
      new Promise<CheckResult>((resolve) => {
        timer = setTimeout(() => resolve({ ok: false, detail: 'check timed out after 2 s' }), 2000);
      }),
    ]);
  } catch (err) {
    return { ok: false, detail: `check failed: ${(err as Error).message}` };
  } finally {
    clearTimeout(timer);
  }
}

/** Connect, then close at once; ok when the connection was accepted within timeoutMs. */
async function tcpCheck(upstream: HostPort, timeoutMs: number): Promise<CheckResult> {
  const at = formatHostPort(upstream);
  const { ok, ms, error } = await probeTcp(upstream, { timeoutMs });
  if (ok) return { ok, detail: `upstream ${at} accepts TCP connections (${Math.round(ms)} ms)` };
  if (error === 'timeout') return { ok, detail: `upstream ${at} did not accept a TCP connection within ${timeoutMs} ms` };
  return { ok, detail: `upstream ${at}: ${error}` };
}
