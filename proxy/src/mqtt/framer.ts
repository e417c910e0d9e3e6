/**
 * Incremental MQTT framer for one direction of one connection.
 *
 * It finds exact frame boundaries however TCP splits or joins the bytes, and
 * passes bytes through as sub-arrays of the chunks it was given (no copy of
 * PUBLISH payloads), during push() only. Only frames the handler asks to hold
 * (CONNECT, CONNACK, PINGRESP...) are collected whole, into memory of their own,
 * so they can be decoded, rewritten or dropped. A chunk's memory may be reused
 * once push() returns. Pure: no I/O, no timers.
 */
import { FrameError } from './errors.ts';

/** MQTT's own ceiling: Remaining Length 268,435,455 plus a 5-byte fixed header. */
export const PROTOCOL_MAX_FRAME = 268_435_455 + 5;

/** First allocation for a held frame that spans chunks (grown by doubling). */
const HELD_INITIAL = 16 * 1024;

export const HOLD = 1;
export const PASS = 0;
export const REJECT = -1;
export type HeaderDecision = typeof HOLD | typeof PASS | typeof REJECT;

export interface FrameHandler {
  /**
   * A frame's fixed header is complete. Return PASS to stream it through,
   * HOLD to receive it whole in onHeld, REJECT to stop the stream (the
   * handler keeps its own reason; push() then returns a MLP_REJECTED error).
   */
  onHeader(type: number, flags: number, remainingLength: number): HeaderDecision;
  /** A held frame is complete. Return what to emit in its place, or null to drop it. */
  onHeld(frame: Buffer, type: number): Buffer | null;
  /** Bytes to forward, in order. */
  emit(bytes: Buffer): void;
}

const ST_TYPE = 0;
const ST_LENGTH = 1;
const ST_PASS_BODY = 2;
const ST_HOLD_BODY = 3;

export class Framer {
  /** Bit n set: packet type n is refused (type 0 always; 15 before MQTT 5). */
  reservedTypes = 1 << 0;
  private state = ST_TYPE;
  private type = 0;
  private flags = 0;
  private remainingLength = 0;
  private multiplier = 1;
  /**
   * Bytes of the fixed header so far. The bytes themselves are not kept: type, flags,
   * headerLength and remainingLength give them back exactly (writeHeader), and a 5-byte
   * Buffer per framer cost each connection ~0.4 KB (two ArrayBuffers and their backing stores).
   */
  private headerLength = 0;
  /** Where the current header started in the current chunk, or -1 if in an earlier chunk. */
  private headerStart = -1;
  private bodyLeft = 0;
  private held: Buffer | null = null;
  private heldOffset = 0;
  private failed: FrameError | null = null;

  constructor(
    private readonly handler: FrameHandler,
    public maxFrameSize: number = PROTOCOL_MAX_FRAME,
  ) {}

  /** True between frames: the only place where a packet may be injected. */
  get atBoundary(): boolean {
    return this.state === ST_TYPE;
  }

