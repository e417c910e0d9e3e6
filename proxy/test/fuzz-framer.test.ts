/**
 * Property tests (fast-check, fixed seeds) for the pure parts that read
 * client bytes: the framer and the CONNECT/CONNACK decoders.
 *
 * (a) Valid frames of every packet type (MQTT 3.1.1 and 5, built with
 *     mqtt-packet from arbitraries), cut anywhere: the output is the input and
 *     the frame types are seen in order.
 * (b) Random and mutated streams (bit flips, truncation, inserted and deleted
 *     bytes): the framer never throws, returns null or a FrameError with a
 *     stable code, emits a prefix of what it was given (never more), agrees
 *     with a small reference model whatever the chunking, and stays failed.
 * (c) decodeConnect/decodeConnack on mutated frames return or throw
 *     FrameError('MLP_DECODE'), nothing else, and never put the password in
 *     the error message.
 */
import t, { type Test } from 'tap';
import fc from 'fast-check';
import mqttPacket from 'mqtt-packet';
import { Framer, HOLD, PASS, REJECT, PROTOCOL_MAX_FRAME, type HeaderDecision } from '../src/mqtt/framer.ts';
import { FrameError, frameErrorKind, type FrameErrorCode } from '../src/mqtt/errors.ts';
import { decodeConnack, decodeConnect, withServerKeepAlive } from '../src/mqtt/packets.ts';

type Packet = Parameters<typeof mqttPacket.generate>[0];
type Version = 4 | 5;

/** Fixed for CI; MLP_FUZZ_RUNS and MLP_FUZZ_SEED (added to every seed) explore further by hand. */
const NUM_RUNS = Number(process.env.MLP_FUZZ_RUNS ?? 2000);
const SEED_OFFSET = Number(process.env.MLP_FUZZ_SEED ?? 0);
const CODES: ReadonlySet<string> = new Set(Object.keys(frameErrorKind));

/** Run a property; a failure is reported with fast-check's counterexample and seed. */
function check<Ts extends [unknown, ...unknown[]]>(t: Test, name: string, property: fc.IProperty<Ts>, seed: number, numRuns = NUM_RUNS): void {
  const started = Date.now();
  const details = fc.check(property, { seed: seed + SEED_OFFSET, numRuns, endOnFailure: false });
  if (details.failed) {
    t.fail(`${name}: ${String((details.errorInstance as Error | null)?.message ?? details.errorInstance)}\n${fc.defaultReportMessage(details) ?? ''}`);
  } else {
    t.pass(`${name}: ${details.numRuns} runs, seed ${seed + SEED_OFFSET}, ${Date.now() - started} ms`);
  }
}

// ---- arbitraries for packets ------------------------------------------------

