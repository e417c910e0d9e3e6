/**
 * Every configuration key, its type, default and meaning, in one place.
 * README's configuration table is checked against this file by a test.
 * Durations are in seconds (fractions allowed), sizes in bytes.
 */
export type Field =
  | { type: 'string'; default: string | null; doc: string; nullable?: boolean; pattern?: RegExp; patternDoc?: string }
  | { type: 'number'; default: number | null; doc: string; min?: number; max?: number; integer?: boolean; nullable?: boolean }
  | { type: 'boolean'; default: boolean; doc: string }
  | { type: 'enum'; values: readonly string[]; default: string; doc: string }
  | { type: 'stringList'; values?: readonly string[]; default: readonly string[]; doc: string }
  | { type: 'object'; fields: Record<string, Field>; doc: string }
  | { type: 'rules'; doc: string };

const hostPort = /^(\[[0-9a-fA-F:.]+\]|[^\s:]+):(\d{1,5})$/;
const hostPortDoc = 'HOST:PORT';

export const KEEPALIVE_FIELDS = {
  grace: { type: 'number', default: null, nullable: true, min: 0, doc: 'Silence allowed beyond the keep-alive, in seconds. Default: min(2, 0.5 x keep-alive).' },
  multiplier: { type: 'number', default: null, nullable: true, min: 1, max: 1.5, doc: 'If set, the deadline is keep-alive x multiplier instead of keep-alive + grace.' },
  max: { type: 'number', default: 0, min: 0, max: 65535, integer: true, doc: 'Largest keep-alive allowed, in seconds (0: no maximum). MQTT 5 clients get it as Server Keep Alive.' },
  aboveMax: { type: 'enum', values: ['accept', 'reject', 'translate'], default: 'accept', doc: 'MQTT 3.x clients above `max`: enforce their own value, refuse them (CONNACK 2), or translate (send `upstreamKeepAlive` to the broker and keep that session alive with PINGREQs).' },
  zero: { type: 'enum', values: ['accept', 'reject', 'assign'], default: 'accept', doc: 'Keep-alive 0: accept (TCP probes only), reject, or (MQTT 5) assign `assign` seconds as Server Keep Alive.' },
  assign: { type: 'number', default: 60, min: 1, max: 65535, integer: true, doc: 'Server Keep Alive given to MQTT 5 clients with keep-alive 0 when `zero: assign`.' },
  upstreamKeepAlive: { type: 'number', default: 60, min: 1, max: 65535, integer: true, doc: 'Keep-alive sent to the broker for translated connections.' },
} satisfies Record<string, Field>;

