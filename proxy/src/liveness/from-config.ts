/**
 * The liveness model's settings from the configuration (the `liveness` section, with `tcp.*` as
 * explicit overrides), and the parts one proxy shares between its connections. Pure.
 */
import type { Config } from '../config/types.ts';
import { newLivenessShared, type LivenessSettings, type LivenessShared } from './connection-liveness.ts';
import { FleetPrior } from './link-estimate.ts';
import { DEFAULT_LOCAL_HEALTH, LocalHealth, type LocalHealthListener } from './local-health.ts';
import { PROFILES, type Overrides } from './verdict-budget.ts';

export function livenessSettingsOf(config: Config, rtoMaxApplied: boolean): LivenessSettings {
  const l = config.liveness;
  const t = config.tcp;
  const overrides: Overrides = {};
  if (t.idle !== null) overrides.idleSeconds = t.idle;
  if (t.interval !== null) overrides.intervalSeconds = t.interval;
  if (t.count !== null) overrides.count = t.count;
  if (t.userTimeout !== null) overrides.userTimeoutMs = Math.round(t.userTimeout * 1000);
  return {
    profile: PROFILES[l.profile],
    falseDeathBudget: l.falseDeathBudget,
    overrides,
    adaptive: l.adaptive,
    maxHoldMs: l.correlation.enabled ? Math.round(l.maxHold * 1000) : 0,
    maxDeadMs: Math.round(l.maxDead * 1000),
    thinLinear: false,
    rtoMaxApplied,
  };
}

/** One proxy's liveness: its settings and the parts every connection shares (fleet prior, local health). */
export interface LivenessContext {
  settings: LivenessSettings;
  shared: LivenessShared;
}

/**
 * Build (or rebuild, on reconfigure) the proxy's liveness context. The fleet prior is kept across
 * rebuilds (it is what the fleet's links are like); local health is new, with the open count kept.
 */
export function livenessContextOf(config: Config, rtoMaxApplied: boolean, fleet: FleetPrior, previous: LocalHealth | null, onHealth: LocalHealthListener | null): LivenessContext {
  const settings = livenessSettingsOf(config, rtoMaxApplied);
  const c = config.liveness.correlation;
  const health = c.enabled
    ? new LocalHealth({ ...DEFAULT_LOCAL_HEALTH, windowMs: c.window * 1000, minCount: c.minCount, fraction: c.fraction, maxHoldMs: settings.maxHoldMs }, onHealth)
    : null;
  if (health && previous) health.openConnections = previous.openConnections;
  return { settings, shared: newLivenessShared(settings, fleet, health) };
}
