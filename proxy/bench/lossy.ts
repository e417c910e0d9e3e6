/**
 * `npm run bench:lossy` (root): false deaths and pulled-cable detection on
 * lossy links, for Mosquitto alone, HAProxy (clitcpka 5/1/3) and the proxy
 * (its CLI, current defaults), side by side in one run. See lib/lossy-cell.ts
 * for one cell's set-up. Conditions: random loss 0, 1, 5, 10, 20 % on both
 * directions, and outages (link fully down 1-4 s about every 30 s).
 *
 *   --quick          20 clients, 160 s per condition, all conditions at once (< 5 min)
 *   --clients N      healthy clients per system and condition (default 100)
 *   --duration S     measuring time per condition (default 600)
 *   --conditions L   e.g. 0,5,20,outage,newcomers (default 0,1,5,10,20,outage,newcomers)
 *                    newcomers: a clean fleet that short-lived clients on a 20 % link keep joining
 *                    (lib/lossy-newcomers.ts)
 *   --parallel K     conditions run at the same time (default: all with --quick, else 3: ~30 min)
 *   --pull-age S     pulled cables also on connections at least S seconds old (default 75; 0: new ones only)
 *   --old-lanes K    lanes of such old connections (default 1; each gives a pair of samples per cycle)
 *   --out FILE       also write the JSON there (e.g. docs/results/lossy-....json)
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Cell, isPullSample, type CellResult } from './lib/lossy-cell.ts';
import { NewcomerChurn } from './lib/lossy-newcomers.ts';
import { SYSTEMS, SYSTEM_LABEL, type SystemName } from './lib/lossy-systems.ts';
import { busyCores, CpuSnapshot, systemCpu } from './lib/proc.ts';
import { median, round } from './lib/stats.ts';
import { ROOT } from './lib/services.ts';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    clients: { type: 'string' },
    duration: { type: 'string' },
    conditions: { type: 'string' },
    parallel: { type: 'string' },
    systems: { type: 'string' },
    'pull-age': { type: 'string' },
    'old-lanes': { type: 'string' },
    out: { type: 'string' },
  },
});
const quick = values.quick;
const clients = Number(values.clients ?? (quick ? 20 : 100));
const durationMs = Number(values.duration ?? (quick ? 160 : 600)) * 1000;
const conditions = (values.conditions ?? '0,1,5,10,20,outage,newcomers').split(',').map((c) => c.trim());
// Quick: everything at once. Full: three conditions (nine systems, ~300 mosquitto_sub processes) at a time on 2 cores.
const parallel = Math.max(1, Number(values.parallel ?? (quick ? conditions.length : 3)));
// Pulled cables on new connections (a few seconds after connecting: nothing learnt about the link yet)
// and on established ones (at least this old: the link has shown what it is), side by side.
const pullAgeMs = Number(values['pull-age'] ?? 75) * 1000;
if (!(pullAgeMs >= 0 && pullAgeMs <= 3_600_000)) throw new Error('--pull-age 0..3600');
// More lanes of old connections: more samples of an established connection's death per run (lanes take turns to pull).
const oldLanes = Number(values['old-lanes'] ?? 1);
if (!(Number.isInteger(oldLanes) && oldLanes >= 1 && oldLanes <= 8)) throw new Error('--old-lanes 1..8');
const systems = (values.systems ? values.systems.split(',') : [...SYSTEMS]) as SystemName[];
for (const c of conditions) if (c !== 'outage' && c !== 'newcomers' && !(Number.isInteger(Number(c)) && Number(c) >= 0 && Number(c) <= 100)) throw new Error(`bad condition ${c}`);
for (const s of systems) if (!SYSTEMS.includes(s)) throw new Error(`bad system ${s}`);
if (!(clients >= 1 && clients <= 1000) || !(durationMs >= 10_000 && durationMs <= 3_600_000)) throw new Error('--clients 1..1000, --duration 10..3600');
if (process.getuid?.() !== 0) {
  console.error('bench:lossy needs root (network namespaces and nftables).');
  process.exit(2);
}

const OUTAGE = { minMs: 1_000, maxMs: 4_000, everyMs: 30_000, jitterMs: 10_000 };
const started = Date.now();
const stamp = () => `[${Math.round((Date.now() - started) / 1000)} s]`;
let lastLog = Date.now();
const log = (msg: string) => {
  lastLog = Date.now();
  console.log(`${stamp()} ${msg}`);
};
/** What each condition is doing, for the heartbeat: never silent for more than 20 s. */
const phase = new Map<string, string>();
const heartbeat = setInterval(() => {
  if (Date.now() - lastLog >= 20_000) log(`working: ${[...phase].map(([c, p]) => `${c} ${p}`).join(', ') || 'finishing'}`);
}, 5_000);
const rand = (lo: number, hi: number) => lo + Math.random() * (hi - lo);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Outage { startMs: number; durationMs: number }
interface ConditionResult { condition: string; lossPercent: number; outages: Outage[]; cells: CellResult[]; cpu: { busyCores: number; ourCores: number } }

