/**
 * How a Connection ends: the half-close rules (a FIN is passed on after the
 * bytes before it; a half-closed connection lingers, then is cut), stream
 * errors, the close bookkeeping (which reason, which DISCONNECT to whom, the
 * last DISCONNECT flushed before the stream is freed) and the one close event.
 *
 * close-reason.ts decides the words (pure); this class applies them to the two
 * streams. It is a part of Connection (connection.ts), created once in its
 * constructor, and never on the data path: the relay only sets `disconnects`
 * bits and `detail` when a DISCONNECT or a bad first packet passes.
 */
import type { Duplex } from 'node:stream';
import type { Framer } from '../mqtt/framer.ts';
import type { FrameError } from '../mqtt/errors.ts';
import { REASON, disconnectV5 } from '../mqtt/packets.ts';
import type { Timer } from '../liveness/clock.ts';
import { brokerDeadlineMs } from '../liveness/policy.ts';
import { isLivenessReason, type Reason } from '../liveness/reasons.ts';
import type { ConnectionContext } from './connection-context.ts';
import type { Connection } from './connection.ts';
import type { LivenessTimer } from './liveness-timer.ts';
import { brokerUnreachableConnack } from './handshake.ts';
import { NO_DISCONNECT, brokerEndReason, clientDisconnectFor, clientErrorReason, clientFinReason, frameErrorDisconnect, tellBrokerWill } from './close-reason.ts';

export type UpstreamState = 'connecting' | 'connected' | 'failed';

/** Bits of `fins` and `disconnects`: which side sent its FIN, which its DISCONNECT. */
export const CLIENT = 1;
export const BROKER = 2;

/** Milliseconds a half-closed connection may linger before both streams are cut. */
const LINGER_MS = 10_000;
/** Milliseconds a refused client has to read its CONNACK. */
const REFUSAL_MS = 2_000;
/** Milliseconds a last DISCONNECT may take to flush before the stream is cut. */
const FLUSH_MS = 1_000;

/** The two streams and the parts of a Connection the ending acts on. */
export interface EndParts {
  ctx: ConnectionContext;
  client: Duplex;
  upstream: Duplex;
  /** Client -> broker framer: atBoundary says whether a packet may be written upstream now. */
  toBroker: Framer;
  /** Broker -> client framer: atBoundary says whether a packet may be written to the client now. */
  toClient: Framer;
  liveness: LivenessTimer;
}

export class ConnectionEnd {
  upstreamState: UpstreamState = 'connecting';
  /** CLIENT | BROKER bits: who sent a DISCONNECT (set by the relay). */
  disconnects = 0;
  /** Why it ends; null while it runs. */
  reason: Reason | null = null;
  /** Words for the close event (the relay sets it on a rejected first packet or a broker DISCONNECT). */
  detail: string | null = null;
  /** A v5 DISCONNECT reason the client is sent when the connection ends, or NO_DISCONNECT. */
  clientDisconnectReason = NO_DISCONNECT;
  /** CLIENT | BROKER bits: who half-closed. */
  private fins = 0;
  private lingering = false;
  /** Waiting to learn whether the broker died before ending the client side. */
  private checkingBroker = false;
  /** One slot for the timer that frees both streams after a grace period; cancelled in finish(). */
  private cutTimer: Timer | null = null;
  private endedAtMono = 0;
  private closedStreams = 0;
  /** Its Connection: the session state the relay keeps (connect, deadlines, phase, byte counts). */
  private readonly host: Connection;
  private readonly ctx: ConnectionContext;
  private readonly client: Duplex;
  private readonly upstream: Duplex;
  private readonly toBroker: Framer;
  private readonly toClient: Framer;
  private readonly liveness: LivenessTimer;

  constructor(host: Connection, parts: EndParts) {
    this.host = host;
    this.ctx = parts.ctx;
    this.client = parts.client;
    this.upstream = parts.upstream;
    this.toBroker = parts.toBroker;
    this.toClient = parts.toClient;
    this.liveness = parts.liveness;
  }

  // ---- half-close ------------------------------------------------------------

  onClientEnd(): void {
    // FIN from the client: pass it on after everything before it.
    this.fins |= CLIENT;
    if (this.reason === null && !(this.fins & BROKER)) this.setReason(clientFinReason((this.disconnects & CLIENT) !== 0), null);
    if (!this.host.connectForwarded) {
      this.upstream.destroy();
      this.client.end();
      return;
    }
    this.upstream.end();
    this.lingerThenCut();
  }

