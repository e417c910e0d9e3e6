/**
 * Command line: `mqtt-liveness-proxy [flags]` runs the proxy;
 * `mqtt-liveness-proxy check-config FILE` validates a configuration;
 * `mqtt-liveness-proxy status` shows a running proxy's readiness and connections.
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from './config/load.ts';
import { formatHostPort, type Config } from './config/types.ts';
import { createLogger } from './log.ts';
import { startApp } from './app.ts';
import { VERSION } from './package.ts';
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
  --ws-listen HOST:PORT  MQTT over WebSocket listener (websocket.listen; default: none)
  --broker MODE          auto | mosquitto | embedded | none (default auto)
  --config FILE          YAML configuration (also MLP_CONFIG)
  --log-level LEVEL      fatal | error | warn | info | debug | trace | silent
  --token TOKEN          status: bearer token for /connections (adminToken)
  -h, --help             show this help
  -v, --version          print the version

Environment:
  Every configuration key can be set as MLP_ + its path in upper snake case,
  __ between levels: keepAlive.max -> MLP_KEEP_ALIVE__MAX, tcp.userTimeout ->
  MLP_TCP__USER_TIMEOUT. Precedence: flags > environment > file > defaults.

Exit codes:
  0  stopped on SIGTERM/SIGINT; check-config: valid; status: ready
  1  failed while running (a port in use, the broker did not start); status: not ready or unreachable
  2  bad usage or invalid configuration (the message names the file and line, variable or flag)
`;

const OPTIONS = {
  listen: { type: 'string' },
  upstream: { type: 'string' },
  admin: { type: 'string' },
  'ws-listen': { type: 'string' },
  broker: { type: 'string' },
  config: { type: 'string', short: 'c' },
  'log-level': { type: 'string' },
  token: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
} as const;

type ConfigFlags = { config?: string; listen?: string; upstream?: string; admin?: string; 'ws-listen'?: string; broker?: string; 'log-level'?: string };

/** Defaults < file (--config or MLP_CONFIG) < MLP_* environment < flags. */
function resolveConfig(values: ConfigFlags, env: NodeJS.ProcessEnv = process.env): Config {
  return loadConfig({
    file: values.config ?? (env.MLP_CONFIG || null),
    env,
    flags: {
      listen: values.listen,
      upstream: values.upstream,
      admin: values.admin,
      websocket: values['ws-listen'] === undefined ? undefined : { listen: values['ws-listen'] },
      broker: values.broker,
      logLevel: values['log-level'],
    },
  });
}

/** The effective configuration as a user writes it: addresses as HOST:PORT, secrets hidden. */
function printable(config: Config): unknown {
  return {
    ...config,
    listen: formatHostPort(config.listen),
    upstream: formatHostPort(config.upstream),
    admin: formatHostPort(config.admin),
    adminToken: config.adminToken ? '[set]' : null,
    probes: { ...config.probes, password: config.probes.password ? '[set]' : null },
    tls: { ...config.tls, listen: config.tls.listen ? formatHostPort(config.tls.listen) : null },
    websocket: { ...config.websocket, listen: config.websocket.listen ? formatHostPort(config.websocket.listen) : null },
  };
}

async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (values.version) {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const command = positionals[0];
  if (command === 'check-config') {
    // The verdict on stderr, the effective configuration (JSON) alone on stdout, so it can be piped.
    const file = positionals[1] ?? values.config ?? process.env.MLP_CONFIG;
    if (!file) throw new ConfigError('check-config needs a FILE');
    const config = resolveConfig({ ...values, config: file });
    process.stderr.write(`${file}: valid\n`);
    process.stdout.write(`${JSON.stringify(printable(config), null, 2)}\n`);
    return 0;
  }
  if (command === 'status') {
    const { runStatus } = await import('./admin/status.ts'); // undici: only for this command
    return runStatus({ admin: values.admin, token: values.token ?? process.env.MLP_ADMIN_TOKEN });
  }
  if (command !== undefined) throw new ConfigError(`unknown command ${JSON.stringify(command)}\n\n${USAGE}`);

  const config = resolveConfig(values);
  const log = createLogger(config.logLevel);
  const app = await startApp(config, log);
  // SIGHUP or a changed file: re-read and validate, apply to new connections, or keep the running configuration.
  const reloader = new Reloader({ file: values.config ?? (process.env.MLP_CONFIG || null), load: () => resolveConfig(values), apply: (c) => app.reconfigure(c), log });
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
