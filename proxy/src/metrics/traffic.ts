/** Traffic metric families, read from TrafficStats at scrape time (relay/stats.ts). */
import { Counter, type Registry } from 'prom-client';
import { PACKET_NAMES } from '../mqtt/packets.ts';
import { DIRECTIONS, TO_BROKER, TO_CLIENT, type TrafficStats } from '../relay/stats.ts';
import { scrapedCounter } from './scraped-counter.ts';

const P = 'mqtt_liveness_';

/** `stats` is read at each scrape, so the proxy may replace its TrafficStats. */
export function trafficMetrics(registers: Registry[], stats: () => TrafficStats) {
  const packetSources = Array.from({ length: 32 }, (_, i) => ({
    labels: { direction: DIRECTIONS[i >> 4], type: PACKET_NAMES[i & 15] },
    read: () => stats().packets[i],
  }));
  return {
    forwardedBytes: scrapedCounter(
      { name: `${P}forwarded_bytes_total`, help: 'Bytes relayed, by direction.', labelNames: ['direction'], registers },
      [TO_BROKER, TO_CLIENT].map((d) => ({ labels: { direction: DIRECTIONS[d] }, read: () => stats().bytes[d] })),
    ),
    forwardedPackets: scrapedCounter({ name: `${P}forwarded_packets_total`, help: 'MQTT packets relayed, by direction and packet type.', labelNames: ['direction', 'type'], registers }, packetSources),
    frameErrors: new Counter({
      name: `${P}frame_errors_total`,
      help: 'Frames the proxy could not relay, by kind.',
      labelNames: ['kind'],
      registers,
    }),
    injectedPingReqs: scrapedCounter({ name: `${P}injected_pingreqs_total`, help: 'PINGREQs the proxy injected upstream.', registers }, [{ read: () => stats().injectedPings }]),
    swallowedPingResps: scrapedCounter(
      { name: `${P}swallowed_pingresps_total`, help: 'PINGRESPs removed from the broker-to-client stream (answers to injected PINGREQs).', registers },
      [{ read: () => stats().swallowedPingResps }],
    ),
  };
}
