import t from 'tap';
import mqttPacket from 'mqtt-packet';
import { Framer, HOLD, PASS, REJECT, type HeaderDecision } from '../src/mqtt/framer.ts';
import { prng } from '../harness/prng.ts';

type Packet = Parameters<typeof mqttPacket.generate>[0];

/**
 * The random cuts are reproducible: one seed per run, printed with any failure,
 * and FRAMER_SEED=<n> replays a run.
 */
const SEED = process.env.FRAMER_SEED ? Number(process.env.FRAMER_SEED) >>> 0 : (Date.now() ^ (process.pid << 16)) >>> 0;

/** One fixture of each packet type, for MQTT 3.1.1 and MQTT 5 (with properties). */
function fixtures(protocolVersion: 4 | 5): Buffer[] {
  const v5 = protocolVersion === 5;
  const packets: Packet[] = [
    { cmd: 'connect', protocolId: 'MQTT', protocolVersion, clean: true, clientId: 'c1', keepalive: 30, username: 'u', password: Buffer.from('secret'), will: { topic: 'w', payload: Buffer.from('gone'), qos: 1, retain: false, ...(v5 ? { properties: { willDelayInterval: 0 } } : {}) }, ...(v5 ? { properties: { sessionExpiryInterval: 60 } } : {}) },
    { cmd: 'connack', sessionPresent: false, ...(v5 ? { reasonCode: 0, properties: { serverKeepAlive: 20 } } : { returnCode: 0 }) },
    { cmd: 'publish', topic: 'a/b', payload: Buffer.alloc(300, 7), qos: 1, messageId: 7, retain: false, dup: false, ...(v5 ? { properties: { topicAlias: 3, userProperties: { a: 'b' } } } : {}) },
    { cmd: 'publish', topic: 'q0', payload: Buffer.from('x'), qos: 0, retain: true, dup: false },
    { cmd: 'puback', messageId: 7, ...(v5 ? { reasonCode: 0x10, properties: { reasonString: 'ok' } } : {}) },
    { cmd: 'pubrec', messageId: 8 },
    { cmd: 'pubrel', messageId: 8 },
    { cmd: 'pubcomp', messageId: 8 },
    { cmd: 'subscribe', messageId: 9, subscriptions: [{ topic: 'a/#', qos: 2 }], ...(v5 ? { properties: { subscriptionIdentifier: 5 } } : {}) },
    { cmd: 'suback', messageId: 9, granted: [2] },
    { cmd: 'unsubscribe', messageId: 10, unsubscriptions: ['a/#'] },
    { cmd: 'unsuback', messageId: 10, ...(v5 ? { granted: [0] } : {}) } as Packet,
    { cmd: 'pingreq' },
    { cmd: 'pingresp' },
    { cmd: 'disconnect', ...(v5 ? { reasonCode: 0x04, properties: { sessionExpiryInterval: 0 } } : {}) },
  ];
  if (v5) packets.push({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'm' } });
  return packets.map((p) => mqttPacket.generate(p, { protocolVersion }));
}

interface Seen { type: number; length: number }

/** Feed `stream` cut at the given offsets; collect the output bytes and the headers seen. */
function run(stream: Buffer, cuts: number[], hold: (type: number) => HeaderDecision = () => PASS, onHeld: (f: Buffer, type: number) => Buffer | null = (f) => f) {
  const out: Buffer[] = [];
  const seen: Seen[] = [];
  const framer = new Framer({
    onHeader: (type, _flags, length) => { seen.push({ type, length }); return hold(type); },
    onHeld: (frame, type) => onHeld(Buffer.from(frame), type),
    emit: (b) => out.push(Buffer.from(b)),
  });
  framer.reservedTypes = 1; // allow AUTH in these fixtures
  let from = 0;
  for (const cut of [...cuts, stream.length]) {
    const error = framer.push(stream.subarray(from, cut));
    if (error) return { out: Buffer.concat(out), seen, error };
    from = cut;
  }
  return { out: Buffer.concat(out), seen, error: null, atBoundary: framer.atBoundary };
}

