/**
 * The broker killed and restarted under load.
 *
 * Mosquitto with persistence (one directory kept across restarts, saved on
 * every change) is stopped and restarted on the same port 20 times with
 * SIGTERM, then killed 5 more times with SIGKILL, while mqtt.js clients with
 * auto-reconnect (reconnectPeriod 200 ms) work through the proxy:
 *
 * - the proxy never throws, and leaks no socket, timer or fd: proxy
 *   connections, TCPSocketWrap/Timeout handles and /proc/self/fd are counted
 *   in the same steady state before and after;
 * - every client is connected again after the last restart;
 * - MQTT 5 clients are sent DISCONNECT 0x89 each time the broker goes (the
 *   relay says so when the broker closes without a DISCONNECT and no longer
 *   accepts connections), checked on the wire with raw v5 clients; after a
 *   SIGKILL too, which needed upstream-check.ts to wait for the reset a dying
 *   listener sends to a probe it still accepted. (It used to be 0x88, Server
 *   unavailable, a CONNACK-only code that mqtt.js rejects with "Invalid
 *   disconnect reason code"; asserted never to happen now.)
 * - QoS 1 messages published across the restarts (mqtt.js keeps them while
 *   offline) all reach the persistent subscribers (v5 with Session Expiry,
 *   v3.1.1 with clean: false).
 *
 * Why SIGTERM for the 20: Mosquitto 2.0.11 sends no DISCONNECT on SIGTERM
 * either (measured), so to the relay it is the same "broker gone without a
 * word" as a crash, and it saves its database on the way out, so a QoS 1
 * message it acknowledged cannot be lost by the broker: a loss would be the
 * proxy's. SIGKILL (the 5 extra rounds) is the real crash: sockets reset by
 * the kernel, and Mosquitto may lose what it acknowledged since its last
 * autosave, so there the messages are counted, not required.
 *
 * While the broker is down the proxy closes a new connection without a
 * CONNACK (brokerUnreachable: close, the default), so mqtt.js keeps retrying
 * as it would against Mosquitto directly (ECONNREFUSED). The clients still set
 * reconnectOnConnackError, harmless now.
 */
import t from 'tap';
import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { freePort, startMosquitto, type Mosquitto } from './helpers/mosquitto.ts';
import { startProxy } from './helpers/proxy.ts';
import { connectFrame, eventually, RawClient, sleep } from './helpers/clients.ts';
import { collectUncaught } from './helpers/runtime.ts';

const SIGTERM_ROUNDS = Number(process.env.MLP_CHAOS_ROUNDS ?? 20);
const SIGKILL_ROUNDS = 5;
const LOAD_CLIENTS = 10;

const uncaught = collectUncaught(t);

const port = await freePort();
const persistence = mkdtempSync(path.join(os.tmpdir(), 'mlp-chaos-db-'));
chmodSync(persistence, 0o777); // Mosquitto started as root writes as its own user
const brokerConfig = [
  'persistence true',
  `persistence_location ${persistence}/`,
  'autosave_interval 1',
  'autosave_on_changes true',
  'max_queued_messages 100000',
];
let broker: Mosquitto = await startMosquitto({ port, extraConfig: brokerConfig });
const proxy = await startProxy(port, { logLevel: 'warn', connectTimeout: 5 });
t.teardown(async () => {
  await proxy.stop();
  await broker.stop();
  rmSync(persistence, { recursive: true, force: true });
});

async function restart(signal: 'SIGTERM' | 'SIGKILL', downMs: number): Promise<number> {
  const old = broker;
  const exited = new Promise<void>((resolve) => old.proc.once('exit', () => resolve()));
  const started = performance.now();
  old.proc.kill(signal);
  const guard = setTimeout(() => old.proc.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(guard);
  const stoppedAfter = performance.now() - started;
  await old.stop(); // its config and log directory
  await sleep(downMs);
  broker = await startMosquitto({ port, extraConfig: brokerConfig });
  return stoppedAfter;
}

/** Handles and fds of this process, in a steady state. */
function resources(): { tcp: number; timeouts: number; fds: number; connections: number; all: Record<string, number> } {
  const all: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) all[r] = (all[r] ?? 0) + 1;
  return {
    tcp: all.TCPSocketWrap ?? 0,
    timeouts: all.Timeout ?? 0,
    fds: readdirSync('/proc/self/fd').length,
    connections: proxy.app.proxy.connections.size,
    all,
  };
}

