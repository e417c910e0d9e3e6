/**
 * One client connection and its one upstream connection to the broker.
 *
 * Bytes are relayed as they arrive (sub-arrays of the read buffers, which are
 * reused once a read is handled: read-buffers.ts); only the
 * first CONNECT, the first CONNACK, PINGRESPs owed to injected PINGREQs and
 * broker DISCONNECTs are held and read. Every deadline shares one timer, and
 * every way a connection can end goes through end() or refuse().
 *
 * The parts with rules of their own live beside it: handshake.ts (CONNECT and
 * CONNACK), ping-ledger.ts (whose PINGRESP), liveness-timer.ts (the one timer,
 * the deadlines and the liveness model: alive -> suspect -> dead),
 * close-reason.ts (which reason, which DISCONNECT to whom) and connection-end.ts
 * (half-close, linger, cut, the close event). This class wires them to the two
 * streams it is given: the client's (ClientTransport) and the
 * upstream one from ctx.connectUpstream(), which must emit 'connect' once
 * connected (a net.Socket does; an in-memory stream in a test emits it itself)
 * and 'error' when it cannot connect.
 */
import type { Duplex } from 'node:stream';
import { Framer, HOLD, PASS, REJECT, PROTOCOL_MAX_FRAME, type HeaderDecision } from '../mqtt/framer.ts';
import { CONNACK, CONNECT, DISCONNECT, PINGREQ, PINGRESP, PINGREQ_BYTES, disconnectReason, type ConnectInfo } from '../mqtt/packets.ts';
import type { DeadlineState } from '../liveness/deadlines.ts';
import type { Reason } from '../liveness/reasons.ts';
import type { KeepAlivePolicy } from '../config/types.ts';
import { TO_BROKER, TO_CLIENT } from './stats.ts';
import type { ConnectionFacts } from './events.ts';
import type { ConnectionContext } from './connection-context.ts';
import type { ClientTransport } from './transport.ts';
import { handleConnack, handleConnect } from './handshake.ts';
import { PingLedger } from './ping-ledger.ts';
import { LivenessTimer } from './liveness-timer.ts';
import { BROKER, CLIENT, ConnectionEnd } from './connection-end.ts';
import { BrokerSide, ClientSide, wireStreams } from './connection-wiring.ts';

export type { ConnectionContext } from './connection-context.ts';

/**
 * How far the MQTT session got. It only moves forward. Whether the connection
 * is ending is `reason` (null while it runs), because a half-closed connection
 * still relays the other direction (a CONNACK can arrive after the client's FIN).
 *  - awaiting_connect: nothing forwarded yet (the upstream connects meanwhile);
 *  - refused: the proxy answered the CONNECT itself, nothing was forwarded;
 *  - awaiting_connack: the CONNECT went upstream;
 *  - open: the CONNACK was relayed (an MQTT session exists);
 *  - closed: both streams closed and the close event emitted.
 */
export type Phase = 'awaiting_connect' | 'refused' | 'awaiting_connack' | 'open' | 'closed';

let nextId = 1;

export class Connection {
  readonly id = nextId++;
  readonly transport: ClientTransport;
  /** Wall-clock ms, for people (connectedAt); durations use startedMono. */
  readonly startedAt: number;
  /** The clock's monotonic ms at accept: a wall-clock step must not bend a connection's duration. */
  readonly startedMono: number;
  connect: ConnectInfo | null = null;
  effectiveKeepAlive: number | null = null;
  upstreamKeepAlive: number | null = null;
  bytesFromClient = 0;
  bytesToClient = 0;
  readonly deadlines: DeadlineState;

