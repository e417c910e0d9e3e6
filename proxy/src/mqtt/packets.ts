/**
 * The few packets the proxy must read or write. Decoding goes through
 * mqtt-packet; the packets the proxy writes itself are tiny and fixed, so they
 * are built here byte by byte.
 */
import mqttPacket from 'mqtt-packet';
import { FrameError } from './errors.ts';

export const CONNECT = 1;
export const CONNACK = 2;
export const PUBLISH = 3;
export const PINGREQ = 12;
export const PINGRESP = 13;
export const DISCONNECT = 14;
export const AUTH = 15;

export const PACKET_NAMES = [
  'reserved', 'connect', 'connack', 'publish', 'puback', 'pubrec', 'pubrel', 'pubcomp',
  'subscribe', 'suback', 'unsubscribe', 'unsuback', 'pingreq', 'pingresp', 'disconnect', 'auth',
] as const;

export const PINGREQ_BYTES = Buffer.from([0xc0, 0x00]);

/** MQTT 5 reason codes the proxy sends. */
export const REASON = {
  disconnectWithWill: 0x04,
  unspecifiedError: 0x80,
  malformedPacket: 0x81,
  protocolError: 0x82,
  implementationSpecificError: 0x83,
  /** CONNACK only: not a legal DISCONNECT reason (MQTT 5.0 §3.14.2.1). */
  serverUnavailable: 0x88,
  /** The DISCONNECT the proxy sends when the broker is down, unresponsive or died (docs/metrics.md). */
  serverBusy: 0x89,
  serverShuttingDown: 0x8b,
  keepAliveTimeout: 0x8d,
  packetTooLarge: 0x95,
} as const;

/** MQTT 3.x CONNACK return codes the proxy sends. */
export const RETURN_CODE = {
  identifierRejected: 2,
  serverUnavailable: 3,
} as const;

/** What the proxy learns from a CONNECT. The password itself is never kept. */
export interface ConnectInfo {
  protocolVersion: number; // 3 = 3.1, 4 = 3.1.1, 5 = 5
  clientId: string;
  username: string | undefined;
  keepAlive: number;
  /** Offset of the two keep-alive bytes inside the CONNECT frame. */
  keepAliveOffset: number;
}

export interface ConnackInfo {
  sessionPresent: boolean;
  returnCode: number;
  serverKeepAlive: number | undefined;
}

interface ParsedPacket {
  cmd: string;
  [key: string]: unknown;
}

/**
 * One mqtt-packet parser per protocol version, reused: building a parser for each
 * CONNECT and CONNACK allocated about 6 KB per connection, most of the garbage of a
 * connect burst (peak RSS per idle connection, BENCHMARKS.md issue 13). A parser that
 * ends in any state but "clean" (an error, bytes left over) is dropped, never reused.
 */
interface PooledParser {
  /** mqtt-packet's parser; its settings field is public in JS but not in its types. */
  parser: ReturnType<typeof mqttPacket.parser> & { settings: object };
  /** The parser's own settings object: parsing a CONNECT replaces it with the packet, which must not outlive the call. */
  settings: object;
  packet: ParsedPacket | null;
  error: Error | null;
}
const parsers = new Map<number, PooledParser>();

function parserFor(protocolVersion: number): PooledParser {
  let entry = parsers.get(protocolVersion);
  if (entry === undefined) {
    const parser = mqttPacket.parser({ protocolVersion }) as PooledParser['parser'];
    const made: PooledParser = { parser, settings: parser.settings, packet: null, error: null };
    parser.on('packet', (p: unknown) => { made.packet ??= p as ParsedPacket; });
    parser.on('error', (e: Error) => { made.error ??= e; });
    parsers.set(protocolVersion, (entry = made));
  }
  return entry;
}

