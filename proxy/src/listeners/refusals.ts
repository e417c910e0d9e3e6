/**
 * Why a listener closed a socket before it became a connection (the `reason`
 * label of mqtt_liveness_listener_refusals_total; bounded). Admission limits
 * are counted apart (connects_rejected_total).
 */
export const LISTENER_REFUSALS = [
  'proxy_header', // a trusted peer without a valid PROXY header (malformed, truncated, oversized, timeout)
  'handshake_timeout', // WebSocket: no upgrade within the deadline
  'tls_handshake', // wss
  'not_websocket', // plain HTTP or no HTTP at all on the WebSocket port
  'bad_path',
  'bad_subprotocol',
  'upgrade_failed',
  'text_frame',
] as const;
export type ListenerRefusal = (typeof LISTENER_REFUSALS)[number];
