/**
 * Every configuration key, its type, default and meaning, in one place (zod).
 * The Config type is derived from it (types.ts); the README table, the
 * environment variable names and the chart's values.schema.json are generated
 * from it (describe.ts, scripts/sync-chart.ts). Durations are in seconds
 * (fractions allowed), sizes in bytes.
 */
import { z } from 'zod';
import { TrustedSources } from '../listeners/trusted-sources.ts';

export interface HostPort {
  host: string;
  port: number;
}

/** Port 0..65535 (0: any free port), written so the chart's JSON Schema refuses 99999 too. */
const PORT = '(?:6553[0-5]|655[0-2]\\d|65[0-4]\\d{2}|6[0-4]\\d{3}|[1-5]\\d{4}|\\d{1,4})';
const HOST_PORT = new RegExp(`^(\\[[0-9a-fA-F:.]+\\]|[^\\s:\\[\\]]+):${PORT}$`);

export function parseHostPort(value: string): HostPort {
  const at = value.lastIndexOf(':');
  let host = value.slice(0, at);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return { host, port: Number(value.slice(at + 1)) };
}

export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

const doc = (description: string) => ({ description });

/** A "host:port" string in the file, a {host, port} in the Config. */
const address = () => z.string().regex(HOST_PORT, { error: (issue) => `expected HOST:PORT with a port from 0 to 65535, got ${JSON.stringify(issue.input)}` }).transform(parseHostPort);
/** prefault: the default goes through the transform too. */
const hostPort = (fallback: string, description: string) => address().prefault(fallback).meta(doc(description));

/** A number of seconds (fractions allowed). */
const seconds = (min: number, fallback: number, description: string) => z.number().min(min).default(fallback).meta(doc(description));
/** Events per second (fractions allowed). */
const rate = (fallback: number, description: string) => z.number().min(0).default(fallback).meta(doc(description));
/** A whole number (counts, sizes, seconds the kernel takes as integers). */
const whole = (min: number, max: number | null, fallback: number, description: string) => {
  const n = z.number().int().min(min);
  return (max === null ? n : n.max(max)).default(fallback).meta(doc(description));
};
const text = (fallback: string, description: string) => z.string().default(fallback).meta(doc(description));
const optionalText = (description: string) => z.string().nullable().default(null).meta(doc(description));
const flag = (fallback: boolean, description: string) => z.boolean().default(fallback).meta(doc(description));
const choice = <const T extends readonly [string, ...string[]]>(values: T, fallback: T[number], description: string) =>
  z.enum(values).default(fallback as never).meta(doc(description));

/** Keep-alive policy keys without defaults: the shape of a rule's keepAlive. */
const keepAliveKeys = {
  grace: z.number().min(0).nullable().meta(doc('Silence allowed beyond the keep-alive, in seconds. Default: min(2, 0.5 x keep-alive).')),
  multiplier: z.number().min(1).max(1.5).nullable().meta(doc('If set, the deadline is keep-alive x multiplier instead of keep-alive + grace.')),
  max: z.number().int().min(0).max(65535).meta(doc('Largest keep-alive allowed, in seconds (0: no maximum). MQTT 5 clients get it as Server Keep Alive.')),
  aboveMax: z.enum(['accept', 'reject', 'translate']).meta(doc('MQTT 3.x clients above `max`: enforce their own value, refuse them (CONNACK 2), or translate (send `upstreamKeepAlive` to the broker and keep that session alive with PINGREQs).')),
  zero: z.enum(['accept', 'reject', 'assign']).meta(doc('Keep-alive 0: accept (TCP probes only), reject, or (MQTT 5) assign `assign` seconds as Server Keep Alive.')),
  assign: z.number().int().min(1).max(65535).meta(doc('Server Keep Alive given to MQTT 5 clients with keep-alive 0 when `zero: assign`.')),
  upstreamKeepAlive: z.number().int().min(1).max(65535).meta(doc('Keep-alive sent to the broker for translated connections.')),
};

const KEEPALIVE_DEFAULTS = { grace: null, multiplier: null, max: 0, aboveMax: 'accept', zero: 'accept', assign: 60, upstreamKeepAlive: 60 } as const;