/** Decode one complete frame with mqtt-packet, synchronously. */
function decodeFrame(frame: Buffer, protocolVersion: number): ParsedPacket {
  const entry = parserFor(protocolVersion);
  const left = entry.parser.parse(frame);
  const { packet, error } = entry;
  entry.packet = null;
  entry.error = null;
  entry.parser.settings = entry.settings;
  if (error !== null || packet === null || left !== 0) parsers.delete(protocolVersion);
  if (error) throw new FrameError('MLP_DECODE', `cannot decode packet: ${error.message}`);
  if (!packet) throw new FrameError('MLP_DECODE', 'cannot decode packet: incomplete');
  return packet;
}

/** Where the keep-alive field sits: after the fixed header, protocol name, level and flags. */
function keepAliveOffsetOf(frame: Buffer): number {
  let i = 1;
  while (frame[i] & 0x80) i++;
  i++; // past Remaining Length
  const nameLength = frame.readUInt16BE(i);
  return i + 2 + nameLength + 2;
}

export function decodeConnect(frame: Buffer): ConnectInfo {
  const p = decodeFrame(frame, 4);
  if (p.cmd !== 'connect') throw new FrameError('MLP_DECODE', `cannot decode packet: a ${p.cmd}, not a CONNECT`);
  const info: ConnectInfo = {
    protocolVersion: Number(p.protocolVersion),
    clientId: typeof p.clientId === 'string' ? p.clientId : '',
    username: typeof p.username === 'string' ? p.username : undefined,
    keepAlive: Number(p.keepalive ?? 0),
    keepAliveOffset: keepAliveOffsetOf(frame),
  };
  return info;
}

export function decodeConnack(frame: Buffer, protocolVersion: number): ConnackInfo {
  const p = decodeFrame(frame, protocolVersion === 5 ? 5 : 4);
  if (p.cmd !== 'connack') throw new FrameError('MLP_DECODE', `cannot decode packet: a ${p.cmd}, not a CONNACK`);
  if (protocolVersion === 5) {
    // mqtt-packet's reader lets some malformed property lists through (a user
    // property without its value); refuse them here, so a CONNACK that decodes can be rewritten.
    const { propsFrom, propsTo } = connackLayout(frame);
    serverKeepAliveOffsets(frame, propsFrom, propsTo);
  }
  const props = (p.properties ?? {}) as { serverKeepAlive?: number };
  return {
    sessionPresent: Boolean(p.sessionPresent),
    returnCode: Number(protocolVersion === 5 ? p.reasonCode ?? 0 : p.returnCode ?? 0),
    serverKeepAlive: props.serverKeepAlive,
  };
}

/** Reason code of a DISCONNECT (MQTT 5), 0 when absent or before MQTT 5. */
export function disconnectReason(frame: Buffer, protocolVersion: number): number {
  if (protocolVersion !== 5) return 0;
  let i = 1;
  while (frame[i] & 0x80) i++;
  i++;
  return i < frame.length ? frame[i] : 0;
}

export function connackRefusal(protocolVersion: number, v3Code: number, v5Reason: number): Buffer {
  return protocolVersion === 5
    ? Buffer.from([0x20, 0x03, 0x00, v5Reason, 0x00])
    : Buffer.from([0x20, 0x02, 0x00, v3Code]);
}

export function disconnectV5(reason: number): Buffer {
  return Buffer.from([0xe0, 0x01, reason]);
}

/** A copy of a CONNECT frame with another keep-alive value; every other byte unchanged. */
export function withKeepAlive(frame: Buffer, offset: number, keepAlive: number): Buffer {
  const copy = Buffer.from(frame);
  copy.writeUInt16BE(keepAlive, offset);
  return copy;
}

function varint(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}