const live = new Set<Cell>();
let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    interrupted = true;
    console.log(`\n${sig}: cleaning up namespaces and processes...`);
    const forceExit = setTimeout(() => process.exit(130), 15_000);
    void Promise.allSettled([...live].map((c) => c.destroy())).then(() => { clearTimeout(forceExit); process.exit(130); });
  });
}

/** Cut every link of the condition for 1-4 s, about every 30 s (first one at a random point), until `until`. */
async function outages(cells: Cell[], begin: number, until: number, record: Outage[]): Promise<void> {
  let next = begin + rand(5_000, OUTAGE.everyMs);
  while (!interrupted) {
    const length = rand(OUTAGE.minMs, OUTAGE.maxMs);
    if (next + length > until) return;
    await sleep(next - Date.now());
    const links = cells.flatMap((c) => c.links);
    const t0 = Date.now();
    await Promise.all(links.map((l) => l.setCut('outage', true))).catch(() => undefined);
    await sleep(length - (Date.now() - t0));
    await Promise.all(links.map((l) => l.setCut('outage', false))).catch(() => undefined);
    record.push({ startMs: t0 - begin, durationMs: Date.now() - t0 });
    next += OUTAGE.everyMs + rand(-OUTAGE.jitterMs / 2, OUTAGE.jitterMs / 2);
  }
}

