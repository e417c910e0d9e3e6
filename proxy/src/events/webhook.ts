/**
 * Webhook events: every connect, disconnect and liveness verdict of the proxy
 * as a JSON POST to one URL (config events.*).
 *
 * Proxying never waits on it: events go into a bounded in-memory queue (full:
 * the event is dropped and counted), and one delivery runs at a time, with a
 * timeout per attempt and retries with exponential backoff and full jitter.
 * Delivery is at least once; `eventId` lets the receiver drop duplicates.
 *
 * Bodies are built field by field from the event: never a password (the
 * proxy does not even keep one: ConnectInfo has no password field).
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { Agent, request } from 'undici';
import type { Config } from '../config/types.ts';
import type { ProxyMetrics } from '../metrics.ts';
import { VERSION as PROXY_VERSION } from '../package.ts';
import { identityOf, type ConnectionIdentity } from './connection-identity.ts';
import type { CloseEvent, ConnectEvent, ConnectionFacts, ProxyEvents, SuspectEvent } from '../relay/events.ts';

export type WebhookEventType = 'verdict' | 'connect' | 'disconnect' | 'suspect';

export interface WebhookBody extends ConnectionIdentity {
  eventId: string;
  type: WebhookEventType;
  connectionId: number;
  /** Why the connection ended (null for connect). */
  reason: string | null;
  detail: string | null;
  /** Silence before the end, seconds (null for connect). */
  silenceSeconds: number | null;
  /** The broker's own deadline minus the verdict time, seconds; null when not a verdict or the broker had none. */
  advantageSeconds: number | null;
  /** ISO time the TCP connection was accepted. */
  connectedAt: string;
  /** ISO time the connection ended (null for connect). */
  endedAt: string | null;
  proxyVersion: string;
}

export interface WebhookOptions {
  url: string;
  types: readonly WebhookEventType[];
  /** Seconds per attempt. */
  timeout: number;
  /** Retries after a failed attempt. */
  retries: number;
  queueSize: number;
  metrics: ProxyMetrics;
  log: Logger;
  /** First backoff, ms (default 250); doubles per retry up to maxBackoffMs. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** How long stop() waits for the queue to drain, ms (default 2000). */
  drainMs?: number;
}

export function webhookOptionsFrom(events: Config['events'], metrics: ProxyMetrics, log: Logger): WebhookOptions | null {
  if (!events.webhook) return null;
  return { url: events.webhook, types: events.types, timeout: events.timeout, retries: events.retries, queueSize: events.queueSize, metrics, log };
}

interface Item {
  body: WebhookBody;
  attempts: number;
}

/** A failed attempt that will not get better by retrying (HTTP 4xx except 408/429). */
class PermanentFailure extends Error {}

export class WebhookSender {
  private readonly queue: Item[] = [];
  private readonly types: ReadonlySet<WebhookEventType>;
  private readonly agent: Agent;
  private readonly url: URL;
  private running = false;
  private stopping = false;
  private stopped = false;
  private detach: (() => void) | null = null;
  /** Aborts the attempt in flight and the backoff wait (stop()). */
  private readonly abort = new AbortController();
  private idleWaiters: Array<() => void> = [];
  /** Events fully delivered / given up, for tests and logs. */
  delivered = 0;
  dropped = 0;

  constructor(private readonly options: WebhookOptions) {
    this.url = new URL(options.url);
    this.types = new Set(options.types);
    this.agent = new Agent({ connections: 2, keepAliveTimeout: 10_000, connectTimeout: Math.round(options.timeout * 1000) });
  }

  /** Subscribe to a proxy's events. */
  attach(events: ProxyEvents): void {
    const onConnect = (e: ConnectEvent): void => {
      if (e.rejected !== null) return; // ends right away; reported as a disconnect (policy_reject)
      this.enqueue('connect', e, null);
    };
    const onClose = (e: CloseEvent): void => {
      if (e.liveness) this.enqueue('verdict', e, e);
      // A socket that never sent CONNECT (port scan, TCP health check) is no MQTT client.
      else if (e.clientId !== null) this.enqueue('disconnect', e, e);
    };
    // Suspicion start/end: reason = its kind, detail = start | end (held: a correlated verdict is held).
    const onSuspect = (e: SuspectEvent): void => {
      this.enqueue('suspect', e, null, { reason: e.kind, detail: e.held ? `${e.phase} (held)` : e.phase });
    };
    events.on('connect', onConnect);
    events.on('close', onClose);
    events.on('suspect', onSuspect);
    this.detach = () => {
      events.off('connect', onConnect);
      events.off('close', onClose);
      events.off('suspect', onSuspect);
    };
  }

  get queueLength(): number {
    return this.queue.length;
  }