  private readonly ctx: ConnectionContext;
  private readonly client: Duplex;
  private readonly upstream: Duplex;
  private readonly toBroker: Framer;
  private readonly toClient: Framer;
  private readonly pings = new PingLedger();
  /** The one timer: deadlines, keep-alive, the TCP liveness model. */
  readonly liveness: LivenessTimer;
  private state: Phase = 'awaiting_connect';
  /** The policy and Server Keep Alive of an accepted CONNECT, for its CONNACK. */
  private allowedPolicy: KeepAlivePolicy | null = null;
  private proxyServerKeepAlive: number | undefined = undefined;
  /** Monotonic time of the last write to the client, -1 before any (read by the ending). */
  lastWriteToClient = -1;
  /** Half-close, errors, the end and the close event (connection-end.ts). */
  /** @internal read by the stream listeners (connection-wiring.ts) */
  readonly ending: ConnectionEnd;
  // No per-connection closures: the framers' handlers are two small objects and the
  // streams' listeners are functions shared by every connection, which find
  // their connection through the stream (connection-wiring.ts). 21 bound functions cost ~1 KB
  // of heap per idle connection (BENCHMARKS.md, issue 13).
  /** @internal the client's bytes: the framer's handler and the client socket's reader (connection-wiring.ts) */
  readonly clientSide = new ClientSide(this);
  /** @internal the broker's bytes */
  readonly brokerSide = new BrokerSide(this);

  constructor(transport: ClientTransport, ctx: ConnectionContext) {
    this.transport = transport;
    this.ctx = ctx;
    const client = (this.client = transport.stream);
    const now = ctx.clock.now();
    this.startedAt = ctx.clock.wallNow();
    this.startedMono = now;
    const cfg = ctx.config;
    this.liveness = new LivenessTimer(ctx, this, transport, now);
    this.deadlines = this.liveness.deadlines;

    // The held CONNECT has its own, smaller limit (maxConnectSize); maxPacketSize applies after it.
    this.toBroker = new Framer(this.clientSide, Math.min(cfg.maxConnectSize, cfg.maxPacketSize));
    this.toClient = new Framer(this.brokerSide, PROTOCOL_MAX_FRAME);
    // Type 15 is AUTH in MQTT 5 but reserved before it; allowed once the CONNECT says v5.
    this.toBroker.reservedTypes = (1 << 0) | (1 << 15);

    if (transport.tcpSocket) {
      transport.tcpSocket.setNoDelay(true);
      ctx.applyTcpLiveness(transport.tcpSocket, this.liveness.kernelSettings());
    }
    const upstream = (this.upstream = ctx.connectUpstream(this));
    this.ending = new ConnectionEnd(this, { ctx, client, upstream, toBroker: this.toBroker, toClient: this.toClient, liveness: this.liveness });
    wireStreams(this, client, upstream);
    this.liveness.schedule(now);
  }



  facts(): ConnectionFacts {
    const c = this.connect;
    const t = this.transport;
    return {
      id: this.id,
      clientId: c ? c.clientId : null,
      username: c?.username ?? null,
      remoteAddress: t.remoteAddress,
      remotePort: t.remotePort,
      transport: t.transport,
      protocolVersion: c ? c.protocolVersion : null,
      keepAlive: c ? c.keepAlive : null,
      effectiveKeepAlive: this.effectiveKeepAlive,
      upstreamKeepAlive: this.upstreamKeepAlive,
      startedAt: this.startedAt,
    };
  }

  get phase(): Phase {
    return this.state;
  }

  /** No end decided yet. */
  get isOpen(): boolean {
    return this.ending.reason === null;
  }

  get hasConnack(): boolean {
    return this.state === 'open';
  }

  /** The CONNECT went upstream. */
  get connectForwarded(): boolean {
    return this.state === 'awaiting_connack' || this.state === 'open';
  }

  /** The session is open and speaks MQTT 5. */
  get connack5(): boolean {
    return this.state === 'open' && this.connect?.protocolVersion === 5;
  }

  /** For ConnectionEnd.finish: the phase becomes closed; false if it already was. */
  markClosed(): boolean {
    if (this.state === 'closed') return false;
    this.state = 'closed';
    return true;
  }

  // ---- client -> broker ----------------------------------------------------

