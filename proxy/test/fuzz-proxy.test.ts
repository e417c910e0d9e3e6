/**
 * Thousands of mutated frames at a running proxy in front of Mosquitto.
 *
 * 2,000 raw connections, a few dozen at a time, each send a valid CONNECT and
 * then frames of every kind with bit flips, truncations, inserted and deleted
 * bytes, wrong lengths, random bytes. The process never throws, every one of
 * them ends with a reason from the fixed set, the proxy's connection count
 * returns to zero, and a healthy mqtt.js client on its own connection
 * publishes and receives every 100 ms throughout without losing a message.
 *
 * Then the other direction: a hostile "broker" that answers with mutated
 * frames, and a v5 CONNACK mqtt-packet reads but cannot write back.
 */
import t from 'tap';
import net from 'node:net';
import mqttPacket from 'mqtt-packet';
import { startMosquitto } from './helpers/mosquitto.ts';
import { startProxy } from './helpers/proxy.ts';
import { connectClient, connectFrame, eventually, RawClient, sleep } from './helpers/clients.ts';
import { collectUncaught, settledMemory } from './helpers/runtime.ts';
import { REASONS } from '../src/liveness/reasons.ts';
import type { CloseEvent } from '../src/relay/events.ts';
import { prng } from '../harness/prng.ts';

type Packet = Parameters<typeof mqttPacket.generate>[0];

const CONNECTIONS = Number(process.env.MLP_FUZZ_CONNECTIONS ?? 2000);
const PARALLEL = 25;
/** A connection the proxy has not closed by then is closed by the test. */
const LINGER_MS = 400;
const SEED = Number(process.env.MLP_FUZZ_SEED ?? 20240601);

// ---- seeded randomness ------------------------------------------------------------

/** Re-seeded for each connection's plan, so a plan does not depend on how the workers interleave. */
let rnd = prng(SEED);
const int = (n: number): number => Math.floor(rnd() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
const randomBytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(256)));

/** A valid client-to-broker frame of a random kind. */
function clientFrame(version: 4 | 5): Buffer {
  const v5 = version === 5;
  const id = 1 + int(0xfffe);
  const props = v5 && rnd() < 0.5 ? { userProperties: { k: `v${int(100)}` } } : undefined;
  const kinds: Array<() => Packet> = [
    () => ({ cmd: 'publish', topic: `fuzz/${int(50)}`, payload: randomBytes(int(200)), qos: pick([0, 1, 2] as const), retain: false, dup: false, messageId: id, properties: props }),
    () => ({ cmd: 'publish', topic: `fuzz/big`, payload: Buffer.alloc(2000 + int(20_000), 7), qos: 0, retain: false, dup: false }),
    () => ({ cmd: 'subscribe', messageId: id, subscriptions: [{ topic: pick(['fuzz/#', 'fuzz/+', 'x/y', '#']), qos: pick([0, 1, 2] as const) }], properties: props }),
    () => ({ cmd: 'unsubscribe', messageId: id, unsubscriptions: ['fuzz/#'] }),
    () => ({ cmd: pick(['puback', 'pubrec', 'pubrel', 'pubcomp']), messageId: id }),
    () => ({ cmd: 'pingreq' }),
    () => ({ cmd: 'pingreq' }),
    () => ({ cmd: 'disconnect', ...(v5 ? { reasonCode: pick([0, 4, 0x80]) } : {}) }),
    () => ({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: true, clientId: `again-${int(1e6)}`, keepalive: 30 }),
  ];
  if (v5) kinds.push(() => ({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'x' } }));
  return mqttPacket.generate(pick(kinds)(), { protocolVersion: version });
}

