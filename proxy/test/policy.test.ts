import t from 'tap';
import { defaultConfig, validateConfig } from '../src/config/load.ts';
import type { KeepAlivePolicy } from '../src/config/types.ts';
import { allowedSilenceMs, brokerDeadlineMs, compileRules, decideKeepAlive, globToRegExp, policyFor, serverKeepAliveToSend } from '../src/liveness/policy.ts';

const base: KeepAlivePolicy = defaultConfig().keepAlive;
const hello = (protocolVersion: number, keepAlive: number, clientId = 'c', username?: string) => ({ protocolVersion, keepAlive, clientId, username });

t.test('deadline: keep-alive + min(2 s, 0.5 x keep-alive), never past 1.5 x', async (t) => {
  t.equal(allowedSilenceMs(60, base), 62_000);
  t.equal(allowedSilenceMs(4, base), 6_000);
  t.equal(allowedSilenceMs(2, base), 3_000);
  t.equal(allowedSilenceMs(1, base), 1_500);
  t.equal(allowedSilenceMs(0, base), Infinity);
  t.equal(allowedSilenceMs(10, { grace: 0.5, multiplier: null }), 10_500);
  t.equal(allowedSilenceMs(10, { grace: 100, multiplier: null }), 15_000, 'a large grace is capped at the broker deadline');
  t.equal(allowedSilenceMs(10, { grace: null, multiplier: 1.25 }), 12_500);
  for (let ka = 1; ka <= 65535; ka += 97) {
    if (allowedSilenceMs(ka, base) > brokerDeadlineMs(ka)) t.fail(`keep-alive ${ka} later than the broker`);
  }
  t.equal(brokerDeadlineMs(60), 90_000);
  t.equal(brokerDeadlineMs(0), Infinity);
});

// [what, policy overrides, protocol, requested keep-alive, expected]
const table: Array<[string, Partial<KeepAlivePolicy>, number, number, Record<string, unknown>]> = [
  ['v3 below max', { max: 60 }, 4, 30, { action: 'accept', effectiveKeepAlive: 30, serverKeepAlive: undefined, upstreamKeepAlive: undefined, clamped: false }],
  ['v3 above max, accept', { max: 60 }, 4, 600, { action: 'accept', effectiveKeepAlive: 600, serverKeepAlive: undefined, clamped: false }],
  ['v3 above max, reject', { max: 60, aboveMax: 'reject' }, 4, 600, { action: 'reject', why: 'keepalive_too_large', v3ReturnCode: 2 }],
  ['v3.1 above max, reject', { max: 60, aboveMax: 'reject' }, 3, 61, { action: 'reject', v3ReturnCode: 2 }],
  ['v3 above max, translate', { max: 60, aboveMax: 'translate', upstreamKeepAlive: 30 }, 4, 300, { action: 'accept', effectiveKeepAlive: 300, upstreamKeepAlive: 30, allowedSilenceMs: 302_000 }],
  ['v3 translate with no max', { aboveMax: 'translate', upstreamKeepAlive: 5 }, 4, 30, { action: 'accept', effectiveKeepAlive: 30, upstreamKeepAlive: 5 }],
  ['v3 translate, at or below upstream keep-alive', { aboveMax: 'translate', upstreamKeepAlive: 60 }, 4, 30, { action: 'accept', upstreamKeepAlive: undefined }],
  ['v5 above max is clamped', { max: 30 }, 5, 600, { action: 'accept', effectiveKeepAlive: 30, serverKeepAlive: 30, clamped: true, allowedSilenceMs: 32_000 }],
  ['v5 above max with reject is still clamped', { max: 30, aboveMax: 'reject' }, 5, 600, { action: 'accept', serverKeepAlive: 30 }],
  ['v5 at max', { max: 30 }, 5, 30, { action: 'accept', serverKeepAlive: undefined, clamped: false }],
  ['zero, accept', {}, 4, 0, { action: 'accept', effectiveKeepAlive: 0, allowedSilenceMs: Infinity }],
  ['zero, reject v3', { zero: 'reject' }, 4, 0, { action: 'reject', why: 'keepalive_zero', v3ReturnCode: 2 }],
  ['zero, reject v5', { zero: 'reject' }, 5, 0, { action: 'reject', why: 'keepalive_zero', v5Reason: 0x83 }],
  ['zero, assign v5', { zero: 'assign', assign: 45 }, 5, 0, { action: 'accept', effectiveKeepAlive: 45, serverKeepAlive: 45, clamped: true }],
  ['zero, assign v3 cannot be told: accept', { zero: 'assign', assign: 45 }, 4, 0, { action: 'accept', effectiveKeepAlive: 0 }],
];

t.test('policy table', async (t) => {
  for (const [what, overrides, version, ka, expected] of table) {
    t.match(decideKeepAlive({ ...base, ...overrides }, hello(version, ka)), expected, what);
  }
});

t.test('rules: globs on client id and username, first match wins', async (t) => {
  const config = validateConfig({
    keepAlive: { max: 120 },
    rules: [
      { match: { clientId: 'sensor-*' }, keepAlive: { max: 30 } },
      { match: { clientId: 'sensor-legacy-?', username: 'old*' }, keepAlive: { max: 10 } },
      { match: { username: 'fleet' }, keepAlive: { aboveMax: 'reject' } },
    ],
  });
  const rules = compileRules(config.keepAlive, config.rules);
  t.equal(policyFor(config, rules, hello(4, 60, 'sensor-1')).max, 30);
  t.equal(policyFor(config, rules, hello(4, 60, 'sensor-legacy-1', 'old')).max, 30, 'first match wins');
  t.equal(policyFor(config, rules, hello(4, 60, 'truck/7', 'fleet')).aboveMax, 'reject');
  t.equal(policyFor(config, rules, hello(4, 60, 'truck/7', 'fleet')).max, 120, 'unset fields come from the global policy');
  t.equal(policyFor(config, rules, hello(4, 60, 'other', undefined)), config.keepAlive);
  t.ok(globToRegExp('a/*/c').test('a/b/x/c'), '* crosses slashes: client ids are not paths');
  t.notOk(globToRegExp('a.b').test('axb'), 'dots are literal');
  t.ok(globToRegExp('dev-??').test('dev-01'));
  t.notOk(globToRegExp('dev-??').test('dev-1'));
});

t.test('Server Keep Alive: the broker\'s smaller value wins', async (t) => {
  t.equal(serverKeepAliveToSend(30, undefined), 30);
  t.equal(serverKeepAliveToSend(30, 20), undefined, 'keep the broker\'s bytes');
  t.equal(serverKeepAliveToSend(30, 60), 30);
  t.equal(serverKeepAliveToSend(undefined, 60), undefined);
});
