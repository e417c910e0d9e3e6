/**
 * One Connection over in-memory streams with a ManualClock: the test plays the
 * client and the broker, and reads what each receives. No sockets, no timers
 * of its own: time moves only with clock.advance().
 */
import type { Duplex } from 'node:stream';
import { pino } from 'pino';
import { defaultConfig } from '../../src/config/load.ts';
import type { Config } from '../../src/config/types.ts';
import { ManualClock } from '../../src/liveness/clock.ts';
import { compileRules } from '../../src/liveness/policy.ts';
import type { TcpInfoSample } from '../../src/liveness/tcp-options.ts';
import { livenessContextOf } from '../../src/liveness/from-config.ts';
import { FleetPrior } from '../../src/liveness/link-estimate.ts';
import { Connection, type ConnectionContext } from '../../src/relay/connection.ts';
import { ProxyEvents, type CloseEvent, type ConnectEvent } from '../../src/relay/events.ts';
import { TrafficStats } from '../../src/relay/stats.ts';
import { duplexPair } from './duplex-pair.ts';

export interface HarnessOptions {
  configure?: (config: Config) => void;
  /** Emit 'connect' on the upstream stream at once (default), or leave it to the test. */
  upstreamConnects?: boolean;
  /** The client end reads what it is sent (default); false: it never reads (a frozen client). */
  clientReads?: boolean;
  /** Fake TCP_INFO from the start (default: none, the TCP check is then off for the connection). */
  tcpInfo?: TcpInfoSample;
  /** The proxy-wide fleet prior (default: a new one, as in a proxy just started). */
  fleet?: FleetPrior;
}

export interface Harness {
  clock: ManualClock;
  config: Config;
  conn: Connection;
  stats: TrafficStats;
  /** The test's ends: what the client and the broker write and read. */
  client: Duplex;
  broker: Duplex;
  /** The Connection's own ends. */
  clientStream: Duplex;
  upstream: Duplex;
  /** Everything each side received so far. */
  toClient(): Buffer;
  toBroker(): Buffer;
  clientGotEnd(): boolean;
  brokerGotEnd(): boolean;
  connects: ConnectEvent[];
  events: ProxyEvents;
  closes: CloseEvent[];
  /** For each close event: whether the broker side was already ended or destroyed when it was emitted. */
  brokerSideDoneAtClose: boolean[];
  /** What the fake TCP_INFO says (null: not available); the Connection reads it on its timer. */
  tcpInfo: TcpInfoSample | null;
  /** TCP_INFO reads so far. */
  tcpInfoReads: number;
  /** Every TCP_KEEPIDLE the Connection set (a keep-alive watch asking for probes, then restoring). */
  probeIdleSets: number[];
  /** What the "is the broker still accepting?" check answers. */
  brokerAlive: boolean;
  /** Let the streams deliver what was written. */
  settle(): Promise<void>;
}

export function connectionHarness(options: HarnessOptions = {}): Harness {
  const config = defaultConfig();
  options.configure?.(config);
  const clock = new ManualClock();
  const events = new ProxyEvents();
  const stats = new TrafficStats();
  const [clientStream, client] = duplexPair();
  const [upstream, broker] = duplexPair();
  const received = { client: [] as Buffer[], broker: [] as Buffer[] };
  const ended = { client: false, broker: false };
  if (options.clientReads !== false) client.on('data', (b: Buffer) => received.client.push(b));
  client.on('end', () => { ended.client = true; });
  broker.on('data', (b: Buffer) => received.broker.push(b));
  broker.on('end', () => { ended.broker = true; });
  client.on('error', () => {});
  broker.on('error', () => {});

  const h = {} as Harness;
  const ctx: ConnectionContext = {
    config,
    rules: compileRules(config.keepAlive, config.rules),
    clock,
    log: pino({ level: 'silent' }),
    stats,
    events,
    connectUpstream: () => upstream,
    brokerAccepting: () => Promise.resolve(h.brokerAlive),
    liveness: livenessContextOf(config, true, options.fleet ?? new FleetPrior(), null, null),
    applyTcpLiveness: () => {},
    setProbeIdle: (_transport, seconds) => {
      h.probeIdleSets.push(seconds);
      return h.tcpInfo !== null;
    },
    readTcpInfo: (_transport, into) => {
      h.tcpInfoReads++;
      if (h.tcpInfo === null) return false;
      Object.assign(into, h.tcpInfo);
      return true;
    },
    onClosed: () => {},
  };
  Object.assign(h, {
    clock, config, stats, events, client, broker, clientStream, upstream,
    toClient: () => Buffer.concat(received.client),
    toBroker: () => Buffer.concat(received.broker),
    clientGotEnd: () => ended.client,
    brokerGotEnd: () => ended.broker,
    connects: [] as ConnectEvent[],
    closes: [] as CloseEvent[],
    brokerSideDoneAtClose: [] as boolean[],
    tcpInfo: options.tcpInfo ?? null,
    probeIdleSets: [] as number[],
    tcpInfoReads: 0,
    brokerAlive: true,
    settle: async () => {
      for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
    },
  });
  events.on('connect', (e) => h.connects.push(e));
  events.on('close', (e) => {
    h.closes.push(e);
    h.brokerSideDoneAtClose.push(upstream.writableEnded || upstream.destroyed);
  });
  h.conn = new Connection({ stream: clientStream, tcpSocket: null, remoteAddress: '192.0.2.7', remotePort: 40_000, transport: 'tcp' }, ctx);
  if (options.upstreamConnects !== false) upstream.emit('connect');
  return h;
}
