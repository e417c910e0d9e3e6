/**
 * Who a connection is, as the proxy's JSON outputs show it: the same fields,
 * built the same way, in a GET /connections row and in a webhook body
 * (docs/metrics.md). Nothing else of the connection leaks in.
 */
import { protocolLabel } from '../mqtt/protocol.ts';
import type { ConnectionFacts } from '../relay/events.ts';

export interface ConnectionIdentity {
  /** Null while the CONNECT has not arrived yet. */
  clientId: string | null;
  username: string | null;
  remoteAddress: string;
  remotePort: number;
  /** How the client arrived: tcp, tls, ws or wss. */
  transport: string;
  /** '3.1', '3.1.1' or '5'; null before the CONNECT. */
  protocol: string | null;
  /** Keep-alive the client asked for, seconds. */
  keepAlive: number | null;
  /** Keep-alive the proxy enforces, seconds (0: none). */
  effectiveKeepAlive: number | null;
}

export function identityOf(f: ConnectionFacts): ConnectionIdentity {
  return {
    clientId: f.clientId,
    username: f.username,
    remoteAddress: f.remoteAddress,
    remotePort: f.remotePort,
    transport: f.transport,
    protocol: protocolLabel(f.protocolVersion),
    keepAlive: f.keepAlive,
    effectiveKeepAlive: f.effectiveKeepAlive,
  };
}
