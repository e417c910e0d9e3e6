/**
 * Hot-path counters as plain typed arrays: the relay bumps numbers, and the
 * metrics module reads them at scrape time, so no label lookups per packet.
 */
export const TO_BROKER = 0;
export const TO_CLIENT = 1;
export const DIRECTIONS = ['to_broker', 'to_client'] as const;

export class TrafficStats {
  readonly bytes = new Float64Array(2);
  /** [direction * 16 + packet type] */
  readonly packets = new Float64Array(32);
  /** Injected PINGREQs and the PINGRESPs swallowed for them. */
  injectedPings = 0;
  swallowedPingResps = 0;
}
