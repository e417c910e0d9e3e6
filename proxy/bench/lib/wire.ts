/**
 * MQTT on the wire for the load generator: frames encoded once with
 * mqtt-packet, and two cheap frame scanners for the receiving side. mqtt.js is
 * not used because it would be the bottleneck, not the thing measured.
 */
import mqttPacket from 'mqtt-packet';

export const TOPIC = 'bench/t';

export function connectFrame(clientId: string, keepalive: number): Buffer {
  return mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId, keepalive });
}

export function subscribeFrame(topic: string): Buffer {
  return mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 0 }] });
}

/** One QoS 0 PUBLISH with `payloadSize` payload bytes, and where the payload starts. */
export function publishFrame(topic: string, payloadSize: number): { frame: Buffer; payloadOffset: number } {
  const payload = Buffer.alloc(payloadSize, 0x61);
  const frame = mqttPacket.generate({ cmd: 'publish', topic, payload, qos: 0, retain: false, dup: false });
  return { frame, payloadOffset: frame.length - payloadSize };
}

export const PINGREQ = Buffer.from([0xc0, 0x00]);
export const DISCONNECT = Buffer.from([0xe0, 0x00]);

/** `count` copies of a frame back to back, for one big write. */
export function batchOf(frame: Buffer, count: number): Buffer {
  const out = Buffer.allocUnsafe(frame.length * count);
  for (let i = 0; i < count; i++) frame.copy(out, i * frame.length);
  return out;
}

/**
 * Counts frames by type without copying or looking at bodies: reads the fixed
 * header, then skips Remaining Length bytes, across chunk boundaries.
 */
export class FrameCounter {
  /** Frames seen, by packet type. */
  readonly byType = new Float64Array(16);
  private skip = 0;
  private headerState = 0; // 0: expecting type byte; 1: in length
  private type = 0;
  private length = 0;
  private mult = 1;

  push(chunk: Buffer): void {
    const n = chunk.length;
    let i = 0;
    while (i < n) {
      if (this.skip > 0) {
        const take = Math.min(this.skip, n - i);
        this.skip -= take;
        i += take;
        continue;
      }
      const b = chunk[i++];
      if (this.headerState === 0) {
        this.type = b >> 4;
        this.length = 0;
        this.mult = 1;
        this.headerState = 1;
        continue;
      }
      this.length += (b & 0x7f) * this.mult;
      this.mult *= 128;
      if (b & 0x80) continue;
      this.headerState = 0;
      this.byType[this.type]++;
      this.skip = this.length;
    }
  }

  get publishes(): number {
    return this.byType[3];
  }
}

/**
 * Whole frames, handed over one by one (a split frame is joined with the next
 * chunk). For modest rates where each frame's bytes are read.
 */
export class FrameReader {
  private pending: Buffer | null = null;

  constructor(private readonly onFrame: (buf: Buffer, start: number, headerLength: number, type: number, remainingLength: number) => void) {}

  push(chunk: Buffer): void {
    let buf = chunk;
    if (this.pending) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = null;
    }
    const n = buf.length;
    let i = 0;
    while (i < n) {
      let j = i + 1;
      let length = 0;
      let mult = 1;
      let complete = false;
      while (j < n && j <= i + 4) {
        const b = buf[j++];
        length += (b & 0x7f) * mult;
        mult *= 128;
        if (!(b & 0x80)) {
          complete = true;
          break;
        }
      }
      if (!complete || j + length > n) break;
      this.onFrame(buf, i, j - i, buf[i] >> 4, length);
      i = j + length;
    }
    if (i < n) this.pending = Buffer.from(buf.subarray(i));
  }
}
