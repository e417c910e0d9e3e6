#!/usr/bin/env -S node --max-semi-space-size=8
// Runs the compiled CLI: `npm run build` writes dist/ (npm ci runs it through
// the prepare script; the published package ships it). Plain node, no tsx.
const cli = new URL('../../dist/proxy/src/cli.js', import.meta.url);
try {
  await import(cli.href);
} catch (err) {
  if (err?.code === 'ERR_MODULE_NOT_FOUND' && err.url === cli.href) {
    console.error(`mqtt-liveness-proxy: ${cli.pathname} is missing: run \`npm run build\` in the package directory`);
    process.exit(1);
  }
  throw err;
}
