/**
 * Wires the parts of a running proxy together: the bundled broker, the MQTT
 * listener and (later) the admin server, and stops them in order.
 */
import type { Logger } from 'pino';
import type { Config } from './config/types.ts';
import { startBroker, type BrokerHandle } from './broker/supervisor.ts';
import { ProxyServer } from './relay/server.ts';
import type { Clock } from './liveness/clock.ts';

export interface App {
  config: Config;
  proxy: ProxyServer;
  broker: BrokerHandle | null;
  stop(): Promise<void>;
}

export async function startApp(config: Config, log: Logger, clock?: Clock): Promise<App> {
  const broker = await startBroker(config, log);
  const proxy = new ProxyServer({ config, log, clock });
  try {
    await proxy.listen();
  } catch (err) {
    await broker?.stop();
    throw err;
  }
  let stopped: Promise<void> | null = null;
  return {
    config,
    proxy,
    broker,
    stop() {
      stopped ??= (async () => {
        await proxy.close();
        await broker?.stop();
      })();
      return stopped;
    },
  };
}