  onBrokerEnd(): void {
    // FIN from the broker: pending bytes reach the client first, then the FIN.
    this.fins |= BROKER;
    this.lingerThenCut();
    if (this.reason === null && !(this.fins & CLIENT)) {
      this.setReason(brokerEndReason((this.disconnects & CLIENT) !== 0), this.detail);
      if (this.host.connack5 && !(this.disconnects & (BROKER | CLIENT))) {
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

  // ---- the upstream, stream errors and closes ------------------------------------

  onUpstreamConnect(): void {
    this.upstreamState = 'connected';
  }

  /** What a client is told when the broker cannot be reached (config brokerUnreachable): a refusing CONNACK, or nothing. */
  unreachableAnswer(protocolVersion: number): Buffer | null {
    return this.ctx.config.brokerUnreachable === 'connack' ? brokerUnreachableConnack(protocolVersion) : null;
  }

  onClientError(err: NodeJS.ErrnoException): void {
    if (this.reason !== null) return;
    const reason = clientErrorReason(err.code, this.host.lastWriteToClient, this.host.deadlines.lastClientActivity);
    this.end(reason, err.code === 'ETIMEDOUT' ? err.message : err.code ?? err.message);
  }

  onUpstreamError(err: NodeJS.ErrnoException): void {
    if (this.reason !== null) return;
    const detail = err.code ?? err.message;
    if (this.upstreamState !== 'connected') {
      this.upstreamState = 'failed';
      // brokerUnreachable close: at once, without a CONNACK. connack: without the CONNECT
      // yet, wait for it to learn the protocol version, then refuse.
      const connect = this.host.connect;
      if (this.ctx.config.brokerUnreachable === 'close') this.refuse(null, 'broker_unreachable', detail);
      else if (connect) this.refuse(brokerUnreachableConnack(connect.protocolVersion), 'broker_unreachable', detail);
      return;
    }
    if (!this.host.connack5 || this.disconnects & CLIENT) {
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

  onStreamClose(): void {
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

  onFrameError(error: FrameError, direction: 'to_broker' | 'to_client'): void {
    this.ctx.events.emit('frameError', { kind: error.kind, code: error.code, direction });
    if (this.reason !== null) return;
    if (direction === 'to_broker' && this.host.connack5) this.clientDisconnectReason = frameErrorDisconnect(error.code);
    const detail = error.code === 'MLP_REJECTED' && this.detail ? `${error.code}: ${this.detail}` : `${error.code}: ${error.message}`;
    this.end('protocol_error', detail);
  }

  // ---- ending ----------------------------------------------------------------

  private setReason(reason: Reason, detail: string | null): void {
    this.reason = reason;
    this.detail = detail;
    this.endedAtMono = this.ctx.clock.now();
  }

  /** Answer the CONNECT ourselves (or, connack null, close without an answer). */
  refuse(connack: Buffer | null, reason: Reason, detail: string): void {
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
    const version = this.host.connect?.protocolVersion ?? 0;
    if (tellBrokerWill(reason, version, this.host.connectForwarded, this.toBroker.atBoundary) && !this.upstream.destroyed) {
      this.upstream.end(disconnectV5(REASON.disconnectWithWill));
      // Do not wait on the broker: it has what it needs.
      this.cutLater(FLUSH_MS);
    } else {
      this.upstream.destroy();
    }
    if (version === 5 && this.host.hasConnack && this.clientDisconnectReason === NO_DISCONNECT) this.clientDisconnectReason = clientDisconnectFor(reason);
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
    if (!this.host.markClosed()) return;
    this.liveness.close();
    this.cutTimer?.cancel();
    const host = this.host;
    const finishedAt = this.ctx.clock.now();
    const now = this.endedAtMono || finishedAt;
    const reason = this.reason ?? 'client_close';
    const lastClientActivity = host.deadlines.lastClientActivity;
    // What the broker would have done with this client connected directly: 1.5 x its keep-alive.
    const brokerDeadline = lastClientActivity + brokerDeadlineMs(host.connect?.keepAlive ?? 0);
    const endedAt = this.ctx.clock.wallNow();
    this.ctx.events.emit('close', {
      ...host.facts(),
      reason,
      detail: this.detail,
      endedAt,
      durationMs: finishedAt - host.startedMono,
      silenceMs: Math.max(0, now - lastClientActivity),
      advantageMs: brokerDeadline === Infinity ? null : brokerDeadline - now,
      bytesFromClient: host.bytesFromClient,
      bytesToClient: host.bytesToClient,
      liveness: isLivenessReason(reason),
    });
    this.ctx.onClosed(host);
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
