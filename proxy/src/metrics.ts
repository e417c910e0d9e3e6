/**
 * The proxy's Prometheus metrics (names and labels: docs/METRICS-CONTRACT.md).
 *
 * One Registry per running proxy, never prom-client's global one. Everything
 * about connections comes from ProxyServer.events; the hot-path traffic
 * counters (TrafficStats) and the open-connection count are read only when
 * Prometheus scrapes, in collect() callbacks, so the relay never touches a
 * label per packet.
 */
import { Registry, collectDefaultMetrics } from 'prom-client';
import { LIVENESS_REASONS, REASONS } from './liveness/reasons.ts';
import { frameErrorKind } from './mqtt/errors.ts';
import { PACKET_NAMES } from './mqtt/packets.ts';
import { protocolLabel } from './mqtt/protocol.ts';
import { VERSION } from './package.ts';
import type { CloseEvent, ConnectEvent, RefusedEvent, RejectEvent } from './relay/events.ts';
import type { ProxyServer } from './relay/server.ts';
import { DIRECTIONS } from './relay/stats.ts';
import { LISTENER_REFUSALS } from './listeners/refusals.ts';
import { TRANSPORT_LABELS, connectionMetrics, type TransportLabel } from './metrics/connections.ts';
import { trafficMetrics } from './metrics/traffic.ts';
import { buildInfoMetric, canaryMetrics, webhookMetrics } from './metrics/outbound.ts';
import { livenessMetrics } from './metrics/liveness.ts';

/** @deprecated the version is VERSION in package.ts; kept for importers of this name. */
export const PROXY_VERSION: string = VERSION;

export const PROTOCOLS = ['3.1', '3.1.1', '5'] as const;
export const REJECT_REASONS = ['keepalive_too_large', 'keepalive_zero', 'broker_unreachable', 'limit_connections', 'limit_per_source', 'limit_rate'] as const;
export const FRAME_ERROR_KINDS: readonly string[] = [...new Set(Object.values(frameErrorKind))];
export const PROBES = ['ping', 'publish'] as const;
export const PROBE_FAILURE_REASONS = ['timeout', 'connect', 'closed'] as const;
export const DELIVERY_OUTCOMES = ['success', 'failure'] as const;

export type Probe = (typeof PROBES)[number];
export type ProbeFailureReason = (typeof PROBE_FAILURE_REASONS)[number];

export interface MetricsOptions {
  /** Also register prom-client's process_* and nodejs_* metrics (default true). */
  defaultMetrics?: boolean;
}

export class ProxyMetrics {
  readonly registry = new Registry();
  /** Connections that have ended, by transport; with the open ones this is the accepted count. */
  private readonly closed: Record<TransportLabel, number> = { tcp: 0, tls: 0, ws: 0, wss: 0 };
  private readonly registers = [this.registry];

  // Connections and verdicts.
  private readonly connections = connectionMetrics(this.registers, {
    open: () => this.openByTransport(),
    accepted: (transport) => this.closed[transport] + this.openByTransport()[transport],
  });
  readonly listenerRefusals = this.connections.listenerRefusals;
  readonly detectionLatency = this.connections.detectionLatency;
  readonly detectionAdvantage = this.connections.detectionAdvantage;
  readonly disconnects = this.connections.disconnects;
  readonly connectionsOpen = this.connections.connectionsOpen;
  readonly connectionsAccepted = this.connections.connectionsAccepted;
  readonly connectsRejected = this.connections.connectsRejected;
  readonly keepAliveRequested = this.connections.keepAliveRequested;
  readonly keepAliveEffective = this.connections.keepAliveEffective;
  readonly keepAliveClamps = this.connections.keepAliveClamps;

  // Traffic (read from TrafficStats at scrape time).
  private readonly traffic = trafficMetrics(this.registers, () => this.proxy.stats);
  readonly forwardedBytes = this.traffic.forwardedBytes;
  readonly forwardedPackets = this.traffic.forwardedPackets;
  readonly frameErrors = this.traffic.frameErrors;
  readonly injectedPingReqs = this.traffic.injectedPingReqs;
  readonly swallowedPingResps = this.traffic.swallowedPingResps;

  // Webhook events (driven by events/webhook.ts).
  private readonly webhook = webhookMetrics(this.registers);
  readonly eventDeliveries = this.webhook.eventDeliveries;
  readonly eventsDropped = this.webhook.eventsDropped;
  readonly eventQueueLength = this.webhook.eventQueueLength;

  // Broker canary (driven by the canary, another module).
  private readonly canary = canaryMetrics(this.registers);
  readonly brokerUp = this.canary.brokerUp;
  readonly probeRtt = this.canary.probeRtt;
  readonly probeFailures = this.canary.probeFailures;

  readonly buildInfo = buildInfoMetric(this.registers, VERSION);