/** Where an MQTT 5 CONNACK's body and property list are (an absent list is empty, at the end). */
function connackLayout(frame: Buffer): { bodyStart: number; propsFrom: number; propsTo: number } {
  let i = 1;
  while (frame[i] & 0x80) i++;
  i++;
  const bodyStart = i;
  // ack flags + reason code, then the property length.
  let propsLength = 0;
  let mul = 1;
  let j = bodyStart + 2;
  if (j < frame.length) {
    for (let k = 0; k < 4; k++) {
      const b = frame[j++];
      propsLength += (b & 0x7f) * mul;
      mul *= 128;
      if (!(b & 0x80)) break;
    }
  }
  return { bodyStart, propsFrom: j, propsTo: Math.min(frame.length, j + propsLength) };
}

/** Encoded size of each MQTT 5 property value after its identifier byte, by identifier. */
const PROPERTY_SIZE: Record<number, 'byte' | 'int16' | 'int32' | 'varint' | 'bytes' | 'pair'> = {
  0x01: 'byte', 0x17: 'byte', 0x19: 'byte', 0x24: 'byte', 0x25: 'byte', 0x28: 'byte', 0x29: 'byte', 0x2a: 'byte',
  0x13: 'int16', 0x21: 'int16', 0x22: 'int16', 0x23: 'int16',
  0x02: 'int32', 0x11: 'int32', 0x18: 'int32', 0x27: 'int32',
  0x0b: 'varint',
  0x03: 'bytes', 0x08: 'bytes', 0x09: 'bytes', 0x12: 'bytes', 0x15: 'bytes', 0x16: 'bytes', 0x1a: 'bytes', 0x1c: 'bytes', 0x1f: 'bytes',
  0x26: 'pair',
};

/** Offsets of every Server Keep Alive value (2 bytes) in the property list frame[from, to). Throws on a malformed list. */
function serverKeepAliveOffsets(frame: Buffer, from: number, to: number): number[] {
  const found: number[] = [];
  const bad = (): never => { throw new FrameError('MLP_DECODE', 'cannot decode packet: malformed properties'); };
  let i = from;
  const string = (): void => {
    if (i + 2 > to) bad();
    i += 2 + frame.readUInt16BE(i);
  };
  while (i < to) {
    const id = frame[i++];
    switch (PROPERTY_SIZE[id]) {
      case 'byte': i += 1; break;
      case 'int16': if (id === 0x13) found.push(i); i += 2; break;
      case 'int32': i += 4; break;
      case 'varint': { let k = 0; while (i < to && frame[i] & 0x80 && k < 3) { i++; k++; } i++; break; }
      case 'bytes': string(); break;
      case 'pair': string(); string(); break;
      default: bad();
    }
  }
  if (i !== to) bad();
  return found;
}

/**
 * A copy of an MQTT 5 CONNACK with Server Keep Alive set to `seconds`.
 * An absent property is appended to the property list; a present one is
 * overwritten in place. Every other byte is kept as the broker sent it.
 */
export function withServerKeepAlive(frame: Buffer, seconds: number, present: boolean): Buffer {
  const { bodyStart, propsFrom: j, propsTo } = connackLayout(frame);
  const propsLength = propsTo - j;
  if (present) {
    // Overwritten in place, not re-encoded through mqtt-packet: its writer throws
    // a TypeError on some malformed values its reader accepts.
    const offsets = serverKeepAliveOffsets(frame, j, propsTo);
    if (offsets.length === 0) throw new FrameError('MLP_DECODE', 'cannot decode packet: no Server Keep Alive to replace');
    const copy = Buffer.from(frame);
    for (const at of offsets) copy.writeUInt16BE(seconds, at);
    return copy;
  }
  const props = frame.subarray(j, j + propsLength);
  const rest = frame.subarray(j + propsLength);
  const added = Buffer.from([0x13, (seconds >> 8) & 0xff, seconds & 0xff]);
  const newProps = Buffer.concat([props, added]);
  const body = Buffer.concat([
    frame.subarray(bodyStart, bodyStart + 2),
    Buffer.from(varint(newProps.length)),
    newProps,
    rest,
  ]);
  return Buffer.concat([Buffer.from([frame[0], ...varint(body.length)]), body]);
}