function mutate(input: Buffer): Buffer {
  let b = Buffer.from(input);
  const n = 1 + int(4);
  for (let k = 0; k < n; k++) {
    const at = b.length ? int(b.length) : 0;
    switch (int(6)) {
      case 0: if (b.length) b[at] ^= 1 << int(8); break;
      case 1: if (b.length) b[at] = pick([0x00, 0x7f, 0x80, 0xff, 0xf0, 0x10, 0x30, 0xe0]); break;
      case 2: b = b.subarray(0, at); break;
      case 3: b = Buffer.concat([b.subarray(0, at), randomBytes(1 + int(8)), b.subarray(at)]); break;
      case 4: b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + int(8))]); break;
      default: if (b.length > 1) b[1] = int(256); // the Remaining Length's first byte
    }
  }
  return b;
}

type Plan = { kind: string; connect: Buffer; version: 3 | 4 | 5; chunks: Buffer[]; pauses: boolean[]; waitConnack: boolean; destroy: boolean };

/** What one fuzz connection sends after its CONNECT. */
function plan(i: number): Plan {
  rnd = prng(SEED * 7919 + i);
  const version = pick([3, 4, 4, 5, 5] as const);
  const connect = connectFrame({ clientId: `fuzz-${i}`, keepalive: pick([0, 5, 30, 60]), protocolVersion: version, clean: true });
  const frameVersion = version === 5 ? 5 : 4;
  const r = rnd();
  let kind: string;
  let stream: Buffer;
  if (r < 0.55) {
    kind = 'mutated frames';
    const frames = Array.from({ length: 1 + int(8) }, () => clientFrame(frameVersion));
    const bad = int(frames.length);
    frames[bad] = mutate(frames[bad]);
    if (rnd() < 0.3) frames[int(frames.length)] = mutate(frames[int(frames.length)]);
    stream = Buffer.concat(frames);
  } else if (r < 0.7) {
    kind = 'random bytes';
    stream = randomBytes(1 + int(300));
  } else if (r < 0.8) {
    kind = 'mutated stream';
    stream = mutate(Buffer.concat(Array.from({ length: 2 + int(6) }, () => clientFrame(frameVersion))));
  } else if (r < 0.87) {
    kind = 'huge declared length';
    stream = Buffer.concat([Buffer.from([pick([0x30, 0x82, 0xc0, 0x10]), 0xff, 0xff, 0xff, 0x7f]), randomBytes(int(100))]);
  } else if (r < 0.93) {
    kind = 'malformed length';
    stream = Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]);
  } else {
    kind = 'reserved type';
    stream = Buffer.from([pick([0x00, 0x0f, 0xf0]), 0x00]);
  }
  // Cut the stream at random places: the framer must not care how TCP splits it.
  const chunks: Buffer[] = [];
  let from = 0;
  while (from < stream.length) {
    const size = rnd() < 0.5 ? stream.length - from : 1 + int(Math.max(1, stream.length - from));
    chunks.push(stream.subarray(from, from + size));
    from += size;
  }
  return { kind, connect, version, chunks, pauses: chunks.map(() => rnd() < 0.2), waitConnack: rnd() < 0.5, destroy: rnd() < 0.5 };
}

// ---- the run --------------------------------------------------------------------

const uncaught = collectUncaught(t);

const broker = await startMosquitto();
const proxy = await startProxy(broker.port, {
  connectTimeout: 2,
  maxPacketSize: 64 * 1024,
  logLevel: 'warn',
  limits: { maxConnections: 0, maxConnectionsPerSource: 0, connectRatePerSource: 0 },
});
t.teardown(async () => {
  await proxy.stop();
  await broker.stop();
});

