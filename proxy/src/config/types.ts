/** The effective configuration; shapes mirror SCHEMA in schema.ts. */
export interface KeepAlivePolicy {
  grace: number | null;
  multiplier: number | null;
  max: number;
  aboveMax: 'accept' | 'reject' | 'translate';
  zero: 'accept' | 'reject' | 'assign';
  assign: number;
  upstreamKeepAlive: number;
}

export interface Rule {
  match: { clientId?: string; username?: string };
  keepAlive: Partial<KeepAlivePolicy>;
}

export interface Config {
  listen: string;
  upstream: string;
  admin: string;
  adminToken: string | null;
  broker: 'auto' | 'mosquitto' | 'embedded' | 'none';
  mosquittoConfig: string;
  mosquittoBinary: string;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  connectTimeout: number;
  maxPacketSize: number;
  shutdownGrace: number;
  keepAlive: KeepAlivePolicy;
  rules: Rule[];
  tcp: {
    keepAlive: boolean;
    idle: number;
    interval: number;
    count: number;
    userTimeout: number;
    sendTimeout: number;
  };
  probes: {
    enabled: boolean;
    interval: number;
    timeout: number;
    clientIdPrefix: string;
    username: string | null;
    password: string | null;
    protocolVersion: number;
    deepTopic: string | null;
    onBrokerDown: 'keep' | 'close';
    upstreamProbeIdle: number;
    upstreamProbeTimeout: number;
  };
  events: {
    webhook: string | null;
    types: Array<'verdict' | 'connect' | 'disconnect'>;
    timeout: number;
    retries: number;
    queueSize: number;
  };
  limits: {
    maxConnections: number;
    maxConnectionsPerSource: number;
    connectRatePerSource: number;
  };
  tls: {
    listen: string | null;
    cert: string | null;
    key: string | null;
    ca: string | null;
    requestCert: boolean;
  };
}

export interface HostPort {
  host: string;
  port: number;
}

export function parseHostPort(value: string): HostPort {
  const at = value.lastIndexOf(':');
  let host = value.slice(0, at);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return { host, port: Number(value.slice(at + 1)) };
}
