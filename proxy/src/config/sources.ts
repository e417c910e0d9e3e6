/**
 * A configuration source: the raw values it sets and, for a key path, where
 * that value came from, so an error can name the file and line, the variable
 * or the command line.
 */
import { LineCounter, parseDocument, isMap, isSeq, type Node } from 'yaml';
import { ConfigError } from './errors.ts';

export type Path = ReadonlyArray<string | number>;

export interface Layer {
  raw: unknown;
  /**
   * Where the value at `path` was set; null when this source did not set it.
   * With `nearest`, the closest place this source knows (a section's line).
   */
  locate(path: Path, nearest: boolean): string | null;
}

/** A YAML file; parse errors name the line. */
export function yamlLayer(file: string, text: string): Layer {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    const pos = e.linePos?.[0];
    throw new ConfigError(`${file}${pos ? `:${pos.line}` : ''}: invalid YAML: ${e.message.split('\n')[0]}`);
  }
  const locate = (path: Path, nearest: boolean): string | null => {
    let node: Node | null | undefined = doc.contents;
    let best = node;
    let found = 0;
    for (const key of path) {
      if (isMap(node)) {
        const pair = node.items.find((p) => (p.key as { value?: unknown } | null)?.value === key);
        if (pair?.key) best = pair.key as Node;
        node = pair?.value as Node | undefined;
        if (!pair) break;
      } else if (isSeq(node) && typeof key === 'number') {
        node = node.items[key] as Node | undefined;
        if (!node) break;
        best = node;
      } else break;
      found++;
      if (!node) break;
    }
    // A key the file sets is the file's; for the rest, the nearest line is only a guess.
    if (!nearest && found < path.length) return null;
    const offset = best?.range?.[0];
    return offset === undefined ? file : `${file}:${lineCounter.linePos(offset).line}`;
  };
  return { raw: doc.toJS() ?? {}, locate };
}
