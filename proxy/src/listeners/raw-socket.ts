/**
 * The TCP socket under a TLS socket a tls.Server wrapped from an accepted
 * socket (node keeps it as _parent), and the socket whose fd carries the
 * connection for setsockopt/TCP_INFO: the TLS socket itself when node wrapped
 * the TCP handle (it exposes the fd), else the TCP socket (the TLS socket then
 * reads through a JS stream, e.g. after a PROXY header was put back).
 */
import type net from 'node:net';

export function rawOf(socket: net.Socket): net.Socket {
  return (socket as net.Socket & { _parent?: net.Socket })._parent ?? socket;
}

export function fdSocketOf(socket: net.Socket): net.Socket {
  const fd: unknown = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? socket : rawOf(socket);
}
