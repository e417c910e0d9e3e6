/**
 * One client connection and its one upstream connection to the broker.
 *
 * Bytes are relayed as they arrive (sub-arrays of the socket chunks); only the
 * first CONNECT, the first CONNACK, PINGRESPs owed to injected PINGREQs and
 * broker DISCONNECTs are held and read. Every deadline shares one timer, and
 * every way a connection can end goes through end().
 */
import net from 'node:net';
import type { Logger } from 'pino';
import { Framer, HOLD, PASS, REJECT, PROTOCOL_MAX_FRAME, type FrameHandler, type HeaderDecision } from '../mqtt/framer.ts';
import type { FrameError } from '../mqtt/errors.ts';
import {
  CONNACK, CONNECT, DISCONNECT, PINGREQ, PINGRESP, PINGREQ_BYTES, REASON, RETURN_CODE,
  connackRefusal, decodeConnack, decodeConnect, disconnectReason, disconnectV5, withKeepAlive, withServerKeepAlive,
  type ConnectInfo,
} from '../mqtt/packets.ts';
import type { Clock, Timer } from '../liveness/clock.ts';
import { evaluate, newDeadlineState, type DeadlineState } from '../liveness/deadlines.ts';
import { allowedSilenceMs, brokerDeadlineMs, decideKeepAlive, policyFor, serverKeepAliveToSend, type CompiledRule } from '../liveness/policy.ts';
import { isLivenessReason, type Reason } from '../liveness/reasons.ts';
import type { Config, HostPort, KeepAlivePolicy } from '../config/types.ts';
import { TO_BROKER, TO_CLIENT, type TrafficStats } from './stats.ts';
import { upstreamAccepting } from './upstream-check.ts';
import { tcpAckState } from '../liveness/tcp-options.ts';
import type { ConnectionFacts, ProxyEvents } from './events.ts';

export interface ConnectionContext {
  config: Config;
  rules: CompiledRule[];
  clock: Clock;
  log: Logger;
  upstream: HostPort;
  stats: TrafficStats;
  events: ProxyEvents;
  /** Applies TCP keep-alive and user timeout to an accepted client socket. */
  applyTcpLiveness(socket: net.Socket): void;
  /** Called once both sockets are gone. */
  onClosed(conn: Connection): void;
}

const PING_FROM_CLIENT = 0;
const PING_FROM_PROXY = 1;

/** Seconds a half-closed connection may linger before both sockets are cut. */
const LINGER_MS = 10_000;

/** A write this long after the client's last byte was not an answer to it (see onClientError). */
const UNSOLICITED_WRITE_MS = 1_000;

let nextId = 1;

export class Connection {
  readonly id = nextId++;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly startedAt: number;
  connect: ConnectInfo | null = null;
  effectiveKeepAlive: number | null = null;
  upstreamKeepAlive: number | null = null;
  bytesFromClient = 0;
  bytesToClient = 0;
  readonly deadlines: DeadlineState;

  private readonly upstream: net.Socket;
  private readonly toBroker: Framer;
  private readonly toClient: Framer;
  private timer: Timer | null = null;
  private timerAt = Infinity;
  private connackSeen = false;
  private connectForwarded = false;
  private upstreamConnected = false;
  private upstreamFailed = false;
  private clientSentDisconnect = false;
  private clientEnded = false;
  private brokerEnded = false;
  private lastWriteToClient = -1;
  private readonly pings: number[] = [];
  private proxyPingsInFlight = 0;
  private reason: Reason | null = null;
  private detail: string | null = null;
  private closedSockets = 0;
  private finished = false;
  /** A v5 DISCONNECT reason the client is sent when the connection ends, if any. */
  private clientDisconnectReason = -1;

