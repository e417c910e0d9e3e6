/**
 * Two in-memory Duplex ends joined like a socket pair (Node 20 has no
 * stream.duplexPair): bytes written to one are read from the other, end() on
 * one is a FIN for the other (half-close allowed), destroy() on one ends the
 * other, and a reader that does not read holds the writer back (write()
 * returns false and 'drain' waits), as TCP flow control would.
 */
import { Duplex } from 'node:stream';

class End extends Duplex {
  peer!: End;
  /** The peer's write waiting for this end to be read. */
  private blockedWrite: (() => void) | null = null;

  constructor(highWaterMark: number) {
    super({ allowHalfOpen: true, highWaterMark });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const peer = this.peer;
    if (peer.destroyed || peer.readableEnded) {
      callback();
      return;
    }
    if (peer.push(chunk)) callback();
    else peer.blockedWrite = () => callback();
  }

  override _read(): void {
    const release = this.blockedWrite;
    this.blockedWrite = null;
    release?.();
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (!this.peer.destroyed) this.peer.push(null);
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const peer = this.peer;
    if (!peer.destroyed && !peer.readableEnded && !this.writableFinished) peer.push(null);
    callback(error);
  }
}

/** [a, b]: what is written to a is read from b, and the other way round. */
export function duplexPair(highWaterMark = 16 * 1024): [Duplex, Duplex] {
  const a = new End(highWaterMark);
  const b = new End(highWaterMark);
  a.peer = b;
  b.peer = a;
  return [a, b];
}