const text = (max = 12, min = 0): fc.Arbitrary<string> => fc.string({ unit: 'grapheme', minLength: min, maxLength: max });
const topicName = text(16, 1).filter((s) => !s.includes('#') && !s.includes('+') && !s.includes('\u0000'));
const topicFilter = text(16, 1).filter((s) => !s.includes('\u0000'));
const bytes = (max = 32): fc.Arbitrary<Buffer> => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));
const messageId = fc.integer({ min: 1, max: 0xffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const userProperties = fc.dictionary(text(6, 1), fc.oneof(text(8), fc.array(text(6), { minLength: 1, maxLength: 3 })), { minKeys: 1, maxKeys: 3 }); // mqtt-packet writes nothing at all for an empty one
/** Payloads mostly small, sometimes large enough for 2, 3 and 4 byte Remaining Lengths. */
const payload = fc.oneof(
  { weight: 30, arbitrary: bytes(300) },
  { weight: 4, arbitrary: fc.integer({ min: 128, max: 20_000 }).map((n) => Buffer.alloc(n, n & 0xff)) },
  { weight: 1, arbitrary: fc.integer({ min: 16_384, max: 300_000 }).map((n) => Buffer.alloc(n, 0x5a)) },
  { weight: 1, arbitrary: fc.integer({ min: 2_097_152, max: 2_100_000 }).map((n) => Buffer.alloc(n, 0xa5)) },
);

/** An optional-fields record: each present or absent. */
function props<T extends Record<string, fc.Arbitrary<unknown>>>(fields: T): fc.Arbitrary<Partial<{ [K in keyof T]: T[K] extends fc.Arbitrary<infer U> ? U : never }>> {
  return fc.record(fields, { requiredKeys: [] }) as never;
}

const reasonProps = props({ reasonString: text(10), userProperties });

function connectArb(version: Version | 3): fc.Arbitrary<Packet> {
  const v5 = version === 5;
  return fc.record({
    clientId: version === 3 ? text(23, 1) : text(23),
    keepalive: u16,
    clean: fc.boolean(),
    username: fc.option(text(12), { nil: undefined }),
    password: fc.option(bytes(16), { nil: undefined }),
    will: fc.option(fc.record({
      topic: topicName,
      payload: bytes(40),
      qos: fc.constantFrom(0, 1, 2),
      retain: fc.boolean(),
      properties: v5 ? fc.option(props({ willDelayInterval: u32, payloadFormatIndicator: fc.boolean(), messageExpiryInterval: u32, contentType: text(8), responseTopic: topicName, correlationData: bytes(8), userProperties }), { nil: undefined }) : fc.constant(undefined),
    }), { nil: undefined }),
    properties: v5 ? fc.option(props({ sessionExpiryInterval: u32, receiveMaximum: fc.integer({ min: 1, max: 0xffff }), maximumPacketSize: fc.integer({ min: 1, max: 0xffff_ffff }), topicAliasMaximum: u16, requestResponseInformation: fc.boolean(), requestProblemInformation: fc.boolean(), userProperties, authenticationMethod: text(8, 1), authenticationData: bytes(8) }), { nil: undefined }) : fc.constant(undefined),
  }).map((p) => ({
    cmd: 'connect',
    protocolId: version === 3 ? 'MQIsdp' : 'MQTT',
    protocolVersion: version,
    ...p,
    // A password needs a username (3.1.1); a clean-less session needs a client id.
    username: p.password !== undefined && p.username === undefined ? 'u' : p.username,
    clientId: !p.clean && p.clientId === '' ? 'c' : p.clientId,
  }));
}

function connackArb(version: Version): fc.Arbitrary<Packet> {
  if (version === 4) return fc.record({ sessionPresent: fc.boolean(), returnCode: fc.integer({ min: 0, max: 5 }) }).map((p): Packet => ({ cmd: 'connack', ...p }));
  return fc.record({
    sessionPresent: fc.boolean(),
    reasonCode: fc.constantFrom(0x00, 0x80, 0x81, 0x82, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8c, 0x90, 0x95, 0x97, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9f),
    properties: fc.option(props({ sessionExpiryInterval: u32, receiveMaximum: fc.integer({ min: 1, max: 0xffff }), maximumQoS: fc.constantFrom(0, 1), retainAvailable: fc.boolean(), maximumPacketSize: fc.integer({ min: 1, max: 0xffff_ffff }), assignedClientIdentifier: text(10), topicAliasMaximum: u16, reasonString: text(10), userProperties, wildcardSubscriptionAvailable: fc.boolean(), subscriptionIdentifiersAvailable: fc.boolean(), sharedSubscriptionAvailable: fc.boolean(), serverKeepAlive: u16, responseInformation: text(8), serverReference: text(8), authenticationMethod: text(8, 1), authenticationData: bytes(8) }), { nil: undefined }),
  }).map((p): Packet => ({ cmd: 'connack', ...p }));
}

function packetArb(version: Version): fc.Arbitrary<Packet> {
  const v5 = version === 5;
  const opt = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> => (v5 ? fc.option(a, { nil: undefined }) : fc.constant(undefined));
  const ackCodes: fc.Arbitrary<number> = fc.constantFrom(0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99);
  const ack = (cmd: string, codes = ackCodes): fc.Arbitrary<Packet> =>
    fc.record({ messageId, reasonCode: opt(codes), properties: opt(reasonProps) }).map((p) => ({ cmd, ...p }) as Packet);
  const publish = fc.record({
    topic: topicName,
    payload,
    qos: fc.constantFrom(0, 1, 2),
    retain: fc.boolean(),
    dup: fc.boolean(),
    messageId,
    properties: opt(props({ payloadFormatIndicator: fc.boolean(), messageExpiryInterval: u32, topicAlias: fc.integer({ min: 1, max: 0xffff }), responseTopic: topicName, correlationData: bytes(8), userProperties, subscriptionIdentifier: fc.integer({ min: 1, max: 268_435_455 }), contentType: text(8) })),
  }).map((p): Packet => ({ cmd: 'publish', ...p, dup: p.qos === 0 ? false : p.dup }));
  const subscribe = fc.record({
    messageId,
    subscriptions: fc.array(fc.record({ topic: topicFilter, qos: fc.constantFrom(0, 1, 2), ...(v5 ? { nl: fc.boolean(), rap: fc.boolean(), rh: fc.constantFrom(0, 1, 2) } : {}) }), { minLength: 1, maxLength: 4 }),
    properties: opt(props({ subscriptionIdentifier: fc.integer({ min: 1, max: 268_435_455 }), userProperties })),
  }).map((p): Packet => ({ cmd: 'subscribe', ...p }));
  const suback = fc.record({
    messageId,
    granted: fc.array(v5 ? fc.constantFrom(0, 1, 2, 0x80, 0x83, 0x87, 0x8f, 0x91, 0x97, 0x9e, 0xa1, 0xa2) : fc.constantFrom(0, 1, 2, 0x80), { minLength: 1, maxLength: 4 }),
    properties: opt(reasonProps),
  }).map((p): Packet => ({ cmd: 'suback', ...p }));
  const unsubscribe = fc.record({ messageId, unsubscriptions: fc.array(topicFilter, { minLength: 1, maxLength: 4 }), properties: opt(props({ userProperties })) })
    .map((p): Packet => ({ cmd: 'unsubscribe', ...p }));
  const unsuback = fc.record({ messageId, granted: v5 ? fc.array(fc.constantFrom(0, 0x11, 0x80, 0x83, 0x87, 0x8f, 0x91), { minLength: 1, maxLength: 4 }) : fc.constant(undefined), properties: opt(reasonProps) })
    .map((p) => ({ cmd: 'unsuback', ...p }) as Packet);
  const disconnect = v5
    ? fc.record({ reasonCode: fc.constantFrom(0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8b, 0x8d, 0x8e, 0x93, 0x95, 0x98, 0x9c), properties: fc.option(props({ sessionExpiryInterval: u32, reasonString: text(10), userProperties, serverReference: text(8) }), { nil: undefined }) })
      .map((p): Packet => ({ cmd: 'disconnect', ...p }))
    : fc.constant<Packet>({ cmd: 'disconnect' });
  const all: Array<fc.Arbitrary<Packet>> = [
    connectArb(version),
    connackArb(version),
    publish, publish, publish,
    ack('puback'),
    ack('pubrec'),
    ack('pubrel', fc.constantFrom(0x00, 0x92)),
    ack('pubcomp', fc.constantFrom(0x00, 0x92)),
    subscribe,
    suback,
    unsubscribe,
    unsuback,
    fc.constant<Packet>({ cmd: 'pingreq' }),
    fc.constant<Packet>({ cmd: 'pingresp' }),
    disconnect,
  ];
  if (v5) {
    all.push(fc.record({ reasonCode: fc.constantFrom(0x00, 0x18, 0x19), properties: fc.option(props({ authenticationMethod: text(8, 1), authenticationData: bytes(8), reasonString: text(8), userProperties }), { nil: undefined }) })
      .map((p): Packet => ({ cmd: 'auth', ...p })));
  }
  return fc.oneof(...all);
}

/** A packet generated by mqtt-packet and parsed back by it: a valid frame. */
function frameArb(version: Version): fc.Arbitrary<Buffer> {
  return packetArb(version).map((p) => {
    const frame = mqttPacket.generate(p, { protocolVersion: version });
    const parser = mqttPacket.parser({ protocolVersion: version });
    const parsed: string[] = [];
    let failure: Error | null = null;
    parser.on('packet', (q: { cmd: string }) => parsed.push(q.cmd));
    parser.on('error', (e: Error) => { failure ??= e; });
    parser.parse(frame);
    if (failure || parsed.length !== 1 || parsed[0] !== p.cmd) {
      throw new Error(`arbitrary produced an invalid ${p.cmd}: ${String(failure)} ${JSON.stringify(parsed)} ${frame.subarray(0, 64).toString('hex')} ${JSON.stringify(p, (k: string, v: unknown) => (k === 'payload' ? undefined : v))}`);
    }
    return frame;
  });
}

/** Cut points for a stream of length n, drawn before n is known. */
const cutsArb = fc.oneof(
  { weight: 8, arbitrary: fc.array(fc.nat(), { maxLength: 24 }).map((xs) => ({ oneByte: false, xs })) },
  { weight: 1, arbitrary: fc.constant({ oneByte: true, xs: [] as number[] }) },
);
function chunksOf(stream: Buffer, cuts: { oneByte: boolean; xs: number[] }): Buffer[] {
  if (cuts.oneByte && stream.length <= 4096) return Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1));
  const points = [...new Set(cuts.xs.map((x) => x % (stream.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const p of [...points, stream.length]) {
    chunks.push(stream.subarray(from, p)); // empty chunks too: push() must accept them
    from = p;
  }
  return chunks;
}

// ---- the framer under a recording handler -------------------------------------

interface Decisions {
  holdMask: number;
  rejectMask: number;
  reservedTypes: number;
  maxFrameSize: number;
}

interface Outcome {
  out: Buffer;
  types: number[];
  lengths: number[];
  held: Buffer[];
  error: FrameError | null;
  emittedBytes: number;
  pushedBytes: number;
}

function feed(chunks: Buffer[], d: Decisions): Outcome {
  const out: Buffer[] = [];
  const types: number[] = [];
  const lengths: number[] = [];
  const held: Buffer[] = [];
  let emittedBytes = 0;
  const framer = new Framer({
    onHeader: (type, _flags, length): HeaderDecision => {
      types.push(type);
      lengths.push(length);
      if ((d.rejectMask >> type) & 1) return REJECT;
      return (d.holdMask >> type) & 1 ? HOLD : PASS;
    },
    onHeld: (frame) => { held.push(Buffer.from(frame)); return frame; },
    emit: (b) => { emittedBytes += b.length; out.push(Buffer.from(b)); },
  }, d.maxFrameSize);
  framer.reservedTypes = d.reservedTypes;
  let error: FrameError | null = null;
  let pushedBytes = 0;
  for (const c of chunks) {
    pushedBytes += c.length;
    error = framer.push(c);
    if (error) break;
  }
  return { out: Buffer.concat(out), types, lengths, held, error, emittedBytes, pushedBytes };
}

/** The framer's contract for a whole stream, written the simple way. */
function model(stream: Buffer, d: Decisions): { out: Buffer; types: number[]; code: FrameErrorCode | null } {
  const parts: Buffer[] = [];
  const types: number[] = [];
  const n = stream.length;
  let i = 0;
  while (i < n) {
    const start = i;
    const type = stream[i] >> 4;
    if ((d.reservedTypes >> type) & 1) return { out: Buffer.concat(parts), types, code: 'MLP_RESERVED_TYPE' };
    let j = i + 1;
    let length = 0;
    let mul = 1;
    for (let k = 0; ; k++) {
      if (j >= n) return { out: Buffer.concat(parts), types, code: null }; // header incomplete: kept back
      const b = stream[j++];
      length += (b & 0x7f) * mul;
      mul *= 128;
      if (!(b & 0x80)) break;
      if (k === 3) return { out: Buffer.concat(parts), types, code: 'MLP_MALFORMED_LENGTH' };
    }
    const size = j - start + length;
    if (size > d.maxFrameSize) return { out: Buffer.concat(parts), types, code: 'MLP_FRAME_TOO_LARGE' };
    types.push(type);
    if ((d.rejectMask >> type) & 1) return { out: Buffer.concat(parts), types, code: 'MLP_REJECTED' };
    if ((d.holdMask >> type) & 1) {
      if (start + size > n) return { out: Buffer.concat(parts), types, code: null }; // held frame incomplete
      parts.push(stream.subarray(start, start + size));
    } else {
      parts.push(stream.subarray(start, Math.min(n, start + size)));
    }
    i = start + size;
  }
  return { out: Buffer.concat(parts), types, code: null };
}

// ---- (a) valid frames ---------------------------------------------------------

for (const version of [4, 5] as const) {
  const v = version === 5 ? 'MQTT 5' : 'MQTT 3.1.1';
  t.test(`(a) ${v}: any valid frames, any chunking, any hold/pass choice: output = input, types in order`, async (t) => {
    const framesArb = fc.array(frameArb(version), { minLength: 1, maxLength: 12 });
    check(t, `${v} round trip`, fc.property(framesArb, cutsArb, fc.integer({ min: 0, max: 0xffff }), (frames, cuts, holdMask) => {
      const stream = Buffer.concat(frames);
      const r = feed(chunksOf(stream, cuts), { holdMask, rejectMask: 0, reservedTypes: version === 5 ? 1 : 1 | (1 << 15), maxFrameSize: PROTOCOL_MAX_FRAME });
      if (r.error) throw new Error(`unexpected ${r.error.code}: ${r.error.message}`);
      if (!r.out.equals(stream)) throw new Error('output differs from input');
      const types = frames.map((f) => f[0] >> 4);
      if (r.types.join() !== types.join()) throw new Error(`types ${r.types.join()} != ${types.join()}`);
      const lengths = frames.map((f) => { let k = 1; while (f[k] & 0x80) k++; return f.length - k - 1; });
      if (r.lengths.join() !== lengths.join()) throw new Error('Remaining Lengths differ');
      const heldExpected = frames.filter((f) => (holdMask >> (f[0] >> 4)) & 1);
      if (r.held.length !== heldExpected.length || r.held.some((h, k) => !h.equals(heldExpected[k]))) throw new Error('held frames differ');
    }), version === 5 ? 0x5eed5 : 0x5eed4);
  });
}

// ---- (b) hostile streams --------------------------------------------------------

type Mutation =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; value: number }
  | { op: 'truncate'; at: number }
  | { op: 'insert'; at: number; bytes: number[] }
  | { op: 'delete'; at: number; count: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: fc.constantFrom(0x00, 0x7f, 0x80, 0xff, 0xf0, 0x10, 0x30) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 8 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 8 }) }) },
);

