/**
 * `npm run bench:detect` (root): time from a pulled cable to the Will, for
 * Mosquitto directly and through the proxy, keep-alive 10 and 60, MQTT 3.1.1
 * and 5, plus (keep-alive 60) a subscriber that is being sent data when the
 * cable goes. Each scenario gets its own network namespace, veth pair, broker
 * and (for the proxy) proxy process, and all run side by side.
 *
 * Method: the client connects with a Will; 3 s after its last packet the
 * cable is pulled (nftables drops every frame on both veth ends); a watcher on
 * the broker's loopback port times the Will. Through the proxy, its verdict
 * (time, reason, the client's silence) comes from its webhook event, so the
 * result file holds the whole timeline: last packet, pull, verdict, Will.
 *
 *   npm run bench:detect -- [--keep-alive 10 --keep-alive 60] [--timeout 150] [--out FILE]
 * A progress line every 10 s; results in FILE (default bench-results/detect.json).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import mqtt from 'mqtt';
import { createCable, NETNS_CLIENT, waitForEvent, type Cable } from '../harness/netns.ts';
import { freePort, startMosquitto, type Mosquitto } from '../harness/mosquitto.ts';
import { waitForPort } from '../src/net/tcp-probe.ts';
import { PACKAGE_ROOT } from '../src/package.ts';

type Traffic = 'idle' | 'receiving';
interface Scenario { path: 'direct' | 'proxy'; keepAlive: number; protocolVersion: 4 | 5; traffic: Traffic }
/** Wall-clock times in ms since the epoch; null where not applicable or not reached. */
interface Timeline { lastPacketAt: number | null; pulledAt: number | null; verdictAt: number | null; willAt: number | null }
interface Verdict { reason: string; detail: string | null; silenceSeconds: number | null; advantageSeconds: number | null }
interface Result extends Scenario { willAfterMs: number | null; verdictAfterMs: number | null; verdict: Verdict | null; timeline: Timeline; error?: string }

const { values } = parseArgs({ options: {
  'keep-alive': { type: 'string', multiple: true },
  timeout: { type: 'string' },
  out: { type: 'string' },
} });
const keepAlives = (values['keep-alive'] ?? ['10', '60']).map(Number);
const timeoutMs = Number(values.timeout ?? 150) * 1000;
const outFile = path.resolve(values.out ?? path.join(PACKAGE_ROOT, 'bench-results', 'detect.json'));
const PULL_AFTER_LAST_PACKET_MS = 3_000;
const FEED_INTERVAL_MS = 200;
const PROGRESS_EVERY_MS = 10_000;

const label = (s: Scenario) =>
  `${s.path === 'direct' ? 'Mosquitto alone' : 'through the proxy'}, keep-alive ${s.keepAlive} s, MQTT ${s.protocolVersion === 5 ? '5' : '3.1.1'}, ${s.traffic}`;
const status = new Map<number, string>();

/** Receives the proxies' verdict events (webhook POSTs), keyed by client id. */
function startVerdictSink(): { server: Server; verdicts: Map<string, Verdict & { endedAt: string }>; ready: Promise<number> } {
  const verdicts = new Map<string, Verdict & { endedAt: string }>();
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => { body += c.toString(); });
    req.on('end', () => {
      try {
        const e = JSON.parse(body) as Verdict & { clientId: string; endedAt: string; type: string };
        if (e.type === 'verdict') verdicts.set(e.clientId, e);
      } catch { /* not ours */ }
      res.writeHead(204).end();
    });
  });
  server.listen(0, '127.0.0.1');
  const ready = once(server, 'listening').then(() => (server.address() as { port: number }).port);
  return { server, verdicts, ready };
}

