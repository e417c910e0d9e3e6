/**
 * Reading a relayed TCP socket into reused memory instead of a fresh buffer per read.
 *
 * node reads every socket into a new 64 KiB buffer. In a 16 KiB flood that is
 * about 1 GB/s of new memory: malloc, first-touch page faults (0.87 per message
 * measured on the plain node relay) and V8's external-memory pressure, where
 * HAProxy reads into one buffer per stream. Through node's `onread` path
 * (net.Socket's option, set here on sockets node already made):
 *  - calm sockets all read into one shared buffer, and each read is copied out
 *    (small: node's slab pool) before the callback returns, so nothing refers to it
 *    later; an idle connection holds no read buffer;
 *  - a read of DIRECT_MIN bytes or more is forwarded as a view, without a copy, of
 *    a buffer the socket takes from a process-wide pool and keeps while it stays busy;
 *  - a buffer whose bytes may still be queued on the destination (its
 *    writableLength is not 0 after the read) is lent to it and comes back to the
 *    pool once the destination has written everything, seen on its 'drain' or at
 *    the source's next read, and a fresh one from the pool takes its place;
 *  - a busy socket whose reads are small again, with nothing lent, gives its
 *    buffer back.
 * What reads the bytes (the framer, connection.ts) must not keep a view of them
 * past the call: the framer copies what it holds.
 *
 * node exposes `onread` only as a constructor option; a socket from a server's
 * accept gets it through the same three symbol-keyed slots the constructor fills
 * (found by description) and the handle's useUserBuffer. Where they are not
 * found, as for TLS and WebSocket streams, reads stay node's own ('data').
 */
import net from 'node:net';
import type { Writable } from 'node:stream';

/** The size node reads with (libuv's 64 KiB suggestion), kept so a read takes as much. */
export const READ_SIZE = 64 * 1024;
/**
 * Reads at least this large go on as views of a pooled buffer; smaller ones are
 * copied. It is the destination's highWaterMark, so a view that is queued makes
 * write() return false and a 'drain' follows: every lent buffer comes back.
 */
export const DIRECT_MIN = 16 * 1024;
/** Pooled buffers kept for reuse (16 MiB); more are left to the garbage collector. */
const POOL_MAX = 256;

const shared = Buffer.allocUnsafeSlow(READ_SIZE);
const pool: Buffer[] = [];
/** For the bench and tests: buffers the pool had to create, and reads by kind. */
export const readBufferStats = { created: 0, sharedReads: 0, directReads: 0, lent: 0 };

function take(): Buffer {
  const b = pool.pop();
  if (b !== undefined) return b;
  readBufferStats.created++;
  return Buffer.allocUnsafeSlow(READ_SIZE);
}

function giveBack(b: Buffer): void {
  if (pool.length < POOL_MAX) pool.push(b);
}

interface Slots {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

/** The three slots net.Socket's constructor fills from `onread`, or null if this node has other internals. */
let slots: Slots | null | undefined;
function findSlots(socket: net.Socket): Slots | null {
  if (slots !== undefined) return slots;
  const own = Object.getOwnPropertySymbols(socket);
  const by = (name: string) => own.find((s) => s.description === name);
  const buffer = by('kBuffer');
  const callback = by('kBufferCb');
  const generator = by('kBufferGen');
  const fits = buffer && callback && generator && net.Socket.prototype.pause.toString().includes('kBuffer');
  slots = fits ? { buffer, callback, generator } : null;
  return slots;
}

const kReader = Symbol('mqtt-liveness-proxy.reader');
type Readable = net.Socket & { [kReader]: PooledReader; _handle?: { useUserBuffer?: (b: Uint8Array) => void } | null };

/**
 * One direction of a relay: where a source socket's bytes go (onBytes, once per
 * read, synchronously, with bytes it may not keep), its read buffer and what it
 * lent the destination. A connection's per-direction object extends it, so
 * reading pooled adds no object per connection.
 */
export abstract class PooledReader {
  /** The socket's own buffer while busy; null while calm (it reads into the shared one). */
  own: Buffer | null = null;
  /** Buffers whose bytes may still be queued on the destination. */
  lent: Buffer[] | null = null;
  lastRead = 0;
  /** The stream the bytes are written to; null until readPooled. */
  dest: Writable | null = null;

