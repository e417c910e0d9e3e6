import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, defaultConfig, loadConfigFile, validateConfig, withOverrides } from '../src/config/load.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-config-'));
function file(name: string, text: string): string {
  const f = path.join(dir, name);
  writeFileSync(f, text);
  return f;
}

t.test('defaults', async (t) => {
  const c = defaultConfig();
  t.equal(c.listen, '0.0.0.0:1883');
  t.equal(c.upstream, '127.0.0.1:1884');
  t.equal(c.admin, '0.0.0.0:9464');
  t.equal(c.broker, 'auto');
  t.equal(c.connectTimeout, 10);
  t.equal(c.maxPacketSize, 16 * 1024 * 1024);
  t.same(c.tcp, { keepAlive: true, idle: 5, interval: 1, count: 3, userTimeout: 8, sendTimeout: 10 });
  t.equal(c.keepAlive.aboveMax, 'accept');
  t.same(c.rules, []);
});

t.test('a valid file, partially filled', async (t) => {
  const c = loadConfigFile(file('ok.yaml', 'listen: 127.0.0.1:1999\nkeepAlive:\n  max: 60\n  aboveMax: reject\ntcp:\n  idle: 3\nrules:\n  - match: { clientId: "sensor-*" }\n    keepAlive: { max: 30 }\n'));
  t.equal(c.listen, '127.0.0.1:1999');
  t.equal(c.keepAlive.max, 60);
  t.equal(c.keepAlive.zero, 'accept', 'defaults fill the rest of a section');
  t.equal(c.tcp.idle, 3);
  t.equal(c.tcp.count, 3);
  t.same(c.rules, [{ match: { clientId: 'sensor-*' }, keepAlive: { max: 30 } }]);
});

t.test('errors name the key, the file and the line', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['unknown.yaml', 'listen: 127.0.0.1:1\nbogus: 1\n', /unknown\.yaml:2: bogus: unknown key/],
    ['nested.yaml', 'tcp:\n  idle: 5\n  intervall: 2\n', /nested\.yaml:3: tcp\.intervall: unknown key/],
    ['type.yaml', 'connectTimeout: soon\n', /type\.yaml:1: connectTimeout: expected a number, got string "soon"/],
    ['enum.yaml', '\n\nbroker: rabbit\n', /enum\.yaml:3: broker: expected one of auto, mosquitto, embedded, none/],
    ['range.yaml', 'tcp:\n  count: 0\n', /range\.yaml:2: tcp\.count: must be at least 1/],
    ['hostport.yaml', 'upstream: localhost\n', /hostport\.yaml:1: upstream: expected HOST:PORT/],
    ['rule.yaml', 'rules:\n  - match: { clientId: a }\n    keepAlive: { maxx: 3 }\n', /rule\.yaml:3: rules\.0\.keepAlive\.maxx: unknown key/],
    ['yaml.yaml', 'listen: [\n', /yaml\.yaml:\d+: invalid YAML/],
    ['dup.yaml', 'listen: a:1\nlisten: b:2\n', /dup\.yaml:2: invalid YAML/],
    ['tls.yaml', 'tls:\n  listen: 0.0.0.0:8883\n', /tls\.yaml:1: tls: tls\.listen needs tls\.cert and tls\.key/],
  ];
  for (const [name, text, expected] of cases) {
    t.throws(() => loadConfigFile(file(name, text)), expected, name);
  }
  t.throws(() => loadConfigFile(file('e.yaml', 'connectTimeout: x\n')), ConfigError);
});

t.test('flags override the file and are validated too', async (t) => {
  const c = loadConfigFile(file('base.yaml', 'listen: 127.0.0.1:1999\n'));
  const merged = withOverrides(c, { listen: '127.0.0.1:2000', broker: undefined });
  t.equal(merged.listen, '127.0.0.1:2000');
  t.equal(merged.broker, 'auto');
  t.throws(() => withOverrides(c, { broker: 'x' }), /command line: broker: expected one of/);
  t.throws(() => validateConfig({ probes: { interval: 1, timeout: 2 } }), /probes\.timeout: must be shorter/);
});

t.test('an empty file is the defaults', async (t) => {
  t.same(loadConfigFile(file('empty.yaml', '')), defaultConfig());
});
