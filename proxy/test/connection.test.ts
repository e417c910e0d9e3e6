// Connection over in-memory streams with the ManualClock, in microseconds: the
// handshake, the PINGREQ/PINGRESP ledger, and every close reason a Connection
// produces, with the bytes each side receives.
import t from 'tap';
import mqttPacket from 'mqtt-packet';
import { decodeConnack, decodeConnect } from '../src/mqtt/packets.ts';
import { newTcpInfoSample } from '../src/liveness/tcp-options.ts';
import { FleetPrior } from '../src/liveness/link-estimate.ts';
import type { SuspectEvent } from '../src/relay/events.ts';
import { connectionHarness, type Harness, type HarnessOptions } from './helpers/connection-harness.ts';

const CONNACK_V3 = Buffer.from([0x20, 0x02, 0x00, 0x00]);
const CONNACK_V5 = Buffer.from([0x20, 0x03, 0x00, 0x00, 0x00]);
const PINGREQ = Buffer.from([0xc0, 0x00]);
const PINGRESP = Buffer.from([0xd0, 0x00]);
const DISCONNECT = Buffer.from([0xe0, 0x00]);
const v5Disconnect = (reason: number) => Buffer.from([0xe0, 0x01, reason]);
const hex = (b: Buffer) => b.toString('hex');

const connect = (protocolVersion: 4 | 5, keepalive: number, clientId = 'unit') =>
  mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion, clientId, keepalive, clean: true });
const publish = (payloadBytes: number, protocolVersion = 4) =>
  mqttPacket.generate({ cmd: 'publish', topic: 't', payload: Buffer.alloc(payloadBytes, 0x61), qos: 0, retain: false, dup: false }, { protocolVersion });

/** A connection through its handshake: CONNECT relayed, CONNACK relayed. */
async function session(protocolVersion: 4 | 5, keepAlive: number, options: HarnessOptions = {}): Promise<Harness> {
  const h = connectionHarness(options);
  h.client.write(connect(protocolVersion, keepAlive));
  await h.settle();
  h.broker.write(protocolVersion === 5 ? CONNACK_V5 : CONNACK_V3);
  await h.settle();
  return h;
}

/** Wait (in real time, briefly) for the close event: both streams must close first. */
async function closed(h: Harness) {
  for (let i = 0; i < 50 && h.closes.length === 0; i++) await h.settle();
  if (h.closes.length === 0) throw new Error(`no close event; phase ${h.conn.phase}`);
  return h.closes[0];
}

t.test('handshake: CONNECT and CONNACK relayed byte for byte (3.1.1)', async (t) => {
  const h = connectionHarness();
  t.equal(h.conn.phase, 'awaiting_connect');
  const frame = connect(4, 30);
  h.client.write(frame);
  await h.settle();
  t.equal(hex(h.toBroker()), hex(frame), 'the broker got the CONNECT unchanged');
  t.equal(h.conn.phase, 'awaiting_connack');
  t.match(h.connects[0], { clientId: 'unit', keepAlive: 30, effectiveKeepAlive: 30, transport: 'tcp', remoteAddress: '192.0.2.7', clamped: false, rejected: null });
  h.broker.write(CONNACK_V3);
  await h.settle();
  t.equal(hex(h.toClient()), hex(CONNACK_V3));
  t.equal(h.conn.phase, 'open');
  t.ok(h.conn.hasConnack);
  h.clock.advance(31_999);
  t.ok(h.conn.isOpen, 'keep-alive 30 s: still open at 32 s - 1 ms of silence');
  h.clock.advance(1);
  t.equal((await closed(h)).reason, 'keepalive_timeout', 'cut at keep-alive + 2 s');
});

t.test('handshake: policy refusal is answered by the proxy, nothing reaches the broker (policy_reject)', async (t) => {
  const h = connectionHarness({ configure: (c) => { c.keepAlive.zero = 'reject'; } });
  h.client.write(connect(4, 0));
  const e = await closed(h);
  t.equal(hex(h.toClient()), '20020002', 'CONNACK return code 2');
  t.ok(h.clientGotEnd(), 'then the client is closed');
  t.equal(h.toBroker().length, 0, 'the broker got nothing');
  t.ok(h.upstream.destroyed);
  t.equal(h.conn.phase, 'closed');
  t.match(e, { reason: 'policy_reject', detail: 'keepalive_zero', liveness: false, transport: 'tcp' });
  t.match(h.connects[0], { rejected: 'keepalive_zero' });
});

