/**
 * Is the broker still accepting connections? Asked when a broker closes an
 * MQTT 5 connection without a DISCONNECT: if it died, the client is told
 * "server busy" (DISCONNECT 0x89); if it is alive, it closed that one connection
 * on purpose and the close is passed on untouched, exactly as the broker sent it.
 * A probe in flight, or answered within FRESH_MS, answers every connection that
 * asks meanwhile, so a broker death that closes thousands of connections at once
 * costs a few probes; an older answer may predate the death and is not reused.
 *
 * A broker being killed (SIGKILL, a crash) can close its client connections
 * before its listener: a probe sent on the first close then still completes its
 * handshake, and is reset a moment later when the listener goes. So a probe
 * that connects is held SETTLE_MS before it counts as "alive", and a reset
 * meanwhile means "dead". (Measured with Mosquitto 2.0.11: the connect alone
 * said "alive" after 19 of 30 SIGKILLs.)
 */
import type { HostPort } from '../config/types.ts';
import { probeTcp } from '../net/tcp-probe.ts';

const FRESH_MS = 20;
const TIMEOUT_MS = 500;
const SETTLE_MS = 100;

const recent = new Map<string, { answeredAt: number; answer: Promise<boolean> }>();

export function upstreamAccepting(upstream: HostPort): Promise<boolean> {
  const key = `${upstream.host}:${upstream.port}`;
  const now = performance.now();
  const cached = recent.get(key);
  if (cached && (cached.answeredAt < 0 || now - cached.answeredAt < FRESH_MS)) return cached.answer;
  const entry: { answeredAt: number; answer: Promise<boolean> } = {
    answeredAt: -1,
    answer: probeTcp(upstream, { timeoutMs: TIMEOUT_MS, settleMs: SETTLE_MS }).then(({ ok }) => {
      entry.answeredAt = performance.now();
      return ok;
    }),
  };
  recent.set(key, entry);
  if (recent.size > 16) recent.delete(recent.keys().next().value!);
  return entry.answer;
}