  /** Feed one chunk. Returns null, or the error that ends this stream. */
  push(chunk: Buffer): FrameError | null {
    if (this.failed) return this.failed;
    const n = chunk.length;
    const handler = this.handler;
    let i = 0;
    let spanStart = 0;
    if (this.state === ST_LENGTH) this.headerStart = -1;

    while (i < n) {
      switch (this.state) {
        case ST_TYPE: {
          const b = chunk[i];
          this.type = b >> 4;
          this.flags = b & 0x0f;
          if ((this.reservedTypes >> this.type) & 1) {
            this.flush(chunk, spanStart, i);
            return this.fail('MLP_RESERVED_TYPE', `reserved packet type ${this.type}`);
          }
          this.headerLength = 1;
          this.headerStart = i;
          this.remainingLength = 0;
          this.multiplier = 1;
          this.state = ST_LENGTH;
          i++;
          break;
        }
        case ST_LENGTH: {
          const b = chunk[i++];
          this.headerLength++;
          this.remainingLength += (b & 0x7f) * this.multiplier;
          this.multiplier *= 128;
          if (b & 0x80) {
            if (this.headerLength === 5) {
              this.flush(chunk, spanStart, this.headerStart < 0 ? spanStart : this.headerStart);
              return this.fail('MLP_MALFORMED_LENGTH', 'Remaining Length longer than 4 bytes');
            }
            break;
          }
          const frameStart = this.headerStart < 0 ? spanStart : this.headerStart;
          const size = this.headerLength + this.remainingLength;
          if (size > this.maxFrameSize) {
            this.flush(chunk, spanStart, frameStart);
            return this.fail('MLP_FRAME_TOO_LARGE', `frame of ${size} bytes exceeds the limit of ${this.maxFrameSize}`);
          }
          const decision = handler.onHeader(this.type, this.flags, this.remainingLength);
          if (decision === REJECT) {
            this.flush(chunk, spanStart, frameStart);
            return this.fail('MLP_REJECTED', `packet type ${this.type} refused`);
          }
          const carried = this.headerStart < 0;
          if (decision === PASS) {
            if (carried) {
              // The header began in an earlier chunk and was kept back: emit a copy now.
              const header = Buffer.allocUnsafe(this.headerLength);
              this.writeHeader(header);
              handler.emit(header);
              spanStart = i;
            }
            this.bodyLeft = this.remainingLength;
            this.state = this.bodyLeft === 0 ? ST_TYPE : ST_PASS_BODY;
            break;
          }
          // HOLD
          this.flush(chunk, spanStart, frameStart);
          if (!carried && i + this.remainingLength <= n) {
            // Whole frame inside this chunk: a copy of it (held frames are few and small),
            // because the chunk's memory is reused once push() returns (relay/read-buffers.ts)
            // and the handler may keep what it decodes.
            const end = i + this.remainingLength;
            const out = handler.onHeld(Buffer.from(chunk.subarray(frameStart, end)), this.type);
            if (out !== null) handler.emit(out);
            i = end;
            spanStart = i;
            this.state = ST_TYPE;
            break;
          }
          // Sized to what has arrived, grown as the rest does: a header alone must not
          // reserve the whole declared size (up to maxFrameSize) per connection.
          const held = Buffer.allocUnsafe(Math.min(size, Math.max(HELD_INITIAL, this.headerLength + (n - i))));
          this.writeHeader(held);
          this.held = held;
          this.heldOffset = this.headerLength;
          this.bodyLeft = this.remainingLength;
          this.state = ST_HOLD_BODY;
          spanStart = i;
          if (this.bodyLeft === 0) this.completeHeld();
          break;
        }
        case ST_PASS_BODY: {
          const take = Math.min(this.bodyLeft, n - i);
          i += take;
          this.bodyLeft -= take;
          if (this.bodyLeft === 0) this.state = ST_TYPE;
          break;
        }
        default: {
          // ST_HOLD_BODY
          const take = Math.min(this.bodyLeft, n - i);
          if (this.heldOffset + take > this.held!.length) this.growHeld(this.heldOffset + take);
          chunk.copy(this.held!, this.heldOffset, i, i + take);
          this.heldOffset += take;
          i += take;
          this.bodyLeft -= take;
          spanStart = i;
          if (this.bodyLeft === 0) this.completeHeld();
        }
      }
    }

    if (this.state === ST_LENGTH) {
      // Keep an unfinished header back until we know what the frame is.
      this.flush(chunk, spanStart, this.headerStart < 0 ? spanStart : this.headerStart);
    } else if (this.state !== ST_HOLD_BODY) {
      this.flush(chunk, spanStart, n);
    }
    return null;
  }

  /**
   * The complete fixed header as it arrived: each Remaining Length byte carries the next 7 bits
   * and the continuation bit on all but the last, so headerLength and remainingLength fix the
   * bytes exactly, a non-minimal encoding (0x80 0x00) included.
   */
  private writeHeader(into: Buffer): void {
    into[0] = (this.type << 4) | this.flags;
    let v = this.remainingLength;
    const last = this.headerLength - 1;
    for (let k = 1; k <= last; k++) {
      into[k] = (v % 128) | (k < last ? 0x80 : 0);
      v = Math.floor(v / 128);
    }
  }

  /** At least `needed` bytes, at least double, at most the frame's size. */
  private growHeld(needed: number): void {
    const old = this.held!;
    const size = this.heldOffset + this.bodyLeft;
    const grown = Buffer.allocUnsafe(Math.min(size, Math.max(needed, old.length * 2)));
    old.copy(grown, 0, 0, this.heldOffset);
    this.held = grown;
  }

  private completeHeld(): void {
    const frame = this.held!;
    this.held = null;
    this.state = ST_TYPE;
    const out = this.handler.onHeld(frame, this.type);
    if (out !== null) this.handler.emit(out);
  }

  private flush(chunk: Buffer, from: number, to: number): void {
    if (to <= from) return;
    this.handler.emit(from === 0 && to === chunk.length ? chunk : chunk.subarray(from, to));
  }

  private fail(code: FrameError['code'], message: string): FrameError {
    this.failed = new FrameError(code, message);
    this.held = null;
    return this.failed;
  }
}