t.test('handshake: translate sends the broker its keep-alive and answers for the client with probes', async (t) => {
  const h = await session(4, 300, { configure: (c) => { Object.assign(c.keepAlive, { max: 60, aboveMax: 'translate', upstreamKeepAlive: 30 }); } });
  t.equal(decodeConnect(h.toBroker()).keepAlive, 30, 'the broker was sent 30 s');
  t.match(h.conn.facts(), { keepAlive: 300, effectiveKeepAlive: 300, upstreamKeepAlive: 30 });
  const sent = h.toBroker().length;
  h.clock.advance(15_000);
  await h.settle();
  t.equal(hex(h.toBroker().subarray(sent)), hex(PINGREQ), 'a PINGREQ injected at half the broker\'s keep-alive');
  h.broker.write(PINGRESP);
  await h.settle();
  t.equal(hex(h.toClient()), hex(CONNACK_V3), 'its PINGRESP never reaches the client');
  t.equal(h.stats.swallowedPingResps, 1);
  t.ok(h.conn.isOpen);
});

t.test('handshake: MQTT 5 Server Keep Alive set by the proxy, or the broker\'s smaller one adopted', async (t) => {
  const h = connectionHarness({ configure: (c) => { c.keepAlive.max = 30; } });
  h.client.write(connect(5, 600));
  await h.settle();
  t.equal(decodeConnect(h.toBroker()).keepAlive, 600, 'MQTT 5: the broker gets the client\'s CONNECT unchanged');
  h.broker.write(CONNACK_V5);
  await h.settle();
  t.equal(decodeConnack(h.toClient(), 5).serverKeepAlive, 30, 'the client is told 30 s');
  t.equal(h.conn.effectiveKeepAlive, 30);

  const b = connectionHarness({ configure: (c) => { c.keepAlive.max = 30; } });
  b.client.write(connect(5, 600));
  await b.settle();
  const smaller = mqttPacket.generate({ cmd: 'connack', reasonCode: 0, sessionPresent: false, properties: { serverKeepAlive: 10 } }, { protocolVersion: 5 });
  b.broker.write(smaller);
  await b.settle();
  t.equal(hex(b.toClient()), hex(smaller), 'the broker\'s CONNACK unchanged');
  t.equal(b.conn.effectiveKeepAlive, 10, 'and its 10 s enforced');
  b.clock.advance(11_999);
  t.ok(b.conn.isOpen, 'still open at 12 s - 1 ms of silence');
  b.clock.advance(1);
  t.equal((await closed(b)).reason, 'keepalive_timeout', 'cut at 10 s + 2 s, not at 30 s + 2 s');
});

t.test('ping ledger: client and proxy PINGREQs interleaved; each PINGRESP goes where it belongs', async (t) => {
  const h = await session(4, 60, { configure: (c) => { c.probes.upstreamProbeIdle = 5; c.probes.upstreamProbeTimeout = 3; } });
  const start = h.toBroker().length;
  h.client.write(PINGREQ);
  await h.settle();
  h.clock.advance(5_000);
  await h.settle();
  h.client.write(PINGREQ);
  await h.settle();
  t.equal(hex(h.toBroker().subarray(start)), hex(Buffer.concat([PINGREQ, PINGREQ, PINGREQ])), 'client, proxy, client');
  t.equal(h.stats.injectedPings, 1);
  h.broker.write(Buffer.concat([PINGRESP, PINGRESP, PINGRESP]));
  await h.settle();
  t.equal(hex(h.toClient()), hex(Buffer.concat([CONNACK_V3, PINGRESP, PINGRESP])), 'the client got exactly its two');
  t.equal(h.stats.swallowedPingResps, 1);
  h.clock.advance(3_000);
  t.ok(h.conn.isOpen, 'the probe was answered: no broker_unresponsive');
});

