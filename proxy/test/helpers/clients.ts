/**
 * Real MQTT clients for tests: mqtt.js, and raw sockets for what mqtt.js will
 * not do (freeze, send garbage, read exact bytes).
 */
import net from 'node:net';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import mqttPacket from 'mqtt-packet';

export async function connectClient(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  const opts = { reconnectPeriod: 0, connectTimeout: 10_000, ...options };
  // Without retries a close before the CONNACK (a broker restarting, a proxy refusing) must
  // reject: mqtt.js's connectAsync would otherwise wait for ever (allowRetries defaults to true).
  return mqtt.connectAsync(url, opts, opts.reconnectPeriod > 0);
}

/** Resolve with the next `count` messages the client receives. */
export function nextMessages(client: MqttClient, count: number, timeoutMs = 20_000): Promise<Array<{ topic: string; payload: Buffer; packet: mqttPacket.IPublishPacket }>> {
  return new Promise((resolve, reject) => {
    const got: Array<{ topic: string; payload: Buffer; packet: mqttPacket.IPublishPacket }> = [];
    const timer = setTimeout(() => {
      client.off('message', on);
      reject(new Error(`received ${got.length} of ${count} messages within ${timeoutMs} ms`));
    }, timeoutMs);
    const on = (topic: string, payload: Buffer, packet: mqttPacket.IPublishPacket): void => {
      got.push({ topic, payload, packet });
      if (got.length === count) {
        clearTimeout(timer);
        client.off('message', on);
        resolve(got);
      }
    };
    client.on('message', on);
  });
}

export interface ConnectFrameOptions {
  clientId: string;
  keepalive: number;
  protocolVersion?: 3 | 4 | 5;
  clean?: boolean;
  will?: { topic: string; payload: string; qos?: 0 | 1 | 2 };
  username?: string;
  password?: string;
}

export function connectFrame(o: ConnectFrameOptions): Buffer {
  const protocolVersion = o.protocolVersion ?? 4;
  return mqttPacket.generate({
    cmd: 'connect',
    protocolId: protocolVersion === 3 ? 'MQIsdp' : 'MQTT',
    protocolVersion,
    clean: o.clean ?? true,
    clientId: o.clientId,
    keepalive: o.keepalive,
    username: o.username,
    password: o.password === undefined ? undefined : Buffer.from(o.password),
    will: o.will ? { topic: o.will.topic, payload: Buffer.from(o.will.payload), qos: o.will.qos ?? 0, retain: false } : undefined,
  }, { protocolVersion });
}

/** A raw TCP client that records every byte it receives and when it closed. */
export class RawClient {
  readonly socket: net.Socket;
  /** Kept: the socket forgets its port once closed. */
  readonly localPort: number;
  received = Buffer.alloc(0);
  closed = false;
  ended = false;
  error: NodeJS.ErrnoException | null = null;
  private readonly waiters = new Set<() => void>();

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.localPort = socket.localPort ?? 0;
    socket.on('data', (d) => { this.received = Buffer.concat([this.received, d]); this.wake(); });
    socket.on('end', () => { this.ended = true; this.wake(); });
    socket.on('error', (e) => { this.error = e; });
    socket.on('close', () => { this.closed = true; this.wake(); });
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host, noDelay: true });
      socket.once('connect', () => resolve(new RawClient(socket)));
      socket.once('error', reject);
    });
  }

  write(bytes: Buffer | number[]): void {
    this.socket.write(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes));
  }

  private wake(): void {
    for (const w of this.waiters) w();
  }

  /** Wait until the predicate holds (checked on every event), or fail after timeoutMs. */
  until(predicate: () => boolean, timeoutMs = 15_000, what = 'condition'): Promise<void> {
    if (predicate()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!predicate()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`raw client: ${what} not reached within ${timeoutMs} ms (received ${this.received.toString('hex')}, closed ${this.closed})`));
      }, timeoutMs);
      this.waiters.add(check);
    });
  }

  waitForBytes(n: number, timeoutMs?: number): Promise<void> {
    return this.until(() => this.received.length >= n, timeoutMs, `${n} bytes`);
  }

  waitForClose(timeoutMs?: number): Promise<void> {
    return this.until(() => this.closed, timeoutMs, 'close');
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll until fn returns a truthy value. */
export async function eventually<T>(fn: () => T | Promise<T>, timeoutMs = 15_000, what = 'condition'): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (performance.now() > deadline) throw new Error(`${what} not reached within ${timeoutMs} ms`);
    await sleep(25);
  }
}
