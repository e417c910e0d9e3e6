/**
 * The client-facing listener and the set of live connections.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import type { Config } from '../config/types.ts';
import { formatHostPort, type HostPort } from '../config/types.ts';
import { listen } from '../net/listen.ts';
import { systemClock, type Clock } from '../liveness/clock.ts';
import { compileRules } from '../liveness/policy.ts';
import type { Reason } from '../liveness/reasons.ts';
import { applyTcpLiveness, readTcpInfo, setTcpProbeTimers } from '../liveness/tcp-options.ts';
import { livenessContextOf } from '../liveness/from-config.ts';
import { FleetPrior } from '../liveness/link-estimate.ts';
import type { LocalHealthListener } from '../liveness/local-health.ts';
import type { Thresholds } from '../liveness/verdict-budget.ts';
import { Connection, type ConnectionContext } from './connection.ts';
import { ProxyEvents } from './events.ts';
import { Admission, limitOf, sourceOf, type Ticket } from './limits.ts';
import { RefusalLog } from './refusal-log.ts';
import { TrafficStats } from './stats.ts';
import type { ClientTransport, TransportKind } from './transport.ts';
import { upstreamAccepting } from './upstream-check.ts';
import { effectivePeer, readProxyHeader } from '../listeners/proxy-accept.ts';
import type { ProxyHeader } from '../listeners/proxy-protocol.ts';
import { TrustedSources } from '../listeners/trusted-sources.ts';
import { upstreamProxyHeader } from '../listeners/upstream-header.ts';
import { fdSocketOf, rawOf } from '../listeners/raw-socket.ts';
import type tls from 'node:tls';

export interface ProxyServerOptions {
  config: Config;
  log: Logger;
  clock?: Clock;
}

// An accepted socket carries its server and its admission ticket, and one listener shared by every
// socket gives both back on 'close' (two once-wrappers and closures cost each connection ~0.4 KB).
const kServer = Symbol('mqtt-liveness-proxy.server');
const kTicket = Symbol('mqtt-liveness-proxy.ticket');
type Accepted = net.Socket & { [kServer]?: ProxyServer; [kTicket]?: Ticket };

function onAcceptedClose(this: Accepted): void {
  this[kServer]?.forget(this);
  this[kTicket]?.release();
}

export class ProxyServer {
  readonly events = new ProxyEvents();
  readonly stats = new TrafficStats();
  readonly connections = new Set<Connection>();
  private readonly servers: net.Server[] = [];
  private readonly ctx: ConnectionContext;
  private upstream: HostPort;
  private tcpFallbackWarned = false;
  /** TCP_RTO_MAX_MS accepted by the kernel (Linux >= 6.15); false after the first refusal. */
  private rtoMaxApplied = true;
  /** What the fleet's links are like: the prior of every new connection's loss estimate. */
  readonly fleet = new FleetPrior();
  private readonly onHealth: LocalHealthListener;
  /** Held verdicts counted by local-health instances replaced on reconfigure. */
  private heldBefore = 0;
  /** Admission limits (config limits.*), checked before a socket costs anything. */
  readonly admission: Admission;
  private readonly refusals: RefusalLog;
  /** Accepted client sockets that are not (yet) a Connection: reading a PROXY header, in a TLS or WebSocket handshake. */
  private readonly sockets = new Set<net.Socket>();
  /** Peers that must start with a PROXY header (proxyProtocol.trusted). */
  trusted: TrustedSources;
  /** The PROXY header each trusted socket started with, until it becomes a Connection. */
  private readonly headers = new WeakMap<net.Socket, ProxyHeader>();
  accepting = false;
  private listenersClosed: Promise<void> | null = null;

  constructor(private readonly options: ProxyServerOptions) {
    const { config, log } = options;
    this.upstream = config.upstream;
    this.onHealth = (degraded, info) => {
      this.events.emit('localHealth', { degraded, ...info });
      if (degraded) log.warn({ event: 'local_health', degraded, ...info }, 'many connections went silent together: TCP verdicts are held (suspect) and re-checked');
      else log.info({ event: 'local_health', degraded, ...info }, 'local health recovered');
    };
    this.ctx = {
      config,
      rules: compileRules(config.keepAlive, config.rules),
      clock: options.clock ?? systemClock,
      log,
      stats: this.stats,
      events: this.events,
      connectUpstream: (conn) => {
        const socket = net.connect({ host: this.upstream.host, port: this.upstream.port, allowHalfOpen: true, noDelay: true });
        // proxyProtocol.upstream v2: the header goes first (queued until connected), before the CONNECT.
        if (this.ctx.config.proxyProtocol.upstream === 'v2') socket.write(upstreamProxyHeader(conn.transport));
        return socket;
      },
      brokerAccepting: () => upstreamAccepting(this.upstream),
      liveness: livenessContextOf(config, this.rtoMaxApplied, this.fleet, null, this.onHealth),
      applyTcpLiveness: (socket, kernel) => this.applyTcp(socket, kernel),
      setProbeIdle: (transport, seconds) => (transport.tcpSocket ? setTcpProbeTimers(transport.tcpSocket, { idleSeconds: seconds }) === null : false),
      readTcpInfo: (transport, into) => (transport.tcpSocket ? readTcpInfo(transport.tcpSocket, into) : false),
      onClosed: (conn) => {
        this.connections.delete(conn);
        this.countOpen();
      },
    };
    this.admission = new Admission(config.limits, this.ctx.clock);
    this.trusted = new TrustedSources(config.proxyProtocol.trusted);
    this.refusals = new RefusalLog(log, this.ctx.clock);
    this.events.on('close', (e) => {
      log.info(
        { event: 'connection_end', id: e.id, clientId: e.clientId, remote: `${e.remoteAddress}:${e.remotePort}`, protocol: e.protocolVersion, durationMs: Math.round(e.durationMs), reason: e.reason, detail: e.detail ?? undefined, silenceMs: Math.round(e.silenceMs) },
        'connection ended',
      );
    });
  }

  get config(): Config {
    return this.ctx.config;
  }

  /** New policies apply to connections accepted from now on. */
  reconfigure(config: Config): void {
    this.ctx.config = config;
    this.ctx.rules = compileRules(config.keepAlive, config.rules);
    this.upstream = config.upstream;
    this.admission.setConfig(config.limits);
    this.trusted = new TrustedSources(config.proxyProtocol.trusted);
    this.rebuildLiveness();
  }

  /** The liveness settings and shared parts for connections accepted from now on (the fleet prior is kept). */
  private rebuildLiveness(): void {
    this.heldBefore += this.ctx.liveness.shared.health?.counters.held ?? 0;
    this.ctx.liveness = livenessContextOf(this.ctx.config, this.rtoMaxApplied, this.fleet, this.ctx.liveness.shared.health, this.onHealth);
    this.countOpen();
  }

  private countOpen(): void {
    const health = this.ctx.liveness.shared.health;
    if (health) health.openConnections = this.connections.size;
  }

  /** Connections suspect now (keep-alive or TCP); O(connections), for scrapes. */
  suspectCount(): number {
    let n = 0;
    for (const c of this.connections) if (c.liveness.keepAliveSuspectSince >= 0 || c.liveness.tcpState === 'suspect') n++;
    return n;
  }

  /** Dead verdicts held so far (across reconfigures). */
  heldVerdicts(): number {
    return this.heldBefore + (this.localHealth?.counters.held ?? 0);
  }

  /** Many connections went silent together: TCP verdicts are being held. */
  degraded(): boolean {
    return this.localHealth?.isDegraded(this.ctx.clock.now()) ?? false;
  }

  /** Local health of the current settings (null: correlation off). */
  get localHealth() {
    return this.ctx.liveness.shared.health;
  }

  /**
   * The kernel probes (this connection's jittered idle, interval); its kill switch (TCP_KEEPCNT,
   * TCP_USER_TIMEOUT) is a backstop beyond every proxy verdict and beyond tcp.sendTimeout, so a
   * paused reader behind a zero window (whose window probes count against TCP_USER_TIMEOUT on
   * Linux >= 5.11) is judged by send_stall, not cut by the kernel.
   */
  private applyTcp(socket: net.Socket, kernel: Thresholds['kernel']): void {
    const tcp = this.ctx.config.tcp;
    if (!tcp.keepAlive) return;
    const userTimeoutMs = Math.max(kernel.userTimeoutMs, Math.round(tcp.sendTimeout * 1000) + 10_000);
    const result = applyTcpLiveness(socket, {
      idleSeconds: kernel.idleSeconds,
      intervalSeconds: kernel.intervalSeconds,
      count: Math.min(127, Math.max(kernel.count, Math.ceil(userTimeoutMs / (kernel.intervalSeconds * 1000)))),
      userTimeoutMs,
    });
    if (result.mode === 'native' && this.rtoMaxApplied && setTcpProbeTimers(socket, { rtoMaxMs: kernel.rtoMaxMs }) !== null) {
      // Older kernel: the 120 s retransmission ladder applies; thresholds for new connections say so.
      this.rtoMaxApplied = false;
      this.rebuildLiveness();
    }
    if (result.mode === 'fallback' && !this.tcpFallbackWarned) {
      this.tcpFallbackWarned = true;
      this.options.log.warn({ error: result.error }, 'per-socket TCP keep-alive options unavailable; falling back to setKeepAlive (about idle + 10 s)');
    }
  }

  /** Handle a socket accepted by the plaintext listener: PROXY header, admission, then the relay. */
  readonly accept = (socket: net.Socket): void => {
    this.gate(socket, 'tcp', () => {
      this.open(this.transportOf(socket, 'tcp'));
      // A socket paused by readProxyHeader stays paused when the relay adds its 'data' listener.
      socket.resume();
    });
  };

  /**
   * The first steps of every accepted TCP socket, whatever the listener: a
   * trusted peer (proxyProtocol.trusted) must start with a PROXY header (else
   * the socket is closed, counted and logged); then admission by the client's
   * address. `next` runs for an admitted socket (at once when no header is read).
   */
  gate(socket: net.Socket, transport: TransportKind, next: () => void): void {
    if (!this.accepting) {
      socket.destroy();
      return;
    }
    if (!this.trusted.has(socket.remoteAddress)) {
      if (this.admit(socket, transport)) next();
      return;
    }
    this.track(socket);
    socket.on('error', () => {}); // a reset while reading the header: closed, nothing to report
    void readProxyHeader(socket, { timeoutMs: this.ctx.config.connectTimeout * 1000 }).then((result) => {
      if (!result.ok) {
        if (result.code !== 'closed') this.refused(transport, 'proxy_header', socket, result.code, result.message);
        socket.destroy();
        return;
      }
      this.headers.set(socket, result.header);
      if (this.admit(socket, transport, effectivePeer(socket, result.header).remoteAddress)) next();
    });
  }

  /** A socket refused by a listener before it became a connection (bad PROXY header, failed WebSocket upgrade): counted, logged. */
  refused(transport: TransportKind, reason: string, peer: { remoteAddress?: string; remotePort?: number }, detail?: string, message?: string): void {
    const remoteAddress = peer.remoteAddress ?? '';
    const remotePort = peer.remotePort ?? 0;
    this.events.emit('refused', { transport, reason, remoteAddress, remotePort, detail: detail ?? null });
    // Per transport, reason and code (all bounded): a flood of one kind costs one line per window.
    this.refusals.note(`${transport}:${reason}:${detail ?? ''}`, { source: remoteAddress, remotePort, transport, reason, detail }, `connection refused: ${message ?? reason}`);
  }

  /** The ClientTransport of an accepted socket (TCP, or TLS once handshaken): the client's address from its PROXY header, if any. */
  transportOf(stream: net.Socket, transport: 'tcp' | 'tls'): ClientTransport {
    const raw = rawOf(stream);
    const header = this.headers.get(raw) ?? null;
    return {
      stream,
      tcpSocket: fdSocketOf(stream),
      ...effectivePeer(raw, header),
      transport,
      tlsSocket: transport === 'tls' ? (stream as tls.TLSSocket) : null,
      proxyHeader: header,
    };
  }

  /**
   * Admission of a socket a listener just accepted, by the client's address
   * (the peer's, or the one in its trusted PROXY header). Refused: the socket
   * is closed at once, before any upstream connection, counted (event
   * `reject`) and logged (rate-limited). Admitted: its slot is freed when the
   * socket closes.
   */
  admit(socket: net.Socket, transport: TransportKind, remoteAddress = socket.remoteAddress): Ticket | null {
    if (!this.accepting) {
      socket.destroy();
      return null;
    }
    const source = sourceOf(remoteAddress);
    const result = this.admission.admit(source);
    if (typeof result !== 'string') {
      this.track(socket);
      (socket as Accepted)[kTicket] = result;
      return result;
    }
    socket.destroy();
    const remotePort = socket.remotePort ?? 0;
    const listener = transport === 'tcp' ? 'mqtt' : transport === 'tls' ? 'mqtts' : transport;
    this.events.emit('reject', { reason: result, remoteAddress: source, remotePort, listener, transport, at: this.ctx.clock.wallNow() });
    const [limit, value] = limitOf(result, this.ctx.config.limits);
    this.refusals.note(result, { source, remotePort, listener, [limit]: value }, `connection refused: ${limit} (${value}) reached`);
    return null;
  }

  /** Until it closes or becomes a Connection, a socket is this server's to cut on shutdown. */
  private track(socket: net.Socket): void {
    if (this.sockets.has(socket)) return;
    this.sockets.add(socket);
    (socket as Accepted)[kServer] = this;
    socket.on('close', onAcceptedClose);
  }

  /** An accepted socket closed (onAcceptedClose): no longer this server's to cut. */
  forget(socket: net.Socket): void {
    this.sockets.delete(socket);
  }

  /** Start relaying an admitted client (plain, or TLS once its handshake is done). */
  open(transport: ClientTransport): void {
    if (!this.accepting) {
      transport.stream.destroy();
      return;
    }
    // From here the Connection owns the socket (and shutdown counts it once, as a connection).
    if (transport.tcpSocket) {
      this.sockets.delete(transport.tcpSocket);
      this.sockets.delete(rawOf(transport.tcpSocket));
      this.headers.delete(rawOf(transport.tcpSocket));
    }
    this.connections.add(new Connection(transport, this.ctx));
    this.countOpen();
  }

  async listen(address: HostPort = this.ctx.config.listen): Promise<net.AddressInfo> {
    const { host, port } = address;
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: false, noDelay: true }, this.accept);
    server.maxConnections = 1_000_000;
    await listen(server, { host, port, backlog: 4096 });
    server.on('error', (err) => this.options.log.error({ err }, 'listener error'));
    this.servers.push(server);
    this.accepting = true;
    this.options.log.info({ listen: `${host}:${(server.address() as net.AddressInfo).port}`, upstream: formatHostPort(this.ctx.config.upstream) }, 'proxy listening');
    return server.address() as net.AddressInfo;
  }

  /** The first listener's address. */
  address(): net.AddressInfo {
    return this.servers[0].address() as net.AddressInfo;
  }

  /** Add a listener created elsewhere (TLS, WebSocket): it closes with the others. */
  adopt(server: net.Server): void {
    this.servers.push(server);
  }

  /**
   * End every open connection whose CONNACK was seen (an MQTT session exists),
   * for a reason decided outside the connection, e.g. `broker_down` from the
   * canary (MQTT 5 clients get DISCONNECT 0x89). Connections still waiting for
   * their CONNACK are left alone. Returns how many were ended.
   */
  endEstablished(reason: Reason, detail: string | null): number {
    let ended = 0;
    for (const conn of [...this.connections]) {
      if (!conn.isOpen || !conn.hasConnack) continue;
      conn.end(reason, detail);
      ended++;
    }
    return ended;
  }

  /**
   * Stop accepting: the listening sockets are closed before this returns, so from
   * then on the kernel refuses new connections. Resolves when the servers report
   * closed. Idempotent (close() calls it too).
   */
  closeListeners(): Promise<void> {
    if (this.listenersClosed === null) {
      this.accepting = false;
      this.listenersClosed = Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))).then(() => undefined);
    }
    return this.listenersClosed;
  }

  /**
   * Stop accepting (the listeners close: new connections are refused by the
   * kernel), end every connection with `shutdown` (MQTT 5 clients get
   * DISCONNECT 0x8B), wait up to graceMs for the sockets to close, then cut
   * whatever is left.
   */
  async close(graceMs = this.ctx.config.shutdownGrace * 1000): Promise<void> {
    const started = performance.now();
    const closed = this.closeListeners();
    const open = this.connections.size;
    for (const conn of [...this.connections]) conn.end('shutdown', null);
    const deadline = started + graceMs;
    while ((this.connections.size > 0 || this.sockets.size > 0) && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const cut = this.connections.size + this.sockets.size;
    for (const conn of [...this.connections]) conn.cut();
    for (const socket of this.sockets) socket.destroy();
    this.refusals.close();
    await closed;
    if (open > 0 || cut > 0) {
      this.options.log.info({ event: 'shutdown_closed', connections: open, cutAfterGrace: cut, elapsedMs: Math.round(performance.now() - started) }, 'client connections closed');
    }
  }
}
