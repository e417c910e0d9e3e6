/** Connection, verdict and keep-alive metric families (names and help: docs/METRICS-CONTRACT.md). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { scrapedCounter } from './scraped-counter.ts';

const P = 'mqtt_liveness_';
const DETECTION_BUCKETS = [0.25, 0.5, 1, 2, 3, 5, 8, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600];
const ADVANTAGE_BUCKETS = [0, 0.25, 0.5, 1, 2, 3, 5, 8, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800];
const KEEPALIVE_BUCKETS = [0, 5, 10, 15, 30, 45, 60, 90, 120, 300, 600, 1200, 3600];

export const TRANSPORT_LABELS = ['tcp', 'tls', 'ws', 'wss'] as const;
export type TransportLabel = (typeof TRANSPORT_LABELS)[number];

export interface ConnectionCounts {
  /** Open now, by transport. */
  open(): Record<TransportLabel, number>;
  /** Accepted so far (ended + open), for one transport. */
  accepted(transport: TransportLabel): number;
}

export function connectionMetrics(registers: Registry[], counts: ConnectionCounts) {
  return {
    detectionLatency: new Histogram({
      name: `${P}detection_latency_seconds`,
      help: 'Silence (now minus the last byte from the client) at each liveness verdict.',
      labelNames: ['reason'],
      buckets: DETECTION_BUCKETS,
      registers,
    }),
    detectionAdvantage: new Histogram({
      name: `${P}detection_advantage_seconds`,
      help: "The broker's own deadline (last client packet + 1.5 x requested keep-alive) minus the verdict time; positive means the proxy acted earlier.",
      labelNames: ['reason'],
      buckets: ADVANTAGE_BUCKETS,
      registers,
    }),
    disconnects: new Counter({
      name: `${P}disconnects_total`,
      help: 'Client connections ended, by reason.',
      labelNames: ['reason'],
      registers,
    }),
    connectionsOpen: new Gauge({
      name: `${P}connections_open`,
      help: 'Client connections open now, by transport (tcp, tls, ws, wss).',
      labelNames: ['transport'],
      registers,
      collect() {
        const open = counts.open();
        for (const transport of TRANSPORT_LABELS) this.set({ transport }, open[transport]);
      },
    }),
    // Ended + open: a connection leaves the open set in the same tick its close event counts.
    connectionsAccepted: scrapedCounter(
      { name: `${P}connections_accepted_total`, help: 'Client connections accepted, by transport (tcp, tls, ws, wss).', labelNames: ['transport'], registers },
      TRANSPORT_LABELS.map((transport) => ({ labels: { transport }, read: () => counts.accepted(transport) })),
    ),
    listenerRefusals: new Counter({
      name: `${P}listener_refusals_total`,
      help: 'Sockets a listener closed before they became connections: a missing or bad PROXY header, a failed WebSocket upgrade; by transport and reason.',
      labelNames: ['transport', 'reason'],
      registers,
    }),
    connectsRejected: new Counter({
      name: `${P}connects_rejected_total`,
      help: 'CONNECTs refused by the proxy, by reason.',
      labelNames: ['reason'],
      registers,
    }),
    keepAliveRequested: new Histogram({
      name: `${P}keepalive_requested_seconds`,
      help: 'Keep-alive in CONNECT packets, seconds.',
      labelNames: ['protocol'],
      buckets: KEEPALIVE_BUCKETS,
      registers,
    }),
    keepAliveEffective: new Histogram({
      name: `${P}keepalive_effective_seconds`,
      help: 'Keep-alive the proxy enforces, seconds (0: none).',
      labelNames: ['protocol'],
      buckets: KEEPALIVE_BUCKETS,
      registers,
    }),
    keepAliveClamps: new Counter({
      name: `${P}keepalive_clamps_total`,
      help: 'Keep-alives lowered or assigned by the proxy.',
      labelNames: ['protocol'],
      registers,
    }),
  };
}