t.test('close: client_disconnect (DISCONNECT then FIN, passed on in order)', async (t) => {
  const h = await session(4, 60);
  h.client.write(DISCONNECT);
  h.client.end();
  await h.settle();
  t.ok(h.toBroker().subarray(-2).equals(DISCONNECT), 'the broker got the DISCONNECT');
  t.ok(h.brokerGotEnd(), 'then the FIN');
  h.broker.end();
  const e = await closed(h);
  t.match(e, { reason: 'client_disconnect', liveness: false, bytesFromClient: connect(4, 60).length + 2 });
});

t.test('close: client_close (FIN without DISCONNECT); a half-close lingers at most 10 s', async (t) => {
  const h = await session(4, 60);
  h.client.end();
  await h.settle();
  t.ok(h.brokerGotEnd(), 'the FIN is passed on');
  t.ok(h.conn.isOpen === false);
  h.broker.write(publish(10));
  await h.settle();
  t.equal(h.toClient().length, CONNACK_V3.length + publish(10).length, 'the broker may still send');
  h.clock.advance(10_000);
  const e = await closed(h);
  t.equal(e.reason, 'client_close');
});

t.test('close: client_reset on ECONNRESET; the broker connection is cut without a DISCONNECT', async (t) => {
  const h = await session(5, 60);
  const sent = h.toBroker().length;
  h.clientStream.destroy(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }));
  const e = await closed(h);
  t.match(e, { reason: 'client_reset', detail: 'ECONNRESET', liveness: false });
  t.equal(h.toBroker().length, sent, 'no DISCONNECT: not a liveness verdict');
  t.ok(h.upstream.destroyed);
});

t.test('close: keepalive_timeout, MQTT 5: DISCONNECT 0x04 to the broker, 0x8D to the client', async (t) => {
  const h = await session(5, 10);
  const sent = h.toBroker().length;
  h.clock.advance(11_999);
  t.ok(h.conn.isOpen, 'not before keep-alive + 2 s');
  h.clock.advance(1);
  const e = await closed(h);
  t.match(e, { reason: 'keepalive_timeout', liveness: true, silenceMs: 12_000, advantageMs: 3_000 });
  t.same(h.brokerSideDoneAtClose, [true], 'the broker side was told and closed before the verdict was reported (close event)');
  t.equal(hex(h.toBroker().subarray(sent)), hex(v5Disconnect(0x04)), 'Will published at once');
  t.ok(h.brokerGotEnd());
  t.equal(hex(h.toClient().subarray(CONNACK_V5.length)), hex(v5Disconnect(0x8d)));
});

t.test('close: keepalive_timeout, 3.1.1: both closed abruptly, no DISCONNECT either way', async (t) => {
  const h = await session(4, 10);
  const sent = h.toBroker().length;
  h.clock.advance(12_000);
  const e = await closed(h);
  t.equal(e.reason, 'keepalive_timeout');
  t.equal(h.toBroker().length, sent);
  t.equal(hex(h.toClient()), hex(CONNACK_V3));
  t.ok(h.upstream.destroyed && h.clientStream.destroyed);
});

t.test('close: send_stall when the client stops reading for the send timeout', async (t) => {
  const h = await session(5, 600, { clientReads: false, configure: (c) => { c.tcp.sendTimeout = 5; } });
  h.broker.write(publish(200_000, 5));
  await h.settle();
  t.ok(h.conn.transport.stream.writableNeedDrain, 'writes to the client wait for drain');
  h.clock.advance(4_999);
  t.ok(h.conn.isOpen);
  h.clock.advance(1);
  const e = await closed(h);
  t.match(e, { reason: 'send_stall', liveness: true });
  t.ok(h.toBroker().subarray(-3).equals(v5Disconnect(0x04)), 'DISCONNECT 0x04 to the broker');
});

t.test('close: connect_timeout when no CONNECT comes', async (t) => {
  const h = connectionHarness();
  h.clock.advance(h.config.connectTimeout * 1000 - 1);
  t.ok(h.conn.isOpen);
  h.clock.advance(1);
  const e = await closed(h);
  t.match(e, { reason: 'connect_timeout', clientId: null, liveness: false });
  t.equal(h.toBroker().length + h.toClient().length, 0, 'nothing sent either way');
});

