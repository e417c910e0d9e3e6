/**
 * One client connection and its one upstream connection to the broker.
 *
 * Bytes are relayed as they arrive (sub-arrays of the stream chunks); only the
 * first CONNECT, the first CONNACK, PINGRESPs owed to injected PINGREQs and
 * broker DISCONNECTs are held and read. Every deadline shares one timer, and
 * every way a connection can end goes through end() or refuse().
 *
 * The parts with rules of their own live beside it: handshake.ts (CONNECT and
 * CONNACK), ping-ledger.ts (whose PINGRESP), liveness-timer.ts (the one timer,
 * the deadlines and the liveness model: alive -> suspect -> dead), close-reason.ts (which reason, which DISCONNECT to whom). This class wires
 * them to the two streams it is given: the client's (ClientTransport) and the
 * upstream one from ctx.connectUpstream(), which must emit 'connect' once
 * connected (a net.Socket does; an in-memory stream in a test emits it itself)
 * and 'error' when it cannot connect.
 */
import type { Duplex } from 'node:stream';
import { Framer, HOLD, PASS, REJECT, PROTOCOL_MAX_FRAME, type FrameHandler, type HeaderDecision } from '../mqtt/framer.ts';
import type { FrameError } from '../mqtt/errors.ts';
import { CONNACK, CONNECT, DISCONNECT, PINGREQ, PINGRESP, PINGREQ_BYTES, REASON, disconnectReason, disconnectV5, type ConnectInfo } from '../mqtt/packets.ts';
import type { Timer } from '../liveness/clock.ts';
import type { DeadlineState } from '../liveness/deadlines.ts';
import { brokerDeadlineMs } from '../liveness/policy.ts';
import { isLivenessReason, type Reason } from '../liveness/reasons.ts';
import type { KeepAlivePolicy } from '../config/types.ts';
import { TO_BROKER, TO_CLIENT } from './stats.ts';
import type { ConnectionFacts } from './events.ts';
import type { ConnectionContext } from './connection-context.ts';
import type { ClientTransport } from './transport.ts';
import { brokerUnreachableConnack, handleConnack, handleConnect } from './handshake.ts';
import { PingLedger } from './ping-ledger.ts';
import { LivenessTimer } from './liveness-timer.ts';
import { NO_DISCONNECT, brokerEndReason, clientDisconnectFor, clientErrorReason, clientFinReason, frameErrorDisconnect, tellBrokerWill } from './close-reason.ts';

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
type UpstreamState = 'connecting' | 'connected' | 'failed';

/** Bits of `fins` and `disconnects`: which side sent its FIN, which its DISCONNECT. */
const CLIENT = 1;
const BROKER = 2;

/** Milliseconds a half-closed connection may linger before both streams are cut. */
const LINGER_MS = 10_000;
/** Milliseconds a refused client has to read its CONNACK. */
const REFUSAL_MS = 2_000;
/** Milliseconds a last DISCONNECT may take to flush before the stream is cut. */
const FLUSH_MS = 1_000;

let nextId = 1;

export class Connection {
  readonly id = nextId++;
  readonly transport: ClientTransport;
  readonly startedAt: number;
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
  private upstreamState: UpstreamState = 'connecting';
  /** CLIENT | BROKER bits: who half-closed. */
  private fins = 0;
  /** CLIENT | BROKER bits: who sent a DISCONNECT. */
  private disconnects = 0;
  private lingering = false;
  /** Waiting to learn whether the broker died before ending the client side. */
  private checkingBroker = false;
  /** The policy and Server Keep Alive of an accepted CONNECT, for its CONNACK. */
  private allowedPolicy: KeepAlivePolicy | null = null;
  private proxyServerKeepAlive: number | undefined = undefined;
  private lastWriteToClient = -1;
  /** One slot for the timer that frees both streams after a grace period; cancelled in finish(). */
  private cutTimer: Timer | null = null;
  private reason: Reason | null = null;
  private detail: string | null = null;
  private endedAtMono = 0;
  private closedStreams = 0;
  /** A v5 DISCONNECT reason the client is sent when the connection ends, or NO_DISCONNECT. */
  private clientDisconnectReason = NO_DISCONNECT;
  // Methods bound once rather than arrow-function fields: under tsx (esbuild
  // keepNames) every arrow field also gets a defineProperty('name'), about 300 B
  // more per closure, and a connection has 18 of them (see BENCHMARKS.md).
  private readonly clientSide: FrameHandler = { onHeader: this.clientHeader.bind(this), onHeld: this.onConnect.bind(this), emit: this.writeUpstream.bind(this) };
  private readonly brokerSide: FrameHandler = { onHeader: this.brokerHeader.bind(this), onHeld: this.brokerHeld.bind(this), emit: this.writeClient.bind(this) };

