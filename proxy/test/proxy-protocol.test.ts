/**
 * PROXY protocol parser, v2 encoder and trusted-source matcher, pure:
 * spec examples byte by byte, every split point, the size limits, every error
 * code, encoder -> parser round trips, and fast-check fuzz (fixed seeds) of
 * random, mutated, truncated and oversized input: a clear error or need-more,
 * never a throw, never more buffered than the limit.
 */
import t from 'tap';
import fc from 'fast-check';
import { ProxyHeaderParser, V1_MAX_LENGTH, V2_DEFAULT_MAX_LENGTH, V2_SIGNATURE, type ProxyParseStep } from '../src/listeners/proxy-protocol.ts';
import { encodeProxyV2, encodeProxyV2Local } from '../src/listeners/proxy-protocol-out.ts';
import { encodeTlv, PP2_TYPE } from '../src/listeners/proxy-protocol-tlv.ts';
import { TrustedSources } from '../src/listeners/trusted-sources.ts';

const NUM_RUNS = Number(process.env.MLP_FUZZ_RUNS ?? 2000);
const MQTT = Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3c, 0x00, 0x00]);
const CODES = new Set(['not_proxy_protocol', 'v1_too_long', 'v1_malformed', 'v2_too_long', 'v2_bad_version', 'v2_bad_command', 'v2_bad_family', 'v2_short_address', 'v2_bad_tlv']);

const parseAll = (bytes: Buffer, options?: { maxV2Length?: number }): ProxyParseStep => new ProxyHeaderParser(options).push(bytes);

/** Feed in pieces cut at the given offsets; the result must not depend on where. */
function parseSplit(bytes: Buffer, cuts: number[]): ProxyParseStep {
  const parser = new ProxyHeaderParser();
  let step = { state: 'need-more' } as ProxyParseStep;
  let from = 0;
  for (const cut of [...cuts.filter((c) => c > 0 && c < bytes.length).sort((a, b) => a - b), bytes.length]) {
    // After 'done' the caller forwards later chunks itself: model that by appending them to rest.
    if (step.state === 'done') step = { ...step, rest: Buffer.concat([step.rest, bytes.subarray(from, cut)]) };
    else if (step.state === 'need-more') step = parser.push(bytes.subarray(from, cut));
    from = cut;
  }
  return step;
}

/** The MQTT bytes a done step hands on. */
const restOf = (s: ProxyParseStep) => (s.state === 'done' ? s.rest : null);

t.test('v1 TCP4, TCP6 and UNKNOWN, MQTT after the header untouched', async (t) => {
  const v4 = parseAll(Buffer.concat([Buffer.from('PROXY TCP4 192.0.2.10 10.0.0.1 56324 1883\r\n'), MQTT]));
  t.equal(v4.state, 'done');
  if (v4.state !== 'done') return;
  t.same(v4.header.source, { address: '192.0.2.10', port: 56324 });
  t.same(v4.header.destination, { address: '10.0.0.1', port: 1883 });
  t.equal(v4.header.family, 'tcp4');
  t.equal(v4.header.version, 1);
  t.equal(v4.header.length, 43);
  t.ok(v4.rest.equals(MQTT));

  const v6 = parseAll(Buffer.from('PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::ffff:10.1.2.3 65535 0\r\n'));
  t.equal(v6.state, 'done');
  if (v6.state === 'done') {
    t.same(v6.header.source, { address: '2001:db8::1', port: 65535 });
    t.same(v6.header.destination, { address: '::ffff:10.1.2.3', port: 0 });
    t.equal(v6.rest.length, 0);
  }
  const unknown = parseAll(Buffer.from('PROXY UNKNOWN ffff::1 whatever\r\nX'));
  t.equal(unknown.state, 'done');
  if (unknown.state === 'done') {
    t.equal(unknown.header.family, 'unknown');
    t.equal(unknown.header.source, null);
    t.equal(unknown.rest.toString(), 'X');
  }
  // The spec's worst case is exactly 107 bytes.
  const longest = 'PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n';
  t.equal(longest.length, V1_MAX_LENGTH);
  t.equal(parseAll(Buffer.from(longest)).state, 'done');
});

