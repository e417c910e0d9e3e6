/**
 * Several mqtt.js clients in one process, meant to run inside a client network
 * namespace (lossy-cell.ts starts it). Usage:
 *   node --import tsx lossy-fleet.ts '{"host":..,"port":..,"clients":[...]}'
 * Prints one JSON line per event on stdout: connect, close (client side), error.
 * Clients reconnect (mqtt.js default 1 s) like a real device would; the Will on
 * each client's own topic is what the bench counts.
 */
import mqtt from 'mqtt';

export interface FleetClient {
  id: string;
  protocolVersion: 4 | 5;
  keepalive: number;
  willTopic: string;
  /** Topic and QoS to subscribe to; idle clients subscribe to a topic nobody publishes on. */
  topic: string;
  qos: 0 | 1;
}

interface Args {
  host: string;
  port: number;
  clients: FleetClient[];
}

const args = JSON.parse(process.argv[2] ?? '{}') as Args;
const emit = (ev: string, extra: Record<string, unknown>) => process.stdout.write(JSON.stringify({ ev, t: Date.now(), ...extra }) + '\n');
const clients: mqtt.MqttClient[] = [];

for (const c of args.clients) {
  const client = mqtt.connect({
    host: args.host,
    port: args.port,
    clientId: c.id,
    protocolVersion: c.protocolVersion,
    keepalive: c.keepalive,
    clean: true,
    connectTimeout: 30_000,
    reconnectPeriod: 1_000,
    will: { topic: c.willTopic, payload: Buffer.from(c.id), qos: 1, retain: false },
  });
  client.on('connect', () => {
    client.subscribe(c.topic, { qos: c.qos }, (err) => {
      if (err) emit('error', { id: c.id, message: `subscribe: ${err.message}` });
      else emit('connect', { id: c.id });
    });
  });
  client.on('close', () => emit('close', { id: c.id }));
  client.on('error', (err) => emit('error', { id: c.id, message: err.message }));
  clients.push(client);
}

// The parent kills this process with SIGKILL at the end of a run; SIGTERM ends politely.
process.once('SIGTERM', () => {
  for (const c of clients) c.end(true);
  process.exit(0);
});