  /** @internal stream listener (connection-wiring.ts) */
  onClientData(chunk: Buffer): void {
    if (this.state === 'closed') return;
    const now = (this.deadlines.lastClientActivity = this.ctx.clock.now());
    if (this.liveness.keepAliveWatched) this.liveness.clientSpoke(now);
    this.bytesFromClient += chunk.length;
    const error = this.toBroker.push(chunk);
    if (error) this.ending.onFrameError(error, 'to_broker');
  }

  /** @internal for the framer's handler (ClientSide, BrokerSide) */
  clientHeader(type: number): HeaderDecision {
    if (this.connect === null) {
      if (type !== CONNECT) {
        this.ending.detail = `first packet is type ${type}, not CONNECT`;
        return REJECT;
      }
      return HOLD; // counted once forwarded
    }
    this.ctx.stats.packets[type] += 1; // TO_BROKER * 16 + type
    if (type === PINGREQ) this.pings.clientPinged();
    else if (type === DISCONNECT) this.ending.disconnects |= CLIENT;
    return PASS;
  }

  /** @internal for the framer's handler (ClientSide, BrokerSide) */
  writeUpstream(bytes: Buffer): void {
    this.deadlines.lastUpstreamActivity = this.ctx.clock.now();
    this.ctx.stats.bytes[TO_BROKER] += bytes.length;
    if (!this.upstream.write(bytes)) this.client.pause();
  }

  /** @internal for the framer's handler (ClientSide, BrokerSide) */
  onConnect(frame: Buffer): Buffer | null {
    const ctx = this.ctx;
    const out = handleConnect(frame, ctx.config, ctx.rules);
    const info = (this.connect = out.info);
    this.deadlines.connectDeadline = Infinity;
    this.toBroker.maxFrameSize = ctx.config.maxPacketSize;
    if (out.action === 'forward' && out.unreadable) {
      // The broker judges a CONNECT we cannot read; pass it on unchanged.
      this.forwarded();
      return frame;
    }
    if (info.protocolVersion === 5) this.toBroker.reservedTypes = 1 << 0;
    if (out.action === 'refuse') {
      this.state = 'refused';
      ctx.events.emit('connect', { ...this.facts(), clamped: false, rejected: out.why });
      this.ending.refuse(out.connack, 'policy_reject', out.why);
      return null;
    }
    this.effectiveKeepAlive = out.effectiveKeepAlive;
    this.upstreamKeepAlive = out.upstreamKeepAlive;
    this.proxyServerKeepAlive = out.serverKeepAlive;
    this.allowedPolicy = out.policy;
    const d = this.deadlines;
    d.allowedSilenceMs = out.allowedSilenceMs;
    d.upstreamProbeIdleMs = out.probeIdleMs;
    d.probeTimeoutMs = out.probeTimeoutMs;
    if (this.ending.upstreamState === 'failed') {
      this.state = 'refused';
      this.ending.refuse(this.ending.unreachableAnswer(info.protocolVersion), 'broker_unreachable', 'upstream connection failed');
      return null;
    }
    ctx.events.emit('connect', { ...this.facts(), clamped: out.clamped, rejected: null });
    this.liveness.setKeepAlive(out.effectiveKeepAlive, out.policy);
    this.liveness.schedule(ctx.clock.now());
    this.forwarded();
    return out.frame;
  }

  private forwarded(): void {
    if (this.state === 'awaiting_connect') this.state = 'awaiting_connack';
    this.ctx.stats.packets[CONNECT] += 1;
  }

  // ---- broker -> client ----------------------------------------------------

  /** @internal stream listener (connection-wiring.ts) */
  onBrokerData(chunk: Buffer): void {
    const error = this.toClient.push(chunk);
    if (error) this.ending.onFrameError(error, 'to_client');
  }

  /** @internal for the framer's handler (ClientSide, BrokerSide) */
  brokerHeader(type: number): HeaderDecision {
    if (type === PINGRESP) {
      if (this.pings.mustHold()) return HOLD;
    } else if (type === CONNACK) {
      if (this.state !== 'open') return HOLD;
    } else if (type === DISCONNECT) {
      return HOLD;
    }
    this.ctx.stats.packets[16 + type] += 1;
    return PASS;
  }

