/**
 * PROXY v2 header toward the broker (proxyProtocol.upstream: v2), so a broker
 * listener with PROXY support (Mosquitto >= 2.1 `enable_proxy_protocol 2`,
 * HiveMQ, EMQX, VerneMQ, HAProxy `accept-proxy`) sees the client's real address
 * instead of the proxy's. Written once, as the first bytes of the upstream
 * connection, before the (possibly rewritten) CONNECT.
 */
import net from 'node:net';
import type tls from 'node:tls';
import { V2_SIGNATURE, type ProxyAddress } from './proxy-protocol.ts';
import { encodeSslTlv, encodeTlv, PP2_TYPE, type SslTlv } from './proxy-protocol-tlv.ts';

export interface ProxyV2Out {
  /** The client as it reached us (or as a trusted PROXY header in front of us said). */
  source: ProxyAddress;
  /** The address the client connected to (our listener). */
  destination: ProxyAddress;
  /** TLS facts of the client connection, when it was TLS (wss or mqtts). */
  ssl?: Omit<SslTlv, 'tls'> | null;
}

/** v2 header, command PROXY, TCP over IPv4 or IPv6. */
export function encodeProxyV2(h: ProxyV2Out): Buffer {
  let src = unmapped(h.source.address);
  let dst = unmapped(h.destination.address);
  const srcFamily = net.isIP(src);
  const dstFamily = net.isIP(dst);
  if (srcFamily === 0 || dstFamily === 0) throw new TypeError(`PROXY v2 needs IP addresses, got ${h.source.address} -> ${h.destination.address}`);
  // Both addresses must be of one family: a mixed pair goes out as IPv6 with the IPv4 one mapped.
  const v6 = srcFamily === 6 || dstFamily === 6;
  if (v6 && srcFamily === 4) src = `::ffff:${src}`;
  if (v6 && dstFamily === 4) dst = `::ffff:${dst}`;
  const addresses = Buffer.alloc(v6 ? 36 : 12);
  if (v6) {
    writeIPv6(addresses, 0, src);
    writeIPv6(addresses, 16, dst);
    addresses.writeUInt16BE(h.source.port, 32);
    addresses.writeUInt16BE(h.destination.port, 34);
  } else {
    writeIPv4(addresses, 0, src);
    writeIPv4(addresses, 4, dst);
    addresses.writeUInt16BE(h.source.port, 8);
    addresses.writeUInt16BE(h.destination.port, 10);
  }
  const tlvs = h.ssl ? encodeSslTlv(h.ssl) : Buffer.alloc(0);
  const fixed = Buffer.alloc(16);
  V2_SIGNATURE.copy(fixed, 0);
  fixed[12] = 0x21; // version 2, PROXY
  fixed[13] = v6 ? 0x21 : 0x11; // AF_INET6/AF_INET, STREAM
  fixed.writeUInt16BE(addresses.length + tlvs.length, 14);
  return Buffer.concat([fixed, addresses, tlvs]);
}

/** v2 LOCAL header: the proxy's own connection (e.g. the canary), addresses to be ignored. */
export function encodeProxyV2Local(): Buffer {
  const fixed = Buffer.alloc(16);
  V2_SIGNATURE.copy(fixed, 0);
  fixed[12] = 0x20;
  fixed[13] = 0x00;
  return fixed;
}

/** The TLS facts of a handshaken client socket for PP2_TYPE_SSL. */
export function sslFacts(socket: tls.TLSSocket): Omit<SslTlv, 'tls'> {
  const peer = socket.getPeerCertificate();
  const clientCertificate = !!peer && Object.keys(peer).length > 0;
  const cn = clientCertificate ? peer.subject?.CN : undefined;
  return {
    clientCertificate,
    verified: clientCertificate && socket.authorized,
    version: socket.getProtocol() ?? null,
    cn: typeof cn === 'string' ? cn : Array.isArray(cn) ? (cn[0] ?? null) : null,
    cipher: socket.getCipher()?.standardName ?? null,
  };
}

function unmapped(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1] : address;
}

function writeIPv4(b: Buffer, at: number, a: string): void {
  a.split('.').forEach((o, i) => { b[at + i] = Number(o); });
}

function writeIPv6(b: Buffer, at: number, a: string): void {
  let text = a;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const o = dotted[1].split('.').map(Number);
    text = `${text.slice(0, -dotted[1].length)}${((o[0] << 8) | o[1]).toString(16)}:${((o[2] << 8) | o[3]).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? (text.split('::') as [string, string]) : [text, ''];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  h.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), at + i * 2));
  t.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), at + 16 - (t.length - i) * 2));
}

export { PP2_TYPE, encodeTlv };