  constructor(private readonly client: net.Socket, private readonly ctx: ConnectionContext) {
    const now = ctx.clock.now();
    this.remoteAddress = client.remoteAddress ?? '';
    this.remotePort = client.remotePort ?? 0;
    this.startedAt = ctx.clock.wallNow();
    const cfg = ctx.config;
    this.deadlines = newDeadlineState(now, cfg.connectTimeout * 1000, cfg.tcp.sendTimeout * 1000);

    this.toBroker = new Framer(this.clientSide, cfg.maxPacketSize);
    this.toClient = new Framer(this.brokerSide, PROTOCOL_MAX_FRAME);
    // Type 15 is AUTH in MQTT 5 but reserved before it; allowed once the CONNECT says v5.
    this.toBroker.reservedTypes = (1 << 0) | (1 << 15);

    client.setNoDelay(true);
    ctx.applyTcpLiveness(client);
    if (cfg.tcp.keepAlive && cfg.tcp.userTimeout > 0) this.ackWatchMs = cfg.tcp.userTimeout * 1000;
    // Methods bound here rather than arrow-function fields: under tsx (esbuild
    // keepNames) every arrow field also gets a defineProperty('name'), about 300 B
    // more per closure, and a connection has 18 of them (see BENCHMARKS.md).
    const onSocketClose = this.onSocketClose.bind(this);
    client.on('data', this.onClientData.bind(this));
    client.on('end', this.onClientEnd.bind(this));
    client.on('error', this.onClientError.bind(this));
    client.on('close', onSocketClose);
    client.on('drain', this.onClientDrain.bind(this));

    this.upstream = net.connect({ host: ctx.upstream.host, port: ctx.upstream.port, allowHalfOpen: true, noDelay: true });
    this.upstream.on('connect', this.onUpstreamConnect.bind(this));
    this.upstream.on('data', this.onBrokerData.bind(this));
    this.upstream.on('end', this.onBrokerEnd.bind(this));
    this.upstream.on('error', this.onUpstreamError.bind(this));
    this.upstream.on('close', onSocketClose);
    this.upstream.on('drain', this.onUpstreamDrain.bind(this));
    this.schedule(now);
  }

  facts(): ConnectionFacts {
    const c = this.connect;
    return {
      id: this.id,
      clientId: c ? c.clientId : null,
      username: c?.username ?? null,
      remoteAddress: this.remoteAddress,
      remotePort: this.remotePort,
      protocolVersion: c ? c.protocolVersion : null,
      keepAlive: c ? c.keepAlive : null,
      effectiveKeepAlive: this.effectiveKeepAlive,
      upstreamKeepAlive: this.upstreamKeepAlive,
      startedAt: this.startedAt,
    };
  }

  get isOpen(): boolean {
    return this.reason === null;
  }

  get hasConnack(): boolean {
    return this.connackSeen;
  }

  // ---- client -> broker ----------------------------------------------------

  private onClientData(chunk: Buffer): void {
    if (this.finished) return;
    this.deadlines.lastClientActivity = this.ctx.clock.now();
    this.bytesFromClient += chunk.length;
    const error = this.toBroker.push(chunk);
    if (error) this.onFrameError(error, 'to_broker');
  }

  private readonly clientSide: FrameHandler = { onHeader: this.clientHeader.bind(this), onHeld: this.onConnect.bind(this), emit: this.writeUpstream.bind(this) };

  private clientHeader(type: number): HeaderDecision {
    if (this.connect === null) {
      if (type !== CONNECT) {
        this.detail = `first packet is type ${type}, not CONNECT`;
        return REJECT;
      }
      return HOLD; // counted once forwarded
    }
    this.ctx.stats.packets[type] += 1; // TO_BROKER * 16 + type
    if (type === PINGREQ) this.pings.push(PING_FROM_CLIENT);
    else if (type === DISCONNECT) this.clientSentDisconnect = true;
    return PASS;
  }

  private writeUpstream(bytes: Buffer): void {
    this.deadlines.lastUpstreamActivity = this.ctx.clock.now();
    this.ctx.stats.bytes[TO_BROKER] += bytes.length;
    if (!this.upstream.write(bytes)) this.client.pause();
  }