async function runScenario(s: Scenario, index: number, sinkPort: number, verdicts: Map<string, Verdict & { endedAt: string }>): Promise<Result> {
  let cable: Cable | undefined;
  let broker: Mosquitto | undefined;
  let proxy: ChildProcess | undefined;
  let device: ChildProcess | undefined;
  let watcher: mqtt.MqttClient | undefined;
  let feeding: NodeJS.Timeout | undefined;
  const timeline: Timeline = { lastPacketAt: null, pulledAt: null, verdictAt: null, willAt: null };
  const clientId = `detect-${index}`;
  try {
    status.set(index, 'setting up');
    cable = await createCable(`det${index}`);
    const brokerPort = await freePort();
    // Direct: the broker itself listens where the namespace can reach it.
    broker = await startMosquitto({ port: brokerPort, extraConfig: s.path === 'direct' ? [`listener ${brokerPort} ${cable.hostAddress}`] : [] });
    let port = brokerPort;
    if (s.path === 'proxy') {
      port = await freePort(cable.hostAddress);
      const config = path.join(tmpdir(), `mlp-detect-${process.pid}-${index}.yaml`);
      writeFileSync(config, `events:\n  webhook: http://127.0.0.1:${sinkPort}/\n  types: [verdict]\n`);
      proxy = spawn(process.execPath, [path.join(PACKAGE_ROOT, 'proxy/bin/mqtt-liveness-proxy.js'), '--config', config, '--listen', `${cable.hostAddress}:${port}`, '--upstream', `127.0.0.1:${brokerPort}`, '--admin', '127.0.0.1:0', '--broker', 'none', '--log-level', 'warn'], { stdio: 'ignore' });
      await waitForPort({ host: cable.hostAddress, port }, 15_000);
    }
    watcher = await mqtt.connectAsync(`mqtt://127.0.0.1:${brokerPort}`, { reconnectPeriod: 0 });
    const topic = `detect/${index}`;
    await watcher.subscribeAsync(topic, { qos: 1 });
    const feed = `detect/feed/${index}`;
    device = cable.exec(process.execPath, ['--import', 'tsx', NETNS_CLIENT, JSON.stringify({
      host: cable.hostAddress, port, clientId, protocolVersion: s.protocolVersion, keepalive: s.keepAlive,
      will: { topic, payload: 'lost', qos: 1 },
      ...(s.traffic === 'receiving' ? { subscribe: feed } : {}),
    })], { cwd: PACKAGE_ROOT });
    status.set(index, 'connecting');
    await waitForEvent(device, 'connected', 30_000);
    // The client's last packet: its CONNECT (or SUBSCRIBE), answered just now.
    const lastPacketAt = Date.now();
    timeline.lastPacketAt = lastPacketAt;
    if (s.traffic === 'receiving') {
      // Messages keep flowing to the device, so sent data is in flight when the cable goes.
      feeding = setInterval(() => watcher!.publish(feed, 'tick', { qos: 0 }), FEED_INTERVAL_MS);
      await waitForEvent(device, 'message', 10_000);
    }
    status.set(index, 'waiting to pull');
    await new Promise((r) => setTimeout(r, Math.max(0, lastPacketAt + PULL_AFTER_LAST_PACKET_MS - Date.now())));
    const will = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no Will within ${timeoutMs / 1000} s`)), timeoutMs);
      watcher!.on('message', (t) => { if (t === topic) { clearTimeout(timer); resolve(Date.now()); } });
    });
    await cable.pull();
    timeline.pulledAt = Date.now();
    status.set(index, 'pulled, waiting for the Will');
    timeline.willAt = await will;
    clearInterval(feeding);
    status.set(index, `Will after ${((timeline.willAt - timeline.pulledAt) / 1000).toFixed(1)} s`);
    let verdict: Verdict | null = null;
    if (s.path === 'proxy') {
      // The webhook POST follows the verdict off the relay's call stack; give it a moment.
      for (let i = 0; i < 50 && !verdicts.has(clientId); i++) await new Promise((r) => setTimeout(r, 100));
      const e = verdicts.get(clientId);
      if (e) {
        verdict = { reason: e.reason, detail: e.detail, silenceSeconds: e.silenceSeconds, advantageSeconds: e.advantageSeconds };
        timeline.verdictAt = Date.parse(e.endedAt);
        // The proxy saw the client's last byte silenceSeconds before its verdict.
        if (e.silenceSeconds !== null) timeline.lastPacketAt = timeline.verdictAt - e.silenceSeconds * 1000;
      }
    }
    return {
      ...s, timeline, verdict,
      willAfterMs: timeline.willAt - timeline.pulledAt,
      verdictAfterMs: timeline.verdictAt === null ? null : timeline.verdictAt - timeline.pulledAt,
    };
  } catch (err) {
    status.set(index, `failed: ${(err as Error).message}`);
    return { ...s, timeline, verdict: null, willAfterMs: null, verdictAfterMs: null, error: (err as Error).message };
  } finally {
    clearInterval(feeding);
    device?.kill('SIGKILL');
    watcher?.end(true);
    proxy?.kill('SIGTERM');
    await cable?.destroy();
    await broker?.stop();
  }
}

if (process.getuid?.() !== 0) {
  console.error('bench:detect needs root (network namespaces and nftables).');
  process.exit(2);
}
const scenarios: Scenario[] = [];
for (const keepAlive of keepAlives) {
  for (const protocolVersion of [4, 5] as const) for (const p of ['direct', 'proxy'] as const) scenarios.push({ path: p, keepAlive, protocolVersion, traffic: 'idle' });
}
const busiest = Math.max(...keepAlives);
for (const protocolVersion of [4, 5] as const) for (const p of ['direct', 'proxy'] as const) scenarios.push({ path: p, keepAlive: busiest, protocolVersion, traffic: 'receiving' });

// Each cable registers a process exit hook (cleanup of a crashed run).
process.setMaxListeners(scenarios.length * 2 + 10);
const sink = startVerdictSink();
const sinkPort = await sink.ready;
const startedAt = Date.now();
console.log(`Pulling ${scenarios.length} cables side by side, ${PULL_AFTER_LAST_PACKET_MS / 1000} s after each client's last packet (this takes about 1.5 x the largest keep-alive, ${Math.round(busiest * 1.5 + 15)} s); a progress line every ${PROGRESS_EVERY_MS / 1000} s.`);
const progress = setInterval(() => {
  const elapsed = Math.round((Date.now() - startedAt) / 1000);
  const done = [...status.values()].filter((st) => st.startsWith('Will') || st.startsWith('failed')).length;
  const waiting = new Map<string, number>();
  for (let i = 0; i < scenarios.length; i++) {
    const st = status.get(i) ?? 'starting';
    if (!st.startsWith('Will') && !st.startsWith('failed')) waiting.set(st, (waiting.get(st) ?? 0) + 1);
  }
  console.log(`[${elapsed} s] ${done}/${scenarios.length} done; ${[...waiting].map(([st, n]) => `${n} ${st}`).join(', ') || 'finishing'}`);
}, PROGRESS_EVERY_MS);
const results = await Promise.all(scenarios.map(async (s, i) => {
  const r = await runScenario(s, i, sinkPort, sink.verdicts);
  console.log(`  ${label(s)}: ${r.willAfterMs === null ? `failed: ${r.error}` : `Will ${(r.willAfterMs / 1000).toFixed(1)} s after the pull${r.verdict ? ` (verdict ${r.verdict.reason} at ${((r.verdictAfterMs ?? 0) / 1000).toFixed(1)} s)` : ''}`}`);
  return r;
}));
clearInterval(progress);
sink.server.close();

const rows = results.map((r) => ({
  path: r.path === 'direct' ? 'Mosquitto alone' : 'through the proxy',
  protocol: r.protocolVersion === 5 ? '5' : '3.1.1',
  keepAlive: `${r.keepAlive} s`,
  traffic: r.traffic,
  verdict: r.verdict ? `${r.verdict.reason} ${((r.verdictAfterMs ?? 0) / 1000).toFixed(1)} s` : '',
  willAfterPull: r.willAfterMs === null ? `failed: ${r.error}` : `${(r.willAfterMs / 1000).toFixed(1)} s`,
}));
console.table(rows);
mkdirSync(path.dirname(outFile), { recursive: true });
let mosquittoVersion = 'unknown';
try { mosquittoVersion = /Version: (\S+)/.exec(readFileSync('/var/lib/dpkg/status', 'utf8').split('\n\n').find((p) => p.startsWith('Package: mosquitto\n')) ?? '')?.[1] ?? 'unknown'; } catch { /* not Debian */ }
writeFileSync(outFile, `${JSON.stringify({
  date: new Date(startedAt).toISOString(),
  command: `npm run bench:detect${values.out ? ` -- --out ${values.out}` : ''}`,
  mosquitto: mosquittoVersion,
  settings: { pullAfterLastPacketMs: PULL_AFTER_LAST_PACKET_MS, feedIntervalMs: FEED_INTERVAL_MS, proxy: 'defaults (tcp.idle 5, tcp.interval 1, tcp.count 3, tcp.userTimeout 8)' },
  results,
}, null, 2)}\n`);
console.log(`written ${outFile}`);
process.exit(results.some((r) => r.willAfterMs === null) ? 1 : 0);