async function runCondition(condition: string, index: number): Promise<ConditionResult> {
  const lossPercent = condition === 'outage' || condition === 'newcomers' ? 0 : Number(condition);
  const cells: Cell[] = [];
  const churns: NewcomerChurn[] = [];
  try {
    for (const system of systems) {
      if (interrupted) throw new Error('interrupted');
      phase.set(condition, `starting ${system}`);
      const cell = await Cell.create({ system, tag: `l${index}${system.slice(0, 2)}`, lossPercent, clients, pulled: true, pullAgesMs: pullAgeMs > 0 ? [0, ...Array<number>(oldLanes).fill(pullAgeMs)] : [0] });
      cells.push(cell);
      live.add(cell);
    }
    phase.set(condition, 'connecting clients');
    for (const c of cells) c.startClients();
    const connected = await Promise.all(cells.map((c) => c.waitConnected(90_000)));
    phase.set(condition, 'measuring');
    log(`${condition}: clients connected ${connected.map((n, i) => `${systems[i]} ${n}/${clients}`).join(', ')}`);
    await Promise.all(cells.map((c) => c.beginMeasure()));
    const sys0 = systemCpu();
    const ours0 = CpuSnapshot.take(process.pid, true);
    const begin = Date.now();
    const until = begin + durationMs;
    for (const c of cells) c.startPulls(until);
    if (condition === 'newcomers') {
      for (const [i, c] of cells.entries()) churns.push(await NewcomerChurn.create(c.server, `l${index}${systems[i].slice(0, 2)}`));
      for (const ch of churns) ch.start(Math.max(2, Math.round(clients / 2)), until);
    }
    const outageLog: Outage[] = [];
    const outageRun = condition === 'outage' ? outages(cells, begin, until, outageLog) : Promise.resolve();
    while (Date.now() < until && !interrupted) {
      await sleep(Math.min(15_000, until - Date.now()));
      log(`${condition}: ${Math.round((Date.now() - begin) / 1000)}/${durationMs / 1000} s  ` + cells.map((c, i) => {
        const s = c.status();
        return `${systems[i]}: ${s.wills} false deaths, ${s.verdicts} verdicts, ${s.pulls} pulls`;
      }).join(' | '));
    }
    await outageRun;
    // Healthy clients are measured up to `until`; pulled-cable cycles already under way finish.
    const results = await Promise.all(cells.map((c) => c.finish()));
    for (const [i, ch] of churns.entries()) results[i].newcomers = await ch.finish(cells[i].observedWills, cells[i].frontEndLog);
    const sys1 = systemCpu();
    const ourSeconds = CpuSnapshot.take(process.pid, true).secondsSince(ours0);
    const wallS = (Date.now() - begin) / 1000;
    let waited = 0;
    phase.set(condition, 'waiting for pulled-cable Wills');
    const pullsDone = Promise.all(cells.map((c) => c.pullsDone()));
    while (await Promise.race([pullsDone.then(() => true), sleep(15_000).then(() => false)]) === false) {
      waited += 15;
      log(`${condition}: waiting for pulled-cable Wills (${waited} s)`);
    }
    const pulls = await pullsDone;
    for (let i = 0; i < results.length; i++) results[i].pulled = pulls[i]!;
    return { condition, lossPercent, outages: outageLog, cells: results, cpu: { busyCores: round(busyCores(sys0, sys1, os.cpus().length).busy, 2), ourCores: round(ourSeconds / wallS, 2) } };
  } finally {
    phase.set(condition, 'cleaning up');
    await Promise.allSettled(churns.map((c) => c.destroy()));
    await Promise.allSettled(cells.map((c) => c.destroy()));
    phase.delete(condition);
    for (const c of cells) live.delete(c);
  }
}

log(`lossy-link bench: ${systems.map((s) => SYSTEM_LABEL[s]).join(', ')}; conditions ${conditions.join(', ')}; ${clients} healthy clients each; ${durationMs / 1000} s per condition; ${parallel} at a time; ${os.cpus().length} cores`);
const results: ConditionResult[] = [];
const queue = conditions.map((c, i) => [c, i] as const);
await Promise.all(Array.from({ length: Math.min(parallel, queue.length) }, async () => {
  for (let item = queue.shift(); item && !interrupted; item = queue.shift()) {
    try {
      results.push(await runCondition(item[0], item[1]));
      log(`${item[0]}: done`);
    } catch (err) {
      log(`${item[0]}: FAILED ${(err as Error).stack ?? String(err)}`);
    }
  }
}));
clearInterval(heartbeat);
if (interrupted) await new Promise(() => {}); // the signal handler exits
results.sort((a, b) => conditions.indexOf(a.condition) - conditions.indexOf(b.condition));

