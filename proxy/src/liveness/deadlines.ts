/**
 * Every deadline of one connection, evaluated together so a connection needs
 * one timer only. Pure: times are the Clock's milliseconds.
 */
import type { Reason } from './reasons.ts';

export interface DeadlineState {
  /** When the CONNECT must have arrived by (Infinity once it has). */
  connectDeadline: number;
  /** Last byte received from the client. */
  lastClientActivity: number;
  /** Silence allowed by the keep-alive policy (Infinity: none); beyond it the connection is suspect. */
  allowedSilenceMs: number;
  /** Silence before the keep-alive verdict when longer than allowedSilenceMs (the adaptive grace; 0: none). */
  keepAliveDeadMs: number;
  /** When writes to the client started waiting for drain (-1: not waiting). */
  stallSince: number;
  sendTimeoutMs: number;
  /** When an injected PINGREQ went upstream without its PINGRESP yet (-1: none). */
  probeSentAt: number;
  probeTimeoutMs: number;
  /** Last byte sent upstream, and how long that may be idle before a probe (Infinity: off). */
  lastUpstreamActivity: number;
  upstreamProbeIdleMs: number;
}

export interface Evaluation {
  verdict: Reason | null;
  /** Inject a PINGREQ upstream now. */
  probe: boolean;
  /** When to look again (Infinity: nothing pending). */
  wakeAt: number;
}

export function newDeadlineState(now: number, connectTimeoutMs: number, sendTimeoutMs: number): DeadlineState {
  return {
    connectDeadline: now + connectTimeoutMs,
    lastClientActivity: now,
    allowedSilenceMs: Infinity,
    keepAliveDeadMs: 0,
    stallSince: -1,
    sendTimeoutMs,
    probeSentAt: -1,
    probeTimeoutMs: Infinity,
    lastUpstreamActivity: now,
    upstreamProbeIdleMs: Infinity,
  };
}

export function evaluate(s: DeadlineState, now: number): Evaluation {
  if (now >= s.connectDeadline) return { verdict: 'connect_timeout', probe: false, wakeAt: Infinity };
  const keepAliveAt = s.lastClientActivity + (s.keepAliveDeadMs > s.allowedSilenceMs ? s.keepAliveDeadMs : s.allowedSilenceMs);
  if (now >= keepAliveAt) return { verdict: 'keepalive_timeout', probe: false, wakeAt: Infinity };
  const stallAt = s.stallSince < 0 ? Infinity : s.stallSince + s.sendTimeoutMs;
  if (now >= stallAt) return { verdict: 'send_stall', probe: false, wakeAt: Infinity };
  const probeDueAt = s.probeSentAt < 0 ? Infinity : s.probeSentAt + s.probeTimeoutMs;
  if (now >= probeDueAt) return { verdict: 'broker_unresponsive', probe: false, wakeAt: Infinity };

  let probe = false;
  let nextProbeAt = Infinity;
  if (s.probeSentAt < 0 && s.upstreamProbeIdleMs !== Infinity) {
    nextProbeAt = s.lastUpstreamActivity + s.upstreamProbeIdleMs;
    if (now >= nextProbeAt) {
      probe = true;
      nextProbeAt = now + s.probeTimeoutMs;
    }
  }
  return { verdict: null, probe, wakeAt: Math.min(s.connectDeadline, keepAliveAt, stallAt, probeDueAt, nextProbeAt) };
}