t.test('v1 errors', async (t) => {
  const code = (s: string) => { const r = parseAll(Buffer.from(s, 'latin1')); return r.state === 'error' ? r.code : r.state; };
  t.equal(code('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n'), 'v1_malformed', 'LF without CR');
  t.equal(code('PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n'), 'v1_malformed', 'missing field');
  t.equal(code('PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n'), 'v1_malformed', 'octet > 255');
  t.equal(code('PROXY TCP4 ::1 5.6.7.8 1 2\r\n'), 'v1_malformed', 'v6 address in TCP4');
  t.equal(code('PROXY TCP6 1.2.3.4 ::1 1 2\r\n'), 'v1_malformed', 'v4 address in TCP6');
  t.equal(code('PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n'), 'v1_malformed', 'port > 65535');
  t.equal(code('PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n'), 'v1_malformed', 'leading zero');
  t.equal(code('PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n'), 'v1_malformed', 'double space');
  t.equal(code('PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n'), 'v1_malformed', 'UDP4');
  t.equal(code(`PROXY UNKNOWN ${'x'.repeat(200)}\r\n`), 'v1_too_long');
  t.equal(code(`PROXY TCP4 ${'1'.repeat(96)}`), 'v1_too_long', 'refused at 107 bytes without waiting for more');
  t.equal(code('PROXY TCP4 1.2.3'), 'need-more');
  t.equal(code('PROX'), 'need-more');
  t.equal(code('PROXI'), 'not_proxy_protocol');
  t.equal(code('\x10\x0c\x00\x04MQTT'), 'not_proxy_protocol', 'bare MQTT CONNECT');
  t.equal(code('GET /mqtt HTTP/1.1\r\n'), 'not_proxy_protocol');
});

t.test('v2 with TLVs (a HAProxy-style header), LOCAL, UNSPEC and unix', async (t) => {
  const header = encodeProxyV2({
    source: { address: '198.51.100.7', port: 40000 },
    destination: { address: '10.0.0.1', port: 8883 },
    ssl: { clientCertificate: true, verified: true, version: 'TLSv1.3', cn: 'sensor-42', cipher: 'TLS_AES_128_GCM_SHA256' },
  });
  const step = parseAll(Buffer.concat([header, MQTT]));
  t.equal(step.state, 'done');
  if (step.state !== 'done') return;
  t.same(step.header.source, { address: '198.51.100.7', port: 40000 });
  t.same(step.header.destination, { address: '10.0.0.1', port: 8883 });
  t.same(step.header.ssl, { tls: true, clientCertificate: true, verified: true, version: 'TLSv1.3', cn: 'sensor-42', cipher: 'TLS_AES_128_GCM_SHA256' });
  t.equal(step.header.length, header.length);
  t.ok(step.rest.equals(MQTT));

  const local = parseAll(Buffer.concat([encodeProxyV2Local(), MQTT]));
  t.match(local, { state: 'done', header: { command: 'local', family: 'unknown', source: null } });
  t.ok(restOf(local)?.equals(MQTT));

  // LOCAL with an INET block: the addresses are ignored (spec 2.2).
  const localInet = Buffer.from(header);
  localInet[12] = 0x20;
  t.match(parseAll(localInet), { state: 'done', header: { command: 'local', family: 'tcp4', source: null } });

  const unix = Buffer.alloc(16 + 216);
  V2_SIGNATURE.copy(unix);
  unix[12] = 0x21;
  unix[13] = 0x31;
  unix.writeUInt16BE(216, 14);
  unix.write('/run/client.sock', 16);
  unix.write('/run/server.sock', 16 + 108);
  t.match(parseAll(unix), { state: 'done', header: { family: 'unix', source: { address: '/run/client.sock', port: 0 } } });

  const v6 = parseAll(encodeProxyV2({ source: { address: '2001:db8::dead:beef', port: 1 }, destination: { address: '127.0.0.1', port: 2 } }));
  t.match(v6, { state: 'done', header: { family: 'tcp6', source: { address: '2001:db8::dead:beef' }, destination: { address: '::ffff:127.0.0.1' } } });
  const mapped = parseAll(encodeProxyV2({ source: { address: '::ffff:192.0.2.1', port: 1 }, destination: { address: '::ffff:127.0.0.1', port: 2 } }));
  t.match(mapped, { state: 'done', header: { family: 'tcp4', source: { address: '192.0.2.1' } } }, 'IPv4-mapped pairs go out as IPv4');
});