t.test(`${CONNECTIONS} connections of mutated frames; a healthy client loses nothing`, async (t) => {
  // The healthy client: publishes a numbered message every 100 ms and receives its own.
  const healthy = await connectClient(proxy.url, { clientId: 'healthy', keepalive: 10, protocolVersion: 5 });
  let healthyClosed = 0;
  healthy.on('close', () => { healthyClosed++; });
  await healthy.subscribeAsync('healthy/seq', { qos: 0 });
  const received = new Set<number>();
  healthy.on('message', (topic, payload) => {
    const m = /^seq (\d+)$/.exec(payload.toString());
    if (topic === 'healthy/seq' && m) received.add(Number(m[1]));
  });
  let sent = 0;
  const ticker = setInterval(() => { healthy.publish('healthy/seq', `seq ${sent++}`, { qos: 0 }); }, 100);

  const byPort = new Map<number, CloseEvent[]>();
  const onClose = (e: CloseEvent): void => {
    const list = byPort.get(e.remotePort);
    if (list) list.push(e);
    else byPort.set(e.remotePort, [e]);
  };
  proxy.app.proxy.events.on('close', onClose);

  const memBefore = await settledMemory();
  const started = Date.now();
  const kinds = new Map<string, number>();
  const reasons = new Map<string, number>();
  const details = new Map<string, number>();
  let connackSeen = 0;
  let bytesSent = 0;
  let peakOpen = 0;
  const problems: string[] = [];

  async function one(i: number): Promise<void> {
    const p = plan(i);
    kinds.set(p.kind, (kinds.get(p.kind) ?? 0) + 1);
    const c = await RawClient.connect(proxy.port);
    const port = c.localPort;
    c.write(p.connect);
    bytesSent += p.connect.length;
    if (p.waitConnack) {
      await c.until(() => c.received.length >= 4 || c.closed, 5_000, 'CONNACK').catch(() => {});
    }
    if (c.received.length >= 4 && c.received[0] === 0x20) connackSeen++;
    for (const [k, chunk] of p.chunks.entries()) {
      if (c.closed) break;
      c.write(chunk);
      bytesSent += chunk.length;
      if (p.pauses[k]) await sleep(1);
    }
    // Give the proxy (or the broker) a moment to end it; otherwise end it ourselves.
    await c.until(() => c.closed, LINGER_MS, 'close').catch(() => {});
    if (!c.closed) {
      if (p.destroy) c.destroy();
      else c.socket.end();
      await c.until(() => c.closed, 15_000, 'close after end').catch(() => problems.push(`connection ${i} never closed`));
    }
    // Its close event, from the proxy.
    try {
      await eventually(() => byPort.get(port)?.find((e) => e.startedAt >= started), 20_000, `close event of connection ${i}`);
    } catch (err) {
      problems.push((err as Error).message);
      return;
    }
    const e = byPort.get(port)!.find((ev) => ev.startedAt >= started)!;
    byPort.set(port, byPort.get(port)!.filter((ev) => ev !== e));
    reasons.set(e.reason, (reasons.get(e.reason) ?? 0) + 1);
    const detail = `${e.reason}: ${(e.detail ?? '').replace(/\d+/g, 'N').slice(0, 60)}`;
    details.set(detail, (details.get(detail) ?? 0) + 1);
    if (!(REASONS as readonly string[]).includes(e.reason)) problems.push(`connection ${i}: reason ${e.reason} is not in the fixed set`);
  }

  let next = 0;
  const workers = Array.from({ length: PARALLEL }, async () => {
    while (next < CONNECTIONS) {
      const i = next++;
      await one(i);
      peakOpen = Math.max(peakOpen, proxy.app.proxy.connections.size);
    }
  });
  // Bounded: the whole run must finish well within tap's timeout.
  let overrun: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all(workers),
    new Promise((_, reject) => { overrun = setTimeout(() => reject(new Error('fuzz run took over 240 s')), 240_000); }),
  ]).finally(() => clearTimeout(overrun));
  const elapsed = Date.now() - started;

  // The healthy client keeps going a little after the storm, then stops.
  await sleep(500);
  clearInterval(ticker);
  await eventually(() => received.size >= sent, 10_000, 'the last healthy messages').catch(() => {});
  const lost = sent - received.size;

  await eventually(() => proxy.app.proxy.connections.size === 1, 30_000, 'only the healthy connection left');
  healthy.end(true);
  await eventually(() => proxy.app.proxy.connections.size === 0, 15_000, 'no connection left');
  proxy.app.proxy.events.off('close', onClose);
  const memAfter = await settledMemory();

  t.same(problems, [], 'every connection closed and its end was reported');
  t.equal(uncaught.length, 0, `no uncaught exception or rejection${uncaught.length ? `: ${String(uncaught[0])}` : ''}`);
  t.equal(healthyClosed, 1, 'the healthy connection stayed up until it was ended');
  t.ok(sent >= 50, `the healthy client sent ${sent} messages`);
  t.equal(lost, 0, `the healthy client received ${received.size} of ${sent} (lost ${lost})`);
  const total = [...reasons.values()].reduce((a, b) => a + b, 0);
  t.equal(total, CONNECTIONS, `${total} fuzz connections ended, each with a reason from the fixed set`);
  t.equal(proxy.app.proxy.connections.size, 0, 'the connection count is back to 0');
  const mb = (n: number): string => `${(n / 1048576).toFixed(1)} MB`;
  t.comment(`${CONNECTIONS} connections in ${(elapsed / 1000).toFixed(1)} s, ${bytesSent} bytes sent, ${connackSeen} waited for and got a CONNACK, peak ${peakOpen} open`);
  t.comment(`kinds: ${[...kinds].map(([k, n]) => `${k} ${n}`).join(', ')}`);
  t.comment(`reasons: ${[...reasons].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(', ')}`);
  t.comment(`details: ${[...details].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([k, n]) => `${n} x ${k}`).join('; ')}`);
  t.comment(`healthy client: ${sent} sent, ${received.size} received, lost ${lost}`);
  t.comment(`memory before/after: heapUsed ${mb(memBefore.heapUsed)} -> ${mb(memAfter.heapUsed)}, rss ${mb(memBefore.rss)} -> ${mb(memAfter.rss)} (after gc; this process holds the proxy and both ends)`);
  t.ok(memAfter.heapUsed - memBefore.heapUsed < 16 * 1024 * 1024, 'heap after gc within 16 MB of where it started');
  t.ok(reasons.get('protocol_error')! > CONNECTIONS / 4, 'most hostile streams end as protocol_error');
  const frameErrors = (await (await fetch(`${proxy.adminUrl}/metrics`)).text()).split('\n').filter((l) => l.startsWith('mqtt_liveness_frame_errors_total{'));
  t.comment(`frame errors counted: ${frameErrors.join(', ')}`);
});

