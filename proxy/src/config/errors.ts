/** A configuration the proxy refuses; the CLI exits 2 on it. */
export class ConfigError extends Error {
  readonly code = 'MLP_CONFIG';
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}