t.test('v2 errors and size limit', async (t) => {
  const good = encodeProxyV2({ source: { address: '192.0.2.1', port: 1 }, destination: { address: '192.0.2.2', port: 2 } });
  const mutate = (at: number, value: number) => { const b = Buffer.from(good); b[at] = value; return parseAll(b); };
  t.match(mutate(12, 0x11), { state: 'error', code: 'v2_bad_version' });
  t.match(mutate(12, 0x22), { state: 'error', code: 'v2_bad_command' });
  t.match(mutate(13, 0x41), { state: 'error', code: 'v2_bad_family' });
  t.match(mutate(13, 0x12), { state: 'error', code: 'v2_bad_family' }, 'UDP');
  t.match(mutate(15, 11), { state: 'error', code: 'v2_short_address' });
  t.match(mutate(5, 0x00), { state: 'error', code: 'not_proxy_protocol' });

  const badTlv = Buffer.concat([good, encodeTlv(PP2_TYPE.NOOP, Buffer.alloc(4))]);
  badTlv.writeUInt16BE(12 + 7, 14);
  badTlv.writeUInt16BE(9, 16 + 12 + 1); // claims 9 value bytes, has 4
  t.match(parseAll(badTlv), { state: 'error', code: 'v2_bad_tlv' });

  const shortSsl = Buffer.concat([good, encodeTlv(PP2_TYPE.SSL, Buffer.alloc(2))]);
  shortSsl.writeUInt16BE(12 + 5, 14);
  t.match(parseAll(shortSsl), { state: 'error', code: 'v2_bad_tlv' });

  // The length field is read from the first 16 bytes: refused before the body is buffered.
  const huge = Buffer.from(good.subarray(0, 16));
  huge.writeUInt16BE(0xffff, 14);
  t.match(parseAll(huge), { state: 'error', code: 'v2_too_long' });
  const atLimit = Buffer.concat([good, encodeTlv(PP2_TYPE.NOOP, Buffer.alloc(V2_DEFAULT_MAX_LENGTH - good.length - 3))]);
  atLimit.writeUInt16BE(atLimit.length - 16, 14);
  t.equal(parseAll(atLimit).state, 'done', 'exactly the default limit is accepted');
  t.match(parseAll(atLimit, { maxV2Length: 64 }), { state: 'error', code: 'v2_too_long' });
  t.equal(parseAll(good.subarray(0, 27)).state, 'need-more');
});

t.test('every split point gives the same result; after done the parser stays done', async (t) => {
  const inputs = [
    Buffer.concat([Buffer.from('PROXY TCP4 192.0.2.10 10.0.0.1 56324 1883\r\n'), MQTT]),
    Buffer.concat([encodeProxyV2({ source: { address: '2001:db8::1', port: 9 }, destination: { address: '2001:db8::2', port: 10 }, ssl: { clientCertificate: false, verified: false, version: 'TLSv1.2', cn: null, cipher: null } }), MQTT]),
  ];
  for (const input of inputs) {
    const whole = parseAll(input);
    for (let cut = 1; cut < input.length; cut++) {
      const split = parseSplit(input, [cut]);
      t.same(split, whole, `cut at ${cut}`);
    }
    const byteByByte = parseSplit(input, Array.from({ length: input.length }, (_, i) => i));
    t.same(byteByByte, whole, 'byte by byte');
  }
  const parser = new ProxyHeaderParser();
  const first = parser.push(Buffer.from('garbage'));
  t.equal(parser.push(Buffer.from('PROXY UNKNOWN\r\n')), first, 'errors are final');
});