// ---- hostile broker ----------------------------------------------------------------

/** A fake broker: answers each CONNECT with `answer(connectionIndex)`, chunk by chunk. */
async function fakeBroker(answer: (i: number, connect: Buffer) => Buffer[]): Promise<{ port: number; close(): Promise<void> }> {
  let i = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    const index = i++;
    let got = Buffer.alloc(0);
    let answered = false;
    s.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (answered || got.length < 2 || got.length < 2 + got[1]) return;
      answered = true;
      for (const chunk of answer(index, got)) if (!s.destroyed) s.write(chunk);
      s.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()); }),
  };
}

function brokerFrame(version: 4 | 5): Buffer {
  const kinds: Packet[] = [
    { cmd: 'publish', topic: `t/${int(9)}`, payload: randomBytes(int(300)), qos: pick([0, 1] as const), messageId: 1 + int(1000), retain: false, dup: false },
    { cmd: 'suback', messageId: 1 + int(1000), granted: [pick([0, 1, 2, 0x80])] },
    { cmd: 'puback', messageId: 1 + int(1000) },
    { cmd: 'pingresp' },
    { cmd: 'disconnect', ...(version === 5 ? { reasonCode: pick([0x00, 0x8e, 0x89]) } : {}) },
    { cmd: 'connack', sessionPresent: false, ...(version === 5 ? { reasonCode: 0, properties: { serverKeepAlive: 60 } } : { returnCode: 0 }) },
  ];
  return mqttPacket.generate(pick(kinds), { protocolVersion: version });
}

