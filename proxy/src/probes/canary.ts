/**
 * The broker canary: one MQTT session of the proxy's own to the upstream,
 * sending a PINGREQ every probes.interval and expecting the PINGRESP within
 * probes.timeout; with probes.deepTopic also a QoS 1 PUBLISH that comes back
 * on the same session. It drives broker_up, the probe RTT histogram and the
 * failure counter, feeds the `broker` readiness check, and tells the app when
 * the broker turns down (probes.onBrokerDown).
 *
 * A raw socket with mqtt-packet, not mqtt.js: the canary must decide exactly
 * when a PINGREQ goes out. The decisions live in probe-state.ts; this file
 * only does the I/O. The password is sent in the CONNECT and nowhere else.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import mqttPacket from 'mqtt-packet';
import type { Logger } from 'pino';
import type { Config, HostPort } from '../config/types.ts';
import type { Clock } from '../liveness/clock.ts';
import type { ProxyMetrics } from '../metrics.ts';
import { PINGREQ_BYTES } from '../mqtt/packets.ts';
import { encodeProxyV2Local } from '../listeners/proxy-protocol-out.ts';
import { ProbeState, type BrokerState, type Readiness } from './probe-state.ts';

export interface CanaryOptions {
  probes: Config['probes'];
  upstream: HostPort;
  /** proxyProtocol.upstream v2: the broker listener expects a PROXY header, so the canary sends LOCAL (its own connection). */
  proxyProtocolLocal?: boolean;
  clock: Clock;
  log: Logger;
  metrics?: ProxyMetrics | null;
  /** Called on every change of the broker state (after metrics and logs). */
  onState?(state: BrokerState, why: string, previous: BrokerState): void;
}

/** CONNACK refusals, 3.x return codes and MQTT 5 reason codes (a 3.x broker answers a v5 CONNECT with 1). */
const CONNACK_CODES: Record<number, string> = {
  1: 'unacceptable protocol version',
  2: 'identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorized',
  0x80: 'unspecified error',
  0x84: 'unsupported protocol version',
  0x85: 'client identifier not valid',
  0x86: 'bad user name or password',
  0x87: 'not authorized',
  0x88: 'server unavailable',
  0x89: 'server busy',
  0x8a: 'banned',
  0x9f: 'connection rate exceeded',
};

/** How long a readiness request waits for the canary's first verdict. */
const FIRST_VERDICT_WAIT_MS = 1500;

export class Canary {
  readonly clientId: string;
  /** Topic of the deep probe (null: no deep probe). */
  readonly deepTopic: string | null;
  readonly state: ProbeState;
  private readonly protocolVersion: 3 | 4 | 5;
  private readonly keepAlive: number;
  private socket: net.Socket | null = null;
  /** Bumped for every new session; events of older sockets are ignored. */
  private generation = 0;
  private nextMessageId = 1;
  private stopped = false;

  constructor(private readonly options: CanaryOptions) {
    const p = options.probes;
    this.clientId = p.clientIdPrefix + randomBytes(4).toString('hex');
    // '+' and '#' may not appear in a topic name; the client id is only a suffix that keeps canaries apart.
    this.deepTopic = p.deepTopic ? `${p.deepTopic.replace(/\/+$/, '')}/${this.clientId.replace(/[+#]/g, '_')}` : null;
    this.protocolVersion = p.protocolVersion === 3 || p.protocolVersion === 5 ? p.protocolVersion : 4;
    // Comfortably above the probe interval: the broker hears from us every interval.
    this.keepAlive = Math.min(65535, Math.max(10, Math.ceil(3 * p.interval)));
    const metrics = options.metrics ?? null;
    const log = options.log;
    this.state = new ProbeState(options.clock, {
      intervalMs: p.interval * 1000,
      timeoutMs: p.timeout * 1000,
      deep: this.deepTopic !== null,
    }, {
      connect: () => this.openSession(),
      disconnect: () => this.dropSession(),
      ping: () => this.write(PINGREQ_BYTES),
      publish: (seq) => this.publish(seq),
    }, {
      onRtt: (probe, ms) => metrics?.probeRtt.observe({ probe }, ms / 1000),
      onFailure: (probe, reason, detail) => {
        metrics?.probeFailures.inc({ probe, reason });
        log.debug({ probe, reason, detail }, 'canary probe failed');
      },
      onState: (state, why, previous) => {
        metrics?.brokerUp.set(state === 'up' ? 1 : 0);
        if (state === 'down') log.warn({ event: 'broker_down', why, previous }, 'canary: the broker is down');
        else log.info({ event: 'broker_up', why, previous }, 'canary: the broker is up');
        options.onState?.(state, why, previous);
      },
    });
  }

  start(): void {
    const { upstream } = this.options;
    this.options.log.info({ clientId: this.clientId, upstream: `${upstream.host}:${upstream.port}`, protocolVersion: this.protocolVersion, interval: this.options.probes.interval, timeout: this.options.probes.timeout, deepTopic: this.deepTopic }, 'canary starting');
    this.state.start();
  }

  /** The `broker` readiness check: waits briefly for the first verdict after start. */
  async readiness(): Promise<Readiness> {
    await this.state.settled(FIRST_VERDICT_WAIT_MS);
    return this.state.readiness();
  }