interface Tracked {
  client: MqttClient;
  name: string;
  v5: boolean;
  connects: number;
  disconnects: number[];
  errors: number;
  invalidDisconnect: number;
}

function track(name: string, client: MqttClient, v5: boolean): Tracked {
  const tr: Tracked = { client, name, v5, connects: 0, disconnects: [], errors: 0, invalidDisconnect: 0 };
  client.on('connect', () => { tr.connects++; });
  client.on('disconnect', (packet) => { tr.disconnects.push(packet.reasonCode ?? 0); });
  client.on('error', (err) => {
    // Refusals while the broker is down; "Invalid disconnect reason code" must never come (it did for 0x88).
    if (/Invalid disconnect reason code/.test(err.message)) tr.invalidDisconnect++;
    else tr.errors++;
  });
  return tr;
}

t.test(`broker stopped ${SIGTERM_ROUNDS} times (SIGTERM) and killed ${SIGKILL_ROUNDS} times (SIGKILL) under load`, async (t) => {
  const opts = { reconnectPeriod: 200, connectTimeout: 3_000, keepalive: 10, reconnectOnConnackError: true } as const;

  // Load: 10 clients (half v5), each publishing QoS 0 every 100 ms to its neighbour.
  const load: Tracked[] = [];
  const loadReceived = new Map<string, number>();
  for (let i = 0; i < LOAD_CLIENTS; i++) {
    const v5 = i % 2 === 1;
    const name = `load-${i}`;
    const client = mqtt.connect(proxy.url, { ...opts, clientId: name, protocolVersion: v5 ? 5 : 4, clean: true, queueQoSZero: false });
    const tr = track(name, client, v5);
    client.on('connect', () => { client.subscribe(`chaos/load/${(i + 1) % LOAD_CLIENTS}`, { qos: 0 }); });
    client.on('message', () => { loadReceived.set(name, (loadReceived.get(name) ?? 0) + 1); });
    load.push(tr);
  }
  const ticker = setInterval(() => {
    for (const [i, tr] of load.entries()) if (tr.client.connected) tr.client.publish(`chaos/load/${i}`, 'x', { qos: 0 });
  }, 100);
  t.teardown(() => clearInterval(ticker));

  // Persistent sessions: a v5 and a v3.1.1 subscriber, and a publisher that keeps QoS 1 while offline.
  const got = { v5: new Set<number>(), v4: new Set<number>() };
  const duplicates = { v5: 0, v4: 0 };
  const sub5 = track('sub-v5', mqtt.connect(proxy.url, { ...opts, clientId: 'chaos-sub-v5', protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 3600 } }), true);
  const sub4 = track('sub-v4', mqtt.connect(proxy.url, { ...opts, clientId: 'chaos-sub-v4', protocolVersion: 4, clean: false }), false);
  for (const [key, sub] of [['v5', sub5], ['v4', sub4]] as const) {
    sub.client.on('message', (_topic, payload) => {
      const id = Number(payload.toString());
      if (got[key].has(id)) duplicates[key]++;
      got[key].add(id);
    });
  }
  const pub = track('publisher', mqtt.connect(proxy.url, { ...opts, clientId: 'chaos-pub', protocolVersion: 4, clean: false }), false);
  const everyone = [...load, sub5, sub4, pub];
  t.teardown(() => { for (const tr of everyone) tr.client.end(true); });

  await eventually(() => everyone.every((tr) => tr.client.connected), 20_000, 'every client connected');
  await Promise.all([sub5.client.subscribeAsync('chaos/q1', { qos: 1 }), sub4.client.subscribeAsync('chaos/q1', { qos: 1 })]);

  let nextId = 0;
  let publishing = true;
  const pubTicker = setInterval(() => { if (publishing) pub.client.publish('chaos/q1', String(nextId++), { qos: 1 }); }, 50);
  t.teardown(() => clearInterval(pubTicker));

  // The steady state to compare against: everyone connected, load running.
  await sleep(1_000);
  const before = resources();

  const stopTimes: number[] = [];
  /** What raw v5 watchers received after their CONNACK when the broker went, hex -> count. */
  const watcherTails = new Map<string, number>();
  const perRound: string[] = [];
  const reconnectTimes: number[] = [];
  let idsBeforeKills = -1;
  const rounds = SIGTERM_ROUNDS + SIGKILL_ROUNDS;
  const deadline = Date.now() + 150_000;
  for (let round = 0; round < rounds && Date.now() < deadline; round++) {
    const signal = round < SIGTERM_ROUNDS ? 'SIGTERM' : 'SIGKILL';
    if (round === SIGTERM_ROUNDS) idsBeforeKills = nextId;
    const roundStart = Date.now();
    // Raw MQTT 5 watchers, to see on the wire what the relay sends when the broker goes.
    const watchers = await Promise.all([0, 1].map(async (k) => {
      const w = await RawClient.connect(proxy.port);
      w.write(connectFrame({ clientId: `watcher-${k}`, keepalive: 30, protocolVersion: 5 }));
      await w.until(() => w.received.length >= 5, 10_000, 'CONNACK');
      return { w, connackLength: w.received.length, ok: w.received[3] === 0 };
    }));
    await sleep(400 + (round % 3) * 200); // load runs meanwhile
    const connectsBefore = everyone.map((tr) => tr.connects);
    const restarted = restart(signal, 300);
    await Promise.all(watchers.map(({ w }) => w.waitForClose(10_000).catch(() => w.destroy())));
    for (const { w, connackLength, ok } of watchers) {
      const after = [...w.received.subarray(connackLength)].map((b) => b.toString(16).padStart(2, '0')).join('');
      if (ok) watcherTails.set(after, (watcherTails.get(after) ?? 0) + 1);
      const e = await proxy.nextClose((ev) => ev.remotePort === w.localPort && ev.startedAt >= roundStart, 5_000).catch(() => null);
      if (ok) perRound.push(`${round}:${signal}:${after || '-'}:${e?.reason}:${e?.detail}`);
    }
    stopTimes.push(await restarted);
    const upAt = performance.now();
    try {
      await eventually(() => everyone.every((tr, k) => tr.connects > connectsBefore[k] && tr.client.connected), 20_000, `round ${round}: every client reconnected`);
    } catch (err) {
      const state = everyone.map((tr, k) => `${tr.name} connected=${tr.client.connected} connects ${connectsBefore[k]}->${tr.connects} errors ${tr.errors}`).join('; ');
      throw new Error(`${(err as Error).message}: ${state}\nbroker log tail:\n${broker.log().split('\n').slice(-15).join('\n')}`, { cause: err });
    }
    reconnectTimes.push(performance.now() - upAt);
  }
  const roundsDone = stopTimes.length;
  if (idsBeforeKills < 0) idsBeforeKills = nextId;

  // Publish a little more, then stop and let everything arrive.
  await sleep(1_000);
  publishing = false;
  const published = nextId;
  await eventually(() => got.v5.size >= published && got.v4.size >= published, 30_000, 'QoS 1 messages delivered').catch(() => {});
  await sleep(1_000);
  const after = resources();

  const missing = (set: Set<number>, from: number, to: number): number[] => {
    const m: number[] = [];
    for (let id = from; id < to; id++) if (!set.has(id)) m.push(id);
    return m;
  };

  t.equal(roundsDone, rounds, `${roundsDone} restarts (${SIGTERM_ROUNDS} SIGTERM, ${SIGKILL_ROUNDS} SIGKILL)`);
  t.equal(uncaught.length, 0, `no uncaught exception or rejection${uncaught.length ? `: ${String(uncaught[0])}` : ''}`);
  t.ok(everyone.every((tr) => tr.client.connected), 'every client is connected after the last restart');
  t.same(everyone.filter((tr) => tr.connects < roundsDone + 1).map((tr) => `${tr.name}: ${tr.connects}`), [], 'every client reconnected after every restart');

  const odd = perRound.filter((r) => !r.includes(':e00189:'));
  if (odd.length) t.comment(`watchers without DISCONNECT 0x89 (round:signal:bytes:reason:detail): ${odd.join(' ')}`);
  // DISCONNECT 0x89 (server busy) for MQTT 5 clients, once per broker death.
  t.same([...watcherTails], [['e00189', roundsDone * 2]], `both raw v5 watchers received exactly DISCONNECT 0x89 (e0 01 89) at each of the ${roundsDone} broker deaths`);
  const v5Clients = everyone.filter((tr) => tr.v5);
  const told = v5Clients.map((tr) => tr.disconnects.filter((r) => r === 0x89).length);
  t.ok(told.every((n) => n >= roundsDone * 0.9), `mqtt.js v5 clients got it too: ${told.join(', ')} of ${roundsDone} broker deaths`);
  t.same(everyone.map((tr) => tr.invalidDisconnect), everyone.map(() => 0), 'mqtt.js never saw "Invalid disconnect reason code"');
  const other = everyone.flatMap((tr) => tr.disconnects.filter((r) => r !== 0x89).map((r) => `${tr.name}: 0x${r.toString(16)}`));
  t.same(other, [], 'no other DISCONNECT reason');
  t.ok(everyone.filter((tr) => !tr.v5).every((tr) => tr.disconnects.length === 0 && tr.invalidDisconnect === 0), 'MQTT 3.1.1 clients are not sent a DISCONNECT');

  // QoS 1 to persistent sessions.
  const lostTerm = { v5: missing(got.v5, 0, idsBeforeKills), v4: missing(got.v4, 0, idsBeforeKills) };
  const lostKill = { v5: missing(got.v5, idsBeforeKills, published), v4: missing(got.v4, idsBeforeKills, published) };
  t.same(lostTerm.v5, [], `v5 persistent subscriber: all ${idsBeforeKills} QoS 1 messages of the SIGTERM rounds (${duplicates.v5} duplicates overall)`);
  t.same(lostTerm.v4, [], `v3.1.1 persistent subscriber: all ${idsBeforeKills} QoS 1 messages of the SIGTERM rounds (${duplicates.v4} duplicates overall)`);
  t.comment(`SIGKILL rounds: ${published - idsBeforeKills} QoS 1 messages, missing v5 ${lostKill.v5.length} [${lostKill.v5.slice(0, 10).join(',')}], v3.1.1 ${lostKill.v4.length} [${lostKill.v4.slice(0, 10).join(',')}] (Mosquitto may lose what it acknowledged since its last autosave)`);

  // Leaks: the same steady state as before.
  t.equal(after.connections, before.connections, `proxy connections ${before.connections} -> ${after.connections}`);
  t.equal(after.tcp, before.tcp, `TCPSocketWrap handles ${before.tcp} -> ${after.tcp}`);
  t.ok(after.timeouts <= before.timeouts + 2, `Timeout handles ${before.timeouts} -> ${after.timeouts}`);
  t.ok(after.fds <= before.fds + 2, `open fds ${before.fds} -> ${after.fds}`);
  t.comment(`resources before ${JSON.stringify(before.all)}, after ${JSON.stringify(after.all)}`);
  const sorted = [...reconnectTimes].sort((a, b) => a - b);
  t.comment(`broker exit after the signal: max ${Math.round(Math.max(...stopTimes))} ms; everyone reconnected after restart: median ${Math.round(sorted[Math.floor(sorted.length / 2)])} ms, max ${Math.round(sorted[sorted.length - 1])} ms`);
  t.comment(`refusals seen by clients while the broker was down: ${everyone.reduce((a, tr) => a + tr.errors, 0)}; load messages received: ${[...loadReceived.values()].reduce((a, b) => a + b, 0)}`);
  const reasons = new Map<string, number>();
  for (const e of proxy.closes) reasons.set(e.reason, (reasons.get(e.reason) ?? 0) + 1);
  t.comment(`connection ends at the proxy: ${[...reasons].map(([k, n]) => `${k} ${n}`).join(', ')}`);

  // And every connection is released once the clients go.
  for (const tr of everyone) tr.client.end(true);
  await eventually(() => proxy.app.proxy.connections.size === 0, 15_000, 'no connection left');
  t.equal(proxy.app.proxy.connections.size, 0, 'the proxy holds no connection once the clients are gone');
});
