/**
 * Structured JSON logs on stdout. Nothing that could hold a password is ever
 * logged: the CONNECT password is never kept (ConnectInfo has no password field),
 * and the canary's password path is redacted as a second line of defence.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { name: 'mqtt-liveness-proxy' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: ['password', '*.password', 'config.probes.password'], censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination as pino.DestinationStream | undefined,
  );
}