  private onConnect(frame: Buffer): Buffer | null {
    let info: ConnectInfo;
    try {
      info = decodeConnect(frame);
    } catch {
      // The broker judges a CONNECT we cannot read; pass it on unchanged.
      this.connect = { protocolVersion: 0, protocolName: '', clientId: '', username: undefined, hasPassword: false, keepAlive: 0, cleanStart: false, willFlag: false, keepAliveOffset: -1 };
      this.deadlines.connectDeadline = Infinity;
      this.connectForwarded = true;
      this.ctx.stats.packets[CONNECT] += 1;
      return frame;
    }
    this.connect = info;
    if (info.protocolVersion === 5) this.toBroker.reservedTypes = 1 << 0;
    this.deadlines.connectDeadline = Infinity;
    const ctx = this.ctx;
    const policy = policyFor(ctx.config, ctx.rules, info);
    const decision = decideKeepAlive(policy, info);
    if (decision.action === 'reject') {
      this.effectiveKeepAlive = null;
      ctx.events.emit('connect', { ...this.facts(), clamped: false, rejected: decision.why });
      this.refuse(connackRefusal(info.protocolVersion, decision.v3ReturnCode, decision.v5Reason), 'policy_reject', decision.why);
      return null;
    }
    this.effectiveKeepAlive = decision.effectiveKeepAlive;
    this.upstreamKeepAlive = decision.upstreamKeepAlive ?? info.keepAlive;
    this.proxyServerKeepAlive = decision.serverKeepAlive;
    this.deadlines.allowedSilenceMs = decision.allowedSilenceMs;
    this.allowedPolicy = policy;
    if (decision.upstreamKeepAlive !== undefined) {
      // Translation: keep the broker's session alive with our own PINGREQs at half its keep-alive
      // (or more often, if per-connection probes ask for it).
      const idle = ctx.config.probes.upstreamProbeIdle;
      this.deadlines.upstreamProbeIdleMs = Math.min(decision.upstreamKeepAlive * 500, idle > 0 ? idle * 1000 : Infinity);
      this.deadlines.probeTimeoutMs = ctx.config.probes.upstreamProbeTimeout * 1000;
    } else if (ctx.config.probes.upstreamProbeIdle > 0) {
      this.deadlines.upstreamProbeIdleMs = ctx.config.probes.upstreamProbeIdle * 1000;
      this.deadlines.probeTimeoutMs = ctx.config.probes.upstreamProbeTimeout * 1000;
    }
    if (this.upstreamFailed) {
      this.refuse(connackRefusal(info.protocolVersion, RETURN_CODE.serverUnavailable, REASON.serverUnavailable), 'broker_unreachable', 'upstream connection failed');
      return null;
    }
    ctx.events.emit('connect', { ...this.facts(), clamped: decision.clamped, rejected: null });
    this.schedule(ctx.clock.now());
    this.connectForwarded = true;
    ctx.stats.packets[CONNECT] += 1;
    if (decision.upstreamKeepAlive !== undefined) return withKeepAlive(frame, info.keepAliveOffset, decision.upstreamKeepAlive);
    return frame;
  }

  private proxyServerKeepAlive: number | undefined;
  private allowedPolicy: KeepAlivePolicy | null = null;

  // ---- broker -> client ----------------------------------------------------

  private onBrokerData(chunk: Buffer): void {
    const error = this.toClient.push(chunk);
    if (error) this.onFrameError(error, 'to_client');
  }

  private readonly brokerSide: FrameHandler = { onHeader: this.brokerHeader.bind(this), onHeld: this.brokerHeld.bind(this), emit: this.writeClient.bind(this) };

