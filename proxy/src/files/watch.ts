/**
 * Watch files for changes by stat polling (which, unlike fs.watch, also sees
 * Kubernetes' ConfigMap and Secret symlink swaps), debounced so files written
 * one after the other, or in pieces, cause one callback. Used for the
 * configuration file and the TLS files.
 */
import { unwatchFile, watchFile, type Stats } from 'node:fs';

export interface FileWatchOptions {
  /** Stat polling interval, ms. */
  pollMs: number;
  /** Quiet time after the last change before the callback, ms. */
  settleMs: number;
}

/** Calls onChange once the files have been quiet for settleMs; returns a function that stops watching. */
export function watchFiles(files: readonly string[], { pollMs, settleMs }: FileWatchOptions, onChange: () => void): () => void {
  let timer: NodeJS.Timeout | null = null;
  const listener = (curr: Stats, prev: Stats): void => {
    if (curr.mtimeMs === prev.mtimeMs && curr.ino === prev.ino && curr.size === prev.size) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      onChange();
    }, settleMs);
    timer.unref();
  };
  for (const file of files) watchFile(file, { interval: pollMs, persistent: false }, listener);
  return () => {
    if (timer) clearTimeout(timer);
    for (const file of files) unwatchFile(file, listener);
  };
}
