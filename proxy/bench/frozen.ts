/**
 * `npm run bench:frozen`: time from a frozen client's last packet to its Will
 * (TCP alive, MQTT silent: a `mosquitto_sub` stopped with SIGSTOP right after
 * its SUBACK), keep-alive 60, side by side:
 *  - Mosquitto alone (its 1.5 x keep-alive);
 *  - the proxy just started (nothing known of any link: the keep-alive grace
 *    allows a PINGREQ delayed by retransmissions, up to 0.5 x keep-alive);
 *  - the same proxy once a clean fleet has taught it its links (the issue-12
 *    target: keep-alive + 2 s on a clean link).
 * The learning fleet: --fleet N idle mosquitto_sub clients for --learn S seconds.
 *
 *   npm run bench:frozen -- [--fleet 20] [--learn 240] [--keep-alive 60] [--out FILE]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import mqtt from 'mqtt';
import { startMosquitto } from '../harness/mosquitto.ts';
import { startProxy } from '../harness/proxy.ts';
import { PACKAGE_ROOT } from '../src/package.ts';

const { values } = parseArgs({
  options: { fleet: { type: 'string' }, learn: { type: 'string' }, 'keep-alive': { type: 'string' }, out: { type: 'string' } },
});
const fleetSize = Number(values.fleet ?? 20);
const learnMs = Number(values.learn ?? 240) * 1000;
const keepAlive = Number(values['keep-alive'] ?? 60);
if (!(fleetSize >= 1 && fleetSize <= 500 && learnMs >= 0 && learnMs <= 3_600_000 && keepAlive >= 2 && keepAlive <= 600)) {
  throw new Error('--fleet 1..500, --learn 0..3600, --keep-alive 2..600');
}
const t0 = Date.now();
const log = (m: string) => console.log(`[${Math.round((Date.now() - t0) / 1000)} s] ${m}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A mosquitto_sub with a Will; resolves once subscribed (it prints nothing else: the topic is silent). */
async function subscriber(port: number, id: string, will: string): Promise<ChildProcess> {
  // Line-buffered: mosquitto_sub's stdout to a pipe is block-buffered.
  const proc = spawn('stdbuf', ['-oL', 'mosquitto_sub', '-h', '127.0.0.1', '-p', String(port), '-i', id, '-k', String(keepAlive), '-t', `idle/${id}`, '-d', '--will-topic', will, '--will-payload', 'gone'], { stdio: ['ignore', 'pipe', 'ignore'] });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${id}: no SUBACK within 10 s`)), 10_000);
    proc.stdout.on('data', (b: Buffer) => {
      if (b.toString().includes('SUBACK')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return proc;
}

interface FrozenResult {
  path: string;
  willAfterMs: number | null;
  /** The proxy's verdict detail (reason and deadlines), when there is a proxy. */
  verdict: string | null;
}

async function main(): Promise<void> {
  const broker = await startMosquitto();
  const proxy = await startProxy(broker.port);
  const observer = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.port}`, { reconnectPeriod: 0 });
  const wills = new Map<string, number>();
  observer.on('message', (topic) => wills.set(topic, Date.now()));
  await observer.subscribeAsync('will/#');
  const procs: ChildProcess[] = [];

  const frozen = async (label: string, port: number, id: string): Promise<FrozenResult> => {
    const proc = await subscriber(port, id, `will/${id}`);
    procs.push(proc);
    proc.kill('SIGSTOP');
    const stoppedAt = Date.now();
    log(`${label}: ${id} frozen after its SUBACK`);
    const limit = stoppedAt + keepAlive * 2000;
    while (!wills.has(`will/${id}`) && Date.now() < limit) await sleep(50);
    const at = wills.get(`will/${id}`);
    const close = proxy.closes.find((c) => c.clientId === id);
    const verdict = close ? `${close.reason}: ${close.detail ?? ''}` : null;
    log(`${label}: Will ${at ? `${((at - stoppedAt) / 1000).toFixed(1)} s` : 'not seen'} after the last packet${verdict ? ` (${verdict})` : ''}`);
    return { path: label, willAfterMs: at ? at - stoppedAt : null, verdict };
  };

  try {
    const results: FrozenResult[] = [];
    log(`keep-alive ${keepAlive} s; fresh proxy and Mosquitto alone side by side`);
    results.push(...(await Promise.all([frozen('Mosquitto alone', broker.port, 'frozen-direct'), frozen('proxy, just started', proxy.port, 'frozen-fresh')])));
    log(`${fleetSize} idle clients teach the proxy a clean fleet for ${learnMs / 1000} s`);
    for (let i = 0; i < fleetSize; i++) procs.push(await subscriber(proxy.port, `fleet-${i}`, `will/fleet-${i}`));
    await sleep(learnMs);
    results.push(await frozen('proxy, clean fleet learnt', proxy.port, 'frozen-learnt'));
    const fleetDeaths = [...wills.keys()].filter((t) => t.startsWith('will/fleet-')).length;
    console.log('\n| path | Will after the last packet | proxy verdict |\n| --- | --- | --- |');
    for (const r of results) console.log(`| ${r.path} | ${r.willAfterMs === null ? 'not seen' : `${(r.willAfterMs / 1000).toFixed(1)} s`} | ${r.verdict ?? '-'} |`);
    console.log(`\nfleet: ${fleetSize} healthy clients, ${fleetDeaths} false deaths`);
    const out = values.out ?? path.join(PACKAGE_ROOT, 'bench-results', 'frozen.json');
    mkdirSync(path.dirname(out), { recursive: true });
    writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), command: `npm run bench:frozen -- ${process.argv.slice(2).join(' ')}`.trim(), settings: { keepAlive, fleetSize, learnMs }, results, fleetDeaths }, null, 2) + '\n');
    log(`written ${out}`);
  } finally {
    for (const p of procs) {
      p.kill('SIGCONT');
      p.kill('SIGKILL');
    }
    await observer.endAsync(true);
    await proxy.stop();
    await broker.stop();
  }
}

await main();
