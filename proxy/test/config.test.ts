import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, defaultConfig, loadConfig, loadConfigFile, validateConfig } from '../src/config/load.ts';
import { configKeys } from '../src/config/describe.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-config-'));
function file(name: string, text: string): string {
  const f = path.join(dir, name);
  writeFileSync(f, text);
  return f;
}

t.test('defaults', async (t) => {
  const c = defaultConfig();
  t.same(c.listen, { host: '0.0.0.0', port: 1883 }, 'host:port parsed once, at load');
  t.same(c.upstream, { host: '127.0.0.1', port: 1884 });
  t.same(c.admin, { host: '0.0.0.0', port: 9464 });
  t.equal(c.tls.listen, null);
  t.equal(c.broker, 'auto');
  t.equal(c.connectTimeout, 10);
  t.equal(c.maxPacketSize, 16 * 1024 * 1024);
  t.same(c.tcp, { keepAlive: true, idle: null, interval: null, count: null, userTimeout: null, sendTimeout: 10 }, 'tcp timing unset: from liveness.profile');
  t.same(c.liveness, { profile: 'balanced', falseDeathBudget: 1e-4, adaptive: true, maxHold: 30, maxDead: 120, correlation: { enabled: true, window: 3, minCount: 3, fraction: 0.1 } });
  t.equal(c.keepAlive.aboveMax, 'accept');
  t.same(c.rules, []);
});

t.test('a valid file, partially filled', async (t) => {
  const c = loadConfigFile(file('ok.yaml', 'listen: 127.0.0.1:1999\nkeepAlive:\n  max: 60\n  aboveMax: reject\ntcp:\n  idle: 3\nrules:\n  - match: { clientId: "sensor-*" }\n    keepAlive: { max: 30 }\n'));
  t.same(c.listen, { host: '127.0.0.1', port: 1999 });
  t.equal(c.keepAlive.max, 60);
  t.equal(c.keepAlive.zero, 'accept', 'defaults fill the rest of a section');
  t.equal(c.tcp.idle, 3);
  t.equal(c.tcp.count, null, 'an override left unset stays unset');
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
    ['port.yaml', 'upstream: localhost:99999\n', /port\.yaml:1: upstream: expected HOST:PORT with a port from 0 to 65535, got "localhost:99999"/],
    ['tlsport.yaml', 'tls:\n  listen: 0.0.0.0:65536\n', /tlsport\.yaml:2: tls\.listen: expected HOST:PORT/],
    ['int.yaml', 'tcp:\n  count: 1.5\n', /int\.yaml:2: tcp\.count: expected a whole number, got 1\.5/],
    ['match.yaml', 'rules:\n  - keepAlive: { max: 3 }\n', /match\.yaml:2: rules\.0\.match: a rule needs match/],
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
  const base = file('base.yaml', 'listen: 127.0.0.1:1999\n');
  const merged = loadConfig({ file: base, flags: { listen: '127.0.0.1:2000', broker: undefined } });
  t.same(merged.listen, { host: '127.0.0.1', port: 2000 });
  t.equal(merged.broker, 'auto');
  t.throws(() => loadConfig({ file: base, flags: { broker: 'x' } }), /command line: broker: expected one of/);
  t.throws(() => validateConfig({ probes: { interval: 1, timeout: 2 } }), /probes\.timeout: must be shorter/);
  t.same(validateConfig({ listen: '[::1]:1883' }).listen, { host: '::1', port: 1883 }, 'IPv6 in brackets');
});

t.test('the environment: every key as MLP_ + upper snake case, between the file and the flags', async (t) => {
  const base = file('env-base.yaml', 'keepAlive:\n  max: 60\ntcp:\n  idle: 3\n');
  const c = loadConfig({
    file: base,
    env: { MLP_KEEP_ALIVE__MAX: '30', MLP_TCP__USER_TIMEOUT: '2.5', MLP_TCP__KEEP_ALIVE: 'false', MLP_ADMIN_TOKEN: '12345', MLP_EVENTS__TYPES: 'verdict,connect', MLP_LISTEN: '127.0.0.1:1000', MLP_RULES: '[{match: {clientId: "a*"}, keepAlive: {max: 5}}]', MLP_PROBES__USERNAME: '', MLP_FUZZ_RUNS: '3', PATH: '/bin' },
    flags: { listen: '127.0.0.1:2000' },
  });
  t.equal(c.keepAlive.max, 30, 'environment over file');
  t.equal(c.tcp.idle, 3, 'the file where the environment is silent');
  t.equal(c.tcp.userTimeout, 2.5);
  t.equal(c.tcp.keepAlive, false);
  t.equal(c.adminToken, '12345', 'strings stay strings');
  t.same(c.events.types, ['verdict', 'connect']);
  t.same(c.listen, { host: '127.0.0.1', port: 2000 }, 'flags over environment');
  t.same(c.rules, [{ match: { clientId: 'a*' }, keepAlive: { max: 5 } }]);
  t.equal(c.probes.username, null, 'an empty variable is unset');

  t.throws(() => loadConfig({ file: base, env: { MLP_KEEP_ALIVE__MAX: '99999' } }), /^MLP_KEEP_ALIVE__MAX: keepAlive\.max: must be at most 65535, got 99999$/);
  t.throws(() => loadConfig({ env: { MLP_TCP__IDLE: 'soon' } }), /^MLP_TCP__IDLE: tcp\.idle: expected a number, got string "soon"$/);
  t.throws(() => loadConfig({ env: { MLP_UPSTREAM: 'broker:70000' } }), /^MLP_UPSTREAM: upstream: expected HOST:PORT/);
  t.throws(() => loadConfig({ env: { MLP_TCP__IDEL: '3' } }), /^MLP_TCP__IDEL: no such key \(known: MLP_TCP__KEEP_ALIVE, MLP_TCP__IDLE/);
  t.throws(() => loadConfig({ env: { MLP_RULES: '[{match: {clientId: a}, keepAlive: {maxx: 1}}]' } }), /^MLP_RULES: rules\.0\.keepAlive\.maxx: unknown key/);
  t.throws(() => loadConfig({ file: file('cross.yaml', 'probes:\n  interval: 1\n'), env: { MLP_PROBES__TIMEOUT: '3' } }), /^MLP_PROBES__TIMEOUT: probes\.timeout: must be shorter/);
  t.throws(() => loadConfig({ file: file('cross2.yaml', 'probes:\n  timeout: 3\n'), env: { MLP_PROBES__INTERVAL: '1' } }), /cross2\.yaml:2: probes\.timeout: must be shorter/, 'blame goes to who set the key');
});

t.test('every key has a distinct variable', async (t) => {
  const names = configKeys().map((k) => k.env);
  t.equal(new Set(names).size, names.length);
  t.ok(names.includes('MLP_KEEP_ALIVE__UPSTREAM_KEEP_ALIVE') && names.includes('MLP_LIMITS__MAX_CONNECTIONS_PER_SOURCE'));
});

t.test('an empty file is the defaults', async (t) => {
  t.same(loadConfigFile(file('empty.yaml', '')), defaultConfig());
});
