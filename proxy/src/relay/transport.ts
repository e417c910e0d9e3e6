/**
 * How a client arrived: the stream the Connection relays, and what the
 * listener knows about it. Listeners build it; Connection only reads it.
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';

export type TransportKind = 'tcp' | 'tls' | 'ws' | 'wss';

export interface ClientTransport {
  /** net.Socket, tls.TLSSocket, or (later) a WebSocket-backed Duplex. */
  stream: Duplex;
  /** The underlying TCP socket for setsockopt/TCP_INFO; null in in-memory tests. */
  tcpSocket: net.Socket | null;
  /** May later come from a PROXY protocol header. */
  remoteAddress: string;
  remotePort: number;
  transport: TransportKind;
}

/** A plain TCP socket (or a TLS socket, whose fd is its TCP socket's) as a ClientTransport. */
export function socketTransport(socket: net.Socket, transport: TransportKind): ClientTransport {
  return { stream: socket, tcpSocket: socket, remoteAddress: socket.remoteAddress ?? '', remotePort: socket.remotePort ?? 0, transport };
}
