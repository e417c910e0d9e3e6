/**
 * What a configuration reload may change in a running proxy. Listener
 * addresses, the broker and the parts started once (canary, webhook, admin
 * token) keep their running values and are reported as needing a restart;
 * everything else (keep-alive policy and rules, limits, TLS files, timeouts,
 * TCP options, log level) applies to connections accepted from then on.
 */
import { configKeys } from './describe.ts';
import type { Config } from './types.ts';

/** Dotted keys (a key covers its sub-keys) that only a restart changes. */
export const RESTART_ONLY: readonly string[] = [
  'listen',
  'admin',
  'tls.listen',
  'websocket',
  'upstream',
  'broker',
  'mosquittoConfig',
  'mosquittoBinary',
  'adminToken',
  'events',
  'probes.enabled',
  'probes.interval',
  'probes.timeout',
  'probes.clientIdPrefix',
  'probes.username',
  'probes.password',
  'probes.protocolVersion',
  'probes.deepTopic',
];

/** Listener addresses: moving them needs a restart. */
export const LISTENER_KEYS: readonly string[] = ['listen', 'admin', 'tls.listen', 'websocket.listen'];

export interface ReloadPlan {
  /** The configuration to run: the new one, with the running values of restart-only keys. */
  config: Config;
  /** Keys applied now. */
  changed: string[];
  /** Keys that differ but keep their running value until a restart. */
  restartNeeded: string[];
}

/** Every key one level deep: `keepAlive.max`, `rules`, `listen`, ... */
function leafKeys(): string[] {
  return configKeys().map((k) => k.key);
}

function get(config: Config, key: string): unknown {
  return key.split('.').reduce<unknown>((v, k) => (v as Record<string, unknown> | undefined)?.[k], config);
}

function set(config: Config, key: string, value: unknown): void {
  const parts = key.split('.');
  const last = parts.pop()!;
  const parent = (parts.length > 0 ? get(config, parts.join('.')) : config) as Record<string, unknown>;
  parent[last] = structuredClone(value);
}

function restartOnly(key: string): boolean {
  return RESTART_ONLY.some((r) => key === r || key.startsWith(`${r}.`));
}

export function planReload(running: Config, next: Config): ReloadPlan {
  const config = structuredClone(next);
  const changed: string[] = [];
  const restartNeeded: string[] = [];
  for (const key of leafKeys()) {
    if (JSON.stringify(get(running, key)) === JSON.stringify(get(next, key))) continue;
    if (restartOnly(key)) {
      restartNeeded.push(key);
      set(config, key, get(running, key));
    } else {
      changed.push(key);
    }
  }
  return { config, changed, restartNeeded };
}
