/**
 * PROXY protocol v1 (text) and v2 (binary) header parser, as a pure incremental
 * state machine (https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt).
 *
 * A load balancer in front of us writes one header before the client's first
 * byte; the header may arrive split over any number of chunks, and the same
 * chunk may already carry MQTT after it. push() takes chunks until it can say
 * 'done' (header plus the bytes after it, to be forwarded unchanged) or 'error'
 * (a code and a message; the caller closes that one connection). It never
 * throws and never buffers more than the size limit.
 *
 * Sizes: a v1 line is at most 107 bytes with its CRLF (spec §2.1). A v2
 * header is 16 bytes plus a 16-bit length, so up to 65 551 bytes; the address
 * block is at most 216 bytes (AF_UNIX) and the rest are TLVs. Real senders
 * (HAProxy, AWS NLB, Azure, NGINX) stay far below 2 KiB, so the default limit is
 * 16 + 2048 bytes and anything longer is refused before it is buffered.
 */
import { decodeTlvs, type ProxyTlv, type SslTlv } from './proxy-protocol-tlv.ts';

export type { ProxyTlv, SslTlv } from './proxy-protocol-tlv.ts';

export interface ProxyAddress {
  address: string;
  port: number;
}

export interface ProxyHeader {
  version: 1 | 2;
  /** 'local': the sender's own connection (health check); use the real peer address. */
  command: 'proxy' | 'local';
  /** 'unknown': v1 UNKNOWN or v2 AF_UNSPEC; 'unix': v2 AF_UNIX (paths in address, port 0). */
  family: 'tcp4' | 'tcp6' | 'unix' | 'unknown';
  /** Set for tcp4/tcp6/unix with command 'proxy'. */
  source: ProxyAddress | null;
  destination: ProxyAddress | null;
  /** v2 TLVs in order (empty for v1). */
  tlvs: ProxyTlv[];
  /** The decoded PP2_TYPE_SSL TLV when present. */
  ssl: SslTlv | null;
  /** Bytes the header took on the wire. */
  length: number;
}

export type ProxyErrorCode =
  | 'not_proxy_protocol' // the first bytes are neither signature
  | 'v1_too_long' // no CRLF within 107 bytes
  | 'v1_malformed'
  | 'v2_too_long' // length field above the configured limit
  | 'v2_bad_version'
  | 'v2_bad_command'
  | 'v2_bad_family'
  | 'v2_short_address' // length too small for the family's address block
  | 'v2_bad_tlv';

export type ProxyParseStep =
  | { state: 'need-more' }
  | { state: 'done'; header: ProxyHeader; rest: Buffer }
  | { state: 'error'; code: ProxyErrorCode; message: string };

export const V1_MAX_LENGTH = 107;
export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
export const V2_DEFAULT_MAX_LENGTH = 16 + 2048;
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
const NEED_MORE: ProxyParseStep = { state: 'need-more' };

export interface ProxyParserOptions {
  /** Largest v2 header accepted, bytes including the 16-byte fixed part. */
  maxV2Length?: number;
}

export class ProxyHeaderParser {
  private buffered: Buffer = Buffer.alloc(0);
  private finished: ProxyParseStep | null = null;
  private readonly maxV2Length: number;

  constructor(options: ProxyParserOptions = {}) {
    this.maxV2Length = Math.min(options.maxV2Length ?? V2_DEFAULT_MAX_LENGTH, 16 + 0xffff);
  }

  /** Feed the next chunk. After 'done' or 'error' the parser keeps returning that result. */
  push(chunk: Buffer): ProxyParseStep {
    if (this.finished) return this.finished;
    // Only the first chunk is usually needed; concatenation happens only for split headers.
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const step = this.step(this.buffered);
    if (step.state !== 'need-more') {
      this.finished = step;
      this.buffered = Buffer.alloc(0);
    }
    return step;
  }

