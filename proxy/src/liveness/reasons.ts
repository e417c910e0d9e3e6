/**
 * The fixed set of reasons a connection ends for. Bounded, so it can be a
 * metric label.
 */
export const REASONS = [
  'keepalive_timeout',
  'tcp_keepalive',
  'tcp_user_timeout',
  'send_stall',
  'connect_timeout',
  'protocol_error',
  'client_disconnect',
  'client_close',
  'client_reset',
  'broker_close',
  'broker_unreachable',
  'broker_unresponsive',
  'broker_down',
  'policy_reject',
  'shutdown',
] as const;

export type Reason = (typeof REASONS)[number];

/** Verdicts about a dead or frozen client: the broker is told at once so it publishes the Will. */
export const LIVENESS_REASONS: ReadonlySet<Reason> = new Set<Reason>([
  'keepalive_timeout',
  'tcp_keepalive',
  'tcp_user_timeout',
  'send_stall',
]);

export function isLivenessReason(reason: Reason): boolean {
  return LIVENESS_REASONS.has(reason);
}
