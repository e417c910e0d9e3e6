/** The effective configuration: types derived from the schema (schema.ts), never written twice. */
import type { z } from 'zod';
import type { configSchema, keepAliveSchema, ruleSchema } from './schema.ts';

export type { HostPort } from './schema.ts';
export { formatHostPort, parseHostPort } from './schema.ts';

export type Config = z.output<typeof configSchema>;
export type KeepAlivePolicy = z.output<typeof keepAliveSchema>;
export type Rule = z.output<typeof ruleSchema>;
/** What a user writes (file, flags, tests): host:port strings, defaults optional. */
export type ConfigInput = z.input<typeof configSchema>;
