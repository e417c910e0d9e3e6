/**
 * PROXY v2 TLVs (type-length-value records after the address block), both ways.
 * Type numbers from the spec §2.2.7; PP2_TYPE_SSL carries its own sub-TLVs.
 */

export const PP2_TYPE = {
  ALPN: 0x01,
  AUTHORITY: 0x02,
  CRC32C: 0x03,
  NOOP: 0x04,
  UNIQUE_ID: 0x05,
  SSL: 0x20,
  SSL_VERSION: 0x21,
  SSL_CN: 0x22,
  SSL_CIPHER: 0x23,
  SSL_SIG_ALG: 0x24,
  SSL_KEY_ALG: 0x25,
  NETNS: 0x30,
} as const;

/** PP2_TYPE_SSL client bits. */
export const PP2_CLIENT = { SSL: 0x01, CERT_CONN: 0x02, CERT_SESS: 0x04 } as const;

export interface ProxyTlv {
  type: number;
  value: Buffer;
}

/** What a PP2_TYPE_SSL record says about the client's TLS connection. */
export interface SslTlv {
  /** The client connected over TLS (PP2_CLIENT_SSL). */
  tls: boolean;
  /** The client presented a certificate on this connection (PP2_CLIENT_CERT_CONN). */
  clientCertificate: boolean;
  /** The client certificate was verified (verify field 0); meaningful only with a certificate. */
  verified: boolean;
  version: string | null;
  cn: string | null;
  cipher: string | null;
}

/** Walk the TLV area; a record running past the end is an error (string). */
export function decodeTlvs(area: Buffer): { list: ProxyTlv[]; ssl: SslTlv | null } | string {
  const list = walk(area);
  if (typeof list === 'string') return list;
  let ssl: SslTlv | null = null;
  const record = list.find((t) => t.type === PP2_TYPE.SSL);
  if (record) {
    if (record.value.length < 5) return `PP2_TYPE_SSL of ${record.value.length} bytes is shorter than its 5-byte fixed part`;
    const subs = walk(record.value.subarray(5));
    if (typeof subs === 'string') return `PP2_TYPE_SSL: ${subs}`;
    const text = (type: number) => {
      const sub = subs.find((t) => t.type === type);
      return sub ? sub.value.toString('utf8') : null;
    };
    const client = record.value[0];
    ssl = {
      tls: (client & PP2_CLIENT.SSL) !== 0,
      clientCertificate: (client & PP2_CLIENT.CERT_CONN) !== 0,
      verified: record.value.readUInt32BE(1) === 0,
      version: text(PP2_TYPE.SSL_VERSION),
      cn: text(PP2_TYPE.SSL_CN),
      cipher: text(PP2_TYPE.SSL_CIPHER),
    };
  }
  return { list, ssl };
}

function walk(area: Buffer): ProxyTlv[] | string {
  const list: ProxyTlv[] = [];
  for (let at = 0; at < area.length;) {
    if (at + 3 > area.length) return `TLV header at offset ${at} is truncated`;
    const length = area.readUInt16BE(at + 1);
    if (at + 3 + length > area.length) return `TLV 0x${area[at].toString(16)} of ${length} bytes runs past the header`;
    list.push({ type: area[at], value: area.subarray(at + 3, at + 3 + length) });
    at += 3 + length;
  }
  return list;
}

export function encodeTlv(type: number, value: Buffer): Buffer {
  if (value.length > 0xffff) throw new RangeError(`TLV 0x${type.toString(16)} value of ${value.length} bytes exceeds 65535`);
  const out = Buffer.allocUnsafe(3 + value.length);
  out[0] = type;
  out.writeUInt16BE(value.length, 1);
  value.copy(out, 3);
  return out;
}

/** The PP2_TYPE_SSL record for a TLS client connection. */
export function encodeSslTlv(ssl: Omit<SslTlv, 'tls'>): Buffer {
  const fixed = Buffer.alloc(5);
  fixed[0] = PP2_CLIENT.SSL | (ssl.clientCertificate ? PP2_CLIENT.CERT_CONN | PP2_CLIENT.CERT_SESS : 0);
  // verify: 0 when the certificate was verified (or none was presented and none required).
  fixed.writeUInt32BE(ssl.verified || !ssl.clientCertificate ? 0 : 1, 1);
  const subs: Buffer[] = [fixed];
  if (ssl.version) subs.push(encodeTlv(PP2_TYPE.SSL_VERSION, Buffer.from(ssl.version, 'ascii')));
  if (ssl.cn) subs.push(encodeTlv(PP2_TYPE.SSL_CN, Buffer.from(ssl.cn, 'utf8')));
  if (ssl.cipher) subs.push(encodeTlv(PP2_TYPE.SSL_CIPHER, Buffer.from(ssl.cipher, 'ascii')));
  return encodeTlv(PP2_TYPE.SSL, Buffer.concat(subs));
}
