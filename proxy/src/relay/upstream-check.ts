/**
 * Is the broker still accepting connections? Asked when a broker closes an
 * MQTT 5 connection without a DISCONNECT: if it died, the client is told
 * "server unavailable" (0x88); if it is alive, it closed that one connection
 * on purpose and the close is passed on untouched, exactly as the broker sent it.
 * A probe in flight, or answered within FRESH_MS, answers every connection that
 * asks meanwhile, so a broker death that closes thousands of connections at once
 * costs a few probes; an older answer may predate the death and is not reused.
 */
import net from 'node:net';
import type { HostPort } from '../config/types.ts';

const FRESH_MS = 20;
const TIMEOUT_MS = 500;

const recent = new Map<string, { answeredAt: number; answer: Promise<boolean> }>();

export function upstreamAccepting(upstream: HostPort): Promise<boolean> {
  const key = `${upstream.host}:${upstream.port}`;
  const now = performance.now();
  const cached = recent.get(key);
  if (cached && (cached.answeredAt < 0 || now - cached.answeredAt < FRESH_MS)) return cached.answer;
  const entry = { answeredAt: -1, answer: null as unknown as Promise<boolean> };
  entry.answer = new Promise<boolean>((resolve) => {
    const socket = net.connect({ host: upstream.host, port: upstream.port });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      entry.answeredAt = performance.now();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), TIMEOUT_MS);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
  recent.set(key, entry);
  if (recent.size > 16) recent.delete(recent.keys().next().value!);
  return entry.answer;
}
