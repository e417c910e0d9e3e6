/**
 * The quick start after `apt-get install mosquitto` on a Debian machine with
 * systemd: the package starts Debian's broker with its default configuration
 * (/etc/mosquitto/mosquitto.conf has no listener, so Mosquitto 2 listens on
 * localhost:1883 only), and the proxy's default listener 0.0.0.0:1883 collides.
 * Reproduced in a private network namespace (unshare -n, root), so port 1883
 * of this machine is never touched: Mosquitto with no listener configured, then
 * the proxy with its default listen address. It must exit 1 with a message
 * that names the port, the culprit and the fix.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { findExecutable } from '../src/broker/supervisor.ts';
import { BIN } from './helpers/cli.ts';

t.test('the proxy on the default port beside Debian\'s default Mosquitto: exit 1, port and fix named', async (t) => {
  const mosquitto = findExecutable('mosquitto');
  t.ok(mosquitto, 'mosquitto is installed');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-quickstart-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // What the package's configuration amounts to for the port: no listener at all.
  const conf = path.join(dir, 'mosquitto.conf');
  writeFileSync(conf, 'persistence false\nlog_dest stderr\n');
  const script = [
    'ip link set lo up',
    `${mosquitto} -c ${conf} 2>${dir}/mosquitto.log & m=$!`,
    'for i in $(seq 50); do ss -ltn | grep -q ":1883 " && break; sleep 0.1; done',
    'ss -ltn | grep ":1883 " | sed "s/^/listening: /"',
    `${process.execPath} ${BIN} --broker none --admin 127.0.0.1:0 --log-level warn; echo "proxy exit $?"`,
    'kill $m; wait $m',
  ].join('\n');
  const r = spawnSync('unshare', ['-n', 'sh', '-c', script], { encoding: 'utf8', timeout: 60_000 });
  t.equal(r.error, undefined, 'unshare ran (root)');
  t.match(r.stdout, /listening: .*127\.0\.0\.1:1883 /, 'Mosquitto without a listener takes 127.0.0.1:1883, as Debian\'s service does');
  t.match(r.stdout, /proxy exit 1\b/, 'the proxy exits 1');
  t.match(r.stderr, /EADDRINUSE.*0\.0\.0\.0:1883/, 'the port is named');
  t.match(r.stderr, /systemctl disable --now mosquitto/, 'the fix is named');
  t.match(r.stderr, /--listen/, 'and the alternative');
});
