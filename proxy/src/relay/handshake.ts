/**
 * The CONNECT/CONNACK handshake as the proxy sees it: what to do with the
 * client's first packet (forward as is, forward with another keep-alive, or
 * answer it with a refusing CONNACK), and what to do with the broker's CONNACK
 * (MQTT 5: Server Keep Alive set or adopted). Pure: frames and config in,
 * decisions and frames out; the Connection does the I/O.
 */
import type { Config, KeepAlivePolicy } from '../config/types.ts';
import {
  REASON, RETURN_CODE, connackRefusal, decodeConnack, decodeConnect, withKeepAlive, withServerKeepAlive,
  type ConnectInfo,
} from '../mqtt/packets.ts';
import { allowedSilenceMs, decideKeepAlive, policyFor, serverKeepAliveToSend, type CompiledRule } from '../liveness/policy.ts';

/** Stands for a CONNECT the proxy could not read: the broker judges it (it is forwarded unchanged). */
const UNREADABLE_CONNECT: Readonly<ConnectInfo> = Object.freeze({
  protocolVersion: 0, clientId: '', username: undefined, keepAlive: 0, keepAliveOffset: -1,
});

export type ConnectOutcome =
  | { action: 'forward'; info: ConnectInfo; frame: Buffer; unreadable: true }
  | {
      action: 'forward';
      info: ConnectInfo;
      /** The CONNECT to send upstream (a copy when the keep-alive was translated). */
      frame: Buffer;
      unreadable: false;
      policy: KeepAlivePolicy;
      effectiveKeepAlive: number;
      upstreamKeepAlive: number;
      /** MQTT 5 Server Keep Alive the proxy wants in the CONNACK, if any. */
      serverKeepAlive: number | undefined;
      allowedSilenceMs: number;
      clamped: boolean;
      /** Keep the broker's session alive with injected PINGREQs: idle before a probe, and the answer's deadline (ms; Infinity: off). */
      probeIdleMs: number;
      probeTimeoutMs: number;
    }
  | { action: 'refuse'; info: ConnectInfo; connack: Buffer; why: 'keepalive_too_large' | 'keepalive_zero' };

/** Decide what becomes of the client's CONNECT under the configuration's keep-alive policy. */
export function handleConnect(frame: Buffer, config: Config, rules: CompiledRule[]): ConnectOutcome {
  let info: ConnectInfo;
  try {
    info = decodeConnect(frame);
  } catch {
    return { action: 'forward', info: UNREADABLE_CONNECT, frame, unreadable: true };
  }
  const policy = policyFor(config, rules, info);
  const decision = decideKeepAlive(policy, info);
  if (decision.action === 'reject') {
    return { action: 'refuse', info, connack: connackRefusal(info.protocolVersion, decision.v3ReturnCode, decision.v5Reason), why: decision.why };
  }
  const probes = config.probes;
  let probeIdleMs = Infinity;
  let probeTimeoutMs = Infinity;
  if (decision.upstreamKeepAlive !== undefined) {
    // Translation: keep the broker's session alive with our own PINGREQs at half its keep-alive
    // (or more often, if per-connection probes ask for it).
    probeIdleMs = Math.min(decision.upstreamKeepAlive * 500, probes.upstreamProbeIdle > 0 ? probes.upstreamProbeIdle * 1000 : Infinity);
    probeTimeoutMs = probes.upstreamProbeTimeout * 1000;
  } else if (probes.upstreamProbeIdle > 0) {
    probeIdleMs = probes.upstreamProbeIdle * 1000;
    probeTimeoutMs = probes.upstreamProbeTimeout * 1000;
  }
  return {
    action: 'forward',
    info,
    frame: decision.upstreamKeepAlive === undefined ? frame : withKeepAlive(frame, info.keepAliveOffset, decision.upstreamKeepAlive),
    unreadable: false,
    policy,
    effectiveKeepAlive: decision.effectiveKeepAlive,
    upstreamKeepAlive: decision.upstreamKeepAlive ?? info.keepAlive,
    serverKeepAlive: decision.serverKeepAlive,
    allowedSilenceMs: decision.allowedSilenceMs,
    clamped: decision.clamped,
    probeIdleMs,
    probeTimeoutMs,
  };
}

/** The CONNACK that answers a CONNECT when the broker cannot be reached. */
export function brokerUnreachableConnack(protocolVersion: number): Buffer {
  return connackRefusal(protocolVersion, RETURN_CODE.serverUnavailable, REASON.serverUnavailable);
}

export interface ConnackOutcome {
  /** The CONNACK to relay: the broker's own bytes, or a copy with the Server Keep Alive set. */
  frame: Buffer;
  /** The keep-alive the client was told to use, when it differs from what the proxy enforced so far (seconds). */
  adoptedKeepAlive: number | undefined;
  /** Silence allowed for adoptedKeepAlive, ms. */
  allowedSilenceMs: number;
}

/**
 * The broker's first CONNACK. Before MQTT 5 it passes untouched. In MQTT 5 the
 * proxy's Server Keep Alive goes in unless the broker's own is already as small,
 * and the proxy then enforces whatever Server Keep Alive the client was told.
 * A CONNACK the proxy cannot read passes untouched.
 */
export function handleConnack(
  frame: Buffer,
  protocolVersion: number,
  accepted: { policy: KeepAlivePolicy; serverKeepAlive: number | undefined; effectiveKeepAlive: number } | null,
): ConnackOutcome {
  const unchanged: ConnackOutcome = { frame, adoptedKeepAlive: undefined, allowedSilenceMs: Infinity };
  if (protocolVersion !== 5) return unchanged;
  let brokerValue: number | undefined;
  try {
    brokerValue = decodeConnack(frame, 5).serverKeepAlive;
  } catch {
    return unchanged;
  }
  const send = serverKeepAliveToSend(accepted?.serverKeepAlive, brokerValue);
  const told = send ?? brokerValue;
  const out: ConnackOutcome = { frame, adoptedKeepAlive: undefined, allowedSilenceMs: Infinity };
  if (told !== undefined && accepted && told !== accepted.effectiveKeepAlive) {
    // The client now keeps alive at the Server Keep Alive; enforce that.
    out.adoptedKeepAlive = told;
    out.allowedSilenceMs = allowedSilenceMs(told, accepted.policy);
  }
  if (send !== undefined) out.frame = withServerKeepAlive(frame, send, brokerValue !== undefined);
  return out;
}
