/**
 * `npm run bench:detect` (root): time from a pulled cable to the Will, for
 * Mosquitto directly and through the proxy, keep-alive 10 and 60, MQTT 3.1.1
 * and 5. Each scenario gets its own network namespace, veth pair, broker and
 * (for the proxy) proxy process, and all run side by side.
 *
 * Method: the client connects with a Will and stays idle; 3 s after its last
 * packet the cable is pulled (nftables drops every frame on both veth ends);
 * a watcher on the broker's loopback port times the Will.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import mqtt from 'mqtt';
import { createCable, NETNS_CLIENT, waitForEvent, type Cable } from '../harness/netns.ts';
import { freePort, startMosquitto, type Mosquitto } from '../harness/mosquitto.ts';
import { waitForPort } from '../src/net/tcp-probe.ts';
import { PACKAGE_ROOT } from '../src/package.ts';

interface Scenario { path: 'direct' | 'proxy'; keepAlive: number; protocolVersion: 4 | 5 }
interface Result extends Scenario { willAfterMs: number | null; error?: string }

const { values } = parseArgs({ options: { 'keep-alive': { type: 'string', multiple: true }, timeout: { type: 'string' } } });
const keepAlives = (values['keep-alive'] ?? ['10', '60']).map(Number);
const timeoutMs = Number(values.timeout ?? 150) * 1000;
const PULL_AFTER_LAST_PACKET_MS = 3_000;

async function runScenario(s: Scenario, index: number): Promise<Result> {
  let cable: Cable | undefined;
  let broker: Mosquitto | undefined;
  let proxy: ChildProcess | undefined;
  let device: ChildProcess | undefined;
  let watcher: mqtt.MqttClient | undefined;
  try {
    cable = await createCable(`det${index}`);
    const brokerPort = await freePort();
    // Direct: the broker itself listens where the namespace can reach it.
    broker = await startMosquitto({ port: brokerPort, extraConfig: s.path === 'direct' ? [`listener ${brokerPort} ${cable.hostAddress}`] : [] });
    let port = brokerPort;
    if (s.path === 'proxy') {
      port = await freePort(cable.hostAddress);
      proxy = spawn(process.execPath, [path.join(PACKAGE_ROOT, 'proxy/bin/mqtt-liveness-proxy.js'), '--listen', `${cable.hostAddress}:${port}`, '--upstream', `127.0.0.1:${brokerPort}`, '--admin', '127.0.0.1:0', '--broker', 'none', '--log-level', 'warn'], { stdio: 'ignore' });
      await waitForPort({ host: cable.hostAddress, port }, 15_000);
    }
    watcher = await mqtt.connectAsync(`mqtt://127.0.0.1:${brokerPort}`, { reconnectPeriod: 0 });
    const topic = `detect/${index}`;
    await watcher.subscribeAsync(topic, { qos: 1 });
    device = cable.exec(process.execPath, ['--import', 'tsx', NETNS_CLIENT, JSON.stringify({
      host: cable.hostAddress, port, clientId: `detect-${index}`, protocolVersion: s.protocolVersion, keepalive: s.keepAlive,
      will: { topic, payload: 'lost', qos: 1 },
    })], { cwd: PACKAGE_ROOT });
    await waitForEvent(device, 'connected', 30_000);
    await new Promise((r) => setTimeout(r, PULL_AFTER_LAST_PACKET_MS));
    const will = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no Will within ${timeoutMs / 1000} s`)), timeoutMs);
      watcher!.once('message', () => { clearTimeout(timer); resolve(performance.now()); });
    });
    await cable.pull();
    const pulledAt = performance.now();
    return { ...s, willAfterMs: (await will) - pulledAt };
  } catch (err) {
    return { ...s, willAfterMs: null, error: (err as Error).message };
  } finally {
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
for (const keepAlive of keepAlives) for (const protocolVersion of [4, 5] as const) for (const p of ['direct', 'proxy'] as const) scenarios.push({ path: p, keepAlive, protocolVersion });
console.log(`Pulling ${scenarios.length} cables side by side, ${PULL_AFTER_LAST_PACKET_MS / 1000} s after each client's last packet (this takes about 1.5 x the largest keep-alive)...`);
const results = await Promise.all(scenarios.map((s, i) => runScenario(s, i)));

const rows = results.map((r) => ({
  path: r.path === 'direct' ? 'Mosquitto alone' : 'through the proxy',
  protocol: r.protocolVersion === 5 ? '5' : '3.1.1',
  keepAlive: `${r.keepAlive} s`,
  willAfterPull: r.willAfterMs === null ? `failed: ${r.error}` : `${(r.willAfterMs / 1000).toFixed(1)} s`,
}));
console.table(rows);
mkdirSync(path.join(PACKAGE_ROOT, 'bench-results'), { recursive: true });
const out = path.join(PACKAGE_ROOT, 'bench-results', 'detect.json');
writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), pullAfterLastPacketMs: PULL_AFTER_LAST_PACKET_MS, results }, null, 2));
console.log(`written ${out}`);
process.exit(results.some((r) => r.willAfterMs === null) ? 1 : 0);
