/**
 * Baseline: the least a Node TCP relay can do. No MQTT awareness, no timers,
 * no keep-alive: setNoDelay and pipe() both ways, and close the other side
 * when one goes.
 *
 *   node --import tsx proxy/bench/relay.ts --listen 127.0.0.1:P --upstream 127.0.0.1:B
 */
import { createNodeRelay } from './lib/node-relay.ts';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { listen: { type: 'string' }, upstream: { type: 'string' } } });
if (!values.listen || !values.upstream) {
  process.stderr.write('usage: relay.ts --listen HOST:PORT --upstream HOST:PORT\n');
  process.exit(2);
}
const split = (hp: string): [string, number] => {
  const at = hp.lastIndexOf(':');
  return [hp.slice(0, at), Number(hp.slice(at + 1))];
};
const [listenHost, listenPort] = split(values.listen);
const [upHost, upPort] = split(values.upstream);

const server = createNodeRelay(upHost, upPort);
server.listen({ host: listenHost, port: listenPort, backlog: 4096 }, () => {
  process.stdout.write(`relay listening on ${listenHost}:${listenPort} -> ${upHost}:${upPort}\n`);
});
process.once('SIGTERM', () => process.exit(0));
process.once('SIGINT', () => process.exit(0));