for (const version of [4, 5] as const) {
  t.test(`MQTT ${version === 5 ? '5' : '3.1.1'}: every packet type, split at every byte offset`, async (t) => {
    const frames = fixtures(version);
    const stream = Buffer.concat(frames);
    const expectedTypes = frames.map((f) => f[0] >> 4);
    let checked = 0;
    for (let cut = 0; cut <= stream.length; cut++) {
      for (const holdAll of [false, true]) {
        const r = run(stream, [cut], () => (holdAll ? HOLD : PASS));
        if (!r.error && r.out.equals(stream) && r.seen.map((s) => s.type).join() === expectedTypes.join()) checked++;
        else t.fail(`cut at ${cut} (hold ${holdAll}) changed the stream`);
      }
    }
    t.equal(checked, (stream.length + 1) * 2, 'byte-identical output and exact frame boundaries at every cut');
  });

  t.test(`MQTT ${version === 5 ? '5' : '3.1.1'}: one byte at a time and in random chunks`, async (t) => {
    const stream = Buffer.concat(fixtures(version));
    const everyByte = Array.from({ length: stream.length - 1 }, (_, i) => i + 1);
    const r = run(stream, everyByte, (type) => (type % 2 ? HOLD : PASS));
    t.same(r.error, null);
    t.ok(r.out.equals(stream));
    t.ok(r.atBoundary);
    const random = prng(SEED + version);
    for (let trial = 0; trial < 200; trial++) {
      const cuts = [...new Set(Array.from({ length: 1 + (trial % 9) }, () => 1 + Math.floor(random() * (stream.length - 1))))].sort((a, b) => a - b);
      const rr = run(stream, cuts, (type) => (type === 3 ? PASS : HOLD));
      if (!rr.out.equals(stream)) t.fail(`cuts ${cuts.join(',')} (replay with FRAMER_SEED=${SEED})`);
    }
    t.comment(`random cuts from FRAMER_SEED=${SEED}`);
  });
}

t.test('held frames arrive whole and can be dropped or replaced in place', async (t) => {
  const ping = Buffer.from([0xd0, 0x00]);
  const pub = mqttPacket.generate({ cmd: 'publish', topic: 't', payload: Buffer.from('hello'), qos: 0, retain: false, dup: false });
  const stream = Buffer.concat([pub, ping, pub, ping, pub]);
  for (let cut = 0; cut <= stream.length; cut++) {
    const r = run(stream, [cut], (type) => (type === 13 ? HOLD : PASS), (f, type) => (type === 13 ? null : f));
    if (!r.out.equals(Buffer.concat([pub, pub, pub]))) t.fail(`drop at cut ${cut}`);
  }
  const replaced = run(stream, [3], (type) => (type === 13 ? HOLD : PASS), () => Buffer.from([0xd0, 0x00, 0xd0, 0x00]));
  t.ok(replaced.out.equals(Buffer.concat([pub, ping, ping, pub, ping, ping, pub])));
});

t.test('PUBLISH payloads are passed as views of the input, not copies', async (t) => {
  const pub = mqttPacket.generate({ cmd: 'publish', topic: 't', payload: Buffer.alloc(4096, 1), qos: 0, retain: false, dup: false });
  const chunk = Buffer.concat([pub, pub]);
  const emitted: Buffer[] = [];
  const framer = new Framer({ onHeader: () => PASS, onHeld: (f) => f, emit: (b) => emitted.push(b) });
  framer.push(chunk);
  t.equal(emitted.length, 1);
  t.equal(emitted[0], chunk, 'the chunk itself is forwarded');
});

t.test('malformed Remaining Length closes the stream', async (t) => {
  const r = run(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]), []);
  t.equal(r.error?.code, 'MLP_MALFORMED_LENGTH');
  t.equal(r.error?.kind, 'malformed_length');
  t.equal(r.out.length, 0, 'nothing of the bad frame is forwarded');
});

