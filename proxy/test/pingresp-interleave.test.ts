/**
 * Per-connection upstream probes against a real Mosquitto: the proxy injects
 * its own PINGREQs (probes.upstreamProbeIdle 10 ms) between the client's
 * frames while the client sends thousands of PINGREQs and PUBLISHes at random
 * moments, some split across writes. The client must get exactly one PINGRESP
 * per PINGREQ it sent and never one ahead of its PINGREQ; every PINGRESP
 * owed to an injected PINGREQ is swallowed.
 */
import t from 'tap';
import mqttPacket from 'mqtt-packet';
import { request } from 'undici';
import { startMosquitto } from './helpers/mosquitto.ts';
import { startProxy } from './helpers/proxy.ts';
import net from 'node:net';
import { connectFrame, eventually, RawClient, sleep } from './helpers/clients.ts';

const broker = await startMosquitto();
const proxy = await startProxy(broker.port, {
  logLevel: 'warn',
  probes: { upstreamProbeIdle: 0.01, upstreamProbeTimeout: 10 },
});
t.teardown(async () => {
  await proxy.stop();
  await broker.stop();
});

const PINGREQ = Buffer.from([0xc0, 0x00]);

async function metric(name: string): Promise<number> {
  const res = await request(`${proxy.adminUrl}/metrics`);
  const text = await res.body.text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`${name} not in /metrics`);
  return Number(m[1]);
}

/** Deterministic pseudo-random numbers, so a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

interface Client {
  socket: net.Socket;
  write(bytes: Buffer | number[]): void;
  until(predicate: () => boolean, timeoutMs: number, what: string): Promise<void>;
  destroy(): void;
}

interface Tally {
  pingsSent: number;
  pingResps: number;
  publishesSent: number;
  publishesBack: number;
  /** PINGRESPs seen while no PINGREQ of ours was outstanding. */
  ahead: number;
  other: string[];
}

/** A raw client after CONNACK, subscribed to its own topic, counting what comes back. */
async function session(clientId: string, protocolVersion: 4 | 5): Promise<{ client: Client; tally: Tally; topic: string }> {
  // A plain socket: RawClient keeps every byte received, and megabytes come back here.
  const socket = net.connect({ host: '127.0.0.1', port: proxy.port, noDelay: true });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let closed = false;
  socket.on('close', () => { closed = true; });
  socket.on('error', () => undefined);
  const client: Client = {
    socket,
    write: (bytes) => { socket.write(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes)); },
    until: async (predicate, timeoutMs, what) => {
      await eventually(() => {
        if (closed && !predicate()) throw new Error(`connection closed before ${what}`);
        return predicate();
      }, timeoutMs, what);
    },
    destroy: () => socket.destroy(),
  };
  client.write(connectFrame({ clientId, keepalive: 60, protocolVersion }));
  const tally: Tally = { pingsSent: 0, pingResps: 0, publishesSent: 0, publishesBack: 0, ahead: 0, other: [] };
  const parser = mqttPacket.parser({ protocolVersion });
  let connacked = false;
  let subacked = false;
  parser.on('packet', (p: mqttPacket.Packet) => {
    if (p.cmd === 'connack') connacked = true;
    else if (p.cmd === 'suback') subacked = true;
    else if (p.cmd === 'pingresp') {
      tally.pingResps++;
      if (tally.pingResps > tally.pingsSent) tally.ahead++;
    } else if (p.cmd === 'publish') tally.publishesBack++;
    else tally.other.push(p.cmd);
  });
  parser.on('error', (e: Error) => tally.other.push(`parse error: ${e.message}`));
  client.socket.on('data', (d: Buffer) => parser.parse(d));
  await client.until(() => connacked, 10_000, 'CONNACK');
  const topic = `interleave/${clientId}`;
  client.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 0 }] }, { protocolVersion }));
  await client.until(() => subacked, 10_000, 'SUBACK');
  return { client, tally, topic };
}

