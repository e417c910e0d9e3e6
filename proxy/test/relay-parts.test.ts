// The Connection's parts with rules of their own, each alone and in microseconds:
// the CONNECT/CONNACK handshake, the PINGREQ/PINGRESP ledger, the unacknowledged-data
// watch and the close classification.
import t from 'tap';
import mqttPacket from 'mqtt-packet';
import { defaultConfig } from '../src/config/load.ts';
import type { Config } from '../src/config/types.ts';
import { compileRules } from '../src/liveness/policy.ts';
import { decodeConnack, decodeConnect, REASON } from '../src/mqtt/packets.ts';
import { brokerUnreachableConnack, handleConnack, handleConnect } from '../src/relay/handshake.ts';
import { PingLedger } from '../src/relay/ping-ledger.ts';
import { NO_DISCONNECT, clientDisconnectFor, clientErrorReason, clientFinReason, frameErrorDisconnect, tellBrokerWill } from '../src/relay/close-reason.ts';
import { REASONS } from '../src/liveness/reasons.ts';

const connect = (protocolVersion: 3 | 4 | 5, keepalive: number, clientId = 'c1') =>
  mqttPacket.generate({ cmd: 'connect', protocolId: protocolVersion === 3 ? 'MQIsdp' : 'MQTT', protocolVersion, clientId, keepalive, clean: true });
const connack5 = (properties?: Record<string, unknown>) =>
  mqttPacket.generate({ cmd: 'connack', reasonCode: 0, sessionPresent: false, properties }, { protocolVersion: 5 });
const withPolicy = (keepAlive: Partial<Config['keepAlive']>, probes: Partial<Config['probes']> = {}): Config => {
  const c = defaultConfig();
  c.keepAlive = { ...c.keepAlive, ...keepAlive };
  c.probes = { ...c.probes, ...probes };
  return c;
};
const decide = (config: Config, frame: Buffer) => handleConnect(frame, config, compileRules(config.keepAlive, config.rules));

t.test('handshake: an accepted CONNECT goes upstream as it came, the very same bytes', async (t) => {
  const frame = connect(4, 30);
  const out = decide(withPolicy({}), frame);
  t.equal(out.action, 'forward');
  if (out.action !== 'forward' || out.unreadable) return;
  t.equal(out.frame, frame, 'not copied');
  t.match(out, { effectiveKeepAlive: 30, upstreamKeepAlive: 30, serverKeepAlive: undefined, allowedSilenceMs: 32_000, clamped: false, probeIdleMs: Infinity });
});

t.test('handshake: policy refusal answers with a CONNACK in the client\'s protocol', async (t) => {
  const v3 = decide(withPolicy({ max: 60, aboveMax: 'reject' }), connect(4, 600));
  t.match(v3, { action: 'refuse', why: 'keepalive_too_large' });
  if (v3.action === 'refuse') t.same([...v3.connack], [0x20, 0x02, 0x00, 0x02], 'v3.1.1: return code 2');
  const v5 = decide(withPolicy({ zero: 'reject' }), connect(5, 0));
  t.match(v5, { action: 'refuse', why: 'keepalive_zero' });
  if (v5.action === 'refuse') t.same([...v5.connack], [0x20, 0x03, 0x00, REASON.implementationSpecificError, 0x00], 'v5: reason 0x83');
  t.same([...brokerUnreachableConnack(4)], [0x20, 0x02, 0x00, 0x03]);
  t.same([...brokerUnreachableConnack(5)], [0x20, 0x03, 0x00, REASON.serverUnavailable, 0x00]);
});