  private step(buf: Buffer): ProxyParseStep {
    if (buf[0] === 0x50) return this.v1(buf); // 'P'
    if (buf[0] === 0x0d) return this.v2(buf);
    return error('not_proxy_protocol', 'the connection does not start with a PROXY protocol header');
  }

  private v1(buf: Buffer): ProxyParseStep {
    const prefix = Math.min(buf.length, V1_PREFIX.length);
    if (buf.compare(V1_PREFIX, 0, prefix, 0, prefix) !== 0) return error('not_proxy_protocol', 'the connection does not start with a PROXY protocol header');
    const end = buf.indexOf('\r\n', 0, 'latin1');
    if (end === -1 || end + 2 > V1_MAX_LENGTH) {
      const lf = buf.indexOf(0x0a);
      if (lf !== -1 && lf < V1_MAX_LENGTH && (end === -1 || lf < end)) return error('v1_malformed', 'PROXY v1 line ends without CRLF');
      if (buf.length >= V1_MAX_LENGTH) return error('v1_too_long', `PROXY v1 line longer than ${V1_MAX_LENGTH} bytes`);
      return NEED_MORE;
    }
    const header = parseV1Line(buf.toString('latin1', 0, end));
    if (typeof header === 'string') return error('v1_malformed', header);
    header.length = end + 2;
    return { state: 'done', header, rest: buf.subarray(end + 2) };
  }

  private v2(buf: Buffer): ProxyParseStep {
    const sig = Math.min(buf.length, V2_SIGNATURE.length);
    if (buf.compare(V2_SIGNATURE, 0, sig, 0, sig) !== 0) return error('not_proxy_protocol', 'the connection does not start with a PROXY protocol header');
    if (buf.length < 16) return NEED_MORE;
    const verCmd = buf[12];
    if (verCmd >> 4 !== 2) return error('v2_bad_version', `PROXY v2 version nibble ${verCmd >> 4}, expected 2`);
    const cmd = verCmd & 0x0f;
    if (cmd > 1) return error('v2_bad_command', `PROXY v2 command ${cmd} is neither LOCAL (0) nor PROXY (1)`);
    const famProto = buf[13];
    const fam = famProto >> 4;
    const proto = famProto & 0x0f;
    if (fam > 3 || proto > 2) return error('v2_bad_family', `PROXY v2 family/protocol byte 0x${famProto.toString(16)} is not defined`);
    if (proto === 2) return error('v2_bad_family', 'PROXY v2 header announces a datagram (UDP/unix dgram) connection');
    const total = 16 + buf.readUInt16BE(14);
    if (total > this.maxV2Length) return error('v2_too_long', `PROXY v2 header of ${total} bytes exceeds the limit of ${this.maxV2Length}`);
    if (buf.length < total) return NEED_MORE;
    const body = buf.subarray(16, total);
    const addressLength = fam === 1 ? 12 : fam === 2 ? 36 : fam === 3 ? 216 : 0;
    if (body.length < addressLength) return error('v2_short_address', `PROXY v2 length ${body.length} is too short for the ${FAMILY_NAMES[fam]} address block (${addressLength})`);
    const tlvs = decodeTlvs(body.subarray(addressLength));
    if (typeof tlvs === 'string') return error('v2_bad_tlv', tlvs);
    const header: ProxyHeader = {
      version: 2,
      command: cmd === 0 ? 'local' : 'proxy',
      family: FAMILY_NAMES[fam],
      source: null,
      destination: null,
      tlvs: tlvs.list,
      ssl: tlvs.ssl,
      length: total,
    };
    // LOCAL: the receiver must ignore the address block (spec §2.2).
    if (cmd === 1 && fam === 1) {
      header.source = { address: ipv4(body, 0), port: body.readUInt16BE(8) };
      header.destination = { address: ipv4(body, 4), port: body.readUInt16BE(10) };
    } else if (cmd === 1 && fam === 2) {
      header.source = { address: ipv6(body, 0), port: body.readUInt16BE(32) };
      header.destination = { address: ipv6(body, 16), port: body.readUInt16BE(34) };
    } else if (cmd === 1 && fam === 3) {
      header.source = { address: unixPath(body, 0), port: 0 };
      header.destination = { address: unixPath(body, 108), port: 0 };
    }
    return { state: 'done', header, rest: buf.subarray(total) };
  }
}

