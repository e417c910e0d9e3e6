/**
 * Wires the parts of a running proxy together: the bundled broker, the MQTT
 * listener, metrics, the admin server and webhook events, and stops them in
 * order.
 */
import type { Logger } from 'pino';
import type { Config } from './config/types.ts';
import { startBroker, type BrokerHandle } from './broker/supervisor.ts';
import { ProxyServer } from './relay/server.ts';
import { systemClock, type Clock } from './liveness/clock.ts';
import { ProxyMetrics } from './metrics.ts';
import { AdminServer } from './admin/server.ts';
import type { WebhookSender } from './events/webhook.ts';
import { Canary } from './probes/canary.ts';
import { TlsListener } from './relay/tls.ts';
import { planReload, type ReloadPlan } from './config/reload.ts';
import type { WebSocketListener } from './listeners/websocket.ts';

export interface App {
  /** The running configuration (changes with reconfigure()). */
  readonly config: Config;
  proxy: ProxyServer;
  broker: BrokerHandle | null;
  metrics: ProxyMetrics;
  /** The admin HTTP server (/metrics, /livez, /readyz, /connections); address() and url. */
  admin: AdminServer;
  /** Webhook sender, when events.webhook is set. */
  webhook: WebhookSender | null;
  /** The broker canary, when probes.enabled (readiness check `broker`). */
  canary: Canary | null;
  /** The TLS listener, when tls.listen is set (or only its certificate, for websocket.tls). */
  tls: TlsListener | null;
  /** The WebSocket listener, when websocket.listen is set. */
  websocket: WebSocketListener | null;
  /** Apply a reloaded configuration to new connections (restart-only keys keep their running values). */
  reconfigure(config: Config): ReloadPlan;
  /**
   * Shutdown: /readyz turns 503 at once, after shutdownDelay the listeners close, MQTT 5
   * clients get DISCONNECT 0x8B, connections still open after shutdownGrace are cut.
   */
  stop(): Promise<void>;
}

/**
 * undici (the webhook client), ws (the WebSocket listener) and Aedes (the embedded broker) are
 * imported only when configured: together about 9 MB of heap that every mark-compact would
 * otherwise walk, in every proxy (BENCHMARKS.md, issue 13).
 */
async function startWebhook(config: Config, metrics: ProxyMetrics, log: Logger): Promise<WebhookSender | null> {
  if (!config.events.webhook) return null;
  const { WebhookSender, webhookOptionsFrom } = await import('./events/webhook.ts');
  const options = webhookOptionsFrom(config.events, metrics, log);
  return options ? new WebhookSender(options) : null;
}

export async function startApp(config: Config, log: Logger, clock?: Clock): Promise<App> {
  const broker = await startBroker(config, log);
  const proxy = new ProxyServer({ config, log, clock });
  // Subscribed before the listener opens, so no connection goes uncounted.
  const metrics = new ProxyMetrics(proxy);
  const webhook = await startWebhook(config, metrics, log);
  webhook?.attach(proxy.events);
  const admin = new AdminServer({ listen: config.admin, proxy, metrics, clock: clock ?? systemClock, log, token: config.adminToken });
  let tls: TlsListener | null = null;
  let websocket: WebSocketListener | null = null;
  try {
    await proxy.listen();
    if (config.tls.listen || (config.websocket.listen && config.websocket.tls)) tls = new TlsListener(proxy, config.tls, log);
    if (config.tls.listen) await tls!.listen();
    if (config.websocket.listen) websocket = await (await import('./relay/websocket-wiring.ts')).startWebSocketListener(proxy, tls, log);
    await admin.listen();
  } catch (err) {
    tls?.close();
    await websocket?.close();
    await proxy.close(0);
    await admin.close();
    await webhook?.stop();
    metrics.close();
    await broker?.stop();
    throw err;
  }
  const canary = config.probes.enabled ? startCanary(config, proxy, metrics, admin, log, clock ?? systemClock) : null;
  let stopped: Promise<void> | null = null;
  return {
    get config() {
      return proxy.config;
    },
    proxy,
    broker,
    metrics,
    admin,
    webhook,
    canary,
    tls,
    websocket,
    reconfigure(next) {
      const plan = planReload(proxy.config, next);
      const tlsChanged = plan.changed.some((k) => k.startsWith('tls.'));
      proxy.reconfigure(plan.config);
      if (tls && tlsChanged) tls.reconfigure(plan.config.tls);
      log.level = plan.config.logLevel;
      return plan;
    },
    stop() {
      stopped ??= (async () => {
        // /readyz answers 503 from here on, before anything else goes.
        admin.setDraining();
        const delayMs = proxy.config.shutdownDelay * 1000;
        log.info({ event: 'draining', connections: proxy.connections.size, shutdownDelayMs: delayMs }, 'shutting down: /readyz answers 503');
        // Load balancers and Kubernetes endpoints need a moment to see the 503: until then
        // clients may still be sent here, so the listeners keep taking them (shutdownDelay).
        if (delayMs > 0) {
          await new Promise((resolve) => setTimeout(resolve, delayMs));
        }
        // The listening sockets close before the log line says so: whoever reads
        // shutdown_delay_over may rely on new connections being refused.
        void proxy.closeListeners();
        // (The WebSocket listener's close completes once its connections, ended by proxy.close(), are gone.)
        const wsClosed = websocket?.close();
        tls?.close();
        if (delayMs > 0) log.info({ event: 'shutdown_delay_over', connections: proxy.connections.size }, 'shutdownDelay over: listeners closed');
        // The canary stops now (at once; its session closes alongside): a broker
        // stopped below must not look like a broker failure.
        const canaryStopped = canary?.stop();
        // Clients are told and closed within shutdownGrace.
        await proxy.close();
        await wsClosed;
        await canaryStopped;
        await webhook?.stop();
        await broker?.stop();
        await admin.close();
        metrics.close();
      })();
      return stopped;
    },
  };
}

/**
 * The broker canary, started once the proxy listens: readiness check `broker`,
 * and with probes.onBrokerDown close, every established client connection
 * ends (broker_down) when the broker turns down.
 */
function startCanary(config: Config, proxy: ProxyServer, metrics: ProxyMetrics, admin: AdminServer, log: Logger, clock: Clock): Canary {
  const canary = new Canary({
    probes: config.probes,
    upstream: config.upstream,
    proxyProtocolLocal: config.proxyProtocol.upstream === 'v2',
    clock,
    log,
    metrics,
    onState(state, why) {
      if (state !== 'down' || proxy.config.probes.onBrokerDown !== 'close') return;
      const ended = proxy.endEstablished('broker_down', why);
      log.warn({ event: 'broker_down_close', connections: ended }, 'probes.onBrokerDown close: ended the client connections');
    },
  });
  admin.addReadinessCheck('broker', () => canary.readiness());
  canary.start();
  return canary;
}
