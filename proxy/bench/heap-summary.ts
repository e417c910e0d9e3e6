/**
 * What a V8 heap snapshot holds, by constructor: count and shallow size,
 * optionally per connection (divide by N).
 *
 *   node --import tsx proxy/bench/heap-summary.ts FILE.heapsnapshot [--per 9000] [--top 30] [--retainers NAME]
 *
 * --retainers NAME: for the nodes named NAME, who holds them (retainer name
 * and edge), to find where per-connection objects hang.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]]; edge_fields: string[]; edge_types: [string[], ...unknown[]] } };
  nodes: number[];
  edges: number[];
  strings: string[];
}

const args = process.argv.slice(2);
const opt = (name: string, d: number): number => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : d;
};
const per = opt('--per', 1);
const top = opt('--top', 30);
const ri = args.indexOf('--retainers');
const retainersOf = ri >= 0 ? args[ri + 1] : null;

for (const file of args.filter((a) => a.endsWith('.heapsnapshot'))) {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const F = fields.length;
  const iType = fields.indexOf('type');
  const iName = fields.indexOf('name');
  const iSize = fields.indexOf('self_size');
  const groups = new Map<string, { count: number; bytes: number }>();
  let total = 0;
  for (let i = 0; i < snap.nodes.length; i += F) {
    const type = types[snap.nodes[i + iType]];
    let name = snap.strings[snap.nodes[i + iName]];
    if (type === 'string' || type === 'concatenated string' || type === 'sliced string') name = '(strings)';
    else if (type === 'code') name = '(code)';
    else if (type === 'closure') name = `closure ${name || '(anonymous)'}`;
    else if (type === 'array') name = `(array) ${name}`;
    else if (type === 'hidden' || type === 'synthetic') name = `(${type}) ${name}`;
    else if (type === 'native') name = `(native) ${name.slice(0, 60)}`;
    const size = snap.nodes[i + iSize];
    total += size;
    const g = groups.get(name) ?? { count: 0, bytes: 0 };
    g.count++;
    g.bytes += size;
    groups.set(name, g);
  }
  if (retainersOf !== null) {
    const EF = snap.snapshot.meta.edge_fields.length;
    const eType = snap.snapshot.meta.edge_fields.indexOf('type');
    const eName = snap.snapshot.meta.edge_fields.indexOf('name_or_index');
    const eTo = snap.snapshot.meta.edge_fields.indexOf('to_node');
    const edgeTypes = snap.snapshot.meta.edge_types[0];
    const iEdges = fields.indexOf('edge_count');
    const nameOf = (n: number): string => snap.strings[snap.nodes[n + iName]];
    const held = new Map<string, number>();
    let e = 0;
    for (let n = 0; n < snap.nodes.length; n += F) {
      const count = snap.nodes[n + iEdges];
      for (let k = 0; k < count; k++, e += EF) {
        const to = snap.edges[e + eTo];
        if (nameOf(to) !== retainersOf) continue;
        const type = edgeTypes[snap.edges[e + eType]];
        if (type === 'weak') continue;
        const edge = type === 'element' || type === 'hidden' ? `[${type}]` : snap.strings[snap.edges[e + eName]];
        const key = `${types[snap.nodes[n + iType]]} ${nameOf(n).slice(0, 50)} .${edge}`;
        held.set(key, (held.get(key) ?? 0) + 1);
      }
    }
    process.stdout.write(`retainers of ${retainersOf}:\n`);
    for (const [key, count] of [...held.entries()].sort((a, b) => b[1] - a[1]).slice(0, top)) {
      process.stdout.write(`  ${(count / per).toFixed(2).padStart(8)} x  ${key}\n`);
    }
  }
  const rows = [...groups.entries()].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, top);
  const unit = per > 1 ? `per 1/${per}` : 'total';
  process.stdout.write(`== ${path.basename(file)}: ${(total / 2 ** 20).toFixed(1)} MiB shallow (${unit}: ${(total / per).toFixed(0)} B)\n`);
  for (const [name, g] of rows) {
    process.stdout.write(`  ${(g.bytes / per).toFixed(0).padStart(9)} B  ${(g.count / per).toFixed(2).padStart(8)} x  ${name}\n`);
  }
}
