/**
 * Loading and validating configuration: defaults from SCHEMA, then the YAML
 * file, then command-line flags. Errors name the key, the file and the line.
 */
import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument, isMap, isSeq, type Node } from 'yaml';
import { KEEPALIVE_FIELDS, SCHEMA, type Field } from './schema.ts';
import type { Config } from './types.ts';

export class ConfigError extends Error {
  readonly code = 'MLP_CONFIG';
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

type Where = (path: (string | number)[]) => string;

function defaultsOf(fields: Record<string, Field>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(fields)) {
    if (field.type === 'object') out[key] = defaultsOf(field.fields);
    else if (field.type === 'rules') out[key] = [];
    else if (field.type === 'stringList') out[key] = [...field.default];
    else out[key] = field.default;
  }
  return out;
}

export function defaultConfig(): Config {
  return defaultsOf(SCHEMA) as unknown as Config;
}

function fail(where: Where, path: (string | number)[], message: string): never {
  throw new ConfigError(`${where(path)}: ${path.join('.') || '(top)'}: ${message}`);
}

function checkValue(field: Field, value: unknown, path: (string | number)[], where: Where): unknown {
  if (value === null && 'nullable' in field && field.nullable) return null;
  switch (field.type) {
    case 'string':
      if (typeof value !== 'string') fail(where, path, `expected a string, got ${describe(value)}`);
      if (field.pattern && !field.pattern.test(value)) fail(where, path, `expected ${field.patternDoc}, got ${JSON.stringify(value)}`);
      return value;
    case 'number':
      if (typeof value !== 'number' || !Number.isFinite(value)) fail(where, path, `expected a number, got ${describe(value)}`);
      if (field.integer && !Number.isInteger(value)) fail(where, path, `expected a whole number, got ${value}`);
      if (field.min !== undefined && value < field.min) fail(where, path, `must be at least ${field.min}, got ${value}`);
      if (field.max !== undefined && value > field.max) fail(where, path, `must be at most ${field.max}, got ${value}`);
      return value;
    case 'boolean':
      if (typeof value !== 'boolean') fail(where, path, `expected true or false, got ${describe(value)}`);
      return value;
    case 'enum':
      if (typeof value !== 'string' || !field.values.includes(value)) fail(where, path, `expected one of ${field.values.join(', ')}, got ${describe(value)}`);
      return value;
    case 'stringList':
      if (!Array.isArray(value)) fail(where, path, `expected a list, got ${describe(value)}`);
      return value.map((v, i) => {
        if (typeof v !== 'string' || (field.values && !field.values.includes(v))) {
          fail(where, [...path, i], field.values ? `expected one of ${field.values.join(', ')}, got ${describe(v)}` : 'expected a string');
        }
        return v;
      });
    case 'object':
      return checkObject(field.fields, value, path, where, true);
    case 'rules':
      if (!Array.isArray(value)) fail(where, path, `expected a list of rules, got ${describe(value)}`);
      return value.map((rule, i) => checkRule(rule, [...path, i], where));
  }
}

const MATCH_FIELDS: Record<string, Field> = {
  clientId: { type: 'string', default: null, doc: 'glob on the client id' },
  username: { type: 'string', default: null, doc: 'glob on the username' },
};

function checkRule(rule: unknown, path: (string | number)[], where: Where): unknown {
  if (!isPlainObject(rule)) fail(where, path, `expected a rule object, got ${describe(rule)}`);
  for (const key of Object.keys(rule)) {
    if (key !== 'match' && key !== 'keepAlive') fail(where, [...path, key], 'unknown key (a rule has match and keepAlive)');
  }
  if (!isPlainObject(rule.match)) fail(where, [...path, 'match'], 'a rule needs match: {clientId, username}');
  return {
    match: checkObject(MATCH_FIELDS, rule.match, [...path, 'match'], where, false),
    keepAlive: checkObject(KEEPALIVE_FIELDS, rule.keepAlive ?? {}, [...path, 'keepAlive'], where, false),
  };
}

function checkObject(fields: Record<string, Field>, value: unknown, path: (string | number)[], where: Where, fillDefaults: boolean): Record<string, unknown> {
  if (!isPlainObject(value)) fail(where, path, `expected a mapping, got ${describe(value)}`);
  const out: Record<string, unknown> = fillDefaults ? defaultsOf(fields) : {};
  for (const [key, v] of Object.entries(value)) {
    const field = fields[key];
    if (!field) fail(where, [...path, key], `unknown key (known: ${Object.keys(fields).join(', ')})`);
    out[key] = checkValue(field, v, [...path, key], where);
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** Validate an already-parsed object (flags, tests). */
export function validateConfig(input: unknown, source = 'config'): Config {
  const config = checkObject(SCHEMA, input ?? {}, [], () => source, true) as unknown as Config;
  return crossCheck(config, () => source);
}

function crossCheck(config: Config, where: Where): Config {
  const tls = config.tls;
  if (tls.listen && (!tls.cert || !tls.key)) fail(where, ['tls'], 'tls.listen needs tls.cert and tls.key');
  if (tls.requestCert && !tls.ca) fail(where, ['tls', 'ca'], 'requestCert needs a ca file');
  if (config.probes.timeout >= config.probes.interval) fail(where, ['probes', 'timeout'], 'must be shorter than probes.interval');
  return config;
}

/** Read, parse and validate a YAML file. */
export function loadConfigFile(file: string, text = readFileSync(file, 'utf8')): Config {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    const pos = e.linePos?.[0];
    throw new ConfigError(`${file}${pos ? `:${pos.line}` : ''}: invalid YAML: ${e.message.split('\n')[0]}`);
  }
  const where: Where = (path) => {
    let node: Node | null | undefined = doc.contents as Node | null;
    let best = node;
    for (const key of path) {
      if (isMap(node)) {
        const pair = node.items.find((p) => (p.key as { value?: unknown } | null)?.value === key);
        node = (pair?.key as Node | undefined) ?? undefined;
        if (pair?.key) best = pair.key as Node;
        node = pair?.value as Node | undefined;
      } else if (isSeq(node) && typeof key === 'number') {
        node = node.items[key] as Node | undefined;
        if (node) best = node;
      } else break;
      if (!node) break;
    }
    const offset = best?.range?.[0];
    return offset === undefined ? file : `${file}:${lineCounter.linePos(offset).line}`;
  };
  const raw: unknown = doc.toJS() ?? {};
  const config = checkObject(SCHEMA, raw, [], where, true) as unknown as Config;
  return crossCheck(config, where);
}

/** Apply dotted overrides (from flags) on top of a config and validate again. */
export function withOverrides(config: Config, overrides: Record<string, unknown>, source = 'command line'): Config {
  const merged = structuredClone(config) as unknown as Record<string, unknown>;
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) continue;
    merged[key] = value;
  }
  return validateConfig(merged, source);
}