t.test('handshake: translate rewrites only the keep-alive and probes the broker at half of it', async (t) => {
  const frame = connect(4, 300);
  const out = decide(withPolicy({ max: 60, aboveMax: 'translate', upstreamKeepAlive: 30 }), frame);
  if (out.action !== 'forward' || out.unreadable) return t.fail('not forwarded');
  t.not(out.frame, frame, 'a copy');
  t.equal(decodeConnect(out.frame).keepAlive, 30);
  t.equal(Buffer.compare(out.frame.subarray(0, out.info.keepAliveOffset), frame.subarray(0, out.info.keepAliveOffset)), 0, 'bytes before the keep-alive unchanged');
  t.equal(Buffer.compare(out.frame.subarray(out.info.keepAliveOffset + 2), frame.subarray(out.info.keepAliveOffset + 2)), 0, 'bytes after unchanged');
  t.match(out, { effectiveKeepAlive: 300, upstreamKeepAlive: 30, probeIdleMs: 15_000 });
  const probed = decide(withPolicy({ max: 60, aboveMax: 'translate', upstreamKeepAlive: 30 }, { upstreamProbeIdle: 5, upstreamProbeTimeout: 3 }), frame);
  t.match(probed, { probeIdleMs: 5_000, probeTimeoutMs: 3_000 }, 'per-connection probes more often than half the keep-alive');
});

t.test('handshake: an unreadable CONNECT is forwarded untouched for the broker to judge', async (t) => {
  const frame = Buffer.from([0x10, 0x02, 0x00, 0x00]);
  const out = decide(withPolicy({}), frame);
  t.match(out, { action: 'forward', unreadable: true, info: { protocolVersion: 0, clientId: '', keepAlive: 0 } });
  t.equal(out.action === 'forward' && out.frame, frame);
});

t.test('handshake: MQTT 5 CONNACK gets the proxy\'s Server Keep Alive, or the broker\'s smaller one is adopted', async (t) => {
  const policy = withPolicy({ max: 30 }).keepAlive;
  const out = handleConnack(connack5(), 5, { policy, serverKeepAlive: 30, effectiveKeepAlive: 30 });
  t.equal(decodeConnack(out.frame, 5).serverKeepAlive, 30, 'set by the proxy');
  t.equal(out.adoptedKeepAlive, undefined, 'already enforced');
  const smaller = connack5({ serverKeepAlive: 10 });
  const adopted = handleConnack(smaller, 5, { policy, serverKeepAlive: 30, effectiveKeepAlive: 30 });
  t.equal(adopted.frame, smaller, 'the broker\'s own bytes');
  t.equal(adopted.adoptedKeepAlive, 10);
  t.equal(adopted.allowedSilenceMs, 12_000);
  const larger = handleConnack(connack5({ serverKeepAlive: 100 }), 5, { policy, serverKeepAlive: 30, effectiveKeepAlive: 30 });
  t.equal(decodeConnack(larger.frame, 5).serverKeepAlive, 30, 'overwritten with the proxy\'s smaller value');
  const v3 = Buffer.from([0x20, 0x02, 0x00, 0x00]);
  t.equal(handleConnack(v3, 4, null).frame, v3, 'before MQTT 5: untouched');
  const bad = Buffer.from([0x20, 0x03, 0x00, 0x00, 0x05]);
  t.equal(handleConnack(bad, 5, { policy, serverKeepAlive: 30, effectiveKeepAlive: 30 }).frame, bad, 'unreadable: untouched');
});

t.test('ping ledger: PINGRESPs answer in order; the proxy\'s are swallowed, the client\'s pass', async (t) => {
  const l = new PingLedger();
  l.clientPinged();
  t.equal(l.mustHold(), false, 'no probe in flight: streams through');
  l.clientPinged();
  l.proxyPinged();
  l.clientPinged();
  t.equal(l.proxyInFlight, 1);
  t.equal(l.mustHold(), true);
  t.equal(l.answeredProxy(), false, '1st: the client\'s');
  t.equal(l.mustHold(), true);
  t.equal(l.answeredProxy(), true, '2nd: the proxy\'s');
  t.equal(l.proxyInFlight, 0);
  t.equal(l.mustHold(), false, '3rd: the client\'s, not held');
  t.equal(l.answeredProxy(), false, 'an unasked PINGRESP is nobody\'s probe answer');
});