  abstract onBytes(bytes: Buffer): void;

  /** Call on the destination's 'drain': once it wrote everything queued, what it was lent is free. */
  reclaim(): void {
    const lent = this.lent;
    if (lent === null || this.dest!.writableLength !== 0) return;
    for (const b of lent) giveBack(b);
    this.lent = null;
  }

  /**
   * Call on the source's 'close': no read comes any more, so its own buffer is
   * free. What it lent stays with the destination's queue and is left to the
   * garbage collector.
   */
  sourceClosed(): void {
    if (this.own !== null) giveBack(this.own);
    this.own = null;
  }
}

/**
 * The reader whose read was just handed over. node calls the generator right
 * after the callback, for the same socket and without a `this`; nothing reads
 * another socket in between (reads come only from the event loop's poll).
 */
let current: PooledReader | null = null;

/** `this` is the source socket: node calls it as its onread callback. */
function onRead(this: Readable, nread: number, buf: Buffer): boolean {
  const r = (current = this[kReader]);
  r.lastRead = nread;
  if (nread < DIRECT_MIN) {
    readBufferStats.sharedReads += buf === shared ? 1 : 0;
    r.onBytes(Buffer.from(buf.subarray(0, nread)));
  } else if (buf === shared) {
    // A calm socket's first large read: it becomes busy with a buffer of its own.
    const own = (r.own = take());
    shared.copy(own, 0, 0, nread);
    r.onBytes(own.subarray(0, nread));
  } else {
    readBufferStats.directReads++;
    r.onBytes(buf.subarray(0, nread));
  }
  return true;
}

/** node calls it after each read's callback for the buffer of the next read. */
function nextBuffer(): Buffer {
  const r = current!;
  current = null;
  const own = r.own;
  if (own === null) return shared;
  r.reclaim();
  if (r.lastRead >= DIRECT_MIN && r.dest!.writableLength !== 0) {
    // Views of `own` may be queued on the destination: lend it, read into another.
    (r.lent ??= []).push(own);
    readBufferStats.lent++;
    return (r.own = take());
  }
  if (r.lastRead < DIRECT_MIN && r.lent === null) {
    giveBack(own);
    r.own = null;
    return shared;
  }
  return own;
}

/**
 * Make `socket`'s reads go to `reader` through reused buffers (see the top of the
 * file), with `dest` the stream its bytes are written to. Returns false, changing
 * nothing, when the socket cannot: not a plain TCP socket with a handle, bytes
 * already buffered, or a node whose socket internals differ. Call it before the
 * first read is delivered (in the same tick as the accept or connect). The
 * caller's listeners call reader.reclaim() on the destination's 'drain' and
 * reader.sourceClosed() on the socket's 'close' (listeners of this module's own
 * would cost each connection ~0.5 KB: once-wrappers and listener arrays).
 */
export function readPooled(socket: unknown, dest: Writable, reader: PooledReader): boolean {
  if (!(socket instanceof net.Socket) || (socket as { encrypted?: boolean }).encrypted) return false;
  const s = socket as Readable;
  const handle = s._handle;
  if (!handle || typeof handle.useUserBuffer !== 'function' || s.readableLength !== 0 || s.readableEnded || s.destroyed) return false;
  const k = findSlots(s);
  if (k === null) return false;
  const bag = s as unknown as Record<symbol, unknown>;
  if (bag[k.buffer]) return false; // already in onread mode
  reader.dest = dest;
  s[kReader] = reader;
  bag[k.callback] = onRead;
  bag[k.generator] = nextBuffer;
  bag[k.buffer] = shared;
  handle.useUserBuffer(shared);
  return true;
}

/** True when the socket reads through readPooled. */
export function isPooled(socket: object): boolean {
  return kReader in socket;
}
