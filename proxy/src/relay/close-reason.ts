/**
 * How a connection's end is classified and told: which reason an error or a
 * FIN stands for, and which MQTT 5 DISCONNECT (if any) each side is sent.
 * Pure; the Connection applies the answers.
 */
import type { FrameErrorCode } from '../mqtt/errors.ts';
import { REASON } from '../mqtt/packets.ts';
import { isLivenessReason, type Reason } from '../liveness/reasons.ts';

/** A write this long after the client's last byte was not an answer to it (see clientErrorReason). */
const UNSOLICITED_WRITE_MS = 1_000;

/** No reason code: nothing is sent. */
export const NO_DISCONNECT = -1;

/**
 * An error on the client's socket. ETIMEDOUT means the kernel gave up on the
 * peer: if we were sending it data it had not asked for (not just answering its
 * last packet), TCP_USER_TIMEOUT caught unacknowledged data; otherwise the
 * keep-alive probes went unanswered. (The fd is already closed then, so
 * TCP_INFO cannot be asked.) Anything else is a reset.
 */
export function clientErrorReason(code: string | undefined, lastWriteToClient: number, lastClientActivity: number): Reason {
  if (code === 'ETIMEDOUT') return lastWriteToClient > lastClientActivity + UNSOLICITED_WRITE_MS ? 'tcp_user_timeout' : 'tcp_keepalive';
  return 'client_reset';
}

/** A FIN from the client: a clean end when its DISCONNECT came first. */
export function clientFinReason(sentDisconnect: boolean): Reason {
  return sentDisconnect ? 'client_disconnect' : 'client_close';
}

/** The broker side ended: a clean end when the client's DISCONNECT came first (the broker closes after it). */
export function brokerEndReason(clientSentDisconnect: boolean): Reason {
  return clientSentDisconnect ? 'client_disconnect' : 'broker_close';
}

/** The MQTT 5 DISCONNECT reason a client is sent when the proxy ends its connection for `reason`, or NO_DISCONNECT. */
export function clientDisconnectFor(reason: Reason): number {
  if (isLivenessReason(reason)) return REASON.keepAliveTimeout;
  if (reason === 'shutdown') return REASON.serverShuttingDown;
  // 0x89, not 0x88: 0x88 exists only for CONNACK, and mqtt.js raises "Invalid disconnect reason code" for it.
  if (reason === 'broker_unresponsive' || reason === 'broker_down') return REASON.serverBusy;
  return NO_DISCONNECT;
}

/** The MQTT 5 DISCONNECT reason for a client whose bytes could not be framed. */
export function frameErrorDisconnect(code: FrameErrorCode): number {
  if (code === 'MLP_FRAME_TOO_LARGE') return REASON.packetTooLarge;
  if (code === 'MLP_MALFORMED_LENGTH') return REASON.malformedPacket;
  return REASON.protocolError;
}

/**
 * On a liveness verdict the broker must publish the Will at once: an MQTT 5
 * session gets DISCONNECT 0x04 (when a packet can be put between frames),
 * everything else an abrupt close without DISCONNECT.
 */
export function tellBrokerWill(reason: Reason, protocolVersion: number, connectForwarded: boolean, atFrameBoundary: boolean): boolean {
  return isLivenessReason(reason) && protocolVersion === 5 && connectForwarded && atFrameBoundary;
}