function mutate(input: Buffer, mutations: Mutation[]): Buffer {
  let b = Buffer.from(input);
  for (const m of mutations) {
    const at = b.length === 0 ? 0 : m.at % (b.length + (m.op === 'insert' || m.op === 'truncate' ? 1 : 0));
    switch (m.op) {
      case 'flip': if (b.length) b[at] ^= 1 << m.bit; break;
      case 'set': if (b.length) b[at] = m.value; break;
      case 'truncate': b = b.subarray(0, at); break;
      case 'insert': b = Buffer.concat([b.subarray(0, at), Buffer.from(m.bytes), b.subarray(at)]); break;
      case 'delete': b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.count)]); break;
    }
  }
  return b;
}

const decisionsArb: fc.Arbitrary<Decisions> = fc.record({
  holdMask: fc.integer({ min: 0, max: 0xffff }),
  rejectMask: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })),
  reservedTypes: fc.constantFrom(1, 1 | (1 << 15)),
  maxFrameSize: fc.constantFrom(PROTOCOL_MAX_FRAME, 16 * 1024 * 1024, 65_536, 1024, 64),
});

/** Small frames (no multi-megabyte payloads) for the mutation tests. */
const smallFrameArb = (version: Version): fc.Arbitrary<Buffer> => frameArb(version).filter((f) => f.length < 40_000);

