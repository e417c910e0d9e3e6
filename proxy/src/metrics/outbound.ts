/** Metric families driven by other modules: webhook events (events/webhook.ts) and the broker canary (probes/canary.ts). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

const P = 'mqtt_liveness_';
const PROBE_RTT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5];

export function webhookMetrics(registers: Registry[]) {
  return {
    eventDeliveries: new Counter({
      name: `${P}event_deliveries_total`,
      help: 'Webhook delivery attempts, by outcome.',
      labelNames: ['outcome'],
      registers,
    }),
    eventsDropped: new Counter({
      name: `${P}events_dropped_total`,
      help: 'Events dropped because the queue was full or retries ran out.',
      registers,
    }),
    eventQueueLength: new Gauge({
      name: `${P}event_queue_length`,
      help: 'Events waiting for delivery.',
      registers,
    }),
  };
}

export function canaryMetrics(registers: Registry[]) {
  return {
    brokerUp: new Gauge({
      name: `${P}broker_up`,
      help: "1 while the canary's last probe succeeded in time.",
      registers,
    }),
    probeRtt: new Histogram({
      name: `${P}broker_probe_rtt_seconds`,
      help: 'Canary round trip to the broker, by probe.',
      labelNames: ['probe'],
      buckets: PROBE_RTT_BUCKETS,
      registers,
    }),
    probeFailures: new Counter({
      name: `${P}broker_probe_failures_total`,
      help: 'Canary probe failures, by probe and reason.',
      labelNames: ['probe', 'reason'],
      registers,
    }),
  };
}

export function buildInfoMetric(registers: Registry[], version: string): Gauge<'version'> {
  const gauge = new Gauge({
    name: `${P}build_info`,
    help: 'Always 1; the version label tells which proxy runs.',
    labelNames: ['version'],
    registers,
  });
  gauge.set({ version }, 1);
  return gauge;
}