  /** Queue an event; O(1), never blocks. Returns false when it was dropped. */
  enqueue(type: WebhookEventType, facts: ConnectionFacts, end: CloseEvent | null, why?: { reason: string; detail: string }): boolean {
    if (!this.types.has(type) || this.stopping) return false;
    if (this.queue.length >= this.options.queueSize) {
      this.drop(1, 'queue full');
      return false;
    }
    const body = bodyOf(type, facts, end);
    if (why) Object.assign(body, why);
    this.queue.push({ body, attempts: 0 });
    this.options.metrics.eventQueueLength.set(this.queue.length);
    if (!this.running) {
      this.running = true;
      // Deliver off the relay's call stack.
      setImmediate(() => {
        this.run().catch((err: unknown) => this.options.log.error({ err }, 'webhook sender failed'));
      });
    }
    return true;
  }

  private drop(n: number, why: string): void {
    this.dropped += n;
    this.options.metrics.eventsDropped.inc(n);
    // Rate of this log line is bounded by the event rate; debug keeps a full queue quiet.
    this.options.log.debug({ dropped: n, why }, 'webhook event dropped');
  }

  private async run(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.stopped) {
        const item = this.queue.shift()!;
        this.options.metrics.eventQueueLength.set(this.queue.length);
        await this.deliver(item);
      }
    } finally {
      this.running = false;
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  private async deliver(item: Item): Promise<void> {
    const json = JSON.stringify(item.body);
    for (;;) {
      item.attempts++;
      try {
        await this.attempt(json);
        this.options.metrics.eventDeliveries.inc({ outcome: 'success' });
        this.delivered++;
        return;
      } catch (err) {
        this.options.metrics.eventDeliveries.inc({ outcome: 'failure' });
        const permanent = err instanceof PermanentFailure;
        const retriesLeft = this.options.retries - (item.attempts - 1);
        if (this.stopped || permanent || retriesLeft <= 0) {
          this.drop(1, this.stopped ? 'stopped' : permanent ? 'rejected by the receiver' : 'retries exhausted');
          this.options.log.warn({ type: item.body.type, eventId: item.body.eventId, attempts: item.attempts, error: (err as Error).message }, 'webhook delivery failed; event dropped');
          return;
        }
        const ceiling = Math.min(this.options.maxBackoffMs ?? 30_000, (this.options.backoffMs ?? 250) * 2 ** (item.attempts - 1));
        const wait = ceiling / 2 + Math.random() * (ceiling / 2);
        this.options.log.debug({ type: item.body.type, attempts: item.attempts, retryInMs: Math.round(wait), error: (err as Error).message }, 'webhook delivery failed; retrying');
        await this.sleep(wait);
      }
    }
  }

  private async attempt(json: string): Promise<void> {
    const timeoutMs = Math.round(this.options.timeout * 1000);
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(timeoutMs)]);
    const res = await request(this.url, {
      method: 'POST',
      dispatcher: this.agent,
      headers: { 'content-type': 'application/json', 'user-agent': `mqtt-liveness-proxy/${PROXY_VERSION}` },
      body: json,
      signal,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    // Read (and discard) the answer so the connection can be reused.
    await res.body.dump({ limit: 64 * 1024, signal });
    if (res.statusCode >= 200 && res.statusCode < 300) return;
    const message = `HTTP ${res.statusCode}`;
    if (res.statusCode >= 400 && res.statusCode < 500 && res.statusCode !== 408 && res.statusCode !== 429) throw new PermanentFailure(message);
    throw new Error(message);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.abort.signal.aborted) return resolve();
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.abort.signal.addEventListener('abort', done, { once: true });
    });
  }

  /** Resolves when the queue is empty and nothing is in flight. */
  idle(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Stop taking events, give the queue drainMs to empty, then abort what is
   * left (counted as dropped).
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.detach?.();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.idle(), new Promise<void>((r) => { timer = setTimeout(r, this.options.drainMs ?? 2000); })]);
    clearTimeout(timer);
    this.stopped = true;
    const left = this.queue.length;
    if (left > 0) {
      this.queue.length = 0;
      this.drop(left, 'stopped');
      this.options.metrics.eventQueueLength.set(0);
    }
    this.abort.abort();
    await this.idle();
    await this.agent.destroy().catch(() => undefined);
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function seconds(ms: number | null): number | null {
  return ms === null ? null : Math.round(ms) / 1000;
}

/** The JSON body, field by field from the event (nothing else leaks in). */
export function bodyOf(type: WebhookEventType, f: ConnectionFacts, end: CloseEvent | null): WebhookBody {
  return {
    eventId: randomUUID(),
    type,
    connectionId: f.id,
    ...identityOf(f),
    reason: end ? end.reason : null,
    detail: end ? end.detail : null,
    silenceSeconds: end ? seconds(end.silenceMs) : null,
    advantageSeconds: end && end.liveness ? seconds(end.advantageMs) : null,
    connectedAt: iso(f.startedAt),
    endedAt: end ? iso(end.endedAt) : null,
    proxyVersion: PROXY_VERSION,
  };
}