/** The keep-alive policy with its defaults (the `keepAlive` section). */
export const keepAliveSchema = z.strictObject({
  grace: keepAliveKeys.grace.default(KEEPALIVE_DEFAULTS.grace),
  multiplier: keepAliveKeys.multiplier.default(KEEPALIVE_DEFAULTS.multiplier),
  max: keepAliveKeys.max.default(KEEPALIVE_DEFAULTS.max),
  aboveMax: keepAliveKeys.aboveMax.default(KEEPALIVE_DEFAULTS.aboveMax),
  zero: keepAliveKeys.zero.default(KEEPALIVE_DEFAULTS.zero),
  assign: keepAliveKeys.assign.default(KEEPALIVE_DEFAULTS.assign),
  upstreamKeepAlive: keepAliveKeys.upstreamKeepAlive.default(KEEPALIVE_DEFAULTS.upstreamKeepAlive),
});

/** A rule: keys it sets override the base policy for clients it matches. */
export const ruleSchema = z.strictObject({
  match: z.strictObject({
    clientId: z.string().optional().meta(doc('glob on the client id')),
    username: z.string().optional().meta(doc('glob on the username')),
  }, { error: 'a rule needs match: {clientId, username}' }).meta(doc('Which clients the rule applies to: every glob given must match; one left out matches any client.')),
  keepAlive: z.strictObject(keepAliveKeys).partial().prefault({}).meta(doc('The keep-alive keys this rule overrides for the clients it matches; the others come from the top-level `keepAlive`.')),
});

/** An explicit setting that overrides a value the liveness model derives (null: derived). */
const override = (type: z.ZodNumber, description: string) => type.nullable().default(null).meta(doc(description));

const section = <T extends z.ZodRawShape>(shape: T, description: string) => z.strictObject(shape).prefault({} as never).meta(doc(description));