t.test('a hostile broker: 300 connections answered with mutated CONNACKs and frames', async (t) => {
  const n = 300;
  const fake = await fakeBroker((i, connect) => {
    const version = connect[8] === 5 ? 5 : 4; // protocol level byte of an MQTT CONNECT
    const connack = mqttPacket.generate({ cmd: 'connack', sessionPresent: false, ...(version === 5 ? { reasonCode: 0, properties: { serverKeepAlive: 60, userProperties: { a: 'b' } } } : { returnCode: 0 }) }, { protocolVersion: version });
    const frames = [i % 3 === 0 ? mutate(connack) : connack, ...Array.from({ length: int(6) }, () => (rnd() < 0.5 ? mutate(brokerFrame(version)) : brokerFrame(version)))];
    const stream = Buffer.concat(frames);
    const cut = int(stream.length + 1);
    return [stream.subarray(0, cut), stream.subarray(cut)];
  });
  // keepAlive.max 30: the relay rewrites every v5 CONNACK (Server Keep Alive 60 -> 30).
  const hostile = await startProxy(fake.port, { connectTimeout: 2, logLevel: 'warn', keepAlive: { max: 30 } });
  t.teardown(async () => { await hostile.stop(); await fake.close(); });
  const reasons = new Map<string, number>();
  for (let batch = 0; batch < n; batch += 20) {
    await Promise.all(Array.from({ length: Math.min(20, n - batch) }, async (_, k) => {
      const i = batch + k;
      const c = await RawClient.connect(hostile.port);
      c.write(connectFrame({ clientId: `victim-${i}`, keepalive: 600, protocolVersion: i % 2 ? 5 : 4 }));
      await c.until(() => c.closed, 5_000, 'close').catch(() => c.destroy());
      const e = await hostile.nextClose((ev) => ev.clientId === `victim-${i}`, 15_000);
      reasons.set(e.reason, (reasons.get(e.reason) ?? 0) + 1);
    }));
  }
  await eventually(() => hostile.app.proxy.connections.size === 0, 15_000, 'no connection left');
  t.equal(uncaught.length, 0, 'no uncaught exception');
  t.equal([...reasons.values()].reduce((a, b) => a + b, 0), n, `${n} connections ended: ${[...reasons].map(([k, v]) => `${k} ${v}`).join(', ')}`);
  t.ok([...reasons.keys()].every((r) => (REASONS as readonly string[]).includes(r)), 'every reason is in the fixed set');
});

t.test('regression: a v5 CONNACK whose user property has no value, with Server Keep Alive to rewrite', async (t) => {
  // mqtt-packet reads this CONNACK (the value comes out null) but its writer throws a
  // TypeError on it; the relay used to re-encode it to set Server Keep Alive, in a
  // socket 'data' handler, which ended the whole process.
  const props = Buffer.from([0x13, 0x00, 0x3c, 0x26, 0x00, 0x01, 0x6b, 0x00, 0x05]);
  const connack = Buffer.concat([Buffer.from([0x20, 3 + props.length, 0x00, 0x00, props.length]), props]);
  const fake = await fakeBroker(() => [connack]);
  const hostile = await startProxy(fake.port, { logLevel: 'warn', keepAlive: { max: 30 } });
  t.teardown(async () => { await hostile.stop(); await fake.close(); });
  const c = await RawClient.connect(hostile.port);
  c.write(connectFrame({ clientId: 'odd-connack', keepalive: 600, protocolVersion: 5 }));
  await c.waitForClose(10_000);
  t.ok(c.received.subarray(0, connack.length).equals(connack), 'the CONNACK it cannot read is passed on unchanged');
  const e = await hostile.nextClose((ev) => ev.clientId === 'odd-connack');
  t.equal(e.reason, 'broker_close');
  t.equal(uncaught.length, 0, 'no uncaught exception');
});
