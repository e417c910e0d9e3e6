/**
 * Reloading the configuration of a running proxy: on SIGHUP (the CLI calls
 * reload()) and when the file changes (stat polling, which also sees
 * Kubernetes' ConfigMap symlink swaps; debounced so a file written in pieces
 * loads once). A valid file is applied and the changes logged; an invalid
 * one is logged with its file and line, and the running configuration stays.
 */
import { readFileSync } from 'node:fs';
import { watchFiles } from '../files/watch.ts';
import type { Logger } from 'pino';
import type { Config } from './types.ts';
import { LISTENER_KEYS, type ReloadPlan } from './reload.ts';

export interface ReloaderOptions {
  /** The YAML file; null when the proxy runs from flags only. */
  file: string | null;
  /** Read and validate the configuration again (file, then flags); throws ConfigError. */
  load(): Config;
  /** Apply a valid configuration (App.reconfigure). */
  apply(config: Config): ReloadPlan;
  log: Logger;
  /** Stat polling interval, ms (default 1000). */
  pollMs?: number;
  /** Quiet time after a change before loading, ms (default 300). */
  settleMs?: number;
}

export class Reloader {
  private unwatch: (() => void) | null = null;
  /** The file text last tried, so a poll after a SIGHUP does not load it again. */
  private lastText: string | null = null;

  constructor(private readonly options: ReloaderOptions) {
    const { file } = options;
    if (!file) return;
    this.lastText = readText(file);
    this.unwatch = watchFiles([file], { pollMs: options.pollMs ?? 1000, settleMs: options.settleMs ?? 300 }, () => {
      if (readText(file) === this.lastText) return;
      this.reload('file changed');
    });
  }

  /** Load and apply now; true when the new configuration runs. */
  reload(trigger: string): boolean {
    const { file, log } = this.options;
    if (file) this.lastText = readText(file);
    let config: Config;
    try {
      config = this.options.load();
    } catch (err) {
      log.error({ event: 'config_reload_failed', trigger, file, error: (err as Error).message }, `configuration not reloaded, the running one stays: ${(err as Error).message}`);
      return false;
    }
    const plan = this.options.apply(config);
    const moved = plan.restartNeeded.filter((k) => LISTENER_KEYS.includes(k));
    if (moved.length > 0) {
      log.warn({ event: 'config_restart_needed', trigger, file, keys: moved }, `listener addresses cannot change on reload; restart to move ${moved.join(', ')}`);
    }
    const others = plan.restartNeeded.filter((k) => !LISTENER_KEYS.includes(k));
    if (others.length > 0) {
      log.warn({ event: 'config_restart_needed', trigger, file, keys: others }, `changed but applied only after a restart: ${others.join(', ')}`);
    }
    log.info({ event: 'config_reloaded', trigger, file, changed: plan.changed }, plan.changed.length > 0 ? `configuration reloaded: ${plan.changed.join(', ')}` : 'configuration reloaded: nothing to apply');
    return true;
  }

  close(): void {
    this.unwatch?.();
    this.unwatch = null;
  }
}

function readText(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}
