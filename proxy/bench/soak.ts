/**
 * `npm run soak` (not in CI): mixed hostile and ordinary load against
 * Mosquitto through the proxy, run as shipped (bin -> tsx -> cli, its own
 * process), for a bounded time, printing the proxy process's memory, open
 * fds and handles at intervals and comparing the quiet state before and
 * after.
 *
 *   npm run soak -- [--minutes 5] [--interval 10] [--scale 1] [--json FILE]
 *
 * Load, every loop bounded in time (the run's end) and in count:
 * - pub/sub: 4 mqtt.js subscribers, 4 publishers, 100 msg/s x scale (QoS 0
 *   and 1); QoS 1 losses counted;
 * - churn: 10 connects/s x scale, each subscribing, publishing once and
 *   leaving with DISCONNECT or an abrupt close;
 * - frozen: raw clients that CONNECT with keep-alive 2 and go silent (the
 *   proxy ends them, keepalive_timeout), 20 x scale kept at any time;
 * - garbage: 5 connections/s x scale sending a CONNECT then mutated frames, or
 *   random bytes, or a 256 MB frame header;
 * - silent: 2 connections/s x scale that never send their CONNECT
 *   (connect_timeout, 3 s here);
 * - stalled: every 30 s a subscriber that stops reading under its topic's
 *   flood (send_stall after 3 s).
 *
 * Proxy numbers come from /proc/<pid>/status (VmRSS, VmHWM), /proc/<pid>/fd,
 * and its /metrics (heap, handles, open connections, ends by reason).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import mqtt, { type MqttClient } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import { freePort, ROOT, startMosquitto, waitForPort, type Service } from './lib/services.ts';
import { prng } from '../harness/prng.ts';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '5' },
    interval: { type: 'string', default: '10' },
    scale: { type: 'string', default: '1' },
    json: { type: 'string' },
  },
});
const MINUTES = Number(values.minutes);
const INTERVAL_S = Number(values.interval);
const SCALE = Number(values.scale);
if (!(MINUTES > 0 && MINUTES <= 24 * 60) || !(INTERVAL_S >= 1) || !(SCALE > 0 && SCALE <= 20)) {
  console.error('usage: soak [--minutes 0<m<=1440] [--interval s>=1] [--scale 0<x<=20] [--json FILE]');
  process.exit(2);
}
const HOST = '127.0.0.1';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- processes ------------------------------------------------------------------

interface ProxyProcess {
  proc: ChildProcess;
  pid: number;
  port: number;
  adminUrl: string;
  output(): string;
  stop(): Promise<void>;
}

async function startProxyProcess(broker: Service): Promise<ProxyProcess> {
  const port = await freePort(HOST);
  const admin = await freePort(HOST);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-soak-'));
  const config = path.join(dir, 'proxy.yaml');
  writeFileSync(config, [
    'connectTimeout: 3',
    'maxPacketSize: 1048576',
    'tcp:',
    '  sendTimeout: 3',
    'keepAlive:',
    '  grace: 1',
    '',
  ].join('\n'));
  const proc = spawn(process.execPath, [
    path.join(ROOT, 'proxy/bin/mqtt-liveness-proxy.js'),
    '--config', config,
    '--listen', `${HOST}:${port}`,
    '--upstream', `${broker.host}:${broker.port}`,
    '--admin', `${HOST}:${admin}`,
    '--broker', 'none',
    '--log-level', 'warn',
  ], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const add = (d: Buffer): void => { out = (out + d.toString()).slice(-20_000); };
  proc.stdout.on('data', add);
  proc.stderr.on('data', add);
  await waitForPort(HOST, port, 30_000, proc);
  await waitForPort(HOST, admin, 10_000, proc);
  return {
    proc,
    pid: proc.pid!,
    port,
    adminUrl: `http://${HOST}:${admin}`,
    output: () => out,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise<void>((r) => proc.once('exit', () => r()));
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 20_000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---- measurements -----------------------------------------------------------------

interface Sample {
  t: number;
  rssMb: number;
  hwmMb: number;
  heapMb: number;
  externalMb: number;
  fds: number;
  handles: number;
  sockets: number;
  timers: number;
  open: number;
  ends: Record<string, number>;
  frameErrors: number;
}

function statusMb(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

async function sample(p: ProxyProcess, t0: number): Promise<Sample> {
  const m = parseMetrics(await (await fetch(`${p.adminUrl}/metrics`, { signal: AbortSignal.timeout(5_000) })).text());
  const sum = (prefix: string): number => [...m].filter(([k]) => k.startsWith(prefix)).reduce((a, [, v]) => a + v, 0);
  const ends: Record<string, number> = {};
  for (const [k, v] of m) {
    const r = /^mqtt_liveness_disconnects_total\{reason="([^"]+)"\}$/.exec(k);
    if (r && v > 0) ends[r[1]] = v;
  }
  return {
    t: Math.round((performance.now() - t0) / 1000),
    rssMb: statusMb(p.pid, 'VmRSS'),
    hwmMb: statusMb(p.pid, 'VmHWM'),
    heapMb: (m.get('nodejs_heap_size_used_bytes') ?? NaN) / 1048576,
    externalMb: (m.get('nodejs_external_memory_bytes') ?? NaN) / 1048576,
    fds: readdirSync(`/proc/${p.pid}/fd`).length,
    handles: m.get('nodejs_active_handles_total') ?? NaN,
    sockets: m.get('nodejs_active_resources{type="TCPSocketWrap"}') ?? NaN,
    timers: m.get('nodejs_active_resources{type="Timeout"}') ?? NaN,
    open: m.get('mqtt_liveness_connections_open{transport="tcp"}') ?? NaN,
    ends,
    frameErrors: sum('mqtt_liveness_frame_errors_total{'),
  };
}

const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : '-');
function line(s: Sample, load: Counters): string {
  return [
    `${String(s.t).padStart(5)}s`,
    `rss ${f1(s.rssMb).padStart(6)} MB (hwm ${f1(s.hwmMb)})`,
    `heap ${f1(s.heapMb).padStart(5)} MB`,
    `ext ${f1(s.externalMb).padStart(5)} MB`,
    `fds ${String(s.fds).padStart(5)}`,
    `handles ${String(s.handles).padStart(5)} (sockets ${s.sockets}, timers ${s.timers})`,
    `open ${String(s.open).padStart(4)}`,
    `| msgs ${load.published}/${load.received} lost ${load.qos1Lost()}`,
    `churn ${load.churn} frozen ${load.frozen} garbage ${load.garbage} silent ${load.silent} stalled ${load.stalled}`,
  ].join('  ');
}

// ---- load -------------------------------------------------------------------------

class Counters {
  published = 0;
  received = 0;
  qos1Sent = new Set<string>();
  qos1Got = new Set<string>();
  churn = 0;
  frozen = 0;
  garbage = 0;
  silent = 0;
  stalled = 0;
  clientErrors = 0;
  qos1Lost(): number {
    let n = 0;
    for (const id of this.qos1Sent) if (!this.qos1Got.has(id)) n++;
    return n;
  }
}

const rnd = prng(0x50a4);
const int = (n: number): number => Math.floor(rnd() * n);

function connectBytes(clientId: string, keepalive: number, protocolVersion: 4 | 5 = 4): Buffer {
  return mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion, clean: true, clientId, keepalive }, { protocolVersion });
}

function mutated(): Buffer {
  const frames = [
    mqttPacket.generate({ cmd: 'publish', topic: 'soak/garbage', payload: Buffer.alloc(int(300), 1), qos: 0, retain: false, dup: false }),
    mqttPacket.generate({ cmd: 'subscribe', messageId: 1 + int(1000), subscriptions: [{ topic: 'soak/#', qos: 0 }] }),
    Buffer.from([0xc0, 0x00]),
  ];
  const b = Buffer.concat(frames.slice(0, 1 + int(3)));
  for (let k = 0; k < 1 + int(3); k++) {
    const at = int(b.length);
    if (rnd() < 0.7) b[at] ^= 1 << int(8);
    else b[at] = 0xff;
  }
  return b;
}

/** A raw socket; resolves once connected; never throws. */
function raw(port: number): Promise<net.Socket | null> {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port });
    s.once('connect', () => resolve(s));
    s.once('error', () => resolve(null));
    s.on('error', () => {});
  });
}

