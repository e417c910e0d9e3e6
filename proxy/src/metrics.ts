/**
 * The proxy's Prometheus metrics (names and labels: docs/METRICS-CONTRACT.md).
 *
 * One Registry per running proxy, never prom-client's global one. Everything
 * about connections comes from ProxyServer.events; the hot-path traffic
 * counters (TrafficStats) and the open-connection count are read only when
 * Prometheus scrapes, in collect() callbacks, so the relay never touches a
 * label per packet.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { PACKAGE_ROOT } from './broker/supervisor.ts';
import { LIVENESS_REASONS, REASONS } from './liveness/reasons.ts';
import { frameErrorKind } from './mqtt/errors.ts';
import { PACKET_NAMES } from './mqtt/packets.ts';
import type { CloseEvent, ConnectEvent, RejectEvent } from './relay/events.ts';
import type { ProxyServer } from './relay/server.ts';
import { DIRECTIONS, TO_BROKER, TO_CLIENT } from './relay/stats.ts';

export const PROXY_VERSION: string = (() => {
  try {
    return (JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
})();

/** MQTT protocol level (CONNECT byte) to the `protocol` label; null for anything else. */
export function protocolLabel(level: number | null | undefined): '3.1' | '3.1.1' | '5' | null {
  if (level === 3) return '3.1';
  if (level === 4) return '3.1.1';
  if (level === 5) return '5';
  return null;
}

export const PROTOCOLS = ['3.1', '3.1.1', '5'] as const;
export const REJECT_REASONS = ['keepalive_too_large', 'keepalive_zero', 'broker_unreachable', 'limit_connections', 'limit_per_source', 'limit_rate'] as const;
export const FRAME_ERROR_KINDS: readonly string[] = [...new Set(Object.values(frameErrorKind))];
export const PROBES = ['ping', 'publish'] as const;
export const PROBE_FAILURE_REASONS = ['timeout', 'connect', 'closed'] as const;
export const DELIVERY_OUTCOMES = ['success', 'failure'] as const;

export type Probe = (typeof PROBES)[number];
export type ProbeFailureReason = (typeof PROBE_FAILURE_REASONS)[number];

const DETECTION_BUCKETS = [0.25, 0.5, 1, 2, 3, 5, 8, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600];
const ADVANTAGE_BUCKETS = [0, 0.25, 0.5, 1, 2, 3, 5, 8, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800];
const KEEPALIVE_BUCKETS = [0, 5, 10, 15, 30, 45, 60, 90, 120, 300, 600, 1200, 3600];
const PROBE_RTT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5];

const P = 'mqtt_liveness_';

export interface MetricsOptions {
  /** Also register prom-client's process_* and nodejs_* metrics (default true). */
  defaultMetrics?: boolean;
}

export class ProxyMetrics {
  readonly registry = new Registry();

  // Connections and verdicts.
  readonly detectionLatency: Histogram<'reason'>;
  readonly detectionAdvantage: Histogram<'reason'>;
  readonly disconnects: Counter<'reason'>;
  readonly connectionsOpen: Gauge;
  readonly connectionsAccepted: Counter;
  readonly connectsRejected: Counter<'reason'>;
  readonly keepAliveRequested: Histogram<'protocol'>;
  readonly keepAliveEffective: Histogram<'protocol'>;
  readonly keepAliveClamps: Counter<'protocol'>;

  // Traffic (read from TrafficStats at scrape time).
  readonly forwardedBytes: Counter<'direction'>;
  readonly forwardedPackets: Counter<'direction' | 'type'>;
  readonly frameErrors: Counter<'kind'>;
  readonly injectedPingReqs: Counter;
  readonly swallowedPingResps: Counter;

  // Webhook events (driven by events/webhook.ts).
  readonly eventDeliveries: Counter<'outcome'>;
  readonly eventsDropped: Counter;
  readonly eventQueueLength: Gauge;

  // Broker canary (driven by the canary, another module).
  readonly brokerUp: Gauge;
  readonly probeRtt: Histogram<'probe'>;
  readonly probeFailures: Counter<'probe' | 'reason'>;

  readonly buildInfo: Gauge<'version'>;

  /** Connections that have ended; with the open ones this is the accepted count. */
  private closed = 0;
  private readonly seenBytes = new Float64Array(2);
  private readonly seenPackets = new Float64Array(32);
  private seenAccepted = 0;
  private seenInjected = 0;
  private seenSwallowed = 0;
  private readonly detach: () => void;

