// Detection-time bounds of each profile against random loss, from the model alone (no network):
// `node --import tsx scripts/liveness-table.ts [budget]`. Markdown on stdout, for docs/liveness.md.
import { createRequire } from 'node:module';

// jstat (one dependency-free package, no types) for the Beta quantile; CommonJS, loaded once.
const { jStat } = createRequire(import.meta.url)('jstat') as { jStat: { beta: { inv(p: number, a: number, b: number): number } } };
const betaQuantile = (p: number, a: number, b: number): number => jStat.beta.inv(p, a, b);
import { PROFILES, deriveThresholds, jitteredIdleSeconds, type Profile } from '../proxy/src/liveness/verdict-budget.ts';

const budget = Number(process.argv[2] ?? 1e-4);
const LOSSES = [0, 0.01, 0.05, 0.1, 0.2];
// An estimate after about an hour of idle probing (720 rounds), fleet prior ~ the truth.
const TRIALS = 720;

function qUpperAfter(q: number): number {
  const w = 20;
  const q0 = Math.max(q, 0.001);
  const a = w * q0 + q * TRIALS;
  const b = w * (1 - q0) + (1 - q) * TRIALS;
  return betaQuantile(0.95, a, b);
}

function row(profile: Profile, p: number): string {
  const q = 1 - (1 - p) ** 2; // a round needs the probe and its answer
  const qUpper = qUpperAfter(q);
  const cells: string[] = [];
  const lo = deriveThresholds(input(profile, qUpper, 0));
  const hi = deriveThresholds(input(profile, qUpper, 0.999));
  const idleLo = jitteredIdleSeconds(profile, 0);
  const idleHi = jitteredIdleSeconds(profile, 0.999);
  // Pulled cable on an idle connection: the last ACK is uniformly 0..idle old, then idle + deadAfter.
  const worst = (idleHi * 1000 + hi.idle.deadAfterMs) / 1000;
  const median = (idleLo * 500 + lo.idle.deadAfterMs + idleHi * 500 + hi.idle.deadAfterMs) / 2 / 1000;
  cells.push(`${(p * 100).toFixed(0)}%`, q.toFixed(3), qUpper.toFixed(4), String(lo.idle.n));
  cells.push(median.toFixed(1), worst.toFixed(1));
  cells.push(String(lo.data.n), (lo.data.deadAfterMs / 1000).toFixed(1) + (lo.data.budgetMet ? '' : ' (cap)'));
  cells.push((lo.keepAliveGraceMs / 1000).toFixed(1));
  cells.push(`${Math.round(3600 / idleHi)}-${Math.round(3600 / idleLo)}`);
  return `| ${profile.name} | ${cells.join(' | ')} |`;
}

function input(profile: Profile, qUpper: number, phase: number) {
  return {
    link: { qUpper, srttMs: 50, rttvarMs: 20, rtoMs: 250, dataSegsPerHour: 7200 },
    budgetPerHour: budget,
    profile,
    overrides: {},
    keepAliveSeconds: 60,
    phase,
    maxHoldMs: 30_000,
    maxDeadMs: 120_000,
    thinLinear: false,
    rtoMaxApplied: true,
  };
}

console.log(`False-death budget ${budget} per client-hour; RTT 50 ms, RTO 250 ms, KA 60 s, 2 data segments/s; q upper bound after ${TRIALS} rounds.\n`);
console.log('| profile | loss each way | q | q upper | probes n | idle: pulled cable median s | idle: worst s | data n | data in flight: dead after s | MQTT grace s (KA 60) | probes / idle hour |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const profile of Object.values(PROFILES)) for (const p of LOSSES) console.log(row(profile, p));
