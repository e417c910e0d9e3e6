/**
 * The first bytes toward the broker with proxyProtocol.upstream: v2: the
 * client's address as the proxy knows it (from a trusted PROXY header, else
 * the TCP peer), the address it connected to, and for TLS clients (tls, wss)
 * a PP2_TYPE_SSL record. A client without IP addresses (an in-memory stream)
 * goes out as LOCAL, which a receiver takes as "use the real peer".
 */
import net from 'node:net';
import type { ClientTransport } from '../relay/transport.ts';
import { encodeProxyV2, encodeProxyV2Local, sslFacts } from './proxy-protocol-out.ts';

export function upstreamProxyHeader(t: ClientTransport): Buffer {
  const local = t.localAddress ?? '';
  if (net.isIP(unmapped(t.remoteAddress)) === 0 || net.isIP(unmapped(local)) === 0) return encodeProxyV2Local();
  return encodeProxyV2({
    source: { address: t.remoteAddress, port: t.remotePort },
    destination: { address: local, port: t.localPort ?? 0 },
    ssl: t.tlsSocket ? sslFacts(t.tlsSocket) : null,
  });
}

function unmapped(address: string): string {
  return address.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
}