  constructor(private readonly proxy: ProxyServer, options: MetricsOptions = {}) {
    const registers = [this.registry];
    const self = this;

    this.detectionLatency = new Histogram({
      name: `${P}detection_latency_seconds`,
      help: 'Silence (now minus the last byte from the client) at each liveness verdict.',
      labelNames: ['reason'],
      buckets: DETECTION_BUCKETS,
      registers,
    });
    this.detectionAdvantage = new Histogram({
      name: `${P}detection_advantage_seconds`,
      help: "The broker's own deadline (last client packet + 1.5 x requested keep-alive) minus the verdict time; positive means the proxy acted earlier.",
      labelNames: ['reason'],
      buckets: ADVANTAGE_BUCKETS,
      registers,
    });
    this.disconnects = new Counter({
      name: `${P}disconnects_total`,
      help: 'Client connections ended, by reason.',
      labelNames: ['reason'],
      registers,
    });
    this.connectionsOpen = new Gauge({
      name: `${P}connections_open`,
      help: 'Client connections open now.',
      registers,
      collect() {
        this.set(self.proxy.connections.size);
      },
    });
    this.connectionsAccepted = new Counter({
      name: `${P}connections_accepted_total`,
      help: 'Client connections accepted.',
      registers,
      collect() {
        // Ended + open: a connection leaves the open set in the same tick its close event counts.
        const total = self.closed + self.proxy.connections.size;
        if (total > self.seenAccepted) {
          this.inc(total - self.seenAccepted);
          self.seenAccepted = total;
        }
      },
    });
    this.connectsRejected = new Counter({
      name: `${P}connects_rejected_total`,
      help: 'CONNECTs refused by the proxy, by reason.',
      labelNames: ['reason'],
      registers,
    });
    this.keepAliveRequested = new Histogram({
      name: `${P}keepalive_requested_seconds`,
      help: 'Keep-alive in CONNECT packets, seconds.',
      labelNames: ['protocol'],
      buckets: KEEPALIVE_BUCKETS,
      registers,
    });
    this.keepAliveEffective = new Histogram({
      name: `${P}keepalive_effective_seconds`,
      help: 'Keep-alive the proxy enforces, seconds (0: none).',
      labelNames: ['protocol'],
      buckets: KEEPALIVE_BUCKETS,
      registers,
    });
    this.keepAliveClamps = new Counter({
      name: `${P}keepalive_clamps_total`,
      help: 'Keep-alives lowered or assigned by the proxy.',
      labelNames: ['protocol'],
      registers,
    });

    this.forwardedBytes = new Counter({
      name: `${P}forwarded_bytes_total`,
      help: 'Bytes relayed, by direction.',
      labelNames: ['direction'],
      registers,
      collect() {
        const bytes = self.proxy.stats.bytes;
        for (const d of [TO_BROKER, TO_CLIENT]) {
          const delta = bytes[d] - self.seenBytes[d];
          if (delta > 0) {
            this.inc({ direction: DIRECTIONS[d] }, delta);
            self.seenBytes[d] = bytes[d];
          }
        }
      },
    });
    this.forwardedPackets = new Counter({
      name: `${P}forwarded_packets_total`,
      help: 'MQTT packets relayed, by direction and packet type.',
      labelNames: ['direction', 'type'],
      registers,
      collect() {
        const packets = self.proxy.stats.packets;
        for (let i = 0; i < 32; i++) {
          const delta = packets[i] - self.seenPackets[i];
          if (delta > 0) {
            this.inc({ direction: DIRECTIONS[i >> 4], type: PACKET_NAMES[i & 15] }, delta);
            self.seenPackets[i] = packets[i];
          }
        }
      },
    });
    this.frameErrors = new Counter({
      name: `${P}frame_errors_total`,
      help: 'Frames the proxy could not relay, by kind.',
      labelNames: ['kind'],
      registers,
    });
    this.injectedPingReqs = new Counter({
      name: `${P}injected_pingreqs_total`,
      help: 'PINGREQs the proxy injected upstream.',
      registers,
      collect() {
        const n = self.proxy.stats.injectedPings;
        if (n > self.seenInjected) {
          this.inc(n - self.seenInjected);
          self.seenInjected = n;
        }
      },
    });
    this.swallowedPingResps = new Counter({
      name: `${P}swallowed_pingresps_total`,
      help: 'PINGRESPs removed from the broker-to-client stream (answers to injected PINGREQs).',
      registers,
      collect() {
        const n = self.proxy.stats.swallowedPingResps;
        if (n > self.seenSwallowed) {
          this.inc(n - self.seenSwallowed);
          self.seenSwallowed = n;
        }
      },
    });

    this.eventDeliveries = new Counter({
      name: `${P}event_deliveries_total`,
      help: 'Webhook delivery attempts, by outcome.',
      labelNames: ['outcome'],
      registers,
    });
    this.eventsDropped = new Counter({
      name: `${P}events_dropped_total`,
      help: 'Events dropped because the queue was full or retries ran out.',
      registers,
    });
    this.eventQueueLength = new Gauge({
      name: `${P}event_queue_length`,
      help: 'Events waiting for delivery.',
      registers,
    });

    this.brokerUp = new Gauge({
      name: `${P}broker_up`,
      help: "1 while the canary's last probe succeeded in time.",
      registers,
    });
    this.probeRtt = new Histogram({
      name: `${P}broker_probe_rtt_seconds`,
      help: 'Canary round trip to the broker, by probe.',
      labelNames: ['probe'],
      buckets: PROBE_RTT_BUCKETS,
      registers,
    });
    this.probeFailures = new Counter({
      name: `${P}broker_probe_failures_total`,
      help: 'Canary probe failures, by probe and reason.',
      labelNames: ['probe', 'reason'],
      registers,
    });

    this.buildInfo = new Gauge({
      name: `${P}build_info`,
      help: 'Always 1; the version label tells which proxy runs.',
      labelNames: ['version'],
      registers,
    });
    this.buildInfo.set({ version: PROXY_VERSION }, 1);

    this.precreate();
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });

    const onConnect = (e: ConnectEvent): void => this.onConnect(e);
    const onClose = (e: CloseEvent): void => this.onClose(e);
    const onFrameError = (e: { kind: string }): void => this.frameErrors.inc({ kind: e.kind });
    // Sockets refused by an admission limit (relay/limits.ts) never become connections.
    const onReject = (e: RejectEvent): void => this.connectsRejected.inc({ reason: e.reason });
    proxy.events.on('connect', onConnect);
    proxy.events.on('close', onClose);
    proxy.events.on('frameError', onFrameError);
    proxy.events.on('reject', onReject);
    this.detach = () => {
      proxy.events.off('connect', onConnect);
      proxy.events.off('close', onClose);
      proxy.events.off('frameError', onFrameError);
      proxy.events.off('reject', onReject);
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

  private onClose(e: CloseEvent): void {
    this.closed++;
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