const hostileStreamArb: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 2, arbitrary: bytes(600) },
  { weight: 1, arbitrary: fc.array(fc.constantFrom(0x10, 0x30, 0xc0, 0xe0, 0xf0, 0x00, 0x80, 0xff, 0x7f, 0x01), { maxLength: 64 }).map((a) => Buffer.from(a)) },
  {
    weight: 6,
    arbitrary: fc.tuple(fc.constantFrom(4 as const, 5 as const).chain((v) => fc.array(smallFrameArb(v), { minLength: 1, maxLength: 6 })), fc.array(mutationArb, { minLength: 1, maxLength: 6 }))
      .map(([frames, ms]) => mutate(Buffer.concat(frames), ms)),
  },
);

t.test('(b) random and mutated streams: no throw, stable codes, a prefix of the input, agrees with the model', async (t) => {
  let errors = 0;
  const codes = new Map<string, number>();
  check(t, 'hostile streams', fc.property(hostileStreamArb, cutsArb, decisionsArb, (stream, cuts, d) => {
    let r: Outcome;
    try {
      r = feed(chunksOf(stream, cuts), d);
    } catch (err) {
      throw new Error(`push threw: ${(err as Error).stack}`, { cause: err });
    }
    if (r.error !== null) {
      if (!(r.error instanceof FrameError)) throw new Error('error is not a FrameError');
      if (!CODES.has(r.error.code)) throw new Error(`unknown code ${r.error.code}`);
      if (r.error.kind !== frameErrorKind[r.error.code]) throw new Error('kind does not match code');
      errors++;
      codes.set(r.error.code, (codes.get(r.error.code) ?? 0) + 1);
    }
    if (r.emittedBytes > r.pushedBytes) throw new Error(`emitted ${r.emittedBytes} of ${r.pushedBytes} bytes`);
    if (!stream.subarray(0, r.out.length).equals(r.out)) throw new Error('output is not a prefix of the input');
    const m = model(stream, d);
    if ((r.error?.code ?? null) !== m.code) throw new Error(`code ${r.error?.code ?? null}, model ${m.code}`);
    if (!r.out.equals(m.out)) throw new Error(`output ${r.out.length} bytes, model ${m.out.length}`);
    if (r.types.join() !== m.types.join()) throw new Error('headers seen differ from the model');
    // Whatever the chunking, the same result: one chunk gives the same output.
    const whole = feed([stream], d);
    if (!whole.out.equals(r.out) || (whole.error?.code ?? null) !== (r.error?.code ?? null)) throw new Error('chunking changed the result');
  }), 0xbadf00d);
  t.ok(errors > NUM_RUNS / 4, `${errors} of ${NUM_RUNS} streams ended in an error (${[...codes].map(([c, n]) => `${c} ${n}`).join(', ')})`);
  t.equal(codes.size, CODES.size - 1, 'every framer code was produced (all but MLP_DECODE, which is the decoders\')');
});

