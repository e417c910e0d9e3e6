/** Start listening; reject on the first error (EADDRINUSE, EACCES) instead of leaving it to a later 'error' handler. */
import type net from 'node:net';

export function listen(server: net.Server, options: net.ListenOptions): Promise<net.AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options, () => {
      server.off('error', reject);
      resolve(server.address() as net.AddressInfo);
    });
  });
}