/** Run fn every periodMs until the end time, at most maxRuns times; never two at once beyond `parallel`. */
async function every(periodMs: number, endAt: number, maxRuns: number, parallel: number, fn: () => void | Promise<void>): Promise<void> {
  let runs = 0;
  let inFlight = 0;
  while (performance.now() < endAt && runs < maxRuns) {
    if (inFlight < parallel) {
      inFlight++;
      runs++;
      // Runs fail by design here (clients cut on purpose); each loop counts what matters inside fn.
      void Promise.resolve().then(fn).catch(() => {}).finally(() => { inFlight--; });
    }
    await sleep(periodMs);
  }
  while (inFlight > 0) await sleep(50);
}

async function runLoad(port: number, endAt: number, c: Counters): Promise<void> {
  const url = `mqtt://${HOST}:${port}`;
  const seconds = (endAt - performance.now()) / 1000;
  const opts = { reconnectPeriod: 500, connectTimeout: 5_000, reconnectOnConnackError: true } as const;
  const clients: MqttClient[] = [];
  const track = (cl: MqttClient): MqttClient => { cl.on('error', () => { c.clientErrors++; }); clients.push(cl); return cl; };

  // pub/sub
  for (let i = 0; i < 4; i++) {
    const sub = track(mqtt.connect(url, { ...opts, clientId: `soak-sub-${i}`, keepalive: 10, protocolVersion: i % 2 ? 5 : 4 }));
    sub.on('connect', () => sub.subscribe('soak/pub/#', { qos: 1 }));
    sub.on('message', (_t, payload, packet) => {
      c.received++;
      if (packet.qos === 1) c.qos1Got.add(`${i}:${payload.toString()}`);
    });
  }
  const pubs = Array.from({ length: 4 }, (_, i) => track(mqtt.connect(url, { ...opts, clientId: `soak-pub-${i}`, keepalive: 10 })));
  await Promise.all(clients.map((cl) => new Promise<void>((r) => (cl.connected ? r() : cl.once('connect', () => r())))));
  await sleep(500);
  let seq = 0;
  const pubLoop = every(10 / SCALE, endAt, Math.ceil(seconds * 100 * SCALE) + 10, 1, () => {
    const id = seq++;
    const qos = id % 4 === 0 ? 1 : 0;
    const p = pubs[id % pubs.length];
    if (!p.connected && qos === 0) return;
    p.publish(`soak/pub/${id % 16}`, String(id), { qos });
    c.published++;
    if (qos === 1) for (let s = 0; s < 4; s++) c.qos1Sent.add(`${s}:${id}`);
  });

  // churn
  const churnLoop = every(100 / SCALE, endAt, Math.ceil(seconds * 10 * SCALE) + 10, 50, async () => {
    const cl = mqtt.connect(url, { clientId: `soak-churn-${c.churn}`, reconnectPeriod: 0, connectTimeout: 5_000, protocolVersion: rnd() < 0.5 ? 5 : 4 });
    cl.on('error', () => { c.clientErrors++; });
    c.churn++;
    try {
      await new Promise<void>((resolve, reject) => { cl.once('connect', () => resolve()); cl.once('close', () => reject(new Error('closed'))); });
      await cl.subscribeAsync('soak/churn/#');
      await cl.publishAsync('soak/churn/x', 'hello');
    } finally {
      if (rnd() < 0.5) cl.end(true);
      else cl.stream.destroy();
    }
  });

  // frozen: CONNECT with keep-alive 2 and silence; the proxy ends them.
  const frozenLoop = every(250 / SCALE, endAt, Math.ceil(seconds * 4 * SCALE) + 10, Math.ceil(20 * SCALE), async () => {
    const s = await raw(port);
    if (!s) return;
    c.frozen++;
    s.write(connectBytes(`soak-frozen-${c.frozen}`, 2, rnd() < 0.5 ? 5 : 4));
    await new Promise<void>((r) => { s.once('close', () => r()); setTimeout(() => { s.destroy(); r(); }, 15_000); });
  });

  // garbage
  const garbageLoop = every(200 / SCALE, endAt, Math.ceil(seconds * 5 * SCALE) + 10, 20, async () => {
    const s = await raw(port);
    if (!s) return;
    c.garbage++;
    const kind = int(3);
    if (kind === 0) s.write(Buffer.concat([connectBytes(`soak-garbage-${c.garbage}`, 30), mutated()]));
    else if (kind === 1) s.write(Buffer.from(Array.from({ length: 1 + int(200) }, () => int(256))));
    else s.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]));
    await new Promise<void>((r) => { s.once('close', () => r()); setTimeout(() => { s.destroy(); r(); }, 2_000); });
  });

  // silent: never send the CONNECT.
  const silentLoop = every(500 / SCALE, endAt, Math.ceil(seconds * 2 * SCALE) + 10, 20, async () => {
    const s = await raw(port);
    if (!s) return;
    c.silent++;
    await new Promise<void>((r) => { s.once('close', () => r()); setTimeout(() => { s.destroy(); r(); }, 10_000); });
  });

  // stalled: a subscriber that stops reading under a flood, every 30 s.
  const stallLoop = every(30_000, endAt, Math.ceil(seconds / 30) + 1, 1, async () => {
    const s = await raw(port);
    if (!s) return;
    c.stalled++;
    const topic = `soak/stall/${c.stalled}`;
    s.write(connectBytes(`soak-stalled-${c.stalled}`, 60));
    s.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 0 }] }));
    await sleep(300);
    s.pause();
    const flooder = mqtt.connect(url, { clientId: `soak-flooder-${c.stalled}`, reconnectPeriod: 0 });
    flooder.on('error', () => {});
    await new Promise<void>((r) => { flooder.once('connect', () => r()); setTimeout(r, 5_000); });
    const payload = Buffer.alloc(1024, 0x66);
    const stopAt = Math.min(endAt, performance.now() + 10_000);
    let n = 0;
    while (!s.destroyed && performance.now() < stopAt && n < 200_000) {
      if (flooder.stream.writableLength < 256 * 1024) { for (let k = 0; k < 20; k++) flooder.publish(topic, payload, { qos: 0 }); n += 20; }
      await sleep(1);
      if (s.readableEnded || (s as net.Socket & { closed?: boolean }).closed) break;
    }
    flooder.end(true);
    s.destroy();
  });

  await Promise.all([pubLoop, churnLoop, frozenLoop, garbageLoop, silentLoop, stallLoop]);
  // QoS 1 stragglers.
  const settleUntil = performance.now() + 10_000;
  while (c.qos1Lost() > 0 && performance.now() < settleUntil) await sleep(200);
  for (const cl of clients) cl.end(true);
}