t.test('(b) after an error the framer stays failed: same error, nothing more emitted or seen', async (t) => {
  check(t, 'stays failed', fc.property(hostileStreamArb, decisionsArb, bytes(200), (stream, d, more) => {
    let calls = 0;
    const framer = new Framer({
      onHeader: (type) => { calls++; return (d.rejectMask >> type) & 1 ? REJECT : (d.holdMask >> type) & 1 ? HOLD : PASS; },
      onHeld: (f) => { calls++; return f; },
      emit: () => { calls++; },
    }, d.maxFrameSize);
    framer.reservedTypes = d.reservedTypes;
    const error = framer.push(stream);
    if (!error) return;
    const before = calls;
    for (let k = 0; k < 3; k++) {
      if (framer.push(more) !== error) throw new Error('a later push returned another result');
    }
    if (framer.push(Buffer.from([0x30, 0x00])) !== error) throw new Error('a valid frame after the error was accepted');
    if (calls !== before) throw new Error('the handler was called after the error');
  }), 0xfa11ed);
});

// ---- (c) decoders on mutated frames ---------------------------------------------

/** Mutations that keep the frame a CONNECT/CONNACK with a consistent Remaining Length, to get past framing. */
function reframe(frame: Buffer, body: Buffer): Buffer {
  const len: number[] = [];
  let n = body.length;
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    len.push(b);
  } while (n > 0);
  return Buffer.concat([Buffer.from([frame[0], ...len]), body]);
}
function bodyOf(frame: Buffer): Buffer {
  let k = 1;
  while (frame[k] & 0x80) k++;
  return frame.subarray(k + 1);
}