async function drive(clientId: string, protocolVersion: 4 | 5, pings: number, seed: number): Promise<Tally> {
  const { client, tally, topic } = await session(clientId, protocolVersion);
  const random = rng(seed);
  const publish = (size: number): Buffer => mqttPacket.generate({
    cmd: 'publish', topic, payload: Buffer.alloc(size, 0x61), qos: 0, dup: false, retain: false,
  }, { protocolVersion });
  while (tally.pingsSent < pings) {
    const r = random();
    if (r < 0.55) {
      // A PINGREQ alone; counted before the write, so a PINGRESP can never be "ahead" of it.
      tally.pingsSent++;
      client.write(PINGREQ);
    } else if (r < 0.65) {
      // A PINGREQ split across two writes, sometimes with a pause longer than the probe idle.
      tally.pingsSent++;
      client.write([0xc0]);
      if (random() < 0.5) await sleep(Math.floor(random() * 25));
      client.write([0x00]);
    } else if (r < 0.75) {
      // Several PINGREQs and a PUBLISH in one write.
      const n = 1 + Math.floor(random() * 4);
      tally.pingsSent += n;
      tally.publishesSent++;
      client.write(Buffer.concat([...Array<Buffer>(n).fill(PINGREQ), publish(1 + Math.floor(random() * 200))]));
    } else if (r < 0.95) {
      tally.publishesSent++;
      client.write(publish(1 + Math.floor(random() * 3000)));
    } else {
      // A large PUBLISH, written in pieces: the proxy's probe timer finds the stream mid-frame.
      tally.publishesSent++;
      const frame = publish(20_000 + Math.floor(random() * 60_000));
      const cut = 1 + Math.floor(random() * (frame.length - 2));
      client.write(frame.subarray(0, cut));
      await sleep(Math.floor(random() * 20));
      client.write(frame.subarray(cut));
    }
    // Random moments: often back to back, often after the 10 ms probe idle has passed.
    const pause = random();
    if (pause < 0.3) continue;
    await sleep(pause < 0.7 ? Math.floor(random() * 5) : 10 + Math.floor(random() * 20));
  }
  await client.until(() => tally.pingResps >= tally.pingsSent && tally.publishesBack >= tally.publishesSent, 30_000, 'every PINGRESP and PUBLISH back');
  // Quiet: the proxy keeps injecting (idle 10 ms); none of those PINGRESPs may leak.
  await sleep(1000);
  client.destroy();
  return tally;
}

t.test('thousands of client PINGREQs interleaved with injected ones (v3.1.1 and v5 at once)', async (t) => {
  const injectedBefore = await metric('mqtt_liveness_injected_pingreqs_total');
  const started = performance.now();
  const [v4, v5] = await Promise.all([
    drive('interleave-v4', 4, 3000, 1),
    drive('interleave-v5', 5, 3000, 2),
  ]);
  const elapsed = performance.now() - started;
  for (const [name, tally] of [['v3.1.1', v4], ['v5', v5]] as const) {
    t.equal(tally.pingResps, tally.pingsSent, `${name}: ${tally.pingsSent} PINGREQs sent, as many PINGRESPs received`);
    t.equal(tally.ahead, 0, `${name}: never more PINGRESPs received than PINGREQs sent`);
    t.equal(tally.publishesBack, tally.publishesSent, `${name}: ${tally.publishesSent} PUBLISHes came back`);
    t.same(tally.other, [], `${name}: nothing else arrived`);
  }
  await sleep(200); // both sockets closed; let the last injected PINGRESPs settle
  const injected = await metric('mqtt_liveness_injected_pingreqs_total');
  const swallowed = await metric('mqtt_liveness_swallowed_pingresps_total');
  t.ok(injected - injectedBefore > 100, `the proxy injected ${injected - injectedBefore} PINGREQs in ${Math.round(elapsed)} ms`);
  t.ok(injected - swallowed >= 0 && injected - swallowed <= 2, `swallowed ${swallowed} of ${injected} injected PINGRESPs (at most one in flight per connection)`);
  t.comment(`v3.1.1: ${v4.pingsSent} PINGREQs, ${v4.publishesSent} PUBLISHes; v5: ${v5.pingsSent} PINGREQs, ${v5.publishesSent} PUBLISHes; injected ${injected}, swallowed ${swallowed}, ${Math.round(elapsed)} ms`);
});

