/**
 * Keep-alive policy: from a CONNECT and the configuration to what the proxy
 * enforces, what the client is told and what the broker is sent. Pure.
 */
import type { Config, KeepAlivePolicy, Rule } from '../config/types.ts';
import { REASON, RETURN_CODE } from '../mqtt/packets.ts';

export interface ClientHello {
  protocolVersion: number;
  clientId: string;
  username: string | undefined;
  keepAlive: number;
}

export type KeepAliveDecision =
  | { action: 'reject'; why: 'keepalive_too_large' | 'keepalive_zero'; v3ReturnCode: number; v5Reason: number }
  | {
      action: 'accept';
      /** Keep-alive the proxy enforces on the client side, seconds (0: none). */
      effectiveKeepAlive: number;
      /** MQTT 5 Server Keep Alive to put in the CONNACK, if the proxy sets one. */
      serverKeepAlive: number | undefined;
      /** Keep-alive to write into the CONNECT sent upstream, if it differs (translate). */
      upstreamKeepAlive: number | undefined;
      /** Silence allowed before a keepalive_timeout verdict, ms; Infinity when keep-alive is 0. */
      allowedSilenceMs: number;
      /** Whether the proxy lowered or assigned the keep-alive. */
      clamped: boolean;
    };

/** Glob with * (any run) and ? (one character); everything else literal. */
export function globToRegExp(glob: string): RegExp {
  const escaped = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${escaped}$`, 's');
}

export interface CompiledRule {
  clientId: RegExp | null;
  username: RegExp | null;
  policy: KeepAlivePolicy;
}

export function compileRules(base: KeepAlivePolicy, rules: Rule[]): CompiledRule[] {
  return rules.map((rule) => ({
    clientId: rule.match.clientId === undefined ? null : globToRegExp(rule.match.clientId),
    username: rule.match.username === undefined ? null : globToRegExp(rule.match.username),
    policy: { ...base, ...rule.keepAlive },
  }));
}

/** First matching rule's policy, else the global one. */
export function policyFor(config: Pick<Config, 'keepAlive'>, rules: CompiledRule[], hello: ClientHello): KeepAlivePolicy {
  for (const rule of rules) {
    if (rule.clientId && !rule.clientId.test(hello.clientId)) continue;
    if (rule.username && !rule.username.test(hello.username ?? '')) continue;
    return rule.policy;
  }
  return config.keepAlive;
}

/** Milliseconds of silence allowed for a keep-alive given in seconds: keep-alive + grace, or keep-alive x multiplier. */
export function allowedSilenceMs(keepAlive: number, policy: Pick<KeepAlivePolicy, 'grace' | 'multiplier'>): number {
  if (keepAlive <= 0) return Infinity;
  if (policy.multiplier !== null) return keepAlive * policy.multiplier * 1000;
  const grace = policy.grace ?? Math.min(2, 0.5 * keepAlive);
  // Never later than the broker's own 1.5 x keep-alive.
  return Math.min(keepAlive + grace, keepAlive * 1.5) * 1000;
}

/** The broker's own deadline after the last packet: 1.5 x the keep-alive it was sent. */
export function brokerDeadlineMs(upstreamKeepAlive: number): number {
  return upstreamKeepAlive > 0 ? upstreamKeepAlive * 1500 : Infinity;
}

function accept(policy: KeepAlivePolicy, effective: number, extra: { serverKeepAlive?: number; upstreamKeepAlive?: number; clamped?: boolean }): KeepAliveDecision {
  return {
    action: 'accept',
    effectiveKeepAlive: effective,
    serverKeepAlive: extra.serverKeepAlive,
    upstreamKeepAlive: extra.upstreamKeepAlive,
    allowedSilenceMs: allowedSilenceMs(effective, policy),
    clamped: extra.clamped ?? false,
  };
}

export function decideKeepAlive(policy: KeepAlivePolicy, hello: ClientHello): KeepAliveDecision {
  const v5 = hello.protocolVersion === 5;
  const ka = hello.keepAlive;
  if (ka === 0) {
    if (policy.zero === 'reject') {
      return { action: 'reject', why: 'keepalive_zero', v3ReturnCode: RETURN_CODE.identifierRejected, v5Reason: REASON.implementationSpecificError };
    }
    if (policy.zero === 'assign' && v5) {
      return accept(policy, policy.assign, { serverKeepAlive: policy.assign, clamped: true });
    }
    return accept(policy, 0, {});
  }
  if (policy.max > 0 && ka > policy.max) {
    if (v5) return accept(policy, policy.max, { serverKeepAlive: policy.max, clamped: true });
    if (policy.aboveMax === 'reject') {
      return { action: 'reject', why: 'keepalive_too_large', v3ReturnCode: RETURN_CODE.identifierRejected, v5Reason: REASON.implementationSpecificError };
    }
    if (policy.aboveMax === 'translate') {
      return accept(policy, ka, { upstreamKeepAlive: Math.min(policy.upstreamKeepAlive, ka) });
    }
  }
  if (policy.aboveMax === 'translate' && !v5 && policy.max === 0 && ka > policy.upstreamKeepAlive) {
    // translate with no max: every client above upstreamKeepAlive is translated.
    return accept(policy, ka, { upstreamKeepAlive: policy.upstreamKeepAlive });
  }
  return accept(policy, ka, {});
}

/**
 * The broker's own Server Keep Alive wins when it is smaller than the one the
 * proxy would set (MQTT 5).
 */
export function serverKeepAliveToSend(proxyValue: number | undefined, brokerValue: number | undefined): number | undefined {
  if (proxyValue === undefined) return undefined;
  if (brokerValue !== undefined && brokerValue <= proxyValue) return undefined; // keep the broker's bytes
  return proxyValue;
}