const PASSWORD_MARK = 'pw-';
const connectWithPassword = fc.tuple(fc.constantFrom(3 as const, 4 as const, 5 as const), fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789'), minLength: 12, maxLength: 20 }))
  .chain(([version, secret]) => connectArb(version).map((p) => {
    const password = `${PASSWORD_MARK}${secret}`;
    const frame = mqttPacket.generate({ ...(p as object), username: (p as { username?: string }).username ?? 'user', password: Buffer.from(password) } as Packet, { protocolVersion: version });
    return { frame, password };
  }));

t.test('(c) decodeConnect on mutated CONNECTs: returns consistent info or throws MLP_DECODE, never the password', async (t) => {
  let decoded = 0;
  let refused = 0;
  check(t, 'decodeConnect', fc.property(connectWithPassword, fc.array(mutationArb, { maxLength: 5 }), fc.boolean(), fc.boolean(), ({ frame, password }, ms, wholeFrame, keepType) => {
    let mutated = wholeFrame ? mutate(frame, ms) : reframe(frame, mutate(bodyOf(frame), ms));
    if (keepType && mutated.length > 0) mutated = Buffer.concat([Buffer.from([0x10 | (mutated[0] & 0x0f)]), mutated.subarray(1)]);
    let info;
    try {
      info = decodeConnect(mutated);
    } catch (err) {
      if (!(err instanceof FrameError)) throw new Error(`threw ${(err as Error)?.constructor?.name}: ${(err as Error).message}`, { cause: err });
      if (err.code !== 'MLP_DECODE') throw new Error(`code ${err.code}`, { cause: err });
      if (err.message.includes(password) || err.message.includes(PASSWORD_MARK) || (err.stack ?? '').includes(password)) throw new Error('the password is in the error', { cause: err });
      refused++;
      return;
    }
    decoded++;
    if ('password' in info) throw new Error('the password is kept');
    if (typeof info.clientId !== 'string' || !Number.isInteger(info.keepAlive)) throw new Error(`odd info ${JSON.stringify(info)}`);
    // withKeepAlive() writes at keepAliveOffset: it must point at the keep-alive the decoder read.
    if (info.keepAliveOffset < 0 || info.keepAliveOffset + 2 > mutated.length || mutated.readUInt16BE(info.keepAliveOffset) !== info.keepAlive) {
      throw new Error(`keepAliveOffset ${info.keepAliveOffset} does not hold keep-alive ${info.keepAlive}`);
    }
  }), 0xc0ecc7);
  t.ok(decoded > 100 && refused > 100, `${decoded} decoded, ${refused} refused with MLP_DECODE`);
});

function parseOne(frame: Buffer, protocolVersion: Version): unknown {
  const parser = mqttPacket.parser({ protocolVersion });
  let packet: unknown = null;
  parser.on('packet', (p: unknown) => { packet ??= p; });
  parser.on('error', () => {});
  parser.parse(frame);
  return packet;
}

const connackFrames = fc.constantFrom(4 as const, 5 as const).chain((version) => connackArb(version).map((p) => ({ version, frame: mqttPacket.generate(p, { protocolVersion: version }) })));

t.test('(c) decodeConnack on mutated CONNACKs: returns or throws MLP_DECODE; a v5 one it accepts can take Server Keep Alive', async (t) => {
  let decoded = 0;
  let refused = 0;
  check(t, 'decodeConnack', fc.property(connackFrames, fc.array(mutationArb, { maxLength: 5 }), fc.boolean(), fc.boolean(), fc.integer({ min: 1, max: 0xffff }), ({ version, frame }, ms, wholeFrame, keepType, seconds) => {
    let mutated = wholeFrame ? mutate(frame, ms) : reframe(frame, mutate(bodyOf(frame), ms));
    if (keepType && mutated.length > 0) mutated = Buffer.concat([Buffer.from([0x20 | (mutated[0] & 0x0f)]), mutated.subarray(1)]);
    let info;
    try {
      info = decodeConnack(mutated, version);
    } catch (err) {
      if (!(err instanceof FrameError)) throw new Error(`threw ${(err as Error)?.constructor?.name}: ${(err as Error).message}`, { cause: err });
      if (err.code !== 'MLP_DECODE') throw new Error(`code ${err.code}`, { cause: err });
      refused++;
      return;
    }
    decoded++;
    if (typeof info.sessionPresent !== 'boolean' || !Number.isFinite(info.returnCode)) throw new Error(`odd info ${JSON.stringify(info)}`);
    if (version === 5 && (mutated[0] >> 4) === 2) {
      // What the relay does next with a v5 CONNACK it could read (connection.ts onConnack, outside its try).
      let rewritten: Buffer;
      try {
        rewritten = withServerKeepAlive(mutated, seconds, info.serverKeepAlive !== undefined);
      } catch (err) {
        throw new Error(`withServerKeepAlive threw ${(err as Error).message}`, { cause: err });
      }
      const again = decodeConnack(rewritten, 5);
      if (again.serverKeepAlive !== seconds) throw new Error(`Server Keep Alive ${again.serverKeepAlive}, wanted ${seconds}`);
      if (again.returnCode !== info.returnCode || again.sessionPresent !== info.sessionPresent) throw new Error('the rewrite changed the CONNACK');
      const before = parseOne(mutated, 5) as { properties?: Record<string, unknown> };
      const after = parseOne(rewritten, 5) as { properties?: Record<string, unknown> };
      const expected = JSON.stringify({ ...before, length: 0, properties: { ...before.properties, serverKeepAlive: seconds } });
      if (JSON.stringify({ ...after, length: 0, properties: { ...after.properties } }) !== expected) throw new Error('the rewrite changed other fields');
    }
  }), 0xc0aac4);
  t.ok(decoded > 100 && refused > 100, `${decoded} decoded, ${refused} refused with MLP_DECODE`);
});

t.test('regression: a v5 CONNACK with a user property missing its value', async (t) => {
  // Server Keep Alive 60, then a user property whose value length (5) runs past the packet:
  // mqtt-packet reads the value as null and carries on.
  const props = Buffer.from([0x13, 0x00, 0x3c, 0x26, 0x00, 0x01, 0x6b, 0x00, 0x05]);
  const frame = Buffer.concat([Buffer.from([0x20, 3 + props.length, 0x00, 0x00, props.length]), props]);
  // mqtt-packet reads it (value null) but cannot write it back: re-encoding it threw a
  // TypeError, which in the relay's CONNACK handler would have ended the process.
  const parsed = parseOne(frame, 5) as { cmd: string; properties: { userProperties: Record<string, unknown> } } | null;
  t.equal(parsed?.cmd, 'connack', 'mqtt-packet reads it');
  t.same(parsed?.properties.userProperties, { k: null }, 'with a null value');
  t.throws(() => mqttPacket.generate({ ...parsed, properties: { ...parsed?.properties, serverKeepAlive: 30 } } as Packet, { protocolVersion: 5 }), TypeError, 'and its writer throws a TypeError on it');
  t.throws(() => decodeConnack(frame, 5), { code: 'MLP_DECODE' }, 'decodeConnack refuses it, so the relay passes it on unchanged');
  t.throws(() => withServerKeepAlive(frame, 30, true), { code: 'MLP_DECODE' }, 'withServerKeepAlive throws only FrameError');
  const good = mqttPacket.generate({ cmd: 'connack', sessionPresent: true, reasonCode: 0, properties: { serverKeepAlive: 60, userProperties: { k: 'v' }, reasonString: 'ok' } }, { protocolVersion: 5 });
  const rewritten = withServerKeepAlive(good, 30, true);
  t.equal(rewritten.length, good.length, 'a present Server Keep Alive is overwritten in place');
  t.equal(decodeConnack(rewritten, 5).serverKeepAlive, 30);
  t.equal(Buffer.compare(rewritten.subarray(0, 5), good.subarray(0, 5)), 0);
});