t.test('a frame over the limit is refused from its header, without buffering', async (t) => {
  const emitted: Buffer[] = [];
  let held = 0;
  const framer = new Framer({ onHeader: () => HOLD, onHeld: (f) => { held++; return f; }, emit: (b) => emitted.push(b) }, 1024 * 1024);
  const error = framer.push(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]));
  t.equal(error?.code, 'MLP_FRAME_TOO_LARGE');
  t.match(error?.message, /268435460 bytes exceeds the limit of 1048576/);
  t.equal(held + emitted.length, 0);
  t.equal(framer.push(Buffer.alloc(10)), error, 'the framer stays failed');
  // Exactly at the limit is fine.
  const ok = new Framer({ onHeader: () => PASS, onHeld: (f) => f, emit: () => {} }, 2 + 100);
  t.equal(ok.push(Buffer.concat([Buffer.from([0x30, 100]), Buffer.alloc(100)])), null);
});

t.test('reserved packet types: 0 always, 15 unless allowed', async (t) => {
  t.equal(run(Buffer.from([0x00, 0x00]), []).error?.code, 'MLP_RESERVED_TYPE');
  const framer = new Framer({ onHeader: () => PASS, onHeld: (f) => f, emit: () => {} });
  framer.reservedTypes = (1 << 0) | (1 << 15);
  t.equal(framer.push(Buffer.from([0xf0, 0x00]))?.code, 'MLP_RESERVED_TYPE');
  const v5 = new Framer({ onHeader: () => PASS, onHeld: (f) => f, emit: () => {} });
  t.equal(v5.push(Buffer.from([0xf0, 0x00])), null, 'AUTH passes when allowed');
});

t.test('a handler can refuse a frame from its header', async (t) => {
  const pub = Buffer.from([0x30, 0x03, 0x00, 0x01, 0x61]);
  const r = run(Buffer.concat([pub, Buffer.from([0xc0, 0x00])]), [], (type) => (type === 12 ? REJECT : PASS));
  t.equal(r.error?.code, 'MLP_REJECTED');
  t.ok(r.out.equals(pub), 'frames before the refused one are forwarded');
});

t.test('a header split across chunks is kept back until complete', async (t) => {
  const big = mqttPacket.generate({ cmd: 'publish', topic: 't', payload: Buffer.alloc(20000, 2), qos: 0, retain: false, dup: false });
  const emitted: Buffer[] = [];
  const framer = new Framer({ onHeader: () => PASS, onHeld: (f) => f, emit: (b) => emitted.push(Buffer.from(b)) });
  framer.push(big.subarray(0, 2));
  t.equal(emitted.length, 0, 'half a header is not forwarded');
  t.notOk(framer.atBoundary);
  framer.push(big.subarray(2));
  t.ok(Buffer.concat(emitted).equals(big));
  t.ok(framer.atBoundary);
});

t.test('a non-minimal Remaining Length split across chunks comes out byte for byte, passed or held', async (t) => {
  // 0x80 0x00 is a 2-byte encoding of 0; 0x81 0x80 0x00 a 3-byte encoding of 1; 0xff 0xff 0xff 0x7f the maximum.
  const frames = [
    Buffer.from([0xc0, 0x80, 0x00]),
    Buffer.from([0x30, 0x81, 0x80, 0x00, 0x61]),
    Buffer.from([0x32, 0x83, 0x00, 0x00, 0x01, 0x74]),
    Buffer.from([0x30, 0xff, 0x7f, ...Buffer.alloc(16383, 7)]),
  ];
  for (const frame of frames) {
    for (const decision of [PASS, HOLD] as HeaderDecision[]) {
      for (let cut = 1; cut < Math.min(frame.length, 6); cut++) {
        const emitted: Buffer[] = [];
        const framer = new Framer({ onHeader: () => decision, onHeld: (f) => Buffer.from(f), emit: (b) => emitted.push(Buffer.from(b)) });
        t.equal(framer.push(frame.subarray(0, cut)), null);
        t.equal(framer.push(frame.subarray(cut)), null);
        t.ok(Buffer.concat(emitted).equals(frame), `${frame.subarray(0, 4).toString('hex')}…, ${decision === HOLD ? 'held' : 'passed'}, cut at ${cut}`);
        t.ok(framer.atBoundary);
      }
    }
  }
});
