/**
 * MQTT over WebSocket (config websocket.*): ws:// or wss:// on its own port,
 * one path (default /mqtt). Each upgraded connection becomes a Duplex of MQTT
 * bytes (ws's createWebSocketStream: binary messages in, one binary message per
 * write out) handed to onClient() as a ClientTransport, with its TCP socket for
 * keep-alive, TCP_USER_TIMEOUT and TCP_INFO. The relay's framer is stream based,
 * so MQTT packets split across or packed within WebSocket messages need nothing here.
 *
 * Order of work per connection, cheapest refusal first: PROXY header when the
 * peer is trusted -> admit() on the raw TCP socket (limits, by the client's
 * address) -> TLS handshake
 * (wss) -> HTTP upgrade request: path, subprotocol -> WebSocket. A handshake
 * deadline covers everything up to the upgrade.
 *
 * Decisions:
 * - Subprotocol: 'mqtt' is chosen when offered, else 'mqttv3.1' (MQTT 3.1 era
 *   clients). A request with no subprotocol is accepted (some embedded SDKs send
 *   none). A request offering only other subprotocols is refused with HTTP 400:
 *   it is not an MQTT client, and accepting without selecting one would make a
 *   browser fail the connection anyway (RFC 6455 §4.1).
 * - Text frames: MQTT requires binary frames (MQTT 5.0 §6); a text frame closes
 *   the connection with 1003 (refusal 'text_frame').
 * - WebSocket ping/pong is NOT MQTT liveness evidence: ws answers pings itself and
 *   they never reach the Duplex, so only MQTT bytes feed the keep-alive
 *   deadlines. A frozen page whose browser still answers pings is still caught by
 *   the MQTT keep-alive deadline; a dead host by TCP keep-alive/user timeout on
 *   tcpSocket like any TCP client.
 * - permessage-deflate is off: CPU per message for MQTT payloads that are often
 *   already compact, and compression contexts cost memory per connection.
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type tls from 'node:tls';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Logger } from 'pino';
import { effectivePeer, readProxyHeader } from './proxy-accept.ts';
import type { ProxyHeader } from './proxy-protocol.ts';
import type { TrustedSources } from './trusted-sources.ts';
import type { AcceptedTransport } from './transport.ts';
import { WebSocketDuplex } from './websocket-stream.ts';
import { rawOf } from './raw-socket.ts';
import { listen } from '../net/listen.ts';

export const MQTT_SUBPROTOCOLS = ['mqtt', 'mqttv3.1'] as const;

export type WebSocketRefusal =
  | 'admission' // admit() said no
  | 'proxy_header' // trusted peer without a valid PROXY header
  | 'handshake_timeout'
  | 'tls_handshake'
  | 'not_websocket' // plain HTTP request (answered 426)
  | 'bad_path' // 404
  | 'bad_subprotocol' // 400
  | 'upgrade_failed' // ws refused the upgrade (bad version, key, ...)
  | 'text_frame';

export interface WebSocketListenerOptions {
  host: string;
  port: number;
  /** Request path the upgrade must use; the query string is ignored. Default /mqtt. */
  path?: string;
  /** wss when set: the tls.* key/cert (and ca/requestCert) as server options. */
  tls?: tls.SecureContextOptions & tls.TlsOptions;
  /** Admission limits on the raw TCP socket (after a trusted PROXY header, with its address), before TLS/HTTP work; false: destroyed. */
  admit?: (socket: net.Socket, remoteAddress: string) => boolean;
  /** Each upgraded WebSocket, as a transport for ProxyServer.open(). */
  onClient: (client: AcceptedTransport) => void;
  /** Each refused connection, for a counted and logged reason. */
  onRefused?: (reason: WebSocketRefusal, peer: string, detail?: string, socket?: net.Socket) => void;
  /** Peers that must start with a PROXY header (proxyProtocol.trusted). */
  trusted?: TrustedSources;
  /** Accept to finished upgrade, ms. Default 10 000. */
  handshakeTimeoutMs?: number;
  /** Largest WebSocket message, bytes (ws closes with 1009 above it). Default 16 MiB + 8. */
  maxPayload?: number;
  log?: Logger;
}

export class WebSocketListener {
  private readonly listener: net.Server;
  private readonly httpServer: http.Server | https.Server;
  private readonly wsServer: WebSocketServer;
  private readonly path: string;
  private readonly transport: 'ws' | 'wss';
  /** Raw TCP socket -> its PROXY header, for sockets between accept and upgrade. */
  private readonly pending = new WeakMap<net.Socket, ProxyHeader | null>();

