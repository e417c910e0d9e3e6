/**
 * Admission limits for new client sockets: open connections in total, open
 * connections per source address, and a token bucket of new connections per
 * source. Pure bookkeeping over an injected Clock; the listener asks admit()
 * before anything else happens to a socket.
 *
 * Memory stays bounded: a source's bucket is dropped once it has refilled
 * (then it is indistinguishable from a new one), and at most maxSources
 * buckets are kept (the least recently seen go first). Per-source open counts
 * exist only while the source has open connections.
 */
import type { Config } from '../config/types.ts';
import type { Clock } from '../liveness/clock.ts';

export const LIMIT_REASONS = ['limit_connections', 'limit_per_source', 'limit_rate'] as const;
export type LimitReason = (typeof LIMIT_REASONS)[number];

export interface LimitsConfig {
  /** 0: no limit. */
  maxConnections: number;
  /** 0: no limit. */
  maxConnectionsPerSource: number;
  /** New connections per second per source; 0: no limit. The bucket holds max(1, rate) tokens. */
  connectRatePerSource: number;
}

export interface AdmissionOptions {
  /** Buckets kept at most (default 100 000). */
  maxSources?: number;
}

interface Bucket {
  tokens: number;
  /** Clock ms of the last refill. */
  at: number;
}

/** One admitted socket; release() is idempotent. */
export interface Ticket {
  readonly source: string;
  release(): void;
}

/** A small object per admitted socket, no closure (a closure and its context cost each connection ~0.1 KB more). */
class AdmissionTicket implements Ticket {
  private released = false;

  constructor(
    private readonly admission: Admission,
    readonly source: string,
  ) {}

  release(): void {
    if (this.released) return;
    this.released = true;
    this.admission.releaseOne(this.source);
  }
}

export class Admission {
  private config: LimitsConfig;
  private open = 0;
  private readonly perSource = new Map<string, number>();
  /** Insertion order = least recently used first. */
  private readonly buckets = new Map<string, Bucket>();
  private readonly maxSources: number;

  constructor(config: LimitsConfig, private readonly clock: Clock, options: AdmissionOptions = {}) {
    this.config = { ...config };
    this.maxSources = options.maxSources ?? 100_000;
  }

  /** New limits apply to the next admit(); open connections are never cut. */
  setConfig(config: LimitsConfig): void {
    if (config.connectRatePerSource !== this.config.connectRatePerSource) this.buckets.clear();
    this.config = { ...config };
  }

  /** Open sockets admitted and not yet released. */
  get openCount(): number {
    return this.open;
  }

  openFrom(source: string): number {
    return this.perSource.get(source) ?? 0;
  }

  /** Buckets held now (bounded memory). */
  get trackedSources(): number {
    return this.buckets.size;
  }

  /**
   * Admit a new socket from `source`, or say which limit refuses it. The rate
   * is checked first, so every attempt spends a token, refused or not.
   */
  admit(source: string): Ticket | LimitReason {
    const c = this.config;
    if (c.connectRatePerSource > 0 && !this.takeToken(source)) return 'limit_rate';
    const fromSource = this.perSource.get(source) ?? 0;
    if (c.maxConnectionsPerSource > 0 && fromSource >= c.maxConnectionsPerSource) return 'limit_per_source';
    if (c.maxConnections > 0 && this.open >= c.maxConnections) return 'limit_connections';
    this.open++;
    this.perSource.set(source, fromSource + 1);
    return new AdmissionTicket(this, source);
  }

  /** Give back one admitted socket's slot (through its Ticket, which makes it happen once). */
  releaseOne(source: string): void {
    this.open--;
    const n = (this.perSource.get(source) ?? 1) - 1;
    if (n > 0) this.perSource.set(source, n);
    else this.perSource.delete(source);
  }

  private takeToken(source: string): boolean {
    const rate = this.config.connectRatePerSource;
    const capacity = Math.max(1, rate);
    const now = this.clock.now();
    this.sweep(now, capacity / rate);
    let bucket = this.buckets.get(source);
    if (bucket) {
      this.buckets.delete(source); // re-inserted below: most recently used last
      bucket.tokens = Math.min(capacity, bucket.tokens + ((now - bucket.at) / 1000) * rate);
      bucket.at = now;
    } else {
      bucket = { tokens: capacity, at: now };
      while (this.buckets.size >= this.maxSources) this.buckets.delete(this.buckets.keys().next().value!);
    }
    this.buckets.set(source, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /** Drop buckets untouched for a full refill time: they are full again, like new ones. */
  private sweep(now: number, refillSeconds: number): void {
    const before = now - refillSeconds * 1000;
    for (const [source, bucket] of this.buckets) {
      if (bucket.at > before) break; // the rest were used more recently
      this.buckets.delete(source);
    }
  }
}

/** The key a source is counted under: its IP address, IPv4-mapped IPv6 folded to IPv4. */
export function sourceOf(remoteAddress: string | undefined): string {
  const a = remoteAddress ?? '';
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

/** The config key and value behind a limit refusal, for the log line. */
export function limitOf(reason: LimitReason, limits: Config['limits']): [string, number] {
  if (reason === 'limit_connections') return ['limits.maxConnections', limits.maxConnections];
  if (reason === 'limit_per_source') return ['limits.maxConnectionsPerSource', limits.maxConnectionsPerSource];
  return ['limits.connectRatePerSource', limits.connectRatePerSource];
}
