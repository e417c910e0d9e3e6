/**
 * The embedded fallback broker (Aedes), for machines without Mosquitto.
 * It serves the same loopback address as broker/mosquitto.conf.
 */
import net from 'node:net';
import { Aedes } from 'aedes';

export interface EmbeddedBroker {
  address: net.AddressInfo;
  close(): Promise<void>;
}

export async function startEmbeddedBroker(host: string, port: number): Promise<EmbeddedBroker> {
  const aedes = await Aedes.createBroker();
  const server = net.createServer((socket) => aedes.handle(socket));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    address: server.address() as net.AddressInfo,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => aedes.close(() => resolve()));
        // Connected clients keep a server open; Aedes closes them.
      }),
  };
}