  constructor(private readonly options: WebSocketListenerOptions) {
    this.path = options.path ?? '/mqtt';
    this.transport = options.tls ? 'wss' : 'ws';
    this.wsServer = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      perMessageDeflate: false,
      maxPayload: options.maxPayload ?? 16 * 1024 * 1024 + 8,
      handleProtocols: (offered) => MQTT_SUBPROTOCOLS.find((p) => offered.has(p)) ?? false,
    });
    this.httpServer = options.tls ? https.createServer(options.tls) : http.createServer();
    this.httpServer.on('request', (req, res) => {
      this.refused('not_websocket', req.socket, `${req.method} ${req.url}`);
      res.writeHead(426, { 'Content-Type': 'text/plain', Upgrade: 'websocket', Connection: 'close' }).end(`MQTT over WebSocket at ${this.path}\n`);
    });
    this.httpServer.on('upgrade', (req, socket, head) => this.upgrade(req, socket as net.Socket, head));
    this.httpServer.on('tlsClientError', (err: Error & { code?: string }, socket: tls.TLSSocket) => {
      this.refused('tls_handshake', rawOf(socket), err.code ?? err.message);
      socket.destroy();
    });
    // Not HTTP at all (e.g. MQTT sent to the WebSocket port): say so, then close.
    this.httpServer.on('clientError', (err: Error & { code?: string }, socket) => {
      this.refused('not_websocket', rawOf(socket as net.Socket), err.code ?? err.message);
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else socket.destroy();
    });
    this.listener = net.createServer({ noDelay: true }, (socket) => void this.accept(socket));
    this.listener.maxConnections = 1_000_000;
  }

  async listen(): Promise<net.AddressInfo> {
    await listen(this.listener, { host: this.options.host, port: this.options.port, backlog: 4096 });
    this.listener.on('error', (err) => this.options.log?.error({ err }, 'WebSocket listener error'));
    const address = this.address();
    this.options.log?.info({ listen: `${address.address}:${address.port}`, path: this.path, transport: this.transport }, 'WebSocket listener listening');
    return address;
  }

  address(): net.AddressInfo {
    return this.listener.address() as net.AddressInfo;
  }

  /** New certificate for new wss connections (tls.* files reloaded); open ones keep theirs. */
  setSecureContext(options: tls.SecureContextOptions): void {
    if (this.httpServer instanceof https.Server) this.httpServer.setSecureContext(options);
  }

  /** Stop accepting; upgraded connections belong to the relay and are closed there. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.httpServer.close();
      this.listener.close(() => resolve());
    });
  }

  private async accept(socket: net.Socket): Promise<void> {
    socket.on('error', () => {}); // refusals and resets are reported through onRefused/close
    const timeoutMs = this.options.handshakeTimeoutMs ?? 10_000;
    const deadline = setTimeout(() => {
      this.refused('handshake_timeout', socket);
      socket.destroy();
    }, timeoutMs);
    deadline.unref();
    socket.once('close', () => clearTimeout(deadline));
    (socket as SocketWithDeadline)[DEADLINE] = deadline;
    let header: ProxyHeader | null = null;
    if (this.options.trusted?.has(socket.remoteAddress)) {
      const result = await readProxyHeader(socket, { timeoutMs });
      if (!result.ok) {
        if (result.code !== 'closed') this.refused('proxy_header', socket, result.code);
        socket.destroy();
        return;
      }
      header = result.header;
    }
    // Limits count the client's address: the one in a trusted PROXY header, else the peer's.
    if (this.options.admit && !this.options.admit(socket, effectivePeer(socket, header).remoteAddress)) {
      this.refused('admission', socket);
      socket.destroy();
      return;
    }
    this.pending.set(socket, header);
    this.httpServer.emit('connection', socket);
    // node:http reads in JS: a socket paused by readProxyHeader must be resumed; TLS reads the handle itself.
    if (header && this.transport === 'ws') socket.resume();
  }

  private upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const raw = rawOf(socket);
    const path = (req.url ?? '').split('?')[0];
    if (path !== this.path) return this.reject(socket, raw, 404, 'bad_path', `path ${JSON.stringify(path?.slice(0, 64))}`);
    const offered = req.headers['sec-websocket-protocol'];
    if (offered !== undefined) {
      const list = offered.split(',').map((p) => p.trim());
      if (!list.some((p) => (MQTT_SUBPROTOCOLS as readonly string[]).includes(p))) {
        return this.reject(socket, raw, 400, 'bad_subprotocol', `offered ${JSON.stringify(offered.slice(0, 64))}`);
      }
    }
    const header = this.pending.get(raw) ?? null;
    // ws answers 400 itself for a bad handshake (version, key); count it.
    const onClose = (): void => this.refused('upgrade_failed', raw);
    socket.once('close', onClose);
    this.wsServer.handleUpgrade(req, socket, head, (ws) => {
      socket.off('close', onClose);
      clearTimeout((raw as SocketWithDeadline)[DEADLINE]);
      this.opened(ws, raw, socket, header);
    });
  }

  private opened(ws: WebSocket, raw: net.Socket, socket: net.Socket, header: ProxyHeader | null): void {
    const stream = new WebSocketDuplex(ws, () => this.refused('text_frame', raw));
    stream.on('error', () => {}); // the relay attaches its own; a reset before that must not crash
    const peer = effectivePeer(raw, header);
    this.options.onClient({
      stream,
      tcpSocket: raw,
      ...peer,
      transport: this.transport,
      proxyHeader: header,
      tlsSocket: this.transport === 'wss' ? (socket as tls.TLSSocket) : null,
    });
  }

  private reject(socket: net.Socket, raw: net.Socket, status: number, reason: WebSocketRefusal, detail: string): void {
    this.refused(reason, raw, detail);
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    socket.destroySoon?.();
  }

  private refused(reason: WebSocketRefusal, socket: net.Socket, detail?: string): void {
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    this.options.onRefused?.(reason, peer, detail, socket);
    this.options.log?.debug({ event: 'websocket_refused', reason, remote: peer, detail }, 'WebSocket connection refused');
  }
}

const DEADLINE = Symbol('handshakeDeadline');
type SocketWithDeadline = net.Socket & { [DEADLINE]?: NodeJS.Timeout };
