/**
 * The TLS listener beside the plaintext one (config tls.*).
 *
 * A plain TCP listener accepts, ProxyServer.admit() applies the admission
 * limits before any handshake work, and admitted sockets are handed to a
 * tls.Server that never listens itself. Handshaken sockets go to
 * ProxyServer.open() like plaintext ones. The certificate, key and CA files
 * are watched (stat polling, which also follows Kubernetes' symlink swaps)
 * and loaded into the server's secure context when they change; open
 * connections keep their session. A new set that does not load (unreadable,
 * key not matching, expired) leaves the old one in place and says why.
 */
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { Config } from '../config/types.ts';
import { listen } from '../net/listen.ts';
import { watchFiles } from '../files/watch.ts';
import type { ProxyServer } from './server.ts';

export type TlsConfig = Config['tls'];

export interface TlsListenerOptions {
  /** How often the files are checked, ms (default 1000). */
  pollMs?: number;
  /** Quiet time after a change before loading, so cert and key written one after the other load together, ms (default 200). */
  settleMs?: number;
}

/** What is served now: from the certificate, for logs and tests. */
export interface ServedCertificate {
  serialNumber: string;
  fingerprint256: string;
  subject: string;
  validTo: string;
}

export class TlsListener {
  private readonly tlsServer: tls.Server;
  private readonly listener: net.Server;
  private config: TlsConfig;
  private unwatch: (() => void) | null = null;
  /** The certificate served to new connections. */
  current: ServedCertificate;
  /** Told each newly loaded certificate set (the wss listener serves the same one). */
  private readonly contextListeners: Array<(options: tls.SecureContextOptions) => void> = [];
  /** The options of the set served now (for a wss listener created after this one). */
  serverOptions: tls.SecureContextOptions & tls.TlsOptions;

  constructor(
    private readonly proxy: ProxyServer,
    config: TlsConfig,
    private readonly log: Logger,
    private readonly options: TlsListenerOptions = {},
  ) {
    this.config = config;
    const loaded = load(config); // a bad set at startup is fatal
    this.current = loaded.served;
    this.serverOptions = loaded.options;
    if (Date.parse(loaded.served.validTo) < Date.now()) log.warn({ cert: config.cert, validTo: loaded.served.validTo }, 'the TLS certificate has expired');
    this.tlsServer = tls.createServer({
      ...loaded.options,
      handshakeTimeout: Math.round(proxy.config.connectTimeout * 1000),
    });
    this.tlsServer.on('secureConnection', (socket: tls.TLSSocket) => {
      // Half-close is relayed like on plaintext sockets, but only once the handshake is
      // done: a peer that leaves mid-handshake must free its socket at once.
      socket.allowHalfOpen = true;
      proxy.open(proxy.transportOf(socket, 'tls'));
    });
    this.tlsServer.on('tlsClientError', (err: Error & { code?: string }, socket: tls.TLSSocket) => {
      log.debug({ event: 'tls_handshake_failed', remote: `${socket.remoteAddress}:${socket.remotePort}`, error: err.code ?? err.message }, 'TLS handshake failed');
      socket.destroy();
    });
    this.listener = net.createServer({ allowHalfOpen: false, noDelay: true }, (socket) => {
      proxy.gate(socket, 'tls', () => this.tlsServer.emit('connection', socket));
    });
    this.listener.maxConnections = 1_000_000;
    this.watch();
  }

  async listen(): Promise<net.AddressInfo> {
    const { host, port } = this.config.listen!;
    await listen(this.listener, { host, port, backlog: 4096 });
    this.listener.on('error', (err) => this.log.error({ err }, 'TLS listener error'));
    // ProxyServer.close() closes it with the plaintext listener.
    this.proxy.adopt(this.listener);
    const address = this.address();
    this.log.info({ listen: `${address.address}:${address.port}`, ...this.current, requestCert: this.config.requestCert }, 'TLS listener listening');
    return address;
  }

  address(): net.AddressInfo {
    return this.listener.address() as net.AddressInfo;
  }

  /** New files or client-certificate settings (a config reload); the address cannot change. */
  reconfigure(config: TlsConfig): void {
    this.config = config;
    this.watch();
    this.reload('configuration reloaded');
  }

  /** Load the files now; true when the new set is served. */
  reload(trigger: string): boolean {
    let loaded: ReturnType<typeof load>;
    try {
      loaded = load(this.config);
      if (Date.parse(loaded.served.validTo) < Date.now()) throw new Error(`certificate expired on ${loaded.served.validTo}`);
    } catch (err) {
      this.log.error({ event: 'tls_reload_failed', trigger, cert: this.config.cert, key: this.config.key, ca: this.config.ca, error: (err as Error).message, serving: this.current.serialNumber }, 'TLS files not loaded; still serving the previous certificate');
      return false;
    }
    this.tlsServer.setSecureContext(loaded.options);
    // setSecureContext() leaves these alone; the server reads them for each new socket.
    const server = this.tlsServer as tls.Server & { requestCert: boolean; rejectUnauthorized: boolean };
    server.requestCert = this.config.requestCert;
    server.rejectUnauthorized = this.config.requestCert;
    const previous = this.current.serialNumber;
    this.current = loaded.served;
    this.serverOptions = loaded.options;
    for (const listener of this.contextListeners) listener(loaded.options);
    this.log.info({ event: 'tls_reloaded', trigger, previous, ...this.current, requestCert: this.config.requestCert }, 'TLS certificate loaded for new connections');
    return true;
  }

  /** Call `listener` with each certificate set loaded from now on. */
  onSecureContext(listener: (options: tls.SecureContextOptions) => void): void {
    this.contextListeners.push(listener);
  }

  /** Stop watching the files (the listener itself closes with the proxy). */
  close(): void {
    this.unwatch?.();
    this.unwatch = null;
  }

  private watch(): void {
    this.close();
    const files = [this.config.cert, this.config.key, this.config.ca].filter((f): f is string => !!f);
    this.unwatch = watchFiles(files, { pollMs: this.options.pollMs ?? 1000, settleMs: this.options.settleMs ?? 200 }, () => this.reload('files changed'));
  }
}

/** Read the files and build the server options; throws with the file's name when one is bad. */
function load(config: TlsConfig): { options: tls.SecureContextOptions & tls.TlsOptions; served: ServedCertificate } {
  const cert = read(config.cert, 'tls.cert');
  const key = read(config.key, 'tls.key');
  const ca = config.ca ? read(config.ca, 'tls.ca') : undefined;
  const options = { cert, key, ca, requestCert: config.requestCert, rejectUnauthorized: config.requestCert };
  try {
    tls.createSecureContext(options); // key mismatch, bad PEM
  } catch (err) {
    throw new Error(`${config.cert} / ${config.key}${ca ? ` / ${config.ca}` : ''}: ${(err as Error).message}`, { cause: err });
  }
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new Error(`${config.cert}: ${(err as Error).message}`, { cause: err });
  }
  return {
    options,
    served: { serialNumber: x509.serialNumber, fingerprint256: x509.fingerprint256, subject: x509.subject.replace(/\n/g, ', '), validTo: x509.validTo },
  };
}

function read(file: string | null, key: string): Buffer {
  if (!file) throw new Error(`${key} is not set`);
  try {
    return readFileSync(file);
  } catch (err) {
    throw new Error(`${key} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}
