/**
 * The clients of the lossy-link bench, started inside a client namespace:
 * the healthy mix (clientMix), mosquitto_sub processes whose packet log (-d,
 * line-buffered by stdbuf) tells when they connected, reconnected and last
 * sent or received a packet, and many mqtt.js clients in one node process
 * (lossy-fleet.ts).
 */
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { Namespace } from './lossy-link.ts';
import type { FleetClient } from './lossy-fleet.ts';
import { CLIENT_PORT } from './lossy-systems.ts';
import { ROOT } from './services.ts';

const FLEET = path.join(ROOT, 'proxy/bench/lib/lossy-fleet.ts');

export interface ClientSpec extends FleetClient {
  stack: 'mosquitto_sub' | 'mqtt.js';
  traffic: 'idle' | 'qos0' | 'qos1';
}

/** The mix of healthy clients: stack, traffic, protocol and keep-alive vary fastest to slowest, so any N is mixed. */
export function clientMix(n: number): ClientSpec[] {
  const traffics = ['idle', 'qos0', 'idle', 'qos1'] as const;
  return Array.from({ length: n }, (_, i) => {
    const traffic = traffics[(i >> 1) % 4]!;
    const id = `h${i}`;
    return {
      id,
      stack: i % 2 === 0 ? 'mosquitto_sub' : 'mqtt.js',
      traffic,
      protocolVersion: (i >> 3) % 2 === 0 ? 4 : 5,
      keepalive: ((i >> 3) + (i >> 4)) % 2 === 0 ? 60 : 30,
      willTopic: `will/h/${id}`,
      topic: traffic === 'idle' ? `idle/${id}` : traffic === 'qos0' ? 'feed/0' : 'feed/1',
      qos: traffic === 'qos1' ? 1 : 0,
    };
  });
}

function onLines(stream: NodeJS.ReadableStream, fn: (line: string) => void): void {
  let buf = '';
  stream.on('data', (d: Buffer) => {
    const parts = (buf + d.toString()).split('\n');
    buf = parts.pop()!;
    for (const line of parts) fn(line);
  });
}

/** A mosquitto_sub client with a Will, reconnecting on its own as libmosquitto does. */
export class MosquittoSub {
  readonly proc: ChildProcess;
  /** CONNECT packets sent: more than one means it found its connection dead and reconnected. */
  connects = 0;
  lastPacketAt = 0;
  /** First SUBACK (0: not yet). */
  subscribedAt = 0;
  private tail = '';

  constructor(ns: Namespace, host: string, readonly spec: FleetClient, events: { subscribed?: (at: number) => void; reconnect?: () => void } = {}) {
    this.proc = ns.exec('stdbuf', ['-oL', 'mosquitto_sub', '-d', '-h', host, '-p', String(CLIENT_PORT), '-i', spec.id,
      '-k', String(spec.keepalive), '-V', spec.protocolVersion === 5 ? 'mqttv5' : 'mqttv311',
      '--will-topic', spec.willTopic, '--will-payload', spec.id, '--will-qos', '1', '-t', spec.topic, '-q', String(spec.qos)]);
    this.proc.stderr!.on('data', (d: Buffer) => { this.tail = (this.tail + d.toString()).slice(-400); });
    onLines(this.proc.stdout!, (line) => {
      if (!line.startsWith('Client')) this.tail = (this.tail + line + '\n').slice(-400);
      if (!/^Client \S+ (received|sending) [A-Z]+/.test(line)) return; // payload lines
      this.lastPacketAt = Date.now();
      if (line.includes('sending CONNECT') && this.connects++ > 0) events.reconnect?.();
      if (line.includes('received SUBACK') && this.subscribedAt === 0) {
        this.subscribedAt = this.lastPacketAt;
        events.subscribed?.(this.subscribedAt);
      }
    });
  }

  /** Exit status and the last lines that were not packet logs, for error messages. */
  describe(): string {
    const p = this.proc;
    return `${this.spec.id}: ${p.exitCode !== null || p.signalCode !== null ? `exited ${p.exitCode ?? p.signalCode}` : 'running'}, ${this.connects} CONNECT sent${this.tail ? `, ${JSON.stringify(this.tail.trim())}` : ''}`;
  }
}

/** mqtt.js clients, all in one node process inside the namespace. */
export function startFleet(ns: Namespace, host: string, clients: FleetClient[], events: {
  connect: (id: string, at: number) => void;
  close: (id: string) => void;
  error: (message: string) => void;
}): ChildProcess {
  const fleet = ns.exec('node', ['--import', 'tsx', FLEET, JSON.stringify({ host, port: CLIENT_PORT, clients })], { cwd: ROOT });
  onLines(fleet.stdout!, (line) => {
    try {
      const e = JSON.parse(line) as { ev: string; id: string; t: number; message?: string };
      if (e.ev === 'connect') events.connect(e.id, e.t);
      else if (e.ev === 'close') events.close(e.id);
    } catch { /* not JSON */ }
  });
  fleet.stderr!.on('data', (d: Buffer) => events.error(`fleet: ${d.toString().slice(0, 300)}`));
  return fleet;
}