t.test('close classification', async (t) => {
  t.equal(clientErrorReason('ETIMEDOUT', 5_000, 1_000), 'tcp_user_timeout', 'unsolicited data unacknowledged');
  t.equal(clientErrorReason('ETIMEDOUT', 1_500, 1_000), 'tcp_keepalive', 'an answer to the client\'s last packet does not count');
  t.equal(clientErrorReason('ETIMEDOUT', -1, 1_000), 'tcp_keepalive');
  t.equal(clientErrorReason('ECONNRESET', 5_000, 0), 'client_reset');
  t.equal(clientErrorReason(undefined, 5_000, 0), 'client_reset');
  t.equal(clientFinReason(true), 'client_disconnect');
  t.equal(clientFinReason(false), 'client_close');
  const expected: Record<string, number> = {
    keepalive_timeout: 0x8d, tcp_keepalive: 0x8d, tcp_user_timeout: 0x8d, send_stall: 0x8d,
    shutdown: 0x8b, broker_unresponsive: 0x89, broker_down: 0x89,
  };
  for (const reason of REASONS) t.equal(clientDisconnectFor(reason), expected[reason] ?? NO_DISCONNECT, `${reason} -> client`);
  t.equal(frameErrorDisconnect('MLP_FRAME_TOO_LARGE'), 0x95);
  t.equal(frameErrorDisconnect('MLP_MALFORMED_LENGTH'), 0x81);
  t.equal(frameErrorDisconnect('MLP_RESERVED_TYPE'), 0x82);
  t.equal(tellBrokerWill('keepalive_timeout', 5, true, true), true, 'v5 liveness verdict: DISCONNECT 0x04');
  t.equal(tellBrokerWill('keepalive_timeout', 4, true, true), false, '3.x: abrupt close');
  t.equal(tellBrokerWill('keepalive_timeout', 5, true, false), false, 'mid-frame: abrupt close');
  t.equal(tellBrokerWill('keepalive_timeout', 5, false, true), false, 'no session upstream');
  t.equal(tellBrokerWill('shutdown', 5, true, true), false, 'not a liveness verdict: no Will');
});

t.test('the reused mqtt-packet parsers: a bad or partial frame does not spoil the next decode, v3 and v5 alternate', (t) => {
  const v4 = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'a', keepalive: 30, username: 'u', password: Buffer.from('secret') } as never);
  const v5 = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: 'b', keepalive: 40, properties: { sessionExpiryInterval: 10 } } as never);
  const garbage = Buffer.from([0x10, 0x05, 0x00, 0x04, 0x4d, 0x51, 0x54]);
  t.same([decodeConnect(v4).clientId, decodeConnect(v5).clientId, decodeConnect(v4).keepAlive, decodeConnect(v5).protocolVersion], ['a', 'b', 30, 5]);
  t.throws(() => decodeConnect(garbage), /cannot decode packet/);
  t.throws(() => decodeConnect(v4.subarray(0, v4.length - 2)), /cannot decode packet/, 'a partial frame');
  t.equal(decodeConnect(Buffer.concat([v4, v4.subarray(0, 3)])).clientId, 'a', 'bytes after the frame: the frame decodes (as with a fresh parser), the leftover is dropped with its parser');
  t.equal(decodeConnect(v4).clientId, 'a', 'the next decode starts clean');
  t.equal(decodeConnack(mqttPacket.generate({ cmd: 'connack', returnCode: 0, sessionPresent: false } as never), 4).returnCode, 0);
  t.equal(decodeConnack(mqttPacket.generate({ cmd: 'connack', reasonCode: 0, sessionPresent: true, properties: { serverKeepAlive: 20 } } as never, { protocolVersion: 5 }), 5).serverKeepAlive, 20);
  t.equal(decodeConnect(v5).keepAlive, 40);
  t.end();
});
