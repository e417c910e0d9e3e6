/** Measuring on a shared machine: wait for quiet moments, re-run disturbed measurements (bounded). */
import { waitForQuiet } from '../lib/proc.ts';
import { CFG, CORES, log } from './context.ts';

/**
 * Other people's processes share this machine: wait (bounded) for a quiet
 * second before each measurement, and say so when none came.
 */
let quietBudgetMs = CFG.quietBudgetMs;
let retriesLeft = CFG.retryBudget;

/**
 * Run a measurement; if other processes used more than quietThreshold cores
 * meanwhile, run it again (at most twice, within a budget for the whole run)
 * and keep the least disturbed attempt.
 */
export async function undisturbed<T extends { foreignCores: number }>(label: string, run: () => Promise<T>): Promise<T & { attempts: number }> {
  let best: T | null = null;
  let attempts = 0;
  for (;;) {
    const r = await run();
    attempts++;
    if (best === null || r.foreignCores < best.foreignCores) best = r;
    if (best.foreignCores <= CFG.quietThreshold || attempts >= 3 || retriesLeft <= 0) break;
    retriesLeft--;
    log(`  ${label}: other processes used ${r.foreignCores.toFixed(2)} cores meanwhile; measuring again${await quietMoment()}`);
  }
  return { ...best, attempts };
}

export async function quietMoment(): Promise<string> {
  const maxWait = Math.min(CFG.quietWaitMs, quietBudgetMs);
  const t0 = Date.now();
  const foreign = await waitForQuiet(CORES, CFG.quietThreshold, Math.max(0, maxWait));
  quietBudgetMs -= Date.now() - t0;
  return foreign < CFG.quietThreshold ? '' : ` (machine not quiet: ${foreign.toFixed(2)} cores used by others)`;
}
