/**
 * The schema as data: its JSON Schema, every key with its environment variable,
 * type, default and meaning, and the README table made from them. One walk
 * over zod's JSON Schema serves the README, the environment and the chart.
 */
import { z } from 'zod';
import { configSchema } from './schema.ts';

export type JsonSchema = {
  type?: string | string[];
  description?: string;
  default?: unknown;
  enum?: unknown[];
  pattern?: string;
  minimum?: number;
  maximum?: number;
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
  anyOf?: JsonSchema[];
  [k: string]: unknown;
};

/**
 * z.number().int() adds the safe-integer range; a person reading the chart
 * schema needs only the real bounds. zod leaves additionalProperties out of
 * input-side schemas, yet every mapping here is strict: say so.
 */
function tidy(node: unknown): void {
  if (Array.isArray(node)) return node.forEach(tidy);
  if (typeof node !== 'object' || node === null) return;
  const o = node as JsonSchema;
  if (o.type === 'object' && o.properties && o.additionalProperties === undefined) o.additionalProperties = false;
  if (o.maximum === Number.MAX_SAFE_INTEGER) delete o.maximum;
  if (o.minimum === Number.MIN_SAFE_INTEGER) delete o.minimum;
  for (const v of Object.values(o)) tidy(v);
}

/** JSON Schema (draft 7) of a configuration schema, as a user writes it (input side). */
export function jsonSchemaOf(schema: z.ZodType): JsonSchema {
  const out = z.toJSONSchema(schema, { io: 'input', target: 'draft-7' }) as JsonSchema;
  delete out.$schema;
  tidy(out);
  return out;
}

let cached: JsonSchema | null = null;
export function configJsonSchema(): JsonSchema {
  cached ??= jsonSchemaOf(configSchema);
  return cached;
}

export interface ConfigKey {
  /** ['keepAlive', 'max'] */
  path: string[];
  /** 'keepAlive.max' */
  key: string;
  /** 'MLP_KEEP_ALIVE__MAX' */
  env: string;
  schema: JsonSchema;
}

const upperSnake = (name: string): string => name.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();

/** `MLP_` + the key path in upper snake case, `__` between levels (EMQX's convention). */
function envName(path: readonly string[]): string {
  return `MLP_${path.map(upperSnake).join('__')}`;
}

/** Every settable key: sections are walked, lists (rules, events.types) are one key. */
export function configKeys(): ConfigKey[] {
  const out: ConfigKey[] = [];
  const walk = (node: JsonSchema, path: string[]): void => {
    for (const [name, child] of Object.entries(node.properties ?? {})) {
      const p = [...path, name];
      if (child.properties) walk(child, p);
      else out.push({ path: p, key: p.join('.'), env: envName(p), schema: child });
    }
  };
  walk(configJsonSchema(), []);
  return out;
}

/** The non-null alternatives of a key's schema. */
export function variants(schema: JsonSchema): JsonSchema[] {
  if (schema.anyOf) return schema.anyOf.filter((s) => s.type !== 'null');
  if (Array.isArray(schema.type)) return [{ ...schema, type: schema.type.find((t) => t !== 'null') }];
  return [schema];
}

function typeLabel(schema: JsonSchema): string {
  const s = variants(schema)[0];
  if (s.enum) return s.enum.join(' \\| ');
  if (s.type === 'array') return s.items?.enum ? `list of ${s.items.enum.join(' \\| ')}` : 'list';
  if (s.type === 'string' && s.pattern?.includes('6553')) return 'HOST:PORT';
  return String(s.type);
}

function defaultLabel(schema: JsonSchema): string {
  const d = schema.default;
  if (d === undefined || d === null) return 'unset';
  if (Array.isArray(d)) return `\`[${d.join(', ')}]\``;
  return `\`${typeof d === 'string' || typeof d === 'number' || typeof d === 'boolean' ? String(d) : JSON.stringify(d)}\``;
}

/** README's configuration table (between the config-table markers). */
export function configTable(): string {
  const rows = configKeys().map((k) => `| \`${k.key}\` | \`${k.env}\` | ${typeLabel(k.schema)} | ${defaultLabel(k.schema)} | ${k.schema.description ?? ''} |`);
  return ['| key | environment | type | default | meaning |', '|---|---|---|---|---|', ...rows].join('\n');
}
