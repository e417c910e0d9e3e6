/**
 * The broker canary's vocabulary: its options (with their defaults), what the
 * I/O side is asked to do, what observers hear, and the words for times. Pure;
 * ProbeState (probe-state.ts) is the logic that uses them.
 */

export type BrokerState = 'starting' | 'up' | 'down';
export type ProbeKind = 'ping' | 'publish';
export type ProbeFailureReason = 'timeout' | 'connect' | 'closed';

export interface ProbeOptions {
  intervalMs: number;
  /** A probe answered later than this failed. Shorter than intervalMs. */
  timeoutMs: number;
  /** Also probe with a PUBLISH that comes back (probes.deepTopic). */
  deep: boolean;
  /** CONNECT (and the deep probe's SUBSCRIBE) must be answered within this. Default max(2 x timeout, 2 s). */
  connectTimeoutMs?: number;
  /** Reconnect delays: from min, doubling per failed attempt, up to max. Defaults 200 ms and max(interval, 5 s). */
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** Failed rounds in a row on one session before it is replaced by a new one. Default 3. */
  missesPerSession?: number;
  /** Successful rounds in a row that turn the state up. Default 1. */
  rise?: number;
  /** Failed rounds in a row that turn the state down. Default 1. */
  fall?: number;
  /** Jitter source in [0, 1); reconnect delays are spread by +-25 %. Default Math.random. */
  random?: () => number;
}

/** What the I/O side is asked to do. */
export interface ProbeActions {
  /** Open a new session (TCP, CONNECT, SUBSCRIBE for the deep probe); answer with connected() or connectFailed(). */
  connect(): void;
  /** Drop the current session, if any; no callback is expected. */
  disconnect(): void;
  ping(): void;
  /** Publish the deep probe carrying this sequence number. */
  publish(seq: number): void;
}

export interface ProbeObserver {
  onState?(state: BrokerState, why: string, previous: BrokerState): void;
  onRtt?(kind: ProbeKind, ms: number): void;
  onFailure?(kind: ProbeKind, reason: ProbeFailureReason, detail: string): void;
}

export interface Readiness {
  ok: boolean;
  detail: string;
}

/** ProbeOptions with every default filled in. */
export type ResolvedProbeOptions = Required<Omit<ProbeOptions, 'connectTimeoutMs' | 'backoffMinMs' | 'backoffMaxMs'>> & { connectTimeoutMs: number; backoffMinMs: number; backoffMaxMs: number };

/** Checks the options (RangeError: timeout not positive or not shorter than the interval) and fills in the defaults. */
export function resolveProbeOptions(options: ProbeOptions): ResolvedProbeOptions {
  if (!(options.timeoutMs > 0 && options.timeoutMs < options.intervalMs)) {
    throw new RangeError(`probe timeout (${options.timeoutMs} ms) must be positive and shorter than the interval (${options.intervalMs} ms)`);
  }
  return {
    intervalMs: options.intervalMs,
    timeoutMs: options.timeoutMs,
    deep: options.deep,
    connectTimeoutMs: options.connectTimeoutMs ?? Math.max(2 * options.timeoutMs, 2000),
    backoffMinMs: options.backoffMinMs ?? 200,
    backoffMaxMs: options.backoffMaxMs ?? Math.max(options.intervalMs, 5000),
    missesPerSession: options.missesPerSession ?? 3,
    rise: options.rise ?? 1,
    fall: options.fall ?? 1,
    random: options.random ?? Math.random,
  };
}

/** A duration in words for `why` and readiness: "1.50 s". */
export function seconds(msValue: number): string {
  return `${(msValue / 1000).toFixed(msValue < 10_000 ? 2 : 1)} s`;
}

/** A round trip in words: "3.20 ms". */
export function ms(value: number): string {
  return `${value.toFixed(value < 10 ? 2 : 0)} ms`;
}