// ---- the table ----
const sec = (ms: number | null | undefined) => (ms === null || ms === undefined || !Number.isFinite(ms) ? '-' : `${(ms / 1000).toFixed(1)} s`);
const rows: Record<string, string>[] = [];
for (const r of results) {
  for (const c of r.cells) {
    const lane = (established: boolean): string => {
      const mine = c.pulled.filter((p) => (p.laneAgeMs > 0) === established);
      const valid = mine.filter(isPullSample);
      const got = valid.filter((p) => p.willAfterMs !== null).map((p) => p.willAfterMs!);
      const invalid = mine.length - valid.length;
      return (got.length ? `${sec(median(got))} (${got.length}${got.length < valid.length ? `, ${valid.length - got.length} missed` : ''})` : valid.length ? `none in ${valid.length}` : '-')
        + (invalid ? ` [${invalid} left out: died before the pull]` : '');
    };
    const reasons = [...Object.entries(c.frontEnds).map(([k, v]) => `${k} ${v}`), ...(c.brokerTimeouts ? [`broker timeout ${c.brokerTimeouts}`] : [])].join(', ');
    rows.push({
      condition: r.condition === 'outage' ? `outages ${r.outages.length}x` : r.condition === 'newcomers' ? 'newcomers' : `${r.lossPercent}% loss`,
      system: SYSTEM_LABEL[c.system],
      'false deaths': `${c.falseDeaths.clients}/${c.clients.connected}${c.falseDeaths.wills > c.falseDeaths.clients ? ` (${c.falseDeaths.wills} Wills)` : ''}`,
      'front ends of healthy (by reason)': reasons || '-',
      'pulled, new connection -> Will (median, n)': lane(false),
      ...(pullAgeMs > 0 ? { [`pulled, >= ${pullAgeMs / 1000} s old -> Will`]: lane(true) } : {}),
      // (newcomers: their probes count in the server namespace too, so the figure would not be per idle healthy client)
      'probes/idle client-h': r.condition !== 'newcomers' && Number.isFinite(c.probes.perIdleClientHour) ? String(Math.round(c.probes.perIdleClientHour)) : '-',
    });
  }
}
console.log('');
console.table(rows);
for (const r of results) {
  console.log(`${r.condition}: CPU busy ${r.cpu.busyCores} cores (this bench ${r.cpu.ourCores})${r.outages.length ? `; outages ${r.outages.map((o) => `${(o.durationMs / 1000).toFixed(1)} s at +${Math.round(o.startMs / 1000)} s`).join(', ')}` : ''}`);
  for (const c of r.cells) {
    if (c.verdictSamples.length) console.log(`  ${c.system}: max ${c.maxVerdictsPerSecond} verdicts in one second; e.g. ${c.verdictSamples.slice(0, 2).join('; ')}`);
    if (c.errors.length) console.log(`  ${c.system} errors: ${c.errors.slice(0, 3).join(' | ')}`);
    if (c.keepAliveLinkWaits) console.log(`  ${c.system}: ${c.keepAliveLinkWaits} keep-alive verdicts put off because the link did not answer after the PINGREQ was due (the keep-alive watch)`);
    const n = c.newcomers;
    if (n) console.log(`  ${c.system}: newcomers on a ${n.lossPercent} % link: ${n.falseDeaths} false deaths in ${n.connections} connections${n.samples.length ? `; e.g. ${n.samples.slice(0, 2).join('; ')}` : ''}`);
  }
}

const json = {
  date: new Date().toISOString(),
  command: `npm run bench:lossy -- ${process.argv.slice(2).join(' ')}`.trim(),
  settings: { quick, clients, durationMs, conditions, parallel, systems, outage: OUTAGE, pullAfterLastPacketMs: 3_000, pullAgeMs, oldLanes, cores: os.cpus().length },
  notes: [
    'falseDeaths: Wills of healthy clients seen by an observer on the broker while measuring.',
    'frontEnds: proxy = connection_end reasons of healthy clients; haproxy = tcplog termination states ("--" = closed by the client).',
    'pulled: laneAgeMs 0 = pulled a few seconds after connecting (a new connection); laneAgeMs > 0 = pulled once at least that old (established); ageAtPullMs = the real age.',
    'pulled: samples with "invalid" set (the connection had died before its pull) or a Will under 0.5 s after the pull (a verdict already under way) are left out of the statistics (isPullSample).',
    'newcomers: clients on a 20 % link that each stay 40-50 s and leave with a DISCONNECT, joining a clean fleet; a Will before a newcomer\'s own stop (or a reconnect) is a false death.',
    'probes: TcpExt.TCPKeepAlive delta of the server namespace / hours of idle connections (idle healthy clients over the window + pulled-cable clients from SUBACK to Will).',
  ],
  results,
};
const file = path.join(ROOT, 'bench-results', `lossy-${quick ? 'quick' : 'full'}.json`);
mkdirSync(path.dirname(file), { recursive: true });
writeFileSync(file, JSON.stringify(json, null, 2));
log(`written ${file}`);
if (values.out) {
  mkdirSync(path.dirname(path.resolve(values.out)), { recursive: true });
  writeFileSync(path.resolve(values.out), JSON.stringify(json, null, 2));
  log(`written ${path.resolve(values.out)}`);
}
process.exit(results.length === conditions.length ? 0 : 1);
