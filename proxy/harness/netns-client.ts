// MQTT client meant to run inside a cable's namespace (a separate process, so the
// pulled cable cuts it off like a real device). Usage:
//   node --import tsx netns-client.ts '{"host":..,"port":..,"clientId":..,...}'
// Prints one JSON line per event on stdout: connected, message, pingresp, error, close.
// Exits after close (reconnectPeriod 0: a dead link must stay dead).
import mqtt from 'mqtt';

interface Args {
  host: string;
  port: number;
  clientId: string;
  protocolVersion?: 4 | 5;
  keepalive?: number;
  will?: { topic: string; payload: string; qos?: 0 | 1 | 2; retain?: boolean };
  subscribe?: string;
}

const args = JSON.parse(process.argv[2] ?? '{}') as Args;
const emit = (event: string, extra: Record<string, unknown> = {}, done?: () => void) =>
  process.stdout.write(JSON.stringify({ event, ...extra }) + '\n', done);

const client = mqtt.connect({
  host: args.host,
  port: args.port,
  clientId: args.clientId,
  protocolVersion: args.protocolVersion ?? 4,
  keepalive: args.keepalive ?? 60,
  reconnectPeriod: 0,
  connectTimeout: 10_000,
  will: args.will && {
    topic: args.will.topic,
    payload: Buffer.from(args.will.payload),
    qos: args.will.qos ?? 0,
    retain: args.will.retain ?? false,
  },
});

client.on('connect', () => {
  // Report only once subscribed: a test waiting for "connected" may rely on the subscription.
  const ready = args.subscribe ? client.subscribeAsync(args.subscribe, { qos: 1 }) : Promise.resolve();
  ready.then(() => emit('connected'), (err: Error) => emit('error', { message: err.message }));
});
client.on('message', (topic, payload) => emit('message', { topic, payload: payload.toString() }));
// Lets tests line up with the keep-alive cycle (the broker just heard from us).
client.on('packetreceive', (packet) => {
  if (packet.cmd === 'pingresp') emit('pingresp');
});
client.on('error', (err) => emit('error', { message: err.message }));
// Stdout to a pipe is async: exit only once the last line is flushed.
client.on('close', () => emit('close', {}, () => process.exit(0)));
