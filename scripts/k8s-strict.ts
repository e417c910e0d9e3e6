/**
 * Unknown-field check for rendered Kubernetes objects. The validators of
 * kubernetes-models check types, enums and required fields but accept any
 * extra key, so a typo (readOnlyRootFileSystem, a probe under the wrong
 * parent) would pass. This walks an object along the TypeScript declarations
 * shipped with kubernetes-models / @kubernetes-models/* and reports every key
 * the API type does not declare.
 */
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from './sync-chart.ts';

type Shape =
  | { kind: 'leaf' }
  | { kind: 'array'; of: Shape }
  | { kind: 'map'; of: Shape }
  | { kind: 'object'; fields: Map<string, () => Shape> };

const LEAF: Shape = { kind: 'leaf' };
const fileCache = new Map<string, { text: string; imports: Map<string, string> }>();
const shapeCache = new Map<string, Shape>();

function load(file: string): { text: string; imports: Map<string, string> } {
  let entry = fileCache.get(file);
  if (!entry) {
    const text = readFileSync(file, 'utf8');
    const imports = new Map<string, string>();
    for (const m of text.matchAll(/import \{ ([^}]+) \} from "([^"]+)";/g)) {
      for (const name of m[1].split(',').map((s) => s.trim())) imports.set(name, m[2]);
    }
    entry = { text, imports };
    fileCache.set(file, entry);
  }
  return entry;
}

function resolveModule(fromFile: string, spec: string): string {
  const bare = spec.replace(/\.js$/, '');
  if (bare.startsWith('.')) return path.resolve(path.dirname(fromFile), `${bare}.d.ts`);
  for (let dir = path.dirname(fromFile); ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'node_modules', `${bare}.d.ts`);
    if (existsSync(candidate)) return candidate;
    if (dir === path.dirname(dir)) throw new Error(`cannot resolve ${spec} from ${fromFile}`);
  }
}

/** The body between the braces that open at `open`. */
function braced(text: string, open: number): string {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === '{') depth++;
    else if (text[i] === '}' && --depth === 0) return text.slice(open + 1, i);
  }
  throw new Error('unbalanced braces');
}

function stripComments(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
}

/** Properties of an interface or inline object body: name -> type text. */
function properties(body: string): Map<string, string> {
  const out = new Map<string, string>();
  const text = stripComments(body);
  let i = 0;
  while (i < text.length) {
    const m = /"([^"]+)"\??:\s*|([A-Za-z_$][\w$]*)\??:\s*|\[key: string\]:\s*/y;
    while (i < text.length && /[\s;,]/.test(text[i])) i++;
    m.lastIndex = i;
    const head = m.exec(text);
    if (!head) break;
    const name = head[1] ?? head[2] ?? '[key]';
    let j = m.lastIndex;
    let depth = 0;
    for (; j < text.length; j++) {
      const c = text[j];
      if (c === '{' || c === '<' || c === '(' || c === '[') depth++;
      else if (c === '}' || c === '>' || c === ')' || c === ']') depth--;
      else if (c === ';' && depth === 0) break;
    }
    out.set(name, text.slice(m.lastIndex, j).trim());
    i = j + 1;
  }
  return out;
}

function shapeOfType(type: string, file: string): Shape {
  const t = type.trim();
  const array = /^Array<([\s\S]*)>$/.exec(t);
  if (array) return { kind: 'array', of: shapeOfType(array[1], file) };
  if (t.startsWith('{')) {
    const props = properties(braced(t, 0));
    if (props.size === 1 && props.has('[key]')) return { kind: 'map', of: shapeOfType(props.get('[key]')!, file) };
    const fields = new Map<string, () => Shape>();
    for (const [k, v] of props) fields.set(k, () => shapeOfType(v, file));
    return { kind: 'object', fields };
  }
  if (/^I[A-Z]\w*$/.test(t)) {
    const spec = load(file).imports.get(t);
    if (!spec) return LEAF;
    return interfaceShape(resolveModule(file, spec));
  }
  return LEAF;
}

/** The first exported interface of a declaration file, with the fields of what it extends. */
function interfaceShape(file: string): Shape {
  const cached = shapeCache.get(file);
  if (cached) return cached;
  const { text, imports } = load(file);
  const m = /export interface (\w+)(?: extends ([\w, ]+))? \{/.exec(text);
  if (!m) {
    // A type alias (string enum, IntOrString, Quantity...): a leaf.
    if (/export (declare )?type /.test(text)) return LEAF;
    throw new Error(`no exported interface or type in ${file}`);
  }
  const fields = new Map<string, () => Shape>();
  const shape: Shape = { kind: 'object', fields };
  shapeCache.set(file, shape);
  for (const parent of (m[2] ?? '').split(',').map((x) => x.trim()).filter(Boolean)) {
    if (parent === 'TypeMeta') {
      fields.set('apiVersion', () => LEAF);
      fields.set('kind', () => LEAF);
      continue;
    }
    const spec = imports.get(parent);
    if (!spec) throw new Error(`${file}: cannot find the import of ${parent}`);
    const inherited = interfaceShape(resolveModule(file, spec));
    if (inherited.kind !== 'object') throw new Error(`${file}: ${parent} is not an object type`);
    for (const [k, v] of inherited.fields) fields.set(k, v);
  }
  for (const [k, v] of properties(braced(text, m.index + m[0].length - 1))) {
    let memo: Shape | undefined;
    fields.set(k, () => (memo ??= shapeOfType(v, file)));
  }
  return shape;
}

/** Declaration file of a kind, e.g. apps/v1 Deployment. */
export function modelFile(apiVersion: string, kind: string): string {
  if (apiVersion === 'monitoring.coreos.com/v1') {
    return path.join(ROOT, 'node_modules/@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1', `${kind}.d.ts`);
  }
  return path.join(ROOT, 'node_modules/kubernetes-models', apiVersion, `${kind}.d.ts`);
}

/** Paths of keys that the API type does not declare. */
export function unknownFields(obj: unknown, file = modelFile(String((obj as { apiVersion: string }).apiVersion), String((obj as { kind: string }).kind))): string[] {
  const problems: string[] = [];
  const walk = (value: unknown, shape: Shape, at: string): void => {
    if (value === null || value === undefined) return;
    if (shape.kind === 'array' && Array.isArray(value)) value.forEach((v, i) => walk(v, shape.of, `${at}[${i}]`));
    else if (shape.kind === 'map' && typeof value === 'object') for (const [k, v] of Object.entries(value)) walk(v, shape.of, `${at}.${k}`);
    else if (shape.kind === 'object' && typeof value === 'object' && !Array.isArray(value)) {
      for (const [k, v] of Object.entries(value)) {
        const field = shape.fields.get(k);
        if (!field) problems.push(`${at}.${k}`);
        else walk(v, field(), `${at}.${k}`);
      }
    }
  };
  walk(obj, interfaceShape(file), '');
  return problems.map((p) => p.slice(1));
}
