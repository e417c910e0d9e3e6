/**
 * The WebSocket listener on its own, each client piped to a broker over plain
 * TCP (what ProxyServer.open() will do in phase 2, without its liveness): for
 * tests and the browser bench until the relay takes ClientTransport.
 */
import net from 'node:net';
import { WebSocketListener, type WebSocketListenerOptions, type WebSocketRefusal } from '../src/listeners/websocket.ts';
import type { AcceptedTransport } from '../src/listeners/transport.ts';

export interface WsBridge {
  listener: WebSocketListener;
  port: number;
  url: string;
  clients: AcceptedTransport[];
  refusals: Array<{ reason: WebSocketRefusal; peer: string; detail?: string }>;
  close(): Promise<void>;
}

export async function startWsBridge(broker: { host: string; port: number }, options: Partial<WebSocketListenerOptions> = {}): Promise<WsBridge> {
  const clients: AcceptedTransport[] = [];
  const refusals: WsBridge['refusals'] = [];
  const upstreams = new Set<net.Socket>();
  const listener = new WebSocketListener({
    host: '127.0.0.1',
    port: 0,
    ...options,
    onClient: (client) => {
      clients.push(client);
      options.onClient?.(client);
      const upstream = net.connect({ host: broker.host, port: broker.port, noDelay: true });
      upstreams.add(upstream);
      upstream.on('close', () => upstreams.delete(upstream));
      upstream.on('error', () => client.stream.destroy());
      client.stream.on('error', () => upstream.destroy());
      client.stream.pipe(upstream).pipe(client.stream);
      client.stream.on('close', () => upstream.destroy());
      upstream.on('close', () => client.stream.destroy());
    },
    onRefused: (reason, peer, detail) => {
      refusals.push({ reason, peer, detail });
      options.onRefused?.(reason, peer, detail);
    },
  });
  const { port } = await listener.listen();
  const scheme = options.tls ? 'wss' : 'ws';
  return {
    listener, port, url: `${scheme}://127.0.0.1:${port}${options.path ?? '/mqtt'}`, clients, refusals,
    async close() {
      for (const c of clients) c.stream.destroy();
      for (const u of upstreams) u.destroy();
      await listener.close();
    },
  };
}
