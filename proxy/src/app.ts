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
import { WebhookSender, webhookOptionsFrom } from './events/webhook.ts';

export interface App {
  config: Config;
  proxy: ProxyServer;
  broker: BrokerHandle | null;
  metrics: ProxyMetrics;
  /** The admin HTTP server (/metrics, /livez, /readyz, /connections); address() and url. */
  admin: AdminServer;
  /** Webhook sender, when events.webhook is set. */
  webhook: WebhookSender | null;
  stop(): Promise<void>;
}

export async function startApp(config: Config, log: Logger, clock?: Clock): Promise<App> {
  const broker = await startBroker(config, log);
  const proxy = new ProxyServer({ config, log, clock });
  // Subscribed before the listener opens, so no connection goes uncounted.
  const metrics = new ProxyMetrics(proxy);
  const webhookOptions = webhookOptionsFrom(config.events, metrics, log);
  const webhook = webhookOptions ? new WebhookSender(webhookOptions) : null;
  webhook?.attach(proxy.events);
  const admin = new AdminServer({ listen: config.admin, proxy, metrics, clock: clock ?? systemClock, log, token: config.adminToken });
  try {
    await proxy.listen();
    await admin.listen();
  } catch (err) {
    await proxy.close(0);
    await admin.close();
    await webhook?.stop();
    metrics.close();
    await broker?.stop();
    throw err;
  }
  let stopped: Promise<void> | null = null;
  return {
    config,
    proxy,
    broker,
    metrics,
    admin,
    webhook,
    stop() {
      stopped ??= (async () => {
        // /readyz turns 503 as soon as the listener stops accepting; the admin server goes last.
        await proxy.close();
        await webhook?.stop();
        await broker?.stop();
        await admin.close();
        metrics.close();
      })();
      return stopped;
    },
  };
}