t.test('an idle connection is probed every upstreamProbeIdle, not every upstreamProbeTimeout', async (t) => {
  const { client, tally } = await session('interleave-idle', 4);
  t.teardown(() => client.destroy());
  const before = await metric('mqtt_liveness_injected_pingreqs_total');
  await sleep(1000);
  const after = await metric('mqtt_liveness_injected_pingreqs_total');
  // Idle 10 ms + a round trip per probe; a slow machine still manages dozens a second.
  t.ok(after - before >= 20, `${after - before} PINGREQs injected in 1 s of client silence (idle 10 ms, timeout 10 s)`);
  t.equal(tally.pingResps, 0, 'the client saw none of their PINGRESPs');
  t.same(tally.other, []);
});

t.test('a frozen broker: an unanswered injected PINGREQ ends the connection with broker_unresponsive', async (t) => {
  // Its own broker and proxy: this one gets SIGSTOPped. No canary, so only the per-connection probe acts.
  const frozen = await startMosquitto();
  const p = await startProxy(frozen.port, { logLevel: 'warn', probes: { enabled: false, upstreamProbeIdle: 0.5, upstreamProbeTimeout: 1 } });
  t.teardown(async () => {
    frozen.proc.kill('SIGCONT');
    await p.stop();
    await frozen.stop();
  });
  const clients = await Promise.all(([4, 5] as const).map(async (protocolVersion) => {
    const c = await RawClient.connect(p.port);
    c.write(connectFrame({ clientId: `unresponsive-v${protocolVersion}`, keepalive: 60, protocolVersion }));
    await c.waitForBytes(protocolVersion === 5 ? 5 : 4);
    return c;
  }));
  t.teardown(() => clients.forEach((c) => c.destroy()));
  const [v4, v5] = clients;
  const connackLength = v5.received.length;
  await sleep(1200); // a few probes answered
  const injectedBefore = p.app.proxy.stats.injectedPings;
  t.ok(injectedBefore >= 2, `${injectedBefore} probes answered before the stop`);
  frozen.proc.kill('SIGSTOP');
  const stoppedAt = performance.now();
  const [e4, e5] = await Promise.all([
    p.nextClose((e) => e.clientId === 'unresponsive-v4', 10_000),
    p.nextClose((e) => e.clientId === 'unresponsive-v5', 10_000),
  ]);
  const elapsed = performance.now() - stoppedAt;
  t.equal(e4.reason, 'broker_unresponsive');
  t.equal(e5.reason, 'broker_unresponsive');
  t.equal(e4.liveness, false, 'not a client verdict: no Will is asked for');
  // Worst case: idle 0.5 s until the probe, then the 1 s timeout; slack for a loaded machine.
  // Lower bound: the unanswered probe went out at the stop at the earliest (one sent a moment
  // before would have been answered), so no verdict before the 1 s timeout, less a few ms.
  t.ok(elapsed <= 1500 + 2000, `both ended ${Math.round(elapsed)} ms after SIGSTOP (idle 0.5 s + timeout 1 s)`);
  t.ok(elapsed >= 1000 - 20, 'not before the probe timeout');
  await v5.waitForClose(5000);
  await v4.waitForClose(5000);
  t.same([...v5.received.subarray(connackLength)], [0xe0, 0x01, 0x89], 'the MQTT 5 client got DISCONNECT 0x89');
  t.equal(v4.received.length, 4, 'the 3.1.1 client got no PINGRESP and no DISCONNECT');
  t.comment(`broker_unresponsive ${Math.round(elapsed)} ms after SIGSTOP`);
});