  /** Stop probing and close the session politely (DISCONNECT). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const socket = this.detach();
    this.state.stop();
    if (socket) await this.closeGently(socket);
  }

  // ---- I/O ---------------------------------------------------------------------

  private openSession(): void {
    this.dropSession();
    const gen = ++this.generation;
    const { host, port } = this.options.upstream;
    const socket = net.connect({ host, port, noDelay: true });
    this.socket = socket;
    if (this.options.proxyProtocolLocal) socket.write(encodeProxyV2Local());
    const v = this.protocolVersion;
    const parser = mqttPacket.parser({ protocolVersion: v });
    let lastError: string | null = null;
    const current = (): boolean => gen === this.generation;

    socket.once('connect', () => {
      if (!current()) return;
      const p = this.options.probes;
      socket.write(mqttPacket.generate({
        cmd: 'connect',
        protocolId: v === 3 ? 'MQIsdp' : 'MQTT',
        protocolVersion: v,
        clientId: this.clientId,
        clean: true,
        keepalive: this.keepAlive,
        username: p.username ?? undefined,
        password: p.password === null ? undefined : Buffer.from(p.password),
      }, { protocolVersion: v }));
    });
    socket.on('data', (chunk: Buffer) => {
      if (current()) parser.parse(chunk);
    });
    parser.on('packet', (packet: mqttPacket.Packet) => {
      if (!current()) return;
      if (packet.cmd === 'disconnect') {
        const code = packet.reasonCode;
        lastError = `the broker sent DISCONNECT${code ? ` 0x${code.toString(16)}` : ''}`;
        socket.destroy();
        return;
      }
      this.onPacket(packet, socket);
    });
    parser.on('error', (err: Error) => {
      if (!current()) return;
      lastError = `undecodable packet from the broker: ${err.message}`;
      socket.destroy();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      lastError ??= err.code ?? err.message;
    });
    socket.once('close', () => {
      if (!current()) return;
      this.socket = null;
      this.state.closed(lastError ?? 'the broker closed the connection');
    });
  }

  private onPacket(packet: mqttPacket.Packet, socket: net.Socket): void {
    switch (packet.cmd) {
      case 'connack': {
        const code = this.protocolVersion === 5 ? packet.reasonCode ?? 0 : packet.returnCode ?? 0;
        if (code !== 0) {
          const meaning = CONNACK_CODES[code];
          this.refused(socket, `CONNACK ${this.protocolVersion === 5 ? 'reason' : 'return code'} ${code}${meaning ? ` (${meaning})` : ''}`);
          return;
        }
        if (this.deepTopic) {
          socket.write(mqttPacket.generate({
            cmd: 'subscribe',
            messageId: this.messageId(),
            subscriptions: [{ topic: this.deepTopic, qos: 1 }],
          }, { protocolVersion: this.protocolVersion }));
        } else {
          this.state.connected();
        }
        return;
      }
      case 'suback': {
        const granted = packet.granted[0] as number | { qos?: number } | undefined;
        const code = typeof granted === 'number' ? granted : granted?.qos;
        if (code === undefined || code >= 0x80) {
          this.refused(socket, `SUBSCRIBE to the deep probe topic refused (code ${code})`);
          return;
        }
        this.state.connected();
        return;
      }
      case 'pingresp':
        this.state.pingResp();
        return;
      case 'publish': {
        if (packet.qos > 0 && packet.messageId !== undefined) {
          socket.write(mqttPacket.generate({ cmd: 'puback', messageId: packet.messageId }, { protocolVersion: this.protocolVersion }));
        }
        if (packet.topic !== this.deepTopic) return;
        const seq = Number(packet.payload.toString());
        if (Number.isInteger(seq)) this.state.publishReceived(seq);
        return;
      }
      default:
    }
  }

  /** The broker answered the CONNECT or SUBSCRIBE with a refusal. */
  private refused(socket: net.Socket, detail: string): void {
    this.detach();
    socket.destroy();
    this.state.connectFailed(detail);
  }

  /** Forget the current session's socket (its events are ignored from now on) and destroy it. */
  private dropSession(): void {
    const socket = this.detach();
    socket?.destroy();
  }

  private detach(): net.Socket | null {
    const socket = this.socket;
    this.generation++;
    this.socket = null;
    return socket;
  }

  private closeGently(socket: net.Socket): Promise<void> {
    return new Promise((resolve) => {
      if (socket.destroyed) {
        resolve();
        return;
      }
      const timer = setTimeout(() => socket.destroy(), 500);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      if (socket.writable && socket.readyState === 'open') {
        socket.end(mqttPacket.generate({ cmd: 'disconnect' }, { protocolVersion: this.protocolVersion }));
      } else {
        socket.destroy();
      }
    });
  }

  private write(bytes: Buffer): void {
    const socket = this.socket;
    if (socket && !socket.destroyed && socket.writable) socket.write(bytes);
  }

  private publish(seq: number): void {
    if (!this.deepTopic) return;
    this.write(mqttPacket.generate({
      cmd: 'publish',
      topic: this.deepTopic,
      payload: Buffer.from(String(seq)),
      qos: 1,
      messageId: this.messageId(),
      retain: false,
      dup: false,
    }, { protocolVersion: this.protocolVersion }));
  }

  private messageId(): number {
    const id = this.nextMessageId;
    this.nextMessageId = id >= 65535 ? 1 : id + 1;
    return id;
  }
}
