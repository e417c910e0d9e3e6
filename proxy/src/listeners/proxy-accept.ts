/**
 * Read the PROXY header off a freshly accepted socket (proxyProtocol.trusted),
 * before any TLS or HTTP work: the header is in clear text in front of
 * everything else. The bytes after the header are put back (unshift) and the
 * socket is left PAUSED, so the next reader gets them:
 * - tls.Server (emit 'connection'): takes the socket as it is;
 * - node:http and anything reading 'data' in JS (the plain relay): call
 *   socket.resume() after attaching, because an explicitly paused socket stays
 *   paused when a 'data' listener is added (node:http would otherwise stall).
 */
import type net from 'node:net';
import { ProxyHeaderParser, type ProxyErrorCode, type ProxyHeader, type ProxyParserOptions } from './proxy-protocol.ts';

export type ProxyAcceptResult =
  | { ok: true; header: ProxyHeader }
  | { ok: false; code: ProxyErrorCode | 'timeout' | 'closed'; message: string };

export interface ProxyAcceptOptions extends ProxyParserOptions {
  /** How long a trusted peer may take to send the whole header, ms. */
  timeoutMs: number;
}

/** Never rejects; on failure the caller destroys the socket and counts the code. */
export function readProxyHeader(socket: net.Socket, options: ProxyAcceptOptions): Promise<ProxyAcceptResult> {
  return new Promise((resolve) => {
    const parser = new ProxyHeaderParser(options);
    const finish = (result: ProxyAcceptResult): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('end', onClose);
      socket.off('error', onClose);
      resolve(result);
    };
    const onData = (chunk: Buffer): void => {
      const step = parser.push(chunk);
      if (step.state === 'need-more') return;
      socket.pause();
      if (step.state === 'error') return finish({ ok: false, code: step.code, message: step.message });
      if (step.rest.length > 0) socket.unshift(step.rest);
      finish({ ok: true, header: step.header });
    };
    const onClose = (): void => finish({ ok: false, code: 'closed', message: 'the connection closed before its PROXY header was complete' });
    const timer = setTimeout(() => finish({ ok: false, code: 'timeout', message: `no complete PROXY header within ${options.timeoutMs} ms` }), options.timeoutMs);
    timer.unref();
    socket.on('data', onData);
    socket.on('close', onClose);
    // A FIN before the header is complete (listeners with allowHalfOpen never see 'close' for it).
    socket.on('end', onClose);
    socket.on('error', onClose);
  });
}

/** The client's address: the header's source for a PROXY command over TCP, else the real peer. */
export function effectivePeer(socket: net.Socket, header: ProxyHeader | null): { remoteAddress: string; remotePort: number; localAddress: string; localPort: number } {
  if (header && header.command === 'proxy' && (header.family === 'tcp4' || header.family === 'tcp6') && header.source && header.destination) {
    return { remoteAddress: header.source.address, remotePort: header.source.port, localAddress: header.destination.address, localPort: header.destination.port };
  }
  return { remoteAddress: socket.remoteAddress ?? '', remotePort: socket.remotePort ?? 0, localAddress: socket.localAddress ?? '', localPort: socket.localPort ?? 0 };
}
