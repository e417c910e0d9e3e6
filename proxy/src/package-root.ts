/**
 * The installed package's root (the directory holding package.json), found by
 * walking up from this module: proxy/src/ under tsx and dist/proxy/src/ when
 * compiled sit at different depths. Run-time assets (package.json's version,
 * broker/mosquitto.conf) resolve from here.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const PACKAGE_ROOT = findPackageRoot(path.dirname(fileURLToPath(import.meta.url)));

function findPackageRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json in ${from} or above`);
  }
}