export const SCHEMA: Record<string, Field> = {
  listen: { type: 'string', default: '0.0.0.0:1883', pattern: hostPort, patternDoc: hostPortDoc, doc: 'MQTT listener for clients.' },
  upstream: { type: 'string', default: '127.0.0.1:1884', pattern: hostPort, patternDoc: hostPortDoc, doc: 'The broker the proxy forwards to.' },
  admin: { type: 'string', default: '0.0.0.0:9464', pattern: hostPort, patternDoc: hostPortDoc, doc: 'HTTP listener for /metrics, /livez, /readyz and /connections.' },
  adminToken: { type: 'string', default: null, nullable: true, doc: 'Bearer token required by GET /connections (client ids are sensitive). Unset: no token.' },
  broker: { type: 'enum', values: ['auto', 'mosquitto', 'embedded', 'none'], default: 'auto', doc: 'Bundled broker: auto (Mosquitto if on PATH, else embedded Aedes), mosquitto, embedded, or none (external upstream).' },
  mosquittoConfig: { type: 'string', default: 'broker/mosquitto.conf', doc: 'Mosquitto config file for the bundled broker (relative paths from the package root).' },
  mosquittoBinary: { type: 'string', default: 'mosquitto', doc: 'Mosquitto executable, looked up on PATH.' },
  logLevel: { type: 'enum', values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info', doc: 'Log level of the JSON log on stdout.' },
  connectTimeout: { type: 'number', default: 10, min: 0.1, doc: 'Seconds a new connection has to send its CONNECT.' },
  maxPacketSize: { type: 'number', default: 16 * 1024 * 1024, min: 64, max: 268_435_460, integer: true, doc: 'Largest frame a client may send, in bytes (16 MiB; MQTT allows 256 MiB). Larger frames close the connection before they are buffered.' },
  shutdownGrace: { type: 'number', default: 10, min: 0, doc: 'Seconds given to connections to close on SIGTERM before they are cut.' },
  keepAlive: { type: 'object', fields: KEEPALIVE_FIELDS, doc: 'Keep-alive policy for every client (rules can override it).' },
  rules: { type: 'rules', doc: 'List of `{match: {clientId, username}, keepAlive: {...}}`; globs with * and ?; the first rule that matches wins.' },
  tcp: {
    type: 'object',
    doc: 'TCP-level liveness of client sockets.',
    fields: {
      keepAlive: { type: 'boolean', default: true, doc: 'Enable TCP keep-alive probes on client sockets.' },
      idle: { type: 'number', default: 5, min: 1, max: 32767, integer: true, doc: 'Seconds of silence before the first TCP keep-alive probe (TCP_KEEPIDLE).' },
      interval: { type: 'number', default: 1, min: 1, max: 32767, integer: true, doc: 'Seconds between probes (TCP_KEEPINTVL).' },
      count: { type: 'number', default: 3, min: 1, max: 127, integer: true, doc: 'Unanswered probes before the peer is dead (TCP_KEEPCNT).' },
      userTimeout: { type: 'number', default: 8, min: 0, doc: 'Seconds sent data may stay unacknowledged (TCP_USER_TIMEOUT); 0 leaves it unset.' },
      sendTimeout: { type: 'number', default: 10, min: 0.1, doc: 'Seconds bytes queued to a client may wait to drain before the connection ends (send_stall).' },
    },
  },
  probes: {
    type: 'object',
    doc: 'PINGREQ probes toward the broker.',
    fields: {
      enabled: { type: 'boolean', default: true, doc: 'Run the canary session.' },
      interval: { type: 'number', default: 5, min: 0.1, doc: 'Seconds between canary PINGREQs.' },
      timeout: { type: 'number', default: 2, min: 0.05, doc: 'Seconds to wait for a PINGRESP.' },
      clientIdPrefix: { type: 'string', default: 'mlp-canary-', doc: 'Client id prefix of the canary session.' },
      username: { type: 'string', default: null, nullable: true, doc: 'Canary username.' },
      password: { type: 'string', default: null, nullable: true, doc: 'Canary password (never logged).' },
      protocolVersion: { type: 'number', default: 4, min: 3, max: 5, integer: true, doc: 'MQTT protocol level of the canary: 3, 4 or 5.' },
      deepTopic: { type: 'string', default: null, nullable: true, doc: 'If set, also publish QoS 1 to this topic and receive it back, measuring routing latency.' },
      onBrokerDown: { type: 'enum', values: ['keep', 'close'], default: 'keep', doc: 'When the broker stops answering: keep clients, or close them (MQTT 5: DISCONNECT 0x88).' },
      upstreamProbeIdle: { type: 'number', default: 0, min: 0, doc: 'Seconds a connection may send nothing upstream before the proxy injects a PINGREQ (0: off).' },
      upstreamProbeTimeout: { type: 'number', default: 5, min: 0.05, doc: 'Seconds to wait for the PINGRESP of an injected PINGREQ (broker_unresponsive).' },
    },
  },
  events: {
    type: 'object',
    doc: 'Webhook events.',
    fields: {
      webhook: { type: 'string', default: null, nullable: true, pattern: /^https?:\/\//, patternDoc: 'an http(s) URL', doc: 'URL that receives events as JSON POSTs. Unset: no events.' },
      types: { type: 'stringList', values: ['verdict', 'connect', 'disconnect'], default: ['verdict'], doc: 'Which events to send.' },
      timeout: { type: 'number', default: 5, min: 0.1, doc: 'Seconds per delivery attempt.' },
      retries: { type: 'number', default: 5, min: 0, integer: true, doc: 'Retries after a failed attempt, with exponential backoff.' },
      queueSize: { type: 'number', default: 1000, min: 1, integer: true, doc: 'Events waiting for delivery at most; more are dropped and counted.' },
    },
  },
  limits: {
    type: 'object',
    doc: 'Admission limits.',
    fields: {
      maxConnections: { type: 'number', default: 0, min: 0, integer: true, doc: 'Open client connections at most (0: no limit).' },
      maxConnectionsPerSource: { type: 'number', default: 0, min: 0, integer: true, doc: 'Open connections per source address at most (0: no limit).' },
      connectRatePerSource: { type: 'number', default: 0, min: 0, doc: 'New connections per second per source address (0: no limit).' },
    },
  },
  tls: {
    type: 'object',
    doc: 'TLS listener beside the plaintext one.',
    fields: {
      listen: { type: 'string', default: null, nullable: true, pattern: hostPort, patternDoc: hostPortDoc, doc: 'TLS listener address. Unset: no TLS listener.' },
      cert: { type: 'string', default: null, nullable: true, doc: 'Certificate chain file (PEM); reloaded when it changes.' },
      key: { type: 'string', default: null, nullable: true, doc: 'Private key file (PEM).' },
      ca: { type: 'string', default: null, nullable: true, doc: 'CA file for client certificates.' },
      requestCert: { type: 'boolean', default: false, doc: 'Require and verify client certificates against `ca`.' },
    },
  },
};