t.test('a wall-clock step does not bend a duration: durationMs is monotonic, the timestamps are wall', async (t) => {
  const h = connectionHarness();
  const startedAt = h.conn.startedAt;
  h.clock.advance(1_000);
  h.clock.stepWall(-3_600_000); // an hour back, mid-connection
  h.clock.advance(h.config.connectTimeout * 1000 - 1_000);
  const e = await closed(h);
  t.equal(e.reason, 'connect_timeout');
  t.equal(e.durationMs, h.config.connectTimeout * 1000, 'the CONNECT timeout, exactly');
  t.equal(e.startedAt, startedAt, 'startedAt is the wall clock at accept');
  t.equal(e.endedAt, startedAt + h.config.connectTimeout * 1000 - 3_600_000, 'endedAt is the wall clock at the end, step included');
});

t.test('close: protocol_error for a first packet that is not CONNECT, and 0x95 for a too-large packet in MQTT 5', async (t) => {
  const h = connectionHarness();
  h.client.write(publish(4));
  const e = await closed(h);
  t.match(e, { reason: 'protocol_error', detail: 'MLP_REJECTED: first packet is type 3, not CONNECT' });
  t.equal(h.toBroker().length, 0);

  const big = await session(5, 60, { configure: (c) => { c.maxPacketSize = 1024; } });
  const sent = big.toBroker().length;
  big.client.write(publish(2000, 5));
  const e2 = await closed(big);
  t.match(e2, { reason: 'protocol_error', detail: /^MLP_FRAME_TOO_LARGE/ });
  t.equal(hex(big.toClient().subarray(CONNACK_V5.length)), hex(v5Disconnect(0x95)));
  t.equal(big.toBroker().length, sent, 'not a byte of it reached the broker');
});

t.test('close: broker_close, 3.1.1: the FIN is passed on', async (t) => {
  const h = await session(4, 60);
  h.broker.end();
  await h.settle();
  t.ok(h.clientGotEnd());
  h.client.end();
  const e = await closed(h);
  t.equal(e.reason, 'broker_close');
  t.equal(hex(h.toClient()), hex(CONNACK_V3));
});

t.test('close: broker_close, MQTT 5 without DISCONNECT: 0x89 (server busy; 0x88 is CONNACK-only) only when the broker died', async (t) => {
  const dead = await session(5, 60);
  dead.brokerAlive = false;
  dead.broker.end();
  await dead.settle();
  t.equal(hex(dead.toClient().subarray(CONNACK_V5.length)), hex(v5Disconnect(0x89)), 'server busy');
  t.ok(dead.clientGotEnd());
  dead.client.end();
  t.equal((await closed(dead)).reason, 'broker_close');

  const alive = await session(5, 60);
  alive.broker.end();
  await alive.settle();
  t.equal(hex(alive.toClient()), hex(CONNACK_V5), 'a broker that closed one connection: passed on untouched');
  t.ok(alive.clientGotEnd());

  const told = await session(5, 60);
  told.broker.write(v5Disconnect(0x8e));
  told.broker.end();
  await told.settle();
  t.equal(hex(told.toClient().subarray(CONNACK_V5.length)), hex(v5Disconnect(0x8e)), 'the broker\'s own DISCONNECT passes');
  told.client.end();
  t.match(await closed(told), { reason: 'broker_close', detail: 'broker sent DISCONNECT 0x8e' });
});

