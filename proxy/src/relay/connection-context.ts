/**
 * What a Connection gets from the server that owns it: configuration, clock,
 * counters and events, and the few operations that touch the outside world
 * (the upstream connection, the broker check, socket options, TCP_INFO), so a
 * test can give it in-memory streams and fakes instead.
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config/types.ts';
import type { Clock } from '../liveness/clock.ts';
import type { CompiledRule } from '../liveness/policy.ts';
import type { LivenessContext } from '../liveness/from-config.ts';
import type { TcpInfoSample } from '../liveness/tcp-options.ts';
import type { Thresholds } from '../liveness/verdict-budget.ts';
import type { Connection } from './connection.ts';
import type { ProxyEvents } from './events.ts';
import type { TrafficStats } from './stats.ts';
import type { ClientTransport } from './transport.ts';

export interface ConnectionContext {
  config: Config;
  rules: CompiledRule[];
  clock: Clock;
  log: Logger;
  stats: TrafficStats;
  events: ProxyEvents;
  /** Open the connection to the broker for this client; it emits 'connect' once connected. */
  connectUpstream(conn: Connection): Duplex;
  /** Is the broker still accepting connections? Asked when an MQTT 5 session's upstream closes without a DISCONNECT. */
  brokerAccepting(): Promise<boolean>;
  /** The liveness model's settings and the parts connections share (rebuilt on reconfigure). */
  liveness: LivenessContext;
  /** Applies this connection's TCP keep-alive timing and the kernel's backstop to its TCP socket. */
  applyTcpLiveness(socket: net.Socket, kernel: Thresholds['kernel']): void;
  /** Sets TCP_KEEPIDLE of the client's TCP socket now (a keep-alive watch asks for a probe); false: not possible here. */
  setProbeIdle(transport: ClientTransport, seconds: number): boolean;
  /** Fills `into` from TCP_INFO of the client's TCP socket; false: not available (no TCP socket, no koffi). */
  readTcpInfo(transport: ClientTransport, into: TcpInfoSample): boolean;
  /** Called once both streams are closed. */
  onClosed(conn: Connection): void;
}
