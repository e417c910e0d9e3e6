/**
 * Where the package is installed and its version, read once. The root is the
 * directory holding package.json, found by walking up from this module:
 * proxy/src/ under tsx and dist/proxy/src/ when compiled sit at different
 * depths. Run-time assets (broker/mosquitto.conf) resolve from here.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

function findPackageRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json in ${from} or above`);
  }
}

/** The package root (holds package.json, broker/ assets); relative config paths resolve from here. */
export const PACKAGE_ROOT = findPackageRoot(path.dirname(fileURLToPath(import.meta.url)));

export const VERSION: string = (JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