export const configSchema = z.strictObject({
  listen: hostPort('0.0.0.0:1883', 'MQTT listener for clients.'),
  upstream: hostPort('127.0.0.1:1884', 'The broker the proxy forwards to.'),
  admin: hostPort('0.0.0.0:9464', 'HTTP listener for /metrics, /livez, /readyz and /connections.'),
  adminToken: optionalText('Bearer token required by GET /connections (client ids are sensitive). Unset: no token.'),
  broker: choice(['auto', 'mosquitto', 'embedded', 'none'], 'auto', 'Bundled broker: auto (Mosquitto if on PATH, else embedded Aedes), mosquitto, embedded, or none (external upstream).'),
  mosquittoConfig: text('broker/mosquitto.conf', 'Mosquitto config file for the bundled broker (relative paths from the package root).'),
  mosquittoBinary: text('mosquitto', 'Mosquitto executable, looked up on PATH.'),
  logLevel: choice(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], 'info', 'Log level of the JSON log on stdout.'),
  connectTimeout: seconds(0.1, 10, 'Seconds a new connection has to send its CONNECT.'),
  maxPacketSize: whole(64, 268_435_460, 16 * 1024 * 1024, 'Largest frame a client may send, in bytes (16 MiB; MQTT allows 256 MiB). Larger frames close the connection before they are buffered.'),
  maxConnectSize: whole(64, 268_435_460, 64 * 1024, 'Largest CONNECT a client may send, in bytes (64 KiB). The CONNECT is held until it is read whole, so this bounds what a client that never finishes costs; a larger one closes the connection (protocol_error).'),
  brokerUnreachable: choice(['close', 'connack'], 'close', 'When the broker cannot be reached: close the client connection without a CONNACK (clients retry), or answer CONNACK 3 / 0x88 (mqtt.js and mosquitto_sub then stop retrying; docs/listeners.md).'),
  shutdownGrace: seconds(0, 10, 'Seconds given to connections to close on SIGTERM before they are cut.'),
  shutdownDelay: seconds(0, 0, 'Seconds /readyz answers 503 on SIGTERM before the listeners close, while new connections are still taken: time for a load balancer or Kubernetes endpoints to stop sending clients here. 0: close at once.'),
  keepAlive: keepAliveSchema.prefault({}).meta(doc('Keep-alive policy for every client (rules can override it).')),
  rules: z.array(ruleSchema).default([]).meta(doc('List of `{match: {clientId, username}, keepAlive: {...}}`; globs with * and ?; the first rule that matches wins.')),
  tcp: section({
    keepAlive: flag(true, 'Enable TCP keep-alive probes on client sockets.'),
    idle: override(z.number().int().min(1).max(32767), 'Seconds of silence before the first TCP keep-alive probe (TCP_KEEPIDLE). Unset: from `liveness.profile`, jittered per connection.'),
    interval: override(z.number().int().min(1).max(32767), 'Seconds between probes (TCP_KEEPINTVL). Unset: from `liveness.profile`.'),
    count: override(z.number().int().min(1).max(127), 'Fewest unanswered probes before the peer is dead; the adaptive model may wait for more on a lossy link. Unset: from `liveness.profile` (3).'),
    userTimeout: override(z.number().min(0), 'Fewest seconds sent data stays unacknowledged before the peer is dead (tcp_user_timeout); the adaptive model may wait longer on a lossy link. 0: no floor (the model alone). Unset: from `liveness.profile` (8 s balanced). The kernel\'s own TCP_USER_TIMEOUT is a backstop beyond every verdict.'),
    sendTimeout: seconds(0.1, 10, 'Seconds bytes queued to a client may wait to drain before the connection ends (send_stall).'),
  }, 'TCP-level liveness of client sockets.'),
  liveness: section({
    profile: choice(['fast', 'balanced', 'battery'], 'balanced', 'Probe cost against detection time: fast (idle 4-5 s, 720-900 keep-alive probes per idle client-hour), balanced (idle 5-6 s, 600-720: no more than fixed 5 s), battery (idle 25-30 s, interval 2 s, 120-144; TCP verdicts ~15 s slower). See docs/liveness.md.'),
    falseDeathBudget: z.number().gt(0).max(1).default(1e-4).meta(doc('Expected false deaths (healthy clients cut) per client-hour the adaptive verdicts may cost. Smaller: more patient on lossy links.')),
    adaptive: flag(true, 'Derive each connection\'s probe count, data timeout and keep-alive grace from its measured link (RTT, loss) and the budget. false: the profile and tcp.* values exactly.'),
    maxHold: seconds(0, 30, 'Longest a TCP-level verdict is held (kept suspect) when many connections go silent together (local health).'),
    maxDead: seconds(1, 120, 'Longest any TCP-silence verdict may take, seconds (a cap on the adaptive patience).'),
    correlation: z.strictObject({
      enabled: flag(true, 'Hold TCP-level verdicts while many connections went silent together.'),
      window: seconds(0.1, 3, 'Seconds in which silences count as correlated.'),
      minCount: whole(1, null, 3, 'Correlated silences that make the proxy degraded, at least.'),
      fraction: z.number().min(0).max(1).default(0.1).meta(doc('... or this fraction of the open connections, whichever is larger.')),
    }).prefault({}).meta(doc('Correlated verdicts (local health).')),
  }, 'Adaptive liveness: link estimate, false-death budget, suspect state, correlated verdicts (docs/liveness.md).'),
  probes: section({
    enabled: flag(true, 'Run the canary session.'),
    interval: seconds(0.1, 5, 'Seconds between canary PINGREQs.'),
    timeout: seconds(0.05, 2, 'Seconds to wait for a PINGRESP.'),
    clientIdPrefix: text('mlp-canary-', 'Client id prefix of the canary session.'),
    username: optionalText('Canary username.'),
    password: optionalText('Canary password (never logged).'),
    protocolVersion: whole(3, 5, 4, 'MQTT protocol level of the canary: 3, 4 or 5.'),
    deepTopic: optionalText('If set, also publish QoS 1 to this topic and receive it back, measuring routing latency.'),
    onBrokerDown: choice(['keep', 'close'], 'keep', 'When the broker stops answering: keep clients, or close them (MQTT 5: DISCONNECT 0x89 Server busy).'),
    upstreamProbeIdle: seconds(0, 0, 'Seconds a connection may send nothing upstream before the proxy injects a PINGREQ (0: off).'),
    upstreamProbeTimeout: seconds(0.05, 5, 'Seconds to wait for the PINGRESP of an injected PINGREQ (broker_unresponsive).'),
  }, 'PINGREQ probes toward the broker.'),
  events: section({
    webhook: z.string().regex(/^https?:\/\//, { error: (issue) => `expected an http(s) URL, got ${JSON.stringify(issue.input)}` }).nullable().default(null).meta(doc('URL that receives events as JSON POSTs. Unset: no events.')),
    types: z.array(z.enum(['verdict', 'connect', 'disconnect', 'suspect'])).default(['verdict']).meta(doc('Which events to send (suspect: a connection turned suspect or recovered, see docs/liveness.md).')),
    timeout: seconds(0.1, 5, 'Seconds per delivery attempt.'),
    retries: whole(0, null, 5, 'Retries after a failed attempt, with exponential backoff.'),
    queueSize: whole(1, null, 1000, 'Events waiting for delivery at most; more are dropped and counted.'),
  }, 'Webhook events.'),
  limits: section({
    maxConnections: whole(0, null, 0, 'Open client connections at most (0: no limit).'),
    maxConnectionsPerSource: whole(0, null, 0, 'Open connections per source address at most (0: no limit).'),
    connectRatePerSource: rate(0, 'New connections per second per source address (0: no limit).'),
  }, 'Admission limits.'),
  tls: section({
    listen: address().nullable().default(null).meta(doc('TLS listener address. Unset: no TLS listener.')),
    cert: optionalText('Certificate chain file (PEM); reloaded when it changes.'),
    key: optionalText('Private key file (PEM).'),
    ca: optionalText('CA file for client certificates.'),
    requestCert: flag(false, 'Require and verify client certificates against `ca`.'),
  }, 'TLS listener beside the plaintext one.'),
  websocket: section({
    listen: address().nullable().default(null).meta(doc('MQTT over WebSocket listener address. Unset: no WebSocket listener.')),
    path: z.string().regex(/^\//, { error: 'expected a path starting with /' }).default('/mqtt').meta(doc('Request path of the WebSocket upgrade (the query string is ignored).')),
    tls: flag(false, 'Serve wss:// with the `tls.*` certificate (reloaded with it).'),
  }, 'MQTT over WebSocket listener (ws:// or wss://).'),
  proxyProtocol: section({
    trusted: z.array(z.string()).default([]).meta(doc('CIDRs (or addresses) of load balancers whose connections must start with a PROXY v1/v2 header, on every listener; its address is then the client address. Empty: off.')),
    upstream: choice(['off', 'v2'], 'off', 'Send a PROXY v2 header with the client address (and TLS facts) to the broker first; the broker listener must expect it (Mosquitto >= 2.1 `enable_proxy_protocol 2`).'),
  }, 'PROXY protocol from load balancers and to the broker.'),
}).superRefine((config, ctx) => {
  const tls = config.tls;
  if (tls.listen && (!tls.cert || !tls.key)) ctx.addIssue({ code: 'custom', path: ['tls'], message: 'tls.listen needs tls.cert and tls.key' });
  if (config.websocket.tls && (!tls.cert || !tls.key)) ctx.addIssue({ code: 'custom', path: ['websocket', 'tls'], message: 'websocket.tls needs tls.cert and tls.key' });
  for (const [i, entry] of config.proxyProtocol.trusted.entries()) {
    try {
      new TrustedSources([entry]);
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['proxyProtocol', 'trusted', i], message: (err as Error).message });
    }
  }
  if (tls.requestCert && !tls.ca) ctx.addIssue({ code: 'custom', path: ['tls', 'ca'], message: 'requestCert needs a ca file' });
  if (config.probes.timeout >= config.probes.interval) ctx.addIssue({ code: 'custom', path: ['probes', 'timeout'], message: 'must be shorter than probes.interval' });
});
