/**
 * Command line: `mqtt-liveness-proxy [flags]` runs the proxy;
 * `mqtt-liveness-proxy check-config FILE` validates a configuration;
 * `mqtt-liveness-proxy status` shows a running proxy's readiness and connections.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, defaultConfig, loadConfigFile, withOverrides } from './config/load.ts';
import type { Config } from './config/types.ts';
import { createLogger } from './log.ts';
import { startApp } from './app.ts';
import { PACKAGE_ROOT } from './broker/supervisor.ts';
import { runStatus } from './admin/status.ts';
import { Reloader } from './config/watch.ts';
import { describeStartupError } from './startup-error.ts';

const USAGE = `Usage:
  mqtt-liveness-proxy [options]            run the proxy (and the bundled broker)
  mqtt-liveness-proxy check-config FILE    validate FILE and print the effective configuration
  mqtt-liveness-proxy status [--admin URL] [--token TOKEN]
                                           readiness and open connections of a running proxy
                                           (default http://127.0.0.1:9464; token also from MLP_ADMIN_TOKEN)

Options:
  --listen HOST:PORT     MQTT listener for clients (default 0.0.0.0:1883)
  --upstream HOST:PORT   the broker (default 127.0.0.1:1884)
  --admin HOST:PORT      metrics and health endpoints (default 0.0.0.0:9464)
  --broker MODE          auto | mosquitto | embedded | none (default auto)
  --config FILE          YAML configuration; flags override it
  --log-level LEVEL      fatal | error | warn | info | debug | trace | silent
  --token TOKEN          status: bearer token for /connections (adminToken)
  -h, --help             show this help
  -v, --version          print the version
`;

const OPTIONS = {
  listen: { type: 'string' },
  upstream: { type: 'string' },
  admin: { type: 'string' },
  broker: { type: 'string' },
  config: { type: 'string', short: 'c' },
  'log-level': { type: 'string' },
  token: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
} as const;

function version(): string {
  return (JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
}

export function resolveConfig(values: { config?: string; listen?: string; upstream?: string; admin?: string; broker?: string; 'log-level'?: string }): Config {
  const base = values.config ? loadConfigFile(values.config) : defaultConfig();
  return withOverrides(base, {
    listen: values.listen,
    upstream: values.upstream,
    admin: values.admin,
    broker: values.broker,
    logLevel: values['log-level'],
  }, 'command line');
}

async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (values.version) {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  const command = positionals[0];
  if (command === 'check-config') {
    const file = positionals[1] ?? values.config;
    if (!file) throw new ConfigError('check-config needs a FILE');
    const config = resolveConfig({ ...values, config: file });
    const shown = { ...config, probes: { ...config.probes, password: config.probes.password ? '[set]' : null }, adminToken: config.adminToken ? '[set]' : null };
    process.stdout.write(`${file}: valid\n${JSON.stringify(shown, null, 2)}\n`);
    return 0;
  }
  if (command === 'status') {
    return runStatus({ admin: values.admin, token: values.token ?? process.env.MLP_ADMIN_TOKEN });
  }
  if (command !== undefined) throw new ConfigError(`unknown command ${JSON.stringify(command)}\n\n${USAGE}`);

  const config = resolveConfig(values);
  const log = createLogger(config.logLevel);
  const app = await startApp(config, log);
  // SIGHUP or a changed file: re-read and validate, apply to new connections, or keep the running configuration.
  const reloader = new Reloader({ file: values.config ?? null, load: () => resolveConfig(values), apply: (c) => app.reconfigure(c), log });
  let stopping = false;
  process.on('SIGHUP', () => {
    // Still handled while stopping: the default action would kill the process.
    if (!stopping) reloader.reload('SIGHUP');
  });
  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      log.info({ signal }, 'shutting down');
      resolve();
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  stopping = true;
  reloader.close();
  await app.stop();
  log.info('stopped');
  return 0;
}

run(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`mqtt-liveness-proxy: ${describeStartupError(err)}\n`);
    process.exit(err instanceof ConfigError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? 2 : 1);
  },
);
