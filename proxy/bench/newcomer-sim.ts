/**
 * `npm run bench:newcomers -- [--runs N] [--rounds R]`: false deaths per newcomer on a
 * lossy link joining a clean fleet, simulated on the model's own pure functions, with and without
 * the newcomer rule (verdict-budget.ts), side by side. The real-network counterpart is
 * `npm run bench:lossy -- --conditions newcomers`.
 *
 * Model of one idle newcomer: round after round a keep-alive probe goes out; it fails with the
 * link's q, and then the kernel probes again every interval until one is answered. A streak of
 * failures that reaches the connection's n is a (false) death; a streak that ends is learnt from
 * (trials += length + 1, failures += length), as LinkEstimate commits it. n is what
 * deriveThresholds asks for: the budget's n from the 95 % bound of the posterior with the fleet
 * prior (weight 20, q0 = 0.001: a clean fleet), and with the rule, at least newcomerProbes.
 */
import { parseArgs } from 'node:util';
import { betaQuantile, DEFAULT_ESTIMATE_OPTIONS } from '../src/liveness/link-estimate.ts';
import { newcomerProbes, probesFor, PROFILES } from '../src/liveness/verdict-budget.ts';

const { values } = parseArgs({ options: { runs: { type: 'string' }, rounds: { type: 'string' } } });
const runs = Number(values.runs ?? 50_000);
const rounds = Number(values.rounds ?? 60);
const Q0 = 0.001;
const BUDGET = 1e-4;
const IDLE_S = PROFILES.balanced.idleSeconds;

function probesNeeded(trials: number, failures: number, rule: boolean): number {
  const w = DEFAULT_ESTIMATE_OPTIONS.priorWeight;
  const a = w * Q0 + failures;
  const b = w * (1 - Q0) + trials - failures;
  const n = probesFor(betaQuantile(DEFAULT_ESTIMATE_OPTIONS.credibility, a, b), BUDGET / (3600 / IDLE_S), PROFILES.balanced.minProbes, 127);
  return rule ? Math.max(n, newcomerProbes(trials, failures, a / (a + b))) : n;
}

/** Fraction of newcomers on a link with round failure probability q that die within `rounds`. */
function deathRate(q: number, rule: boolean): number {
  let deaths = 0;
  for (let i = 0; i < runs; i++) {
    let trials = 0;
    let failures = 0;
    for (let r = 0; r < rounds; r++) {
      const n = probesNeeded(trials, failures, rule);
      let streak = 0;
      while (streak < n && Math.random() < q) streak++;
      if (streak >= n) {
        deaths++;
        break;
      }
      trials += streak + 1;
      failures += streak;
    }
  }
  return deaths / runs;
}

console.log(`newcomers in a clean fleet (prior q0 ${Q0}), ${rounds} idle rounds (~${Math.round((rounds * IDLE_S * 1.1) / 60)} min) each, ${runs} runs per cell`);
const rows = [0.36, 0.2, 0.1, 0.05, 0.01].map((q) => ({
  'round failure q (loss each way)': `${q} (${(100 * (1 - Math.sqrt(1 - q))).toFixed(1)} %)`,
  'false deaths per newcomer, budget alone': deathRate(q, false).toExponential(1),
  'with the newcomer rule': deathRate(q, true).toExponential(1),
}));
console.table(rows);
console.log(`n for a clean newcomer after k clean rounds (k: n): ${[0, 6, 13, 30, 60].map((k) => `${k}: ${probesNeeded(k, 0, true)}`).join(', ')}`);