  constructor(transport: ClientTransport, ctx: ConnectionContext) {
    this.transport = transport;
    this.ctx = ctx;
    const client = (this.client = transport.stream);
    const now = ctx.clock.now();
    this.startedAt = ctx.clock.wallNow();
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
    const onStreamClose = this.onStreamClose.bind(this);
    client.on('data', this.onClientData.bind(this));
    client.on('end', this.onClientEnd.bind(this));
    client.on('error', this.onClientError.bind(this));
    client.on('close', onStreamClose);
    client.on('drain', this.onClientDrain.bind(this));

    const upstream = (this.upstream = ctx.connectUpstream(this));
    upstream.on('connect', this.onUpstreamConnect.bind(this));
    upstream.on('data', this.onBrokerData.bind(this));
    upstream.on('end', this.onBrokerEnd.bind(this));
    upstream.on('error', this.onUpstreamError.bind(this));
    upstream.on('close', onStreamClose);
    upstream.on('drain', this.onUpstreamDrain.bind(this));
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
    return this.reason === null;
  }

  get hasConnack(): boolean {
    return this.state === 'open';
  }

  private get connectForwarded(): boolean {
    return this.state === 'awaiting_connack' || this.state === 'open';
  }

  private connack5(): boolean {
    return this.state === 'open' && this.connect?.protocolVersion === 5;
  }

  // ---- client -> broker ----------------------------------------------------

  private onClientData(chunk: Buffer): void {
    if (this.state === 'closed') return;
    const now = (this.deadlines.lastClientActivity = this.ctx.clock.now());
    if (this.liveness.keepAliveSuspectSince >= 0) this.liveness.clientSpoke(now);
    this.bytesFromClient += chunk.length;
    const error = this.toBroker.push(chunk);
    if (error) this.onFrameError(error, 'to_broker');
  }

  private clientHeader(type: number): HeaderDecision {
    if (this.connect === null) {
      if (type !== CONNECT) {
        this.detail = `first packet is type ${type}, not CONNECT`;
        return REJECT;
      }
      return HOLD; // counted once forwarded
    }
    this.ctx.stats.packets[type] += 1; // TO_BROKER * 16 + type
    if (type === PINGREQ) this.pings.clientPinged();
    else if (type === DISCONNECT) this.disconnects |= CLIENT;
    return PASS;
  }

  private writeUpstream(bytes: Buffer): void {
    this.deadlines.lastUpstreamActivity = this.ctx.clock.now();
    this.ctx.stats.bytes[TO_BROKER] += bytes.length;
    if (!this.upstream.write(bytes)) this.client.pause();
  }

