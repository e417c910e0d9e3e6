/**
 * How a Connection is attached to its two streams and its two framers without a
 * closure per connection: the stream listeners are module functions shared by
 * every connection (`this` is the stream, which carries its Connection under
 * kOwner), and each framer's handler is one small object. 21 bound functions
 * cost about 1 KB of heap per idle connection (BENCHMARKS.md, issue 13).
 */
import type { Duplex } from 'node:stream';
import type { FrameHandler, HeaderDecision } from '../mqtt/framer.ts';
import type { Connection } from './connection.ts';
import { PooledReader, readPooled } from './read-buffers.ts';

const kOwner = Symbol('mqtt-liveness-proxy.connection');
type Owned = Duplex & { [kOwner]: Connection };
const ownerOf = (stream: Duplex): Connection => (stream as Owned)[kOwner];

/**
 * Mark both streams as the connection's and add the shared listeners. A plain
 * TCP socket's bytes come through reused read buffers (read-buffers.ts) to its
 * side's onBytes; any other stream's through 'data'.
 */
export function wireStreams(conn: Connection, client: Duplex, upstream: Duplex): void {
  (client as Owned)[kOwner] = conn;
  (upstream as Owned)[kOwner] = conn;
  if (!readPooled(client, upstream, conn.clientSide)) client.on('data', onClientData);
  client.on('end', onClientEnd);
  client.on('error', onClientError);
  client.on('close', onStreamClose);
  client.on('drain', onClientDrain);

  upstream.on('connect', onUpstreamConnect);
  if (!readPooled(upstream, client, conn.brokerSide)) upstream.on('data', onBrokerData);
  upstream.on('end', onBrokerEnd);
  upstream.on('error', onUpstreamError);
  upstream.on('close', onStreamClose);
  upstream.on('drain', onUpstreamDrain);
}

/** The framer toward the broker: the client's bytes (one small object instead of three bound functions). */
export class ClientSide extends PooledReader implements FrameHandler {
  constructor(private readonly c: Connection) {
    super();
  }

  onBytes(bytes: Buffer): void {
    this.c.onClientData(bytes);
  }

  onHeader(type: number): HeaderDecision {
    return this.c.clientHeader(type);
  }

  onHeld(frame: Buffer): Buffer | null {
    return this.c.onConnect(frame);
  }

  emit(bytes: Buffer): void {
    this.c.writeUpstream(bytes);
  }
}

/** The framer toward the client: the broker's bytes. */
export class BrokerSide extends PooledReader implements FrameHandler {
  constructor(private readonly c: Connection) {
    super();
  }

  onBytes(bytes: Buffer): void {
    this.c.onBrokerData(bytes);
  }

  onHeader(type: number): HeaderDecision {
    return this.c.brokerHeader(type);
  }

  onHeld(frame: Buffer, type: number): Buffer | null {
    return this.c.brokerHeld(frame, type);
  }

  emit(bytes: Buffer): void {
    this.c.writeClient(bytes);
  }
}

// ---- stream listeners: `this` is the stream ----

function onClientData(this: Duplex, chunk: Buffer): void {
  ownerOf(this).onClientData(chunk);
}

function onBrokerData(this: Duplex, chunk: Buffer): void {
  ownerOf(this).onBrokerData(chunk);
}

function onClientDrain(this: Duplex): void {
  const conn = ownerOf(this);
  conn.brokerSide.reclaim(); // the broker's bytes were written to the client
  conn.onClientDrain();
}

function onUpstreamDrain(this: Duplex): void {
  const conn = ownerOf(this);
  conn.clientSide.reclaim();
  conn.onUpstreamDrain();
}

function onClientEnd(this: Duplex): void {
  ownerOf(this).ending.onClientEnd();
}

function onBrokerEnd(this: Duplex): void {
  ownerOf(this).ending.onBrokerEnd();
}

function onClientError(this: Duplex, err: NodeJS.ErrnoException): void {
  ownerOf(this).ending.onClientError(err);
}

function onUpstreamError(this: Duplex, err: NodeJS.ErrnoException): void {
  ownerOf(this).ending.onUpstreamError(err);
}

function onUpstreamConnect(this: Duplex): void {
  ownerOf(this).ending.onUpstreamConnect();
}

function onStreamClose(this: Duplex): void {
  const conn = ownerOf(this);
  (this === conn.transport.stream ? conn.clientSide : conn.brokerSide).sourceClosed();
  conn.ending.onStreamClose();
}