  private brokerHeader(type: number): HeaderDecision {
    if (type === PINGRESP) {
      if (this.proxyPingsInFlight > 0) return HOLD;
      this.pings.shift();
    } else if (type === CONNACK) {
      if (!this.connackSeen) return HOLD;
    } else if (type === DISCONNECT) {
      return HOLD;
    }
    this.ctx.stats.packets[16 + type] += 1;
    return PASS;
  }

  private brokerHeld(frame: Buffer, type: number): Buffer | null {
    if (type === PINGRESP) {
      if (this.pings.shift() === PING_FROM_PROXY) {
        this.proxyPingsInFlight--;
        this.deadlines.probeSentAt = -1;
        this.ctx.stats.swallowedPingResps++;
        // The timer still waits for the probe timeout: bring it forward to the next probe.
        this.schedule(this.ctx.clock.now());
        return null;
      }
    } else if (type === CONNACK) {
      frame = this.onConnack(frame);
    } else if (type === DISCONNECT) {
      this.brokerSentDisconnect = true;
      const code = disconnectReason(frame, this.connect?.protocolVersion ?? 4);
      this.detail = `broker sent DISCONNECT${code ? ` 0x${code.toString(16)}` : ''}`;
    }
    this.ctx.stats.packets[16 + type] += 1;
    return frame;
  }

  private writeClient(bytes: Buffer): void {
    this.bytesToClient += bytes.length;
    this.ctx.stats.bytes[TO_CLIENT] += bytes.length;
    this.lastWriteToClient = this.ctx.clock.now();
    if (this.ackCheckAt === Infinity && this.ackWatchMs > 0) this.watchAcks(this.lastWriteToClient);
    if (!this.client.write(bytes)) {
      this.upstream.pause();
      if (this.deadlines.stallSince < 0) {
        this.deadlines.stallSince = this.lastWriteToClient;
        this.schedule(this.lastWriteToClient);
      }
    }
  }

  private onConnack(frame: Buffer): Buffer {
    this.connackSeen = true;
    const version = this.connect?.protocolVersion ?? 4;
    if (version !== 5) return frame;
    let info;
    try {
      info = decodeConnack(frame, 5);
    } catch {
      return frame;
    }
    const send = serverKeepAliveToSend(this.proxyServerKeepAlive, info.serverKeepAlive);
    const told = send ?? info.serverKeepAlive;
    if (told !== undefined && this.allowedPolicy && told !== this.effectiveKeepAlive) {
      // The client now keeps alive at the Server Keep Alive; enforce that.
      this.effectiveKeepAlive = told;
      this.deadlines.allowedSilenceMs = allowedSilenceMs(told, this.allowedPolicy);
    }
    if (send === undefined) return frame;
    return withServerKeepAlive(frame, send, info.serverKeepAlive !== undefined);
  }

  // ---- flow control and half-close ------------------------------------------

  private onClientDrain(): void {
    this.deadlines.stallSince = -1;
    this.upstream.resume();
  }

  private onUpstreamDrain(): void {
    this.client.resume();
  }

  private onUpstreamConnect(): void {
    this.upstreamConnected = true;
  }

  private onClientEnd(): void {
    // FIN from the client: pass it on after everything before it.
    this.clientEnded = true;
    if (this.reason === null && !this.brokerEnded) {
      this.setReason(this.clientSentDisconnect ? 'client_disconnect' : 'client_close', null);
    }
    if (!this.connectForwarded) {
      this.upstream.destroy();
      this.client.end();
      return;
    }
    this.upstream.end();
    this.lingerThenCut();
  }

  private onBrokerEnd(): void {
    // FIN from the broker: pending bytes reach the client first, then the FIN.
    this.brokerEnded = true;
    this.lingerThenCut();
    if (this.reason === null && !this.clientEnded) {
      this.setReason('broker_close', this.detail);
      if (this.connack5() && !this.brokerSentDisconnect) {
        // Closed without a DISCONNECT: did the broker die, or close this one connection?
        void upstreamAccepting(this.ctx.upstream).then((alive) => {
          if (!alive && this.toClient.atBoundary && !this.client.destroyed) {
            // It died: an MQTT 5 client is told "server unavailable" so it reconnects at once.
            this.client.write(disconnectV5(REASON.serverUnavailable));
          }
          this.client.end();
        });
        return;
      }
    }
    this.client.end();
  }