  /** @internal for the framer's handler (ClientSide, BrokerSide) */
  brokerHeld(frame: Buffer, type: number): Buffer | null {
    if (type === PINGRESP) {
      if (this.pings.answeredProxy()) {
        this.deadlines.probeSentAt = -1;
        this.ctx.stats.swallowedPingResps++;
        // The timer still waits for the probe timeout: bring it forward to the next probe.
        this.liveness.schedule(this.ctx.clock.now());
        return null;
      }
    } else if (type === CONNACK) {
      frame = this.onConnack(frame);
    } else if (type === DISCONNECT) {
      this.ending.disconnects |= BROKER;
      const code = disconnectReason(frame, this.connect?.protocolVersion ?? 4);
      this.ending.detail = `broker sent DISCONNECT${code ? ` 0x${code.toString(16)}` : ''}`;
    }
    this.ctx.stats.packets[16 + type] += 1;
    return frame;
  }

  /** @internal for the framer's handler (ClientSide, BrokerSide) */
  writeClient(bytes: Buffer): void {
    this.bytesToClient += bytes.length;
    this.ctx.stats.bytes[TO_CLIENT] += bytes.length;
    const now = (this.lastWriteToClient = this.ctx.clock.now());
    this.liveness.noteWrite(now);
    if (!this.client.write(bytes)) {
      this.upstream.pause();
      if (this.deadlines.stallSince < 0) {
        this.deadlines.stallSince = now;
        this.liveness.schedule(now);
      }
    }
  }

  private onConnack(frame: Buffer): Buffer {
    if (this.state === 'awaiting_connack') this.state = 'open';
    const version = this.connect?.protocolVersion ?? 4;
    const policy = this.allowedPolicy;
    const accepted = version === 5 && policy ? { policy, serverKeepAlive: this.proxyServerKeepAlive, effectiveKeepAlive: this.effectiveKeepAlive ?? 0 } : null;
    const out = handleConnack(frame, version, accepted);
    if (out.adoptedKeepAlive !== undefined) {
      this.effectiveKeepAlive = out.adoptedKeepAlive;
      this.deadlines.allowedSilenceMs = out.allowedSilenceMs;
      this.liveness.setKeepAlive(out.adoptedKeepAlive, policy);
    }
    return out.frame;
  }

  // ---- flow control ------------------------------------------------------------

  /** @internal stream listener (connection-wiring.ts) */
  onClientDrain(): void {
    this.deadlines.stallSince = -1;
    this.upstream.resume();
  }

  /** @internal stream listener (connection-wiring.ts) */
  onUpstreamDrain(): void {
    this.client.resume();
  }

  // ---- deadlines (the one timer lives in liveness-timer.ts) ------------------

  /** TimerHost: a deadline passed or a dead verdict was reached. */
  expire(reason: Reason, detail: string | null): void {
    if (this.ending.reason === null) this.ending.end(reason, detail);
  }

  /** TimerHost: the upstream probe deadline. */
  probeUpstream(now: number): void {
    this.injectPing(now);
  }

  private injectPing(now: number): void {
    if (this.state !== 'open' || !this.toBroker.atBoundary || !this.upstream.writable || this.ending.disconnects & CLIENT) {
      // Not now: retry after a short while instead of splitting a frame (and nothing after a DISCONNECT).
      this.deadlines.lastUpstreamActivity = now - this.deadlines.upstreamProbeIdleMs + 100;
      return;
    }
    this.pings.proxyPinged();
    this.deadlines.probeSentAt = now;
    this.ctx.stats.injectedPings++;
    this.writeUpstream(PINGREQ_BYTES);
  }

  // ---- ending (the rules live in connection-end.ts) ----------------------------

  /**
   * End both sides for a reason decided here or by the server (shutdown,
   * broker_down); see ConnectionEnd.end.
   */
  end(reason: Reason, detail: string | null): void {
    this.ending.end(reason, detail);
  }

  /** Cut both streams now, however the connection is ending (shutdown after its grace). */
  cut(): void {
    this.ending.cut();
  }
}
