/**
 * The one line the CLI prints when the proxy cannot start. A port already in
 * use gets the likely culprit and the fix: on Debian and Ubuntu, installing the
 * mosquitto package under systemd starts Debian's own broker on
 * 127.0.0.1:1883, the proxy's default MQTT port (docs: README, Quick start).
 */
export function describeStartupError(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const e = err as { code?: string; address?: string; port?: number; syscall?: string };
  if (e.code !== 'EADDRINUSE' || e.syscall !== 'listen' || e.port === undefined) return message;
  const hint = e.port === 1883
    ? ` (on Debian/Ubuntu, the mosquitto package's own service listens there: \`sudo systemctl disable --now mosquitto\`, since the proxy runs its own broker on 127.0.0.1:1884)`
    : '';
  return `${message}: another process listens on port ${e.port}${hint}; \`ss -ltnp 'sport = :${e.port}'\` shows which, or choose another address with --listen / --admin`;
}