  private brokerSentDisconnect = false;
  /** Waiting to learn whether the broker died before ending the client side. */
  private checkingBroker = false;

  /** A half-closed connection whose other side never finishes is cut after a while. */
  private lingerThenCut(): void {
    if (this.lingering) return;
    this.lingering = true;
    this.clearTimer();
    this.cutLater(LINGER_MS);
  }

  /** One slot for the timer that frees both sockets after a grace period; cancelled in finish(). */
  private cutLater(ms: number): void {
    this.cutTimer?.cancel();
    this.cutTimer = this.ctx.clock.setTimer(() => {
      this.client.destroy();
      this.upstream.destroy();
    }, ms);
  }

  private lingering = false;
  private cutTimer: Timer | null = null;

  private onClientError(err: NodeJS.ErrnoException): void {
    if (this.reason !== null) return;
    if (err.code === 'ETIMEDOUT') {
      // The kernel gave up on the peer. If we were sending it data it had not asked
      // for (not just answering its last packet), TCP_USER_TIMEOUT caught unacknowledged
      // data; otherwise the keep-alive probes went unanswered. The fd is already closed
      // here, so TCP_INFO cannot be asked.
      const reason = this.lastWriteToClient > this.deadlines.lastClientActivity + UNSOLICITED_WRITE_MS ? 'tcp_user_timeout' : 'tcp_keepalive';
      this.end(reason, err.message);
    } else if (err.code === 'ECONNRESET' || err.code === 'EPIPE') {
      this.end('client_reset', err.code);
    } else {
      this.end('client_reset', err.code ?? err.message);
    }
  }

  private onUpstreamError(err: NodeJS.ErrnoException): void {
    if (this.reason !== null) return;
    if (!this.upstreamConnected) {
      this.upstreamFailed = true;
      if (this.connect && !this.connectForwarded) return; // refusing already
      if (this.connect) {
        this.refuse(connackRefusal(this.connect.protocolVersion, RETURN_CODE.serverUnavailable, REASON.serverUnavailable), 'broker_unreachable', err.code ?? err.message);
      }
      // Otherwise wait for the CONNECT to learn the protocol version, then refuse.
      return;
    }
    if (!this.connack5()) {
      this.end('broker_close', err.code ?? err.message);
      return;
    }
    this.checkingBroker = true;
    void upstreamAccepting(this.ctx.upstream).then((alive) => {
      this.checkingBroker = false;
      if (!alive) this.clientDisconnectReason = REASON.serverUnavailable;
      this.end('broker_close', err.code ?? err.message);
    });
  }

  private onSocketClose(): void {
    if (++this.closedSockets < 2) {
      // One side is gone; make sure the other follows.
      if (this.client.destroyed && !this.upstream.destroyed && !this.upstreamFailed) {
        if (this.reason === null) this.setReason('client_close', null);
        if (!this.clientEnded) this.upstream.destroy();
      } else if (this.upstream.destroyed && !this.client.destroyed && !this.checkingBroker) {
        if (this.reason === null) this.setReason('broker_close', this.detail);
        if (!this.brokerEnded && !this.upstreamFailed) this.client.destroy();
      }
      return;
    }
    this.finish();
  }

  // ---- deadlines -------------------------------------------------------------

  /** Make sure the one timer fires no later than the earliest deadline. */
  private schedule(now: number): void {
    if (now >= this.ackCheckAt) {
      this.checkAcks(now);
      if (this.reason !== null) return;
    }
    const e = evaluate(this.deadlines, now);
    if (e.verdict) {
      this.end(e.verdict, null);
      return;
    }
    if (e.probe) this.injectPing(now);
    const at = Math.min(e.probe ? evaluate(this.deadlines, now).wakeAt : e.wakeAt, this.ackCheckAt);
    if (at >= this.timerAt) return;
    this.timer?.cancel();
    this.timerAt = at;
    this.timer = at === Infinity ? null : this.ctx.clock.setTimer(this.timerFired, at - now);
  }

