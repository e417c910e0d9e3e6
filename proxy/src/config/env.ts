/**
 * Configuration from the environment: every key as `MLP_` + its path in upper
 * snake case with `__` between levels (keepAlive.max -> MLP_KEEP_ALIVE__MAX).
 * Strings are taken as they are; numbers, booleans, null and lists are read
 * as YAML (lists of words also comma-separated: MLP_EVENTS__TYPES=verdict,connect).
 * An empty variable counts as unset. A variable that names a section but no
 * key in it (MLP_TCP__IDEL) is refused; other MLP_ names (MLP_CONFIG, test
 * knobs) are left alone.
 */
import { parse as parseYaml } from 'yaml';
import { configKeys, variants, type ConfigKey } from './describe.ts';
import { ConfigError } from './errors.ts';
import type { Layer, Path } from './sources.ts';

function acceptsString(key: ConfigKey): boolean {
  return variants(key.schema).some((s) => s.type === 'string');
}

function valueOf(key: ConfigKey, text: string): unknown {
  if (acceptsString(key)) return text;
  const list = variants(key.schema).some((s) => s.type === 'array');
  if (list && !text.trimStart().startsWith('[') && !text.includes('\n')) return text.split(',').map((s) => s.trim()).filter(Boolean);
  try {
    return parseYaml(text) as unknown;
  } catch (err) {
    throw new ConfigError(`${key.env}: ${key.key}: cannot read ${JSON.stringify(text)}: ${(err as Error).message.split('\n')[0]}`);
  }
}

export function envLayer(env: Record<string, string | undefined>): Layer {
  const keys = configKeys();
  const byName = new Map(keys.map((k) => [k.env, k]));
  const sections = new Set(keys.filter((k) => k.path.length > 1).map((k) => `${k.env.slice(0, k.env.indexOf('__'))}__`));
  const raw: Record<string, unknown> = {};
  const origin = new Map<string, string>();
  for (const [name, text] of Object.entries(env)) {
    if (!name.startsWith('MLP_') || text === undefined || text === '') continue;
    const key = byName.get(name);
    if (!key) {
      const section = [...sections].find((s) => name.startsWith(s));
      if (section) throw new ConfigError(`${name}: no such key (known: ${keys.filter((k) => k.env.startsWith(section)).map((k) => k.env).join(', ')})`);
      continue;
    }
    let node = raw;
    for (const part of key.path.slice(0, -1)) node = (node[part] ??= {}) as Record<string, unknown>;
    node[key.path[key.path.length - 1]] = valueOf(key, text);
    origin.set(key.key, name);
  }
  const locate = (path: Path): string | null => {
    for (let n = path.length; n > 0; n--) {
      const name = origin.get(path.slice(0, n).join('.'));
      if (name) return name;
    }
    return null;
  };
  return { raw, locate };
}