  private onConnect(frame: Buffer): Buffer | null {
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
      this.refuse(out.connack, 'policy_reject', out.why);
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
    if (this.upstreamState === 'failed') {
      this.state = 'refused';
      this.refuse(this.unreachableAnswer(info.protocolVersion), 'broker_unreachable', 'upstream connection failed');
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

  private onBrokerData(chunk: Buffer): void {
    const error = this.toClient.push(chunk);
    if (error) this.onFrameError(error, 'to_client');
  }

  private brokerHeader(type: number): HeaderDecision {
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

  private brokerHeld(frame: Buffer, type: number): Buffer | null {
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
      this.disconnects |= BROKER;
      const code = disconnectReason(frame, this.connect?.protocolVersion ?? 4);
      this.detail = `broker sent DISCONNECT${code ? ` 0x${code.toString(16)}` : ''}`;
    }
    this.ctx.stats.packets[16 + type] += 1;
    return frame;
  }

  private writeClient(bytes: Buffer): void {
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

  // ---- flow control and half-close ------------------------------------------

  private onClientDrain(): void {
    this.deadlines.stallSince = -1;
    this.upstream.resume();
  }

  private onUpstreamDrain(): void {
    this.client.resume();
  }

  private onUpstreamConnect(): void {
    this.upstreamState = 'connected';
  }

  private onClientEnd(): void {
    // FIN from the client: pass it on after everything before it.
    this.fins |= CLIENT;
    if (this.reason === null && !(this.fins & BROKER)) this.setReason(clientFinReason((this.disconnects & CLIENT) !== 0), null);
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
    this.fins |= BROKER;
    this.lingerThenCut();
    if (this.reason === null && !(this.fins & CLIENT)) {
      this.setReason(brokerEndReason((this.disconnects & CLIENT) !== 0), this.detail);
      if (this.connack5() && !(this.disconnects & (BROKER | CLIENT))) {
        // Closed without a DISCONNECT: did the broker die, or close this one connection?
        void this.ctx.brokerAccepting().then((alive) => {
          if (!alive && this.toClient.atBoundary && !this.client.destroyed) {
            // It died: an MQTT 5 client is told "server busy" (0x89) so it reconnects at once.
            this.client.write(disconnectV5(REASON.serverBusy));
          }
          this.client.end();
        });
        return;
      }
    }
    this.client.end();
  }

  /** A half-closed connection whose other side never finishes is cut after a while. */
  private lingerThenCut(): void {
    if (this.lingering) return;
    this.lingering = true;
    this.clearTimer();
    this.cutLater(LINGER_MS);
  }

  private cutLater(ms: number): void {
    this.cutTimer?.cancel();
    this.cutTimer = this.ctx.clock.setTimer(() => this.cut(), ms);
  }

  private onClientError(err: NodeJS.ErrnoException): void {
    if (this.reason !== null) return;
    const reason = clientErrorReason(err.code, this.lastWriteToClient, this.deadlines.lastClientActivity);
    this.end(reason, err.code === 'ETIMEDOUT' ? err.message : err.code ?? err.message);
  }

  private onUpstreamError(err: NodeJS.ErrnoException): void {
    if (this.reason !== null) return;
    const detail = err.code ?? err.message;
    if (this.upstreamState !== 'connected') {
      this.upstreamState = 'failed';
      // brokerUnreachable close: at once, without a CONNACK. connack: without the CONNECT
      // yet, wait for it to learn the protocol version, then refuse.
      if (this.ctx.config.brokerUnreachable === 'close') this.refuse(null, 'broker_unreachable', detail);
      else if (this.connect) this.refuse(brokerUnreachableConnack(this.connect.protocolVersion), 'broker_unreachable', detail);
      return;
    }
    if (!this.connack5() || this.disconnects & CLIENT) {
      this.end(brokerEndReason((this.disconnects & CLIENT) !== 0), detail);
      return;
    }
    this.checkingBroker = true;
    void this.ctx.brokerAccepting().then((alive) => {
      this.checkingBroker = false;
      if (!alive) this.clientDisconnectReason = REASON.serverBusy;
      this.end('broker_close', detail);
    });
  }

  private onStreamClose(): void {
    if (++this.closedStreams < 2) {
      // One side is gone; make sure the other follows.
      const failed = this.upstreamState === 'failed';
      if (this.client.destroyed && !this.upstream.destroyed && !failed) {
        if (this.reason === null) this.setReason('client_close', null);
        if (!(this.fins & CLIENT)) this.upstream.destroy();
      } else if (this.upstream.destroyed && !this.client.destroyed && !this.checkingBroker && !failed) {
        // (An upstream that never connected is no broker_close: the CONNECT, when it
        // comes, is refused with "server unavailable", else connect_timeout ends it.)
        if (this.reason === null) this.setReason(brokerEndReason((this.disconnects & CLIENT) !== 0), this.detail);
        if (!(this.fins & BROKER)) this.client.destroy();
      }
      return;
    }
    this.finish();
  }

  // ---- deadlines (the one timer lives in liveness-timer.ts) ------------------

  /** TimerHost: a deadline passed or a dead verdict was reached. */
  expire(reason: Reason, detail: string | null): void {
    if (this.reason === null) this.end(reason, detail);
  }

  /** TimerHost: the upstream probe deadline. */
  probeUpstream(now: number): void {
    this.injectPing(now);
  }

  private injectPing(now: number): void {
    if (this.state !== 'open' || !this.toBroker.atBoundary || !this.upstream.writable || this.disconnects & CLIENT) {
      // Not now: retry after a short while instead of splitting a frame (and nothing after a DISCONNECT).
      this.deadlines.lastUpstreamActivity = now - this.deadlines.upstreamProbeIdleMs + 100;
      return;
    }
    this.pings.proxyPinged();
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

  private onFrameError(error: FrameError, direction: 'to_broker' | 'to_client'): void {
    this.ctx.events.emit('frameError', { kind: error.kind, code: error.code, direction });
    if (this.reason !== null) return;
    if (direction === 'to_broker' && this.connack5()) this.clientDisconnectReason = frameErrorDisconnect(error.code);
    const detail = error.code === 'MLP_REJECTED' && this.detail ? `${error.code}: ${this.detail}` : `${error.code}: ${error.message}`;
    this.end('protocol_error', detail);
  }

  /** What a client is told when the broker cannot be reached (config brokerUnreachable): a refusing CONNACK, or nothing. */
  private unreachableAnswer(protocolVersion: number): Buffer | null {
    return this.ctx.config.brokerUnreachable === 'connack' ? brokerUnreachableConnack(protocolVersion) : null;
  }

  /** Answer the CONNECT ourselves (or, connack null, close without an answer). */
  private refuse(connack: Buffer | null, reason: Reason, detail: string): void {
    if (this.reason !== null) return;
    this.setReason(reason, detail);
    this.upstream.destroy();
    if (connack) this.client.end(connack);
    else this.client.end();
    this.clearTimer();
    // A client that never reads its CONNACK must not hold the stream.
    this.cutLater(REFUSAL_MS);
  }

  /**
   * End both sides for a reason decided here or by the server (shutdown,
   * broker_down). On a liveness verdict the broker is told at once so it
   * publishes the Will: MQTT 5 gets DISCONNECT 0x04, and 3.x an abrupt close
   * without DISCONNECT. An MQTT 5 client is told why, when there is a reason code for it.
   */
  end(reason: Reason, detail: string | null): void {
    if (this.reason !== null) return;
    this.setReason(reason, detail);
    this.clearTimer();
    const version = this.connect?.protocolVersion ?? 0;
    if (tellBrokerWill(reason, version, this.connectForwarded, this.toBroker.atBoundary) && !this.upstream.destroyed) {
      this.upstream.end(disconnectV5(REASON.disconnectWithWill));
      // Do not wait on the broker: it has what it needs.
      this.cutLater(FLUSH_MS);
    } else {
      this.upstream.destroy();
    }
    if (version === 5 && this.state === 'open' && this.clientDisconnectReason === NO_DISCONNECT) this.clientDisconnectReason = clientDisconnectFor(reason);
    const canTell = this.clientDisconnectReason !== NO_DISCONNECT && this.toClient.atBoundary;
    if (canTell && destroyAfterDisconnect(this.client, this.clientDisconnectReason)) this.cutLater(FLUSH_MS);
    else this.client.destroy();
  }

  /** Cut both streams now, however the connection is ending (shutdown after its grace). */
  cut(): void {
    this.client.destroy();
    this.upstream.destroy();
  }

  private clearTimer(): void {
    this.liveness.stop(); // no new timer after the end
  }

  private finish(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.liveness.close();
    this.cutTimer?.cancel();
    const now = this.endedAtMono || this.ctx.clock.now();
    const reason = this.reason ?? 'client_close';
    const lastClientActivity = this.deadlines.lastClientActivity;
    // What the broker would have done with this client connected directly: 1.5 x its keep-alive.
    const brokerDeadline = lastClientActivity + brokerDeadlineMs(this.connect?.keepAlive ?? 0);
    const endedAt = this.ctx.clock.wallNow();
    this.ctx.events.emit('close', {
      ...this.facts(),
      reason,
      detail: this.detail,
      endedAt,
      durationMs: endedAt - this.startedAt,
      silenceMs: Math.max(0, now - lastClientActivity),
      advantageMs: brokerDeadline === Infinity ? null : brokerDeadline - now,
      bytesFromClient: this.bytesFromClient,
      bytesToClient: this.bytesToClient,
      liveness: isLivenessReason(reason),
    });
    this.ctx.onClosed(this);
  }
}

/**
 * Write a last MQTT 5 DISCONNECT to the client, best effort (a dead peer will
 * not read it; the stream is freed either way). A plain socket sends it at once
 * and is destroyed here; a TLS socket still holds it (encryption is
 * asynchronous), so it is destroyed once written: then this returns true and
 * the caller cuts it after a moment at the latest.
 */
function destroyAfterDisconnect(client: Duplex, reasonCode: number): boolean {
  if (client.destroyed) return false;
  const idle = client.writableLength === 0;
  let flushing = false;
  client.write(disconnectV5(reasonCode), () => {
    if (flushing) client.destroy();
  });
  flushing = idle && client.writableLength > 0;
  if (!flushing) client.destroy();
  return flushing;
}