  private readonly timerFired = this.onTimer.bind(this);

  // ---- unacknowledged data ----------------------------------------------------
  //
  // TCP_USER_TIMEOUT is set on the socket, but the kernel only acts on it when its
  // retransmission timer fires, and that timer is not always clamped to the user
  // timeout: on a 200 ms RTO ladder the abort then comes at 12.6 s instead of 8 s.
  // So the proxy also looks itself: once data has been written to the client, it
  // reads TCP_INFO when the user timeout could have passed, and gives the verdict
  // when data is still in flight and nothing was acknowledged for that long.

  /** When to look at TCP_INFO next (Infinity: nothing written since the last look found all acknowledged). */
  private ackCheckAt = Infinity;
  /** When the data the current watch is about was first written. */
  private ackWatchSince = 0;
  /** The user timeout in ms; 0 when unset or TCP_INFO cannot be read. */
  private ackWatchMs = 0;

  private watchAcks(now: number): void {
    this.ackWatchSince = now;
    this.ackCheckAt = now + this.ackWatchMs;
    if (this.ackCheckAt < this.timerAt) this.schedule(now);
  }

  private checkAcks(now: number): void {
    const state = tcpAckState(this.client);
    if (state === null) {
      this.ackWatchMs = 0; // not available here (no fd, no koffi): the kernel's timer alone decides
      this.ackCheckAt = Infinity;
      return;
    }
    if (state.unacked === 0) {
      this.ackCheckAt = Infinity; // all acknowledged: the next write starts a new watch
      return;
    }
    const limit = this.ackWatchMs;
    if (state.msSinceLastAck >= limit && now - this.ackWatchSince >= limit) {
      this.end('tcp_user_timeout', `${state.unacked} segments unacknowledged, no ACK for ${state.msSinceLastAck} ms`);
      return;
    }
    this.ackCheckAt = Math.max(now + limit - state.msSinceLastAck, this.ackWatchSince + limit, now + 100);
  }

  private onTimer(): void {
    this.timer = null;
    this.timerAt = Infinity;
    if (this.reason === null) this.schedule(this.ctx.clock.now());
  }

  private injectPing(now: number): void {
    if (!this.connackSeen || !this.toBroker.atBoundary || !this.upstream.writable || this.clientSentDisconnect) {
      // Not now: retry after a short while instead of splitting a frame (and nothing after a DISCONNECT).
      this.deadlines.lastUpstreamActivity = now - this.deadlines.upstreamProbeIdleMs + 100;
      return;
    }
    this.pings.push(PING_FROM_PROXY);
    this.proxyPingsInFlight++;
    this.deadlines.probeSentAt = now;
    this.ctx.stats.injectedPings++;
    this.writeUpstream(PINGREQ_BYTES);
  }

  // ---- ending ----------------------------------------------------------------

  private setReason(reason: Reason, detail: string | null): void {
    this.reason = reason;
    this.detail = detail;
    this.endedAtMono = this.ctx.clock.now();
  }

  private endedAtMono = 0;

  private onFrameError(error: FrameError, direction: 'to_broker' | 'to_client'): void {
    this.ctx.events.emit('frameError', { kind: error.kind, code: error.code, direction });
    if (this.reason !== null) return;
    if (direction === 'to_broker' && this.connack5()) {
      this.clientDisconnectReason = error.code === 'MLP_FRAME_TOO_LARGE' ? 0x95 : error.code === 'MLP_MALFORMED_LENGTH' ? 0x81 : 0x82;
    }
    const detail = error.code === 'MLP_REJECTED' && this.detail ? `${error.code}: ${this.detail}` : `${error.code}: ${error.message}`;
    this.end('protocol_error', detail);
  }