t.test('close: broker_unreachable with brokerUnreachable close (default): no CONNACK, closed at once', async (t) => {
  const early = connectionHarness({ upstreamConnects: false });
  t.equal(early.config.brokerUnreachable, 'close', 'the default');
  early.upstream.destroy(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
  await early.settle();
  t.ok(early.clientGotEnd(), 'the client is closed without waiting for its CONNECT');
  early.client.end();
  t.match(await closed(early), { reason: 'broker_unreachable', detail: 'ECONNREFUSED' });
  t.equal(early.toClient().length, 0, 'nothing written: clients retry after a bare close');

  const late = connectionHarness({ upstreamConnects: false });
  late.client.write(connect(5, 60));
  await late.settle();
  late.upstream.destroy(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
  await late.settle();
  t.ok(late.clientGotEnd());
  late.client.end();
  t.match(await closed(late), { reason: 'broker_unreachable', detail: 'ECONNREFUSED' });
  t.equal(late.toClient().length, 0, 'no CONNACK 0x88 either');
});

t.test('close: broker_unreachable with brokerUnreachable connack, whether the upstream fails before or after the CONNECT', async (t) => {
  const connack = { configure: (c: import('../src/config/types.ts').Config) => { c.brokerUnreachable = 'connack'; } };
  const early = connectionHarness({ upstreamConnects: false, ...connack });
  early.upstream.destroy(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
  await early.settle();
  t.ok(early.conn.isOpen, 'waits for the CONNECT to learn the protocol');
  early.client.write(connect(5, 60));
  await early.settle();
  t.equal(hex(early.toClient()), '2003008800', 'MQTT 5 CONNACK 0x88');
  t.ok(early.clientGotEnd());
  early.clock.advance(2_000); // a client that does not close after its refusal is cut
  const e = await closed(early);
  t.match(e, { reason: 'broker_unreachable', detail: 'upstream connection failed' });

  const late = connectionHarness({ upstreamConnects: false, ...connack });
  late.client.write(connect(4, 60));
  await late.settle();
  late.upstream.destroy(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
  await late.settle();
  late.client.end();
  const e2 = await closed(late);
  t.match(e2, { reason: 'broker_unreachable', detail: 'ECONNREFUSED' });
  t.equal(hex(late.toClient()), '20020003', '3.1.1 CONNACK return code 3');
});

t.test('close: broker_unresponsive when an injected PINGREQ is not answered', async (t) => {
  const h = await session(5, 60, { configure: (c) => { c.probes.upstreamProbeIdle = 5; c.probes.upstreamProbeTimeout = 3; } });
  h.clock.advance(5_000);
  await h.settle();
  t.ok(h.toBroker().subarray(-2).equals(PINGREQ));
  h.clock.advance(2_999);
  t.ok(h.conn.isOpen);
  h.clock.advance(1);
  const e = await closed(h);
  t.match(e, { reason: 'broker_unresponsive', liveness: false });
  t.equal(hex(h.toClient().subarray(CONNACK_V5.length)), hex(v5Disconnect(0x89)));
  t.ok(h.toBroker().subarray(-2).equals(PINGREQ), 'no DISCONNECT to the broker');
});

t.test('close: shutdown and broker_down, decided outside the connection', async (t) => {
  const h = await session(5, 60);
  const sent = h.toBroker().length;
  h.conn.end('shutdown', null);
  const e = await closed(h);
  t.match(e, { reason: 'shutdown', liveness: false });
  t.equal(hex(h.toClient().subarray(CONNACK_V5.length)), hex(v5Disconnect(0x8b)));
  t.equal(h.toBroker().length, sent, 'the broker connection is closed without a DISCONNECT: its Will, if any, is the broker\'s call');

  const down = await session(5, 60);
  down.conn.end('broker_down', 'canary');
  t.equal((await closed(down)).reason, 'broker_down');
  t.equal(hex(down.toClient().subarray(CONNACK_V5.length)), hex(v5Disconnect(0x89)));

  const v3 = await session(4, 60);
  v3.conn.end('shutdown', null);
  await closed(v3);
  t.equal(hex(v3.toClient()), hex(CONNACK_V3), '3.1.1: just closed');
});

t.test('close: tcp_user_timeout from the proxy\'s own TCP check (fake TCP_INFO): suspect first, dead only after the floor and the model agree', async (t) => {
  const unacked = { ...newTcpInfoSample(), unacked: 2, retransmits: 30, rtoUs: 200_000, lastAckRecvMs: 1_000_000 }; // no ACK for ages
  const h = await session(5, 600, { configure: (c) => { c.tcp.userTimeout = 8; }, tcpInfo: unacked });
  const suspects: SuspectEvent[] = [];
  h.events.on('suspect', (e) => suspects.push(e));
  const writtenAt = h.clock.now();
  h.broker.write(publish(100, 5));
  await h.settle();
  h.clock.advance(7_999);
  t.ok(h.conn.isOpen, 'no verdict before tcp.userTimeout (the floor)');
  t.equal(h.conn.liveness.tcpState, 'suspect', 'suspect once an answer is overdue');
  t.match(suspects, [{ kind: 'tcp_data', phase: 'start' }]);
  for (let i = 0; i < 130 && h.closes.length === 0; i++) {
    h.clock.advance(1_000);
    await h.settle();
  }
  const e = await closed(h);
  const at = h.clock.now() - writtenAt;
  t.ok(at >= 8_000 && at <= 121_000, `dead between the floor and maxDead (${at} ms)`);
  t.match(e, { reason: 'tcp_user_timeout', detail: /^proxy check: no ACK for \d+ ms, 2 segments unacknowledged, 30 retransmissions/, liveness: true });
  t.ok(h.toBroker().subarray(-3).equals(v5Disconnect(0x04)));

  const acked = await session(5, 600, { configure: (c) => { c.tcp.userTimeout = 8; }, tcpInfo: { ...newTcpInfoSample(), rtoUs: 200_000, lastAckRecvMs: 8_000 } });
  acked.broker.write(publish(100, 5));
  await acked.settle();
  acked.clock.advance(20_000);
  t.ok(acked.conn.isOpen, 'everything acknowledged: no verdict');
  t.equal(acked.conn.liveness.tcpState, 'alive');

  const paused = await session(5, 600, { tcpInfo: { ...newTcpInfoSample(), rtoUs: 200_000, probes: 9, notsentBytes: 50_000, lastAckRecvMs: 60_000 } });
  paused.broker.write(publish(100, 5));
  await paused.settle();
  paused.clock.advance(200_000);
  t.ok(paused.conn.isOpen, 'zero-window probes of a paused reader (bytes queued) are no silence: no TCP verdict');
});

t.test('close: ETIMEDOUT from the kernel is tcp_keepalive when idle, tcp_user_timeout with unsolicited data pending', async (t) => {
  const idle = await session(4, 600);
  idle.clock.advance(30_000);
  idle.clientStream.destroy(Object.assign(new Error('read ETIMEDOUT'), { code: 'ETIMEDOUT' }));
  t.match(await closed(idle), { reason: 'tcp_keepalive', detail: 'read ETIMEDOUT', liveness: true });

  const busy = await session(4, 600);
  busy.clock.advance(5_000);
  busy.broker.write(publish(10));
  await busy.settle();
  busy.clientStream.destroy(Object.assign(new Error('read ETIMEDOUT'), { code: 'ETIMEDOUT' }));
  t.match(await closed(busy), { reason: 'tcp_user_timeout', liveness: true });
});

t.test('an upstream that failed before any CONNECT: connect_timeout if none comes (no silent hang; brokerUnreachable connack)', async (t) => {
  const h = connectionHarness({ upstreamConnects: false, configure: (c) => { c.brokerUnreachable = 'connack'; } });
  h.upstream.destroy(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
  await h.settle();
  h.clock.advance(h.config.connectTimeout * 1000);
  t.match(await closed(h), { reason: 'connect_timeout' });
});

t.test('client_disconnect whichever side closes first after the client\'s DISCONNECT', async (t) => {
  for (const version of [4, 5] as const) {
    // The broker closes first (what Mosquitto does on DISCONNECT), the client 300 ms later.
    const h = await session(version, 60);
    h.client.write(version === 5 ? Buffer.from([0xe0, 0x00]) : DISCONNECT);
    await h.settle();
    h.broker.end();
    await h.settle();
    h.clock.advance(300);
    h.client.end();
    const e = await closed(h);
    t.equal(e.reason, 'client_disconnect', `MQTT ${version}: broker FIN after the client's DISCONNECT`);
    t.equal(hex(h.toClient().subarray(version === 5 ? CONNACK_V5.length : CONNACK_V3.length)), '', 'nothing injected toward the client');

    // The broker resets instead.
    const r = await session(version, 60);
    r.client.write(DISCONNECT);
    await r.settle();
    r.upstream.destroy(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }));
    await r.settle();
    r.client.end();
    t.equal((await closed(r)).reason, 'client_disconnect', `MQTT ${version}: broker reset after the client's DISCONNECT`);
  }
  // Without a DISCONNECT it stays broker_close.
  const b = await session(4, 60);
  b.broker.end();
  await b.settle();
  b.client.end();
  t.equal((await closed(b)).reason, 'broker_close');
});

t.test('maxConnectSize: a CONNECT above it closes with protocol_error; later packets may be up to maxPacketSize', async (t) => {
  const h = connectionHarness({ configure: (c) => { c.maxConnectSize = 1024; } });
  const big = Buffer.from(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'big', keepalive: 30, username: 'u', password: Buffer.alloc(2000) } as never));
  h.client.write(big);
  await h.settle();
  const e = await closed(h);
  t.equal(e.reason, 'protocol_error');
  t.match(e.detail, /MLP_FRAME_TOO_LARGE: frame of \d+ bytes exceeds the limit of 1024/);
  t.equal(h.toBroker().length, 0, 'nothing reached the broker');

  const ok = await session(4, 60, { configure: (c) => { c.maxConnectSize = 1024; } });
  ok.client.write(publish(5000));
  await ok.settle();
  t.ok(ok.conn.isOpen, 'a 5 kB PUBLISH after the CONNECT passes');
  t.ok(ok.toBroker().length > 5000);
});

/** An idle connection on a clean link (fake TCP_INFO): the last ACK `lastAckMs` ago, every segment out answered. */
const cleanIdle = (lastAckMs: number, segs: number) => ({ ...newTcpInfoSample(), rtoUs: 200_000, rttUs: 1_000, segsOut: segs, segsIn: segs, lastAckRecvMs: lastAckMs, lastDataRecvMs: lastAckMs });

t.test('keep-alive verdict waits for TCP evidence (fake TCP_INFO): a probe is asked for once the PINGREQ is late', async (t) => {
  // Idle and clean: a natural keep-alive probe answered 100 ms ago, counters balanced.
  const frozen = await session(4, 30, { tcpInfo: cleanIdle(100, 10) });
  const deadAfter = frozen.conn.liveness.keepAliveDeadAfterMs();
  t.ok(deadAfter >= 32_000 && deadAfter <= 45_000, `keep-alive + adaptive grace: ${deadAfter} ms (a new proxy's prior is cautious)`);
  frozen.clock.advance(30_999);
  t.same(frozen.probeIdleSets, [], 'nothing asked before the PINGREQ is a second late');
  frozen.clock.advance(1);
  t.same(frozen.probeIdleSets, [1], 'TCP_KEEPIDLE 1 s: the kernel probes now');
  let segs = 11;
  for (let now = 31_000; now < 46_000 && frozen.closes.length === 0; now += 250) {
    frozen.tcpInfo = cleanIdle(5, segs++); // every probe answered
    frozen.clock.advance(250);
    await frozen.settle();
  }
  const e = await closed(frozen);
  t.match(e, { reason: 'keepalive_timeout', detail: /TCP answered 5 ms ago$/ });
  // The estimate learns from the answered probes, so keep-alive + grace shrinks meanwhile: the verdict names its own.
  const named = Number(/dead after (\d+) ms/.exec(e.detail ?? '')?.[1]);
  t.ok(named >= 32_000 && named <= deadAfter, `keep-alive + grace at the verdict: ${named} ms`);
  t.ok(e.silenceMs >= named && e.silenceMs < 45_000, `frozen, the link answering: dead at the first look past it (${Math.round(e.silenceMs)} ms), not at the 45 s cap`);

  // The same silence behind an outage over the due time: no verdict while the link is silent, none until
  // the retransmitted PINGREQ had time; it comes, and the connection lives on.
  const outage = await session(4, 30, { tcpInfo: cleanIdle(100, 10) });
  outage.clock.advance(31_000);
  for (let s = 32; s <= 39; s++) {
    outage.tcpInfo = { ...cleanIdle((s - 29) * 1_000, 10), segsOut: 10 + s - 31, probes: Math.min(2, s - 31) };
    outage.clock.advance(1_000);
  }
  await outage.settle();
  t.ok(outage.conn.isOpen, 'the link silent for 10 s past the due time: no keep-alive verdict (the TCP check judges such silence)');
  t.ok(outage.conn.liveness.keepAliveSuspectSince > 0, 'keep-alive suspect');
  outage.tcpInfo = cleanIdle(1, 20); // the link answers again at 40 s
  outage.clock.advance(1_000);
  await outage.settle();
  t.ok(outage.conn.isOpen, 'the link is back: time for the PINGREQ\'s retransmission');
  t.match(outage.conn.liveness.keepAliveDeadAfterMs(), 45_000, 'the wait is capped at the broker\'s own 1.5 x keep-alive');
  outage.clock.advance(2_000);
  outage.client.write(PINGREQ); // retransmitted by the client's kernel
  await outage.settle();
  t.same(outage.probeIdleSets, [1, outage.conn.liveness.kernelSettings().idleSeconds], 'the client spoke: the kernel\'s own idle again');
  t.equal(outage.conn.liveness.keepAliveWatched, false);
  outage.clock.advance(10_000);
  await outage.settle();
  t.ok(outage.conn.isOpen, 'alive');
  outage.conn.end('shutdown', null);
  await closed(outage);
});

t.test('keep-alive watch on a clean-learnt fleet: keep-alive + 2 s passes during an outage without a busy loop', async (t) => {
  const h = await session(4, 30, { tcpInfo: cleanIdle(100, 10), fleet: new FleetPrior(0.001) });
  for (let s = 1; s <= 30; s++) {
    h.tcpInfo = cleanIdle(500, 10 + s);
    h.clock.advance(1_000);
  }
  t.ok(h.conn.liveness.keepAliveDeadAfterMs() <= 33_100, `a clean link: keep-alive + ${h.conn.liveness.keepAliveDeadAfterMs() - 30_000} ms`);
  h.clock.advance(1_000); // 31 s: the probe is asked for
  const readsBefore = h.tcpInfoReads;
  for (let s = 32; s <= 40; s++) {
    h.tcpInfo = { ...cleanIdle((s - 29) * 1_000, 41), segsOut: 41 + s - 31, probes: Math.min(2, s - 31) };
    h.clock.advance(1_000);
  }
  await h.settle();
  t.ok(h.conn.isOpen, 'link silent past keep-alive + 2 s: no keep-alive verdict');
  const reads = h.tcpInfoReads - readsBefore;
  t.ok(reads <= 30, `TCP_INFO read ${reads} times in 9 s of outage (a few a second, not a loop)`);
  h.conn.end('shutdown', null);
  await closed(h);
});

t.test('keep-alive watch: after a PINGREQ that came late, the next watch starts as early as the client\'s own clock', async (t) => {
  const h = await session(4, 30, { tcpInfo: cleanIdle(100, 10), fleet: new FleetPrior(0.001) });
  h.clock.advance(31_000);
  t.same(h.probeIdleSets, [1], 'the PINGREQ is late: a probe asked for at due + 1 s');
  // The link was out: the PINGREQ the client sent at 30 s arrives, retransmitted, at 35 s.
  for (let s = 32; s <= 34; s++) {
    h.tcpInfo = { ...cleanIdle((s - 29) * 1_000, 10), segsOut: 10 + s - 31, probes: s - 31 };
    h.clock.advance(1_000);
  }
  h.tcpInfo = cleanIdle(5, 14);
  h.clock.advance(1_000);
  h.client.write(PINGREQ);
  await h.settle();
  t.ok(h.conn.isOpen);
  t.equal(h.probeIdleSets.length, 2, 'restored when it came');
  // The client timed its next PINGREQ from 30 s (its send), not from 35 s (our receipt): due at 60 s, not 65 s.
  const start = h.clock.now() - 35_000; // the clock time of the CONNACK
  h.clock.advance(start + 60_999 - h.clock.now());
  t.equal(h.probeIdleSets.length, 2, 'nothing asked before 61 s');
  h.clock.advance(1);
  t.equal(h.probeIdleSets.length, 3, 'a probe asked for at 61 s: the client\'s due time + 1 s');
  h.client.write(PINGREQ);
  await h.settle();
  h.conn.end('shutdown', null);
  await closed(h);
});
