/**
 * The WebSocket listener (config websocket.*) wired to the relay: the same
 * gate as the TCP and TLS listeners (PROXY header from trusted peers, then
 * admission by the client's address), refusals counted by the server, and
 * upgraded clients handed to ProxyServer.open(). wss serves the `tls.*`
 * certificate and follows its reloads.
 */
import type { Logger } from 'pino';
import { WebSocketListener } from '../listeners/websocket.ts';
import type { TrustedSources } from '../listeners/trusted-sources.ts';
import type { ProxyServer } from './server.ts';
import type { TlsListener } from './tls.ts';

export async function startWebSocketListener(proxy: ProxyServer, tls: TlsListener | null, log: Logger): Promise<WebSocketListener | null> {
  const config = proxy.config;
  const ws = config.websocket;
  if (!ws.listen) return null;
  if (ws.tls && !tls) throw new Error('websocket.tls needs tls.cert and tls.key');
  const transport = ws.tls ? 'wss' : 'ws';
  const listener = new WebSocketListener({
    host: ws.listen.host,
    port: ws.listen.port,
    path: ws.path,
    ...(ws.tls && tls ? { tls: { ...tls.serverOptions } } : {}),
    // proxyProtocol.trusted as it is now (it follows config reloads).
    trusted: { has: (address: string | undefined) => proxy.trusted.has(address) } as TrustedSources,
    admit: (socket, remoteAddress) => proxy.admit(socket, transport, remoteAddress) !== null,
    onClient: (client) => proxy.open(client),
    onRefused: (reason, _peer, detail, socket) => {
      // Admission refusals are counted and logged by ProxyServer.admit() already.
      if (reason !== 'admission' && socket) proxy.refused(transport, reason, socket, detail);
    },
    handshakeTimeoutMs: Math.round(config.connectTimeout * 1000),
    // One MQTT packet may span messages, so a message needs no more than the largest packet.
    maxPayload: config.maxPacketSize + 8,
    log,
  });
  if (ws.tls && tls) tls.onSecureContext((options) => listener.setSecureContext(options));
  await listener.listen();
  return listener;
}
