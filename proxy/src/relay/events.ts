/**
 * The proxy's internal event stream: what every connection learned and how it
 * ended. Metrics, webhooks and logs subscribe to it; the relay never knows them.
 */
import { EventEmitter } from 'node:events';
import type { Reason } from '../liveness/reasons.ts';
import type { LimitReason } from './limits.ts';
import type { TransportKind } from './transport.ts';

export interface ConnectionFacts {
  id: number;
  clientId: string | null;
  username: string | null;
  remoteAddress: string;
  remotePort: number;
  /** How the client arrived. */
  transport: TransportKind;
  protocolVersion: number | null;
  /** Keep-alive the client asked for, seconds. */
  keepAlive: number | null;
  /** Keep-alive the proxy enforces, seconds (0: none). */
  effectiveKeepAlive: number | null;
  /** Keep-alive the broker was sent, seconds. */
  upstreamKeepAlive: number | null;
  /** Wall-clock ms. */
  startedAt: number;
}

export interface ConnectEvent extends ConnectionFacts {
  clamped: boolean;
  /** Keep-alive limit kind when clamped. */
  rejected: string | null;
}

export interface CloseEvent extends ConnectionFacts {
  reason: Reason;
  detail: string | null;
  /** Wall-clock ms. */
  endedAt: number;
  /** From accept to the end on the monotonic clock (not endedAt - startedAt, which a wall-clock step bends). */
  durationMs: number;
  /** Now minus the last byte from the client, at the verdict. */
  silenceMs: number;
  /** The broker's own deadline minus now (positive: the proxy acted earlier); null when the broker has none. */
  advantageMs: number | null;
  bytesFromClient: number;
  bytesToClient: number;
  /** Whether the broker was told to publish the Will (liveness verdicts). */
  liveness: boolean;
}

/** A new socket refused by an admission limit, closed before any upstream connection. */
export interface RejectEvent {
  reason: LimitReason;
  remoteAddress: string;
  remotePort: number;
  /** Which listener accepted it (mqtt: plain TCP, mqtts: TLS, ws, wss). */
  listener: 'mqtt' | 'mqtts' | 'ws' | 'wss';
  transport: TransportKind;
  /** Wall-clock ms. */
  at: number;
}

/** A socket a listener closed before it became a connection: a bad PROXY header, a failed WebSocket upgrade. */
export interface RefusedEvent {
  transport: TransportKind;
  /** proxy_header, or a WebSocket refusal (listeners/websocket.ts). */
  reason: string;
  remoteAddress: string;
  remotePort: number;
  detail: string | null;
}

/** What a suspicion is about: MQTT keep-alive silence, unanswered keep-alive probes, unacknowledged data. */
export type SuspectKind = 'keepalive' | 'tcp_idle' | 'tcp_data';
export const SUSPECT_KINDS: readonly SuspectKind[] = ['keepalive', 'tcp_idle', 'tcp_data'];

/** A connection turned suspect (phase start) or evidence ended it (phase end); only a dead verdict ends a session. */
export interface SuspectEvent extends ConnectionFacts {
  kind: SuspectKind;
  phase: 'start' | 'end';
  /** Wall-clock ms of the onset (start) or of the evidence (end). */
  at: number;
  /** A dead verdict is being held (local health degraded). */
  held: boolean;
}

/** Local health changed: many connections went silent together (degraded) or that passed. */
export interface LocalHealthEvent {
  degraded: boolean;
  onsetsInWindow: number;
  threshold: number;
  heldNow: number;
}

export interface ProxyEventMap {
  connect: [ConnectEvent];
  close: [CloseEvent];
  reject: [RejectEvent];
  refused: [RefusedEvent];
  suspect: [SuspectEvent];
  localHealth: [LocalHealthEvent];
  /** A connection's link estimate was updated on its timer: smoothed RTT (s) and loss (upper bound of q). */
  linkEstimate: [rttSeconds: number, loss: number];
  /** A late PINGREQ's keep-alive verdict is put off: the link failed to answer since it was due (keepalive-watch.ts). */
  keepAliveLinkWait: [];
  frameError: [{ kind: string; code: string; direction: 'to_broker' | 'to_client' }];
}

export class ProxyEvents extends EventEmitter<ProxyEventMap> {}