// ---- main -------------------------------------------------------------------------

async function main(): Promise<void> {
  const broker = await startMosquitto(HOST);
  const proxy = await startProxyProcess(broker);
  const stopAll = async (): Promise<void> => { await proxy.stop(); await broker.stop(); };
  process.once('SIGINT', () => { void stopAll().then(() => process.exit(130)); });
  const t0 = performance.now();
  const samples: Sample[] = [];
  const counters = new Counters();
  console.log(`soak: ${MINUTES} min, scale ${SCALE}; proxy pid ${proxy.pid} on ${HOST}:${proxy.port}, Mosquitto pid ${broker.pid} on ${broker.port} (${broker.info.raised})`);

  await sleep(1_000);
  const baseline = await sample(proxy, t0);
  samples.push(baseline);
  console.log(`baseline  ${line(baseline, counters)}`);

  const endAt = performance.now() + MINUTES * 60_000;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      await sleep(INTERVAL_S * 1000);
      if (!sampling) break;
      try {
        const s = await sample(proxy, t0);
        samples.push(s);
        console.log(`load      ${line(s, counters)}`);
      } catch (err) {
        console.log(`sample failed: ${(err as Error).message}`);
      }
      if (proxy.proc.exitCode !== null || proxy.proc.signalCode !== null) {
        console.log(`the proxy exited (${proxy.proc.exitCode ?? proxy.proc.signalCode}):\n${proxy.output()}`);
        break;
      }
    }
  })();
  await runLoad(proxy.port, endAt, counters);
  sampling = false;
  await sampler;

  // Quiet again: every load connection gone; wait for the proxy to let go of them.
  const quietUntil = performance.now() + 30_000;
  let after = await sample(proxy, t0);
  while (after.open > 0 && performance.now() < quietUntil) {
    await sleep(1_000);
    after = await sample(proxy, t0);
  }
  await sleep(2_000);
  after = await sample(proxy, t0);
  samples.push(after);
  console.log(`quiet     ${line(after, counters)}`);

  const crashed = proxy.proc.exitCode !== null || proxy.proc.signalCode !== null;
  const peakRss = Math.max(...samples.map((s) => s.rssMb));
  const peakHeap = Math.max(...samples.map((s) => s.heapMb));
  console.log('');
  console.log(`proxy crashed: ${crashed ? 'YES' : 'no'}`);
  console.log(`rss  ${f1(baseline.rssMb)} -> peak ${f1(peakRss)} -> quiet ${f1(after.rssMb)} MB (VmHWM ${f1(after.hwmMb)})`);
  console.log(`heap ${f1(baseline.heapMb)} -> peak ${f1(peakHeap)} -> quiet ${f1(after.heapMb)} MB`);
  console.log(`fds ${baseline.fds} -> ${after.fds}; handles ${baseline.handles} -> ${after.handles}; sockets ${baseline.sockets} -> ${after.sockets}; timers ${baseline.timers} -> ${after.timers}; open connections ${baseline.open} -> ${after.open}`);
  console.log(`connection ends by reason: ${Object.entries(after.ends).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  console.log(`frame errors: ${after.frameErrors}; messages published ${counters.published}, received ${counters.received}, QoS 1 deliveries lost ${counters.qos1Lost()} of ${counters.qos1Sent.size}; client-side errors ${counters.clientErrors}`);
  const leaked = after.fds > baseline.fds + 2 || after.sockets > baseline.sockets || after.open > 0;
  console.log(`leak check: ${leaked ? 'SUSPECT (fds, sockets or open connections above the baseline)' : 'ok (fds, sockets and connections back to the baseline)'}`);
  if (values.json) writeFileSync(values.json, JSON.stringify({ minutes: MINUTES, scale: SCALE, crashed, baseline, after, samples, counters: { ...counters, qos1Sent: counters.qos1Sent.size, qos1Got: counters.qos1Got.size, qos1Lost: counters.qos1Lost() } }, null, 2));
  await stopAll();
  process.exitCode = crashed || leaked || counters.qos1Lost() > 0 ? 1 : 0;
}

await main();