const FAMILY_NAMES = ['unknown', 'tcp4', 'tcp6', 'unix'] as const;

function error(code: ProxyErrorCode, message: string): ProxyParseStep {
  return { state: 'error', code, message };
}

const V1_PORT = /^(0|[1-9][0-9]{0,4})$/;
const V1_IPV4 = /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$/;

/** One v1 line without its CRLF, or why it is malformed. */
function parseV1Line(line: string): ProxyHeader | string {
  const parts = line.split(' ');
  const base = { version: 1 as const, command: 'proxy' as const, tlvs: [], ssl: null, length: 0 };
  // "PROXY UNKNOWN" may be followed by anything up to the CRLF (spec §2.1).
  if (parts[1] === 'UNKNOWN') return { ...base, family: 'unknown', source: null, destination: null };
  if (parts.length !== 6) return `PROXY v1 line has ${parts.length} fields, expected 6`;
  const [, proto, src, dst, sport, dport] = parts as [string, string, string, string, string, string];
  if (proto !== 'TCP4' && proto !== 'TCP6') return `PROXY v1 protocol ${JSON.stringify(proto.slice(0, 8))} is not TCP4, TCP6 or UNKNOWN`;
  const validAddress = proto === 'TCP4' ? (a: string) => V1_IPV4.test(a) : (a: string) => a.includes(':') && isIPv6Text(a);
  if (!validAddress(src) || !validAddress(dst)) return `PROXY v1 addresses are not valid ${proto} addresses`;
  if (!V1_PORT.test(sport) || !V1_PORT.test(dport) || Number(sport) > 65535 || Number(dport) > 65535) return 'PROXY v1 ports are not decimal 0..65535';
  return {
    ...base,
    family: proto === 'TCP4' ? 'tcp4' : 'tcp6',
    source: { address: proto === 'TCP6' ? canonicalIPv6(src) : src, port: Number(sport) },
    destination: { address: proto === 'TCP6' ? canonicalIPv6(dst) : dst, port: Number(dport) },
  };
}

function isIPv6Text(a: string): boolean {
  // URL parsing is the platform's IPv6 validator; a v1 line is parsed once per connection.
  if (!/^[0-9a-fA-F:.]{2,45}$/.test(a)) return false;
  try {
    new URL(`http://[${a}]/`);
    return true;
  } catch {
    return false;
  }
}

function canonicalIPv6(a: string): string {
  const bytes = Buffer.alloc(16);
  const host = new URL(`http://[${a}]/`).hostname.slice(1, -1); // compressed hex groups only
  const [head, tail] = host.includes('::') ? host.split('::') as [string, string] : [host, null];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  h.forEach((g, i) => bytes.writeUInt16BE(parseInt(g, 16), i * 2));
  t.forEach((g, i) => bytes.writeUInt16BE(parseInt(g, 16), 16 - (t.length - i) * 2));
  return ipv6(bytes, 0);
}

function ipv4(b: Buffer, at: number): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

/** RFC 5952 text, IPv4-mapped addresses as ::ffff:a.b.c.d like Node's remoteAddress. */
export function ipv6(b: Buffer, at: number): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(b.readUInt16BE(at + i * 2));
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) return `::ffff:${ipv4(b, at + 12)}`;
  let bestStart = -1;
  let bestLength = 1; // a single zero group is not compressed
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) { bestStart = i; bestLength = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart === -1) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

function unixPath(b: Buffer, at: number): string {
  const end = b.indexOf(0, at);
  return b.toString('utf8', at, end === -1 || end > at + 108 ? at + 108 : end);
}