t.test('fuzz: random, mutated and truncated input never throws, errors carry a known code', async (t) => {
  const valid = fc.oneof(
    fc.tuple(fc.ipV4(), fc.ipV4(), fc.nat(65535), fc.nat(65535)).map(([s, d, sp, dp]) => Buffer.from(`PROXY TCP4 ${s} ${d} ${sp} ${dp}\r\n`)),
    fc.tuple(fc.ipV6(), fc.ipV6(), fc.nat(65535), fc.nat(65535)).map(([s, d, sp, dp]) => encodeProxyV2({ source: { address: s, port: sp }, destination: { address: d, port: dp } })),
    fc.tuple(fc.ipV4(), fc.ipV4(), fc.option(fc.string({ maxLength: 64 }))).map(([s, d, cn]) => encodeProxyV2({ source: { address: s, port: 1 }, destination: { address: d, port: 2 }, ssl: { clientCertificate: cn !== null, verified: true, version: 'TLSv1.3', cn, cipher: null } })),
  );
  const mutated = fc.tuple(valid, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }), fc.nat(), fc.uint8Array({ maxLength: 64 }))
    .map(([b, flips, cut, tail]) => {
      const m = Buffer.from(b);
      for (const [at, v] of flips) m[at % m.length] = v;
      return Buffer.concat([m.subarray(0, (cut % (m.length + 1)) || m.length), Buffer.from(tail)]);
    });
  const anyInput = fc.oneof(mutated, fc.uint8Array({ maxLength: 400 }).map((a) => Buffer.from(a)),
    fc.uint8Array({ maxLength: 3000 }).map((a) => Buffer.concat([V2_SIGNATURE, Buffer.from(a)])));
  fc.assert(fc.property(anyInput, fc.array(fc.nat(4000), { maxLength: 6 }), (input, cuts) => {
    let whole: ProxyParseStep;
    let split: ProxyParseStep;
    try {
      whole = parseAll(input);
      split = parseSplit(input, cuts);
    } catch (err) {
      throw new Error(`threw on ${input.toString('hex')}: ${(err as Error).stack}`, { cause: err });
    }
    if (whole.state === 'error' && !CODES.has(whole.code)) return false;
    if (whole.state === 'need-more' && input.length >= V2_DEFAULT_MAX_LENGTH) return false; // bounded
    if (whole.state === 'done') {
      if (whole.header.length + whole.rest.length !== input.length) return false;
      if (!input.subarray(whole.header.length).equals(whole.rest)) return false;
    }
    if (split.state !== whole.state) return false;
    if (split.state === 'done' && whole.state === 'done') return JSON.stringify(split.header) === JSON.stringify(whole.header) && split.rest.equals(whole.rest);
    if (split.state === 'error' && whole.state === 'error') return split.code === whole.code;
    return true;
  }), { numRuns: NUM_RUNS, seed: 1414 });
  fc.assert(fc.property(valid, (b) => parseAll(b).state === 'done'), { numRuns: NUM_RUNS, seed: 1415 });
  t.pass('properties hold');
});

t.test('trusted sources: CIDRs, single addresses, IPv4-mapped peers, bad entries', async (t) => {
  const trusted = new TrustedSources(['10.0.0.0/8', '192.0.2.7', 'fd00::/8', '::1']);
  t.ok(trusted.has('10.200.3.4'));
  t.ok(trusted.has('::ffff:10.200.3.4'), 'IPv4-mapped peer of a dual-stack listener');
  t.ok(trusted.has('192.0.2.7'));
  t.notOk(trusted.has('192.0.2.8'));
  t.ok(trusted.has('fd12:3456::1'));
  t.ok(trusted.has('::1'));
  t.notOk(trusted.has('::2'));
  t.notOk(trusted.has('11.0.0.1'));
  t.notOk(trusted.has(undefined));
  t.notOk(trusted.has('not-an-ip'));
  t.notOk(new TrustedSources([]).has('10.0.0.1'), 'empty list: off');
  for (const bad of ['10.0.0.0/33', '10.0.0/8', 'fd00::/129', '10.0.0.0/8/1', 'example.com', '10.0.0.0/x', '']) {
    t.throws(() => new TrustedSources([bad]), { message: /proxyProtocol\.trusted/ }, bad);
  }
});
