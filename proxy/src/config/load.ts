/**
 * Loading and validating configuration: defaults from the schema, then the
 * YAML file, then MLP_* environment variables, then command-line flags, merged
 * and validated once. Errors name the key and where its value came from: the
 * file and line, the environment variable, or the command line.
 */
import { readFileSync } from 'node:fs';
import type { z } from 'zod';
import { configSchema } from './schema.ts';
import { ConfigError } from './errors.ts';
import type { Config } from './types.ts';
import { yamlLayer, type Layer, type Path } from './sources.ts';
import { envLayer } from './env.ts';
import { configJsonSchema, type JsonSchema } from './describe.ts';

export { ConfigError };

export interface ConfigSources {
  /** YAML file; its text can be given (tests, rendered charts). */
  file?: string | null;
  text?: string;
  /** Environment to read MLP_* variables from (process.env in the CLI). */
  env?: Record<string, string | undefined>;
  /** Top-level keys from flags; undefined values are not set. */
  flags?: Record<string, unknown>;
  /** Name of a source given as an object (validateConfig). */
  label?: string;
}

export function defaultConfig(): Config {
  return configSchema.parse({});
}

/** Validate an already-parsed object (tests, embedding). */
export function validateConfig(input: unknown, source = 'config'): Config {
  return validate([{ raw: input ?? {}, locate: () => source }], source);
}

/** Read, parse and validate a YAML file. */
export function loadConfigFile(file: string, text?: string): Config {
  return loadConfig({ file, text });
}

/** File < environment < flags, validated together. */
export function loadConfig(sources: ConfigSources): Config {
  const layers: Layer[] = [];
  if (sources.file) layers.push(yamlLayer(sources.file, sources.text ?? readFileSync(sources.file, 'utf8')));
  if (sources.env) layers.push(envLayer(sources.env));
  if (sources.flags) {
    const raw = Object.fromEntries(Object.entries(sources.flags).filter(([, v]) => v !== undefined));
    layers.push({ raw, locate: (path) => (path.length > 0 && path[0] in raw ? 'command line' : null) });
  }
  return validate(layers, sources.label ?? 'defaults');
}

function validate(layers: Layer[], fallback: string): Config {
  const merged = layers.reduce<unknown>((acc, layer) => merge(acc, layer.raw), {});
  const result = configSchema.safeParse(merged, { error: message, reportInput: true });
  if (result.success) return result.data;
  const lines = result.error.issues.flatMap((issue) => {
    const paths: Path[] = issue.code === 'unrecognized_keys' ? issue.keys.map((k) => [...issue.path, k] as Path) : [issue.path as Path];
    return paths.map((path) => `${locate(layers, path, fallback)}: ${path.join('.') || '(top)'}: ${issue.message}`);
  });
  throw new ConfigError(lines.join('\n'));
}

/** The layer that set the value (the last one wins), or the file's nearest line. */
function locate(layers: Layer[], path: Path, fallback: string): string {
  for (let i = layers.length - 1; i >= 0; i--) {
    const where = layers[i].locate(path, false);
    if (where) return where;
  }
  for (const layer of layers) {
    const near = layer.locate(path, true);
    if (near) return near;
  }
  return fallback;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Later values win; mappings merge key by key, lists are replaced. */
function merge(base: unknown, over: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(over)) return over === undefined ? base : over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = merge(base[k], v);
  return out;
}

function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

const EXPECTED: Record<string, string> = { number: 'a number', int: 'a whole number', string: 'a string', boolean: 'true or false', object: 'a mapping', array: 'a list' };

/** Keys a mapping at `path` accepts, read from the JSON Schema. */
function knownKeys(path: readonly PropertyKey[]): string[] {
  let node: JsonSchema | undefined = configJsonSchema();
  for (const key of path) {
    node = node?.anyOf?.find((s) => s.type !== 'null') ?? node;
    node = typeof key === 'number' ? node?.items : node?.properties?.[String(key)];
  }
  return Object.keys(node?.properties ?? {});
}

/** zod's issues in this project's words (a schema's own message, e.g. HOST:PORT, wins). */
function message(issue: z.core.$ZodRawIssue): string {
  const got = describeValue(issue.input);
  switch (issue.code) {
    case 'invalid_type':
      if (issue.expected === 'int' && typeof issue.input === 'number') return `expected a whole number, got ${issue.input}`;
      return `expected ${EXPECTED[issue.expected] ?? issue.expected}, got ${got}`;
    case 'too_small':
      return `must be at least ${String(issue.minimum)}, got ${String(issue.input)}`;
    case 'too_big':
      return `must be at most ${String(issue.maximum)}, got ${String(issue.input)}`;
    case 'invalid_value':
      return `expected one of ${issue.values.map(String).join(', ')}, got ${got}`;
    case 'unrecognized_keys':
      return `unknown key (known: ${knownKeys(issue.path ?? []).join(', ')})`;
    default:
      return issue.message ?? `invalid value ${got}`;
  }
}
