/**
 * The embedded fallback broker (Aedes), for machines without Mosquitto.
 * It serves the same loopback address as broker/mosquitto.conf.
 */
import net from 'node:net';
import { Aedes } from 'aedes';
import { listen } from '../net/listen.ts';

export interface EmbeddedBroker {
  address: net.AddressInfo;
  close(): Promise<void>;
}

export async function startEmbeddedBroker(host: string, port: number): Promise<EmbeddedBroker> {
  const aedes = await Aedes.createBroker();
  const server = net.createServer((socket) => aedes.handle(socket));
  const address = await listen(server, { host, port });
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => aedes.close(() => resolve()));
        // Connected clients keep a server open; Aedes closes them.
      }),
  };
}