  private connack5(): boolean {
    return this.connackSeen && this.connect?.protocolVersion === 5;
  }

  /** Answer the CONNECT ourselves and close. */
  private refuse(connack: Buffer, reason: Reason, detail: string): void {
    if (this.reason !== null) return;
    this.setReason(reason, detail);
    this.upstream.destroy();
    this.client.end(connack);
    this.clearTimer();
    // A client that never reads its CONNACK must not hold the socket.
    this.cutLater(2000);
  }

  /**
   * End both sides for a reason decided here. On a liveness verdict the broker
   * is told at once so it publishes the Will: MQTT 5 gets DISCONNECT 0x04, and
   * 3.x an abrupt close without DISCONNECT.
   */
  end(reason: Reason, detail: string | null): void {
    if (this.reason !== null) return;
    this.setReason(reason, detail);
    this.clearTimer();
    const v5 = this.connect?.protocolVersion === 5;
    if (isLivenessReason(reason) && v5 && this.connectForwarded && this.toBroker.atBoundary && !this.upstream.destroyed) {
      this.upstream.end(disconnectV5(REASON.disconnectWithWill));
      // Do not wait on the broker: it has what it needs.
      this.cutLater(1000);
    } else {
      this.upstream.destroy();
    }
    if (v5 && this.connackSeen && this.clientDisconnectReason < 0) this.clientDisconnectReason = clientReasonFor(reason);
    let flushing = false;
    if (this.clientDisconnectReason >= 0 && this.toClient.atBoundary && !this.client.destroyed) {
      // Best effort: a dead peer will not read it; the socket is freed either way.
      const idle = this.client.writableLength === 0;
      this.client.write(disconnectV5(this.clientDisconnectReason), () => {
        if (flushing) this.client.destroy();
      });
      // A plain socket sent it already; a TLS socket still holds it (encryption is
      // asynchronous), so it goes once written, or after a moment at the latest.
      flushing = idle && this.client.writableLength > 0;
    }
    if (flushing) this.cutLater(1000);
    else this.client.destroy();
  }

  /** Cut both sockets now, however the connection is ending (shutdown after its grace). */
  cut(): void {
    this.client.destroy();
    this.upstream.destroy();
  }

  private clearTimer(): void {
    this.timer?.cancel();
    this.timer = null;
    this.timerAt = 0; // no new timer after the end
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.clearTimer();
    this.cutTimer?.cancel();
    const now = this.endedAtMono || this.ctx.clock.now();
    const reason = this.reason ?? 'client_close';
    const silenceMs = Math.max(0, now - this.deadlines.lastClientActivity);
    // What the broker would have done with this client connected directly: 1.5 x its keep-alive.
    const brokerDeadline = this.deadlines.lastClientActivity + brokerDeadlineMs(this.connect?.keepAlive ?? 0);
    const liveness = isLivenessReason(reason);
    const endedAt = this.ctx.clock.wallNow();
    this.ctx.events.emit('close', {
      ...this.facts(),
      reason,
      detail: this.detail,
      endedAt,
      durationMs: endedAt - this.startedAt,
      silenceMs,
      advantageMs: brokerDeadline === Infinity ? null : brokerDeadline - now,
      bytesFromClient: this.bytesFromClient,
      bytesToClient: this.bytesToClient,
      liveness,
    });
    this.ctx.onClosed(this);
  }
}

/** The MQTT 5 DISCONNECT reason a client is sent when the proxy ends its connection. */
function clientReasonFor(reason: Reason): number {
  if (isLivenessReason(reason)) return REASON.keepAliveTimeout;
  if (reason === 'shutdown') return REASON.serverShuttingDown;
  if (reason === 'broker_unresponsive' || reason === 'broker_down') return REASON.serverUnavailable;
  return -1;
}
