/**
 * The least a Node TCP relay can do, the bench's baseline (relay.ts runs it as a
 * process; alloc-profile.ts --relay in its own): no MQTT awareness, no timers, no
 * keep-alive, setNoDelay and pipe() both ways, and close the other side when one goes.
 */
import net from 'node:net';

export function createNodeRelay(upHost: string, upPort: number): net.Server {
  return net.createServer({ noDelay: true }, (client) => {
    const upstream = net.connect({ host: upHost, port: upPort, noDelay: true });
    client.setNoDelay(true);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
}
