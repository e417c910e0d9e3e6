// The pulled-cable harness must behave like an unplugged cable: traffic vanishes with
// no RST/FIN, comes back on restore, and leaves nothing behind. The Mosquitto test
// records the problem this product solves: the broker alone notices late (1.5 x keepalive).
import t from 'tap';
import net from 'node:net';
import { once } from 'node:events';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { createCable, run, waitForEvent, withCable, NETNS_CLIENT } from './helpers/netns.ts';
import { tcpAckState } from '../src/liveness/tcp-options.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Line-echo client run inside the namespace: stdin -> socket, socket -> stdout.
const ECHO_CLIENT = `
const s = require('node:net').connect(+process.argv[2], process.argv[1], () => console.log('connected'));
s.on('data', (d) => process.stdout.write(d));
process.stdin.on('data', (d) => s.write(d));
s.on('close', () => process.exit(0));
`;

function collect(child: ChildProcess): { text: () => string; waitFor: (s: string, ms: number) => Promise<void> } {
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  return {
    text: () => out,
    async waitFor(s, ms) {
      for (const end = Date.now() + ms; !out.includes(s); await sleep(50)) {
        if (Date.now() > end) throw new Error(`"${s}" not seen within ${ms} ms; got ${JSON.stringify(out)}`);
      }
    },
  };
}

t.test('echo works, pull silences both directions without RST/FIN, restore and destroy clean up', async (t) => {
  const cable = await createCable();
  t.teardown(() => cable.destroy());
  t.match(cable.hostAddress, /^10\.231\.\d+\.\d+$/);

  let serverSock: net.Socket | undefined;
  const server = net.createServer((s) => {
    serverSock = s;
    s.on('data', (d) => s.write(d)); // echo
  });
  server.listen(0, cable.hostAddress);
  await once(server, 'listening');
  t.teardown(() => { serverSock?.destroy(); server.close(); });
  const { port } = server.address() as net.AddressInfo;

  const child = cable.exec('node', ['-e', ECHO_CLIENT, cable.hostAddress, String(port)]);
  const out = collect(child);
  await out.waitFor('connected', 30_000);
  t.equal(serverSock?.remoteAddress, cable.clientAddress, 'client comes from the namespace side');
  child.stdin!.write('hello\n');
  await out.waitFor('hello', 10_000);
  t.pass('echo through the cable');

  const sock = serverSock!;
  const seen: string[] = [];
  sock.on('end', () => seen.push('end'));
  sock.on('close', () => seen.push('close'));
  sock.on('data', (d) => seen.push(`data:${d.toString()}`));

  await cable.pull();
  t.ok(cable.pulled);
  t.match(await run('nft', ['list', 'tables']), `table netdev ${cable.name}`, 'root-side table');
  t.match(await run('ip', ['netns', 'exec', cable.name, 'nft', 'list', 'tables']), `table netdev ${cable.name}`, 'namespace-side table');

  child.stdin!.write('upstream\n');
  sock.write('downstream\n');
  await sleep(2500);
  t.same(seen, [], 'root side sees no data, no end, no close');
  t.notMatch(out.text(), 'downstream', 'namespace side receives nothing');
  t.ok((tcpAckState(sock)?.unacked ?? 0) > 0, 'downstream bytes stay unacked in flight');

  // The connection survived: TCP retransmits deliver both directions once restored.
  await cable.restore();
  t.notOk(cable.pulled);
  await out.waitFor('downstream', 30_000);
  await out.waitFor('upstream', 30_000); // echoed back after reaching the server
  // The echo's ACK may still be on its way: poll briefly.
  for (const end = Date.now() + 5000; tcpAckState(sock)?.unacked !== 0 && Date.now() < end; await sleep(20));
  t.equal(tcpAckState(sock)?.unacked, 0, 'all acked after restore');

  await cable.destroy();
  t.notMatch(await run('ip', ['netns', 'list']), cable.name, 'namespace gone');
  t.notMatch(await run('nft', ['list', 'tables']), cable.name, 'nft table gone');
  await t.rejects(run('ip', ['link', 'show', cable.hostDevice]), 'veth gone');
  t.not(child.exitCode ?? child.signalCode, null, 'child process ended');
});

async function startMosquitto(t: { teardown(fn: () => unknown): void }, host: string): Promise<number> {
  // Mosquitto cannot listen on port 0: borrow a free port from the kernel first.
  const probe = net.createServer().listen(0, host);
  await once(probe, 'listening');
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((r) => probe.close(r));

  const dir = await mkdtemp(join(tmpdir(), 'mlp-mosq-'));
  const conf = join(dir, 'mosquitto.conf');
  await writeFile(conf, `listener ${port} ${host}\nallow_anonymous true\npersistence false\n`);
  const broker = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  broker.stderr.setEncoding('utf8').on('data', (d: string) => { log += d; });
  t.teardown(async () => {
    if (broker.exitCode === null) {
      broker.kill('SIGTERM');
      await once(broker, 'exit');
    }
    await rm(dir, { recursive: true, force: true });
  });
  for (const end = Date.now() + 15_000; !log.includes(`listen socket on port ${port}`); await sleep(50)) {
    if (Date.now() > end || broker.exitCode !== null) throw new Error(`mosquitto did not start: ${log}`);
  }
  return port;
}

for (const protocolVersion of [4, 5] as const) {
  t.test(`mosquitto alone publishes the Will late (MQTT v${protocolVersion === 4 ? '3.1.1' : '5'}, keepalive 4)`, (t) => withCable(t, async (cable) => {
    const port = await startMosquitto(t, cable.hostAddress);

    const topic = `will/${cable.name}`;
    const sub = await mqtt.connectAsync(`mqtt://${cable.hostAddress}:${port}`, { reconnectPeriod: 0, clientId: `sub-${cable.name}` }, false);
    t.teardown(() => sub.endAsync(true));
    await sub.subscribeAsync(topic, { qos: 1 });
    const will = new Promise<number>((resolve) => sub.on('message', (tp) => tp === topic && resolve(Date.now())));

    const device = cable.exec('node', ['--import', 'tsx', NETNS_CLIENT, JSON.stringify({
      host: cable.hostAddress, port, clientId: `dev-${cable.name}`, protocolVersion, keepalive: 4,
      will: { topic, payload: 'offline' },
    })]);
    await waitForEvent(device, 'connected', 60_000);
    // Pull right after a PINGRESP: the broker has just heard from the client, so it is
    // 1.5 x keepalive (6 s) away from declaring it dead -- the worst case the proxy fixes.
    await waitForEvent(device, 'pingresp', 20_000);
    const pulledAt = Date.now();
    await cable.pull();

    // unref: a pending guard timer must not keep the test process alive afterwards.
    const arrived = await Promise.race([will, new Promise<null>((r) => setTimeout(r, 30_000, null).unref())]);
    t.not(arrived, null, 'Will eventually published');
    const delay = (arrived ?? 0) - pulledAt;
    t.comment(`Will arrived ${delay} ms after the cable was pulled (MQTT v${protocolVersion})`);
    t.ok(delay >= 4000, `Will took >= 4 s (was ${delay} ms)`);
  }));
}
