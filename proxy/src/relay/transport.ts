/**
 * How a client arrived: the stream the Connection relays, and what the
 * listener knows about it. Listeners build it; Connection only reads it.
 */
import type net from 'node:net';
import type tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { ProxyHeader } from '../listeners/proxy-protocol.ts';

export const TRANSPORTS = ['tcp', 'tls', 'ws', 'wss'] as const;
export type TransportKind = (typeof TRANSPORTS)[number];

export interface ClientTransport {
  /** net.Socket, tls.TLSSocket, or a WebSocket-backed Duplex. */
  stream: Duplex;
  /** The underlying TCP socket for setsockopt/TCP_INFO; null in in-memory tests. */
  tcpSocket: net.Socket | null;
  /** The client's address: from a trusted PROXY header when there was one, else the TCP peer. */
  remoteAddress: string;
  remotePort: number;
  transport: TransportKind;
  /** The address the client connected to (our listener, or the destination in its PROXY header); for PROXY out. */
  localAddress?: string;
  localPort?: number;
  /** The client's TLS session (tls, wss), for PROXY out's PP2_TYPE_SSL. */
  tlsSocket?: tls.TLSSocket | null;
  /** The PROXY header the connection started with, when its peer is trusted. */
  proxyHeader?: ProxyHeader | null;
}

/** A plain TCP socket (or a TLS socket, whose fd is its TCP socket's) as a ClientTransport. */
export function socketTransport(socket: net.Socket, transport: TransportKind): ClientTransport {
  return {
    stream: socket,
    tcpSocket: socket,
    remoteAddress: socket.remoteAddress ?? '',
    remotePort: socket.remotePort ?? 0,
    transport,
    localAddress: socket.localAddress ?? '',
    localPort: socket.localPort ?? 0,
    tlsSocket: transport === 'tls' ? (socket as tls.TLSSocket) : null,
    proxyHeader: null,
  };
}
