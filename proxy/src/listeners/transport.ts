/**
 * What a listener hands to the relay for each accepted client, whatever the
 * transport. The contract of ProxyServer.open() (relay/connection.ts); this copy
 * lets the listeners be built and tested before that rewrite lands, and is
 * structurally identical, so phase 2 replaces it with an import.
 */
import type net from 'node:net';
import type tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { ProxyHeader } from './proxy-protocol.ts';

export type TransportName = 'tcp' | 'tls' | 'ws' | 'wss';

export interface ClientTransport {
  /** MQTT bytes both ways: net.Socket, tls.TLSSocket, or a WebSocket-backed Duplex. */
  stream: Duplex;
  /** The TCP socket under it all, for keep-alive, TCP_USER_TIMEOUT and TCP_INFO; null in in-memory tests. */
  tcpSocket: net.Socket | null;
  /** The client's address: from a trusted PROXY header when there was one, else the TCP peer. */
  remoteAddress: string;
  remotePort: number;
  transport: TransportName;
}

/** What the listeners in this folder add (extra fields, still a ClientTransport). */
export interface AcceptedTransport extends ClientTransport {
  /** The PROXY header the connection started with, when its peer is trusted. */
  proxyHeader: ProxyHeader | null;
  /** The TLS session of a wss client (for PROXY out's PP2_TYPE_SSL). */
  tlsSocket: tls.TLSSocket | null;
  /** The address and port the client connected to (our listener, or the one in the PROXY header). */
  localAddress: string;
  localPort: number;
}