  // Adaptive liveness (events and scrape-time reads; metrics/liveness.ts).
  readonly liveness: ReturnType<typeof livenessMetrics>;

  private readonly detach: () => void;

  constructor(private readonly proxy: ProxyServer, options: MetricsOptions = {}) {
    this.liveness = livenessMetrics(this.registers, proxy.events, {
      suspectNow: () => proxy.suspectCount(),
      heldVerdicts: () => proxy.heldVerdicts(),
      degraded: () => (proxy.degraded() ? 1 : 0),
    });
    this.precreate();
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });

    const onConnect = (e: ConnectEvent): void => this.onConnect(e);
    const onClose = (e: CloseEvent): void => this.onClose(e);
    const onFrameError = (e: { kind: string }): void => this.frameErrors.inc({ kind: e.kind });
    // Sockets refused by an admission limit (relay/limits.ts) never become connections.
    const onReject = (e: RejectEvent): void => this.connectsRejected.inc({ reason: e.reason });
    const onRefused = (e: RefusedEvent): void => this.listenerRefusals.inc({ transport: e.transport, reason: e.reason });
    proxy.events.on('refused', onRefused);
    proxy.events.on('connect', onConnect);
    proxy.events.on('close', onClose);
    proxy.events.on('frameError', onFrameError);
    proxy.events.on('reject', onReject);
    this.detach = () => {
      this.liveness.detach();
      proxy.events.off('connect', onConnect);
      proxy.events.off('close', onClose);
      proxy.events.off('frameError', onFrameError);
      proxy.events.off('reject', onReject);
      proxy.events.off('refused', onRefused);
    };
  }

  /** Every bounded label value exists at 0 from the start, so rate() and absent() behave. */
  private precreate(): void {
    for (const reason of LIVENESS_REASONS) {
      this.detectionLatency.zero({ reason });
      this.detectionAdvantage.zero({ reason });
    }
    for (const reason of REASONS) this.disconnects.inc({ reason }, 0);
    for (const reason of REJECT_REASONS) this.connectsRejected.inc({ reason }, 0);
    for (const transport of TRANSPORT_LABELS) {
      this.connectionsOpen.set({ transport }, 0);
      this.connectionsAccepted.inc({ transport }, 0);
      for (const reason of LISTENER_REFUSALS) this.listenerRefusals.inc({ transport, reason }, 0);
    }
    for (const protocol of PROTOCOLS) {
      this.keepAliveRequested.zero({ protocol });
      this.keepAliveEffective.zero({ protocol });
      this.keepAliveClamps.inc({ protocol }, 0);
    }
    for (const direction of DIRECTIONS) {
      this.forwardedBytes.inc({ direction }, 0);
      for (const type of PACKET_NAMES) this.forwardedPackets.inc({ direction, type }, 0);
    }
    for (const kind of FRAME_ERROR_KINDS) this.frameErrors.inc({ kind }, 0);
    for (const outcome of DELIVERY_OUTCOMES) this.eventDeliveries.inc({ outcome }, 0);
    for (const probe of PROBES) {
      this.probeRtt.zero({ probe });
      for (const reason of PROBE_FAILURE_REASONS) this.probeFailures.inc({ probe, reason }, 0);
    }
  }

  private onConnect(e: ConnectEvent): void {
    const protocol = protocolLabel(e.protocolVersion);
    if (e.rejected !== null) {
      this.connectsRejected.inc({ reason: e.rejected });
    }
    if (protocol === null) return;
    if (e.keepAlive !== null) this.keepAliveRequested.observe({ protocol }, e.keepAlive);
    if (e.rejected === null && e.effectiveKeepAlive !== null) this.keepAliveEffective.observe({ protocol }, e.effectiveKeepAlive);
    if (e.clamped) this.keepAliveClamps.inc({ protocol });
  }

  /** Open connections by transport (at scrape time). */
  private openByTransport(): Record<TransportLabel, number> {
    const open: Record<TransportLabel, number> = { tcp: 0, tls: 0, ws: 0, wss: 0 };
    for (const conn of this.proxy.connections) open[conn.transport.transport]++;
    return open;
  }

  private onClose(e: CloseEvent): void {
    this.closed[e.transport]++;
    this.disconnects.inc({ reason: e.reason });
    if (e.liveness) {
      this.detectionLatency.observe({ reason: e.reason }, e.silenceMs / 1000);
      if (e.advantageMs !== null) this.detectionAdvantage.observe({ reason: e.reason }, e.advantageMs / 1000);
    }
    if (e.reason === 'broker_unreachable') {
      this.connectsRejected.inc({ reason: 'broker_unreachable' });
    }
  }

  /** The text exposition, as GET /metrics serves it. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Stop listening to the proxy's events. */
  close(): void {
    this.detach();
  }
}
