/**
 * One cell of the lossy-link bench: one system (Mosquitto alone, HAProxy or
 * the proxy) under one link condition, in namespaces of its own:
 *
 *   client ns  --lossy veth--  server ns (broker, front, observer, publishers)  --lossy veth--  pulled ns(s)
 *
 * Healthy clients (mosquitto_sub processes and mqtt.js clients in one node
 * process) live in the client namespace, each with a Will on will/h/<id>; half
 * idle, half receiving 2 msg/s at QoS 0 or 1 from publishers beside the broker.
 * An observer on the broker's loopback records every Will: a Will of a healthy
 * client is a false death. Each pulled namespace (a lane) holds a pair of
 * pulled-cable clients (KA 60, MQTT 3.1.1 and 5), whose link is cut a few seconds
 * after their last packet once they are at least the lane's age old (0: new
 * connections; e.g. 75 s: established ones); the time to their Will is the
 * detection time.
 */
import { once } from 'node:events';
import type { ChildProcess } from 'node:child_process';
import { Link, Namespace } from './lossy-link.ts';
import { startSystem, type FrontEnd, type RunningSystem, type SystemName } from './lossy-systems.ts';
import { clientMix, MosquittoSub, startFleet, type ClientSpec } from './lossy-clients.ts';
import { LIVENESS_REASONS, type Reason } from '../../src/liveness/reasons.ts';
import type { NewcomerResult } from './lossy-newcomers.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface CellOptions {
  system: SystemName;
  /** Short unique tag ([a-z0-9], <= 8 chars): namespaces are mlp-<pid>-<tag>{s,c,p}. */
  tag: string;
  lossPercent: number;
  clients: number;
  /** Create the pulled-cable namespace(s). */
  pulled: boolean;
  /**
   * One pulled-cable namespace (lane) per entry: the least age, ms since its SUBACK, a pair of
   * clients has when its cable is pulled (default [0]: a few seconds after connecting).
   */
  pullAgesMs?: number[];
}

/** Least time between two lanes' pulls in one cell. */
const PULL_SPACING_MS = 12_000;

/** A pulled-cable namespace: its clients are pulled once at least ageMs old. */
interface PullLane { ns: Namespace; link: Link; ageMs: number; prefix: string }

export interface PullResult {
  protocol: '3.1.1' | '5';
  /** Pull to the Will seen by the observer; null if none within the timeout. */
  willAfterMs: number | null;
  /** The proxy's verdict for it, if the proxy ran. */
  verdict?: string;
  /** From starting the clients to their SUBACK (a lossy link slows the connect). */
  connectMs: number;
  /** The lane's least age at the pull (ms since SUBACK), and the age it really had. */
  laneAgeMs: number;
  ageAtPullMs: number;
  /** Set when the sample does not measure a pull: the connection had already died (and reconnected) before it. */
  invalid?: string;
}

/**
 * Whether a pulled-cable sample measures the pull. Left out: connections that had died (false death)
 * before their pull, and Wills under 0.5 s after it, which no verdict caused by the pull can be
 * (the fastest is a keep-alive probe interval): a verdict already under way when the cable was pulled.
 */
export function isPullSample(p: { willAfterMs: number | null; invalid?: string }): boolean {
  return !p.invalid && (p.willAfterMs === null || p.willAfterMs >= 500);
}

export interface CellResult {
  system: SystemName;
  lossPercent: number;
  clients: { planned: number; connected: number; idle: number; receiving: number; mosquittoSub: number; mqttjs: number };
  measuredMs: number;
  clientHours: number;
  /** Wills of healthy clients seen by the observer while measuring. */
  falseDeaths: { wills: number; clients: number; firstAtMs: number[] };
  /** Proxy: connection ends of healthy clients by reason (liveness verdicts and others). */
  frontEnds: Record<string, number>;
  /** Liveness verdicts on healthy clients (proxy) or HAProxy sessions not ended by the client (cD, sD, ...). */
  verdicts: number;
  /** Most verdicts on healthy clients within one second: verdicts in phase. */
  maxVerdictsPerSecond: number;
  /** Details of the first few verdicts. */
  verdictSamples: string[];
  /** Mosquitto's own 1.5 x keep-alive disconnections of healthy clients. */
  brokerTimeouts: number;
  /** Times healthy clients found their connection gone (mqtt.js close, mosquitto_sub reconnect). */
  clientSideReconnects: number;
  pulled: PullResult[];
  /** The newcomers condition: short-lived clients on a 20 % link joining the clean fleet. */
  newcomers?: NewcomerResult;
  /** TCP keep-alive probes the server side sent (TcpExt.TCPKeepAlive) per hour of an idle connection (healthy idle + pulled clients before their Will). */
  probes: { keepAliveProbes: number; idleClients: number; idleClientHours: number; perIdleClientHour: number };
  /** The proxy only: keep-alive verdicts the keep-alive watch put off because the link failed to answer. */
  keepAliveLinkWaits?: number;
  errors: string[];
}

interface Will { at: number; topic: string; payload: string }

export class Cell {
  private system!: RunningSystem;
  private readonly children: ChildProcess[] = [];
  private readonly wills: Will[] = [];
  private readonly willWaiters = new Set<() => void>();
  private readonly connectedAt = new Map<string, number>();
  private reconnects = 0;
  private publishTimer?: NodeJS.Timeout;
  private measureStart = 0;
  private measureEnd = Infinity;
  private probesAtStart = 0;
  private readonly errors: string[] = [];
  private readonly pulls: PullResult[] = [];
  private pullLoop?: Promise<void>;
  /** When the last lane's cable was pulled (lanes keep PULL_SPACING_MS apart). */
  private lastPullAt = 0;
  /** Connected time of the (idle) pulled-cable clients inside the measuring window: their probes count too. */
  private pulledIdleMs = 0;
  /** Pulled-cable clients connected now: id -> idle since. */
  private readonly pulledActive = new Map<string, number>();
  private stopping = false;
  readonly mix: ClientSpec[];

  private constructor(
    readonly options: CellOptions,
    readonly server: Namespace,
    readonly clientNs: Namespace,
    readonly clientLink: Link,
    readonly lanes: readonly PullLane[],
  ) {
    this.mix = clientMix(options.clients);
  }

  /** Links carrying the condition (outages cut them all). */
  get links(): Link[] {
    return [this.clientLink, ...this.lanes.map((l) => l.link)];
  }

  static async create(options: CellOptions): Promise<Cell> {
    const made: Namespace[] = [];
    try {
      const server = await Namespace.create(`${options.tag}s`);
      made.push(server);
      const clientNs = await Namespace.create(`${options.tag}c`);
      made.push(clientNs);
      const clientLink = await Link.create(server, 'sv0', clientNs, 'cl0', 1, options.lossPercent);
      const lanes: PullLane[] = [];
      if (options.pulled) {
        for (const [i, ageMs] of (options.pullAgesMs ?? [0]).entries()) {
          // Lane 0 keeps the names it always had; subnet 3 belongs to the newcomers' namespace.
          const ns = await Namespace.create(i === 0 ? `${options.tag}p` : `${options.tag}e${i}`);
          made.push(ns);
          const link = await Link.create(server, i === 0 ? 'sv1' : `sv${i + 3}`, ns, i === 0 ? 'pl0' : 'pe0', i === 0 ? 2 : i + 3, options.lossPercent);
          lanes.push({ ns, link, ageMs, prefix: i === 0 ? 'p' : `e${i}c` });
        }
      }
      const cell = new Cell(options, server, clientNs, clientLink, lanes);
      await cell.startServerSide();
      return cell;
    } catch (err) {
      for (const ns of made) await ns.destroy();
      throw err;
    }
  }

  private async startServerSide(): Promise<void> {
    this.system = await startSystem(this.options.system, this.server);
    const port = String(this.system.brokerPort);
    const observer = this.server.exec('mosquitto_sub', ['-h', '127.0.0.1', '-p', port, '-i', 'observer', '-q', '1', '-t', 'will/#', '-F', '%U %t %p']);
    this.children.push(observer);
    let buf = '';
    observer.stdout!.on('data', (d: Buffer) => {
      const parts = (buf + d.toString()).split('\n');
      buf = parts.pop()!;
      for (const line of parts) {
        const m = /^(\d+)\.(\d{3})\d* (\S+) ?(.*)$/.exec(line);
        if (!m) continue;
        this.wills.push({ at: Number(m[1]) * 1000 + Number(m[2]), topic: m[3], payload: m[4] ?? '' });
        for (const w of this.willWaiters) w();
      }
    });
    const publishers = ([0, 1] as const).map((qos) => {
      const p = this.server.exec('mosquitto_pub', ['-h', '127.0.0.1', '-p', port, '-i', `publisher${qos}`, '-q', String(qos), '-t', `feed/${qos}`, '-l'], { stdio: ['pipe', 'ignore', 'ignore'] });
      p.stdin!.on('error', () => {});
      this.children.push(p);
      return p;
    });
    let n = 0;
    // 2 messages/s on each feed; one write per publisher per tick.
    this.publishTimer = setInterval(() => {
      n++;
      for (const p of publishers) if (p.stdin!.writable) p.stdin!.write(`msg ${n} ${Date.now()}\n`);
    }, 500);
  }

  /** Start every healthy client at once (they connect together, as after a network or broker restart). */
  startClients(): void {
    const host = this.clientLink.a.address;
    const js = this.mix.filter((c) => c.stack === 'mqtt.js');
    if (js.length > 0) {
      this.children.push(startFleet(this.clientNs, host, js, {
        connect: (id, at) => this.onConnect(id, at),
        close: (id) => { if (this.connectedAt.has(id)) this.reconnects++; },
        error: (message) => this.error(message),
      }));
    }
    for (const c of this.mix.filter((x) => x.stack === 'mosquitto_sub')) {
      this.children.push(new MosquittoSub(this.clientNs, host, c, { subscribed: (at) => this.onConnect(c.id, at), reconnect: () => this.reconnects++ }).proc);
    }
  }

  private onConnect(id: string, at: number): void {
    if (!this.connectedAt.has(id)) this.connectedAt.set(id, at);
  }

  private error(msg: string): void {
    if (this.errors.length < 20) this.errors.push(msg);
  }

  get connectedCount(): number {
    return this.connectedAt.size;
  }

  /** Median first-connect time of the healthy clients (ms epoch). */
  get medianConnectAt(): number {
    const ts = [...this.connectedAt.values()].sort((a, b) => a - b);
    return ts.length ? ts[ts.length >> 1] : NaN;
  }

  /** Wait until every healthy client has connected and subscribed once (or the timeout). */
  async waitConnected(timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (this.connectedAt.size < this.mix.length && Date.now() < deadline) await sleep(200);
    return this.connectedAt.size;
  }

  async beginMeasure(): Promise<void> {
    this.measureStart = Date.now();
    this.reconnects = 0;
    this.probesAtStart = (await this.server.tcpCounters())['TcpExt.TCPKeepAlive'] ?? 0;
  }

  /** Healthy Wills while measuring. */
  falseDeaths(): Will[] {
    return this.wills.filter((w) => w.topic.startsWith('will/h/') && w.at >= this.measureStart && w.at <= this.measureEnd);
  }

  private healthyEnds(): FrontEnd[] {
    const clientSource = this.clientLink.b.address;
    return this.system.ends.filter((e) => e.at >= this.measureStart && e.at <= this.measureEnd
      && (e.clientId ? e.clientId.startsWith('h') : e.source === clientSource));
  }

  private static isVerdict(system: SystemName, e: FrontEnd): boolean {
    if (system === 'proxy') return LIVENESS_REASONS.has(e.reason as Reason);
    // HAProxy: first letter C = the client side ended it (clean close or abort); c = client timeout;
    // a clitcpka death is a read error on the client side (CD) too, so HAProxy cannot tell them apart:
    // count every session end of a healthy client that the client did not close cleanly ('--' is normal).
    return e.reason !== '--';
  }

  /** Every Will the observer saw, and every connection end the front reported (for the newcomers condition). */
  get observedWills(): ReadonlyArray<Will> {
    return this.wills;
  }

  get frontEndLog(): ReadonlyArray<FrontEnd> {
    return this.system.ends;
  }

  /** Counts for the progress line. */
  status(): { wills: number; verdicts: number; pulls: number } {
    const s = this.options.system;
    return { wills: this.falseDeaths().length, verdicts: this.healthyEnds().filter((e) => Cell.isVerdict(s, e)).length, pulls: this.pulls.length };
  }

  /** Pulled-cable cycles until `untilAt`: a new cycle only starts if the previous one's length still fits. */
  startPulls(untilAt: number, options: { afterLastPacketMs?: number; timeoutMs?: number; maxCycles?: number } = {}): void {
    if (this.lanes.length === 0) throw new Error('cell has no pulled namespace');
    this.pullLoop = Promise.all(this.lanes.map(async (lane) => {
      let last = 0;
      for (let cycle = 0; cycle < (options.maxCycles ?? Infinity) && !this.stopping; cycle++) {
        if (cycle > 0 && Date.now() + last > untilAt) break;
        const began = Date.now();
        try {
          this.pulls.push(...await this.pullCycle(lane, cycle, options.afterLastPacketMs ?? 3_000, options.timeoutMs ?? 130_000));
        } catch (err) {
          this.error(`pull ${lane.prefix}${cycle}: ${(err as Error).message}`);
          await sleep(1000);
        }
        last = Date.now() - began;
      }
    })).then(() => undefined);
  }

  /** Wait for the pulled-cable cycles to finish. */
  async pullsDone(): Promise<PullResult[]> {
    await this.pullLoop;
    return this.pulls;
  }

  private async pullCycle(lane: PullLane, cycle: number, afterLastPacketMs: number, timeoutMs: number): Promise<PullResult[]> {
    const { ns, link } = lane;
    const host = link.a.address;
    const clients = ([4, 5] as const).map((v) => {
      const id = `${lane.prefix}${cycle}v${v}`;
      return { id, v, sub: new MosquittoSub(ns, host, { id, protocolVersion: v, keepalive: 60, willTopic: `will/p/${id}`, topic: `idle/${id}`, qos: 0 }) };
    });
    const cycleStart = Date.now();
    try {
      const deadline = Date.now() + 60_000;
      while (!clients.every((c) => c.sub.subscribedAt > 0) && !this.stopping) {
        if (Date.now() > deadline) throw new Error(`pulled-cable clients did not connect within 60 s: ${clients.map((c) => c.sub.describe()).join('; ')}`);
        await sleep(100);
      }
      // At least the lane's age after the SUBACK, and a few seconds after the last MQTT packet
      // (KA 60: the next PINGREQ is up to a minute away).
      const ready = async () => {
        for (;;) {
          const quietFor = Date.now() - Math.max(...clients.map((c) => c.sub.lastPacketAt));
          const age = Date.now() - Math.max(...clients.map((c) => c.sub.subscribedAt));
          if ((quietFor >= afterLastPacketMs && age >= lane.ageMs) || this.stopping) break;
          await sleep(Math.max(20, Math.min(1000, Math.max(afterLastPacketMs - quietFor, lane.ageMs - age))));
        }
      };
      // Lanes keep apart: a pull measures one client's death. Two lanes cut in the same seconds are
      // four connections silent together, which the proxy's local health rightly reads as a shared
      // failure and holds (the outage condition's subject, not this lane's). Onsets come 3-8 s
      // after a pull, and local health counts them in 3 s windows.
      for (;;) {
        await ready();
        const wait = this.lastPullAt + PULL_SPACING_MS - Date.now();
        if (wait <= 0 || this.stopping) break;
        await sleep(wait);
      }
      this.lastPullAt = Date.now();
      for (const c of clients) this.pulledActive.set(c.id, Math.max(this.measureStart, c.sub.subscribedAt));
      const connectsBefore = clients.map((c) => c.sub.connects);
      await link.setCut('pull', true);
      const pulledAt = Date.now();
      const ends = this.system.ends;
      const results: PullResult[] = [];
      const willFor = (id: string) => this.wills.find((w) => w.topic === `will/p/${id}` && w.at >= pulledAt);
      const diedBefore = clients.map((c, i) => (connectsBefore[i] > 1 ? 'reconnected before the pull'
        : this.wills.some((w) => w.topic === `will/p/${c.id}` && w.at < pulledAt) ? 'Will before the pull' : undefined));
      const waitDeadline = pulledAt + timeoutMs;
      while (Date.now() < waitDeadline && !clients.every((c) => willFor(c.id)) && !this.stopping) {
        await new Promise<void>((resolve) => {
          const done = () => { this.willWaiters.delete(done); clearTimeout(t); resolve(); };
          const t = setTimeout(done, 500);
          this.willWaiters.add(done);
        });
      }
      await sleep(500); // the front's log line about its verdict may come after the Will
      for (const [i, c] of clients.entries()) {
        const w = willFor(c.id);
        this.endPulledIdle(c.id, w?.at ?? Date.now());
        const verdict = ends.find((e) => e.clientId === c.id);
        const invalid = diedBefore[i] ?? (verdict && verdict.at < pulledAt ? 'verdict before the pull' : undefined);
        results.push({ protocol: c.v === 5 ? '5' : '3.1.1', willAfterMs: w ? w.at - pulledAt : null, connectMs: c.sub.subscribedAt - cycleStart, laneAgeMs: lane.ageMs, ageAtPullMs: pulledAt - c.sub.subscribedAt, ...(verdict ? { verdict: verdict.reason } : {}), ...(invalid ? { invalid } : {}) });
      }
      return results;
    } finally {
      for (const { sub: { proc } } of clients) {
        if (proc.exitCode === null && proc.signalCode === null) {
          const gone = once(proc, 'exit');
          proc.kill('SIGKILL');
          await gone;
        }
      }
      await link.setCut('pull', false).catch(() => undefined);
    }
  }

  /** A pulled-cable client is idle (and probed) from SUBACK until its Will; only the measuring window counts. */
  private endPulledIdle(id: string, at: number): void {
    const from = this.pulledActive.get(id);
    if (from === undefined) return;
    this.pulledActive.delete(id);
    const to = Math.min(this.measureEnd, at);
    if (to > from) this.pulledIdleMs += to - from;
  }

  /** One unlabelled series of the proxy's /metrics (its admin listens on the server namespace's loopback); NaN if absent. */
  async proxyMetric(name: string): Promise<number> {
    const text = await this.server.run(process.execPath, ['-e', "fetch('http://127.0.0.1:9464/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))"]).catch(() => '');
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    return line === undefined ? NaN : Number(line.slice(name.length + 1));
  }

  /** End the measurement (Wills and verdicts after this are teardown, not false deaths) and collect the result. */
  async finish(): Promise<CellResult> {
    this.measureEnd = Date.now();
    const probesAtEnd = (await this.server.tcpCounters().catch((): Record<string, number> => ({})))['TcpExt.TCPKeepAlive'] ?? NaN;
    const keepAliveLinkWaits = this.options.system === 'proxy' ? await this.proxyMetric('mqtt_liveness_keepalive_link_waits_total') : undefined;
    await sleep(300); // Wills stamped before the end may still be in the observer's pipe
    const s = this.options.system;
    const deaths = this.falseDeaths();
    const ends = this.healthyEnds();
    const verdicts = ends.filter((e) => Cell.isVerdict(s, e));
    const frontEnds: Record<string, number> = {};
    for (const e of ends) frontEnds[e.reason] = (frontEnds[e.reason] ?? 0) + 1;
    let maxPerSecond = 0;
    const at = verdicts.map((v) => v.at).sort((a, b) => a - b);
    for (let i = 0, j = 0; i < at.length; i++) {
      while (at[i] - at[j] > 1000) j++;
      maxPerSecond = Math.max(maxPerSecond, i - j + 1);
    }
    const measuredMs = this.measureEnd - this.measureStart;
    const idle = this.mix.filter((c) => c.traffic === 'idle').length;
    const probes = probesAtEnd - this.probesAtStart;
    for (const id of [...this.pulledActive.keys()]) this.endPulledIdle(id, this.measureEnd);
    const idleHours = (idle * measuredMs + this.pulledIdleMs) / 3_600_000;
    const timeouts = this.system.brokerTimeouts().filter((id) => id.startsWith('h'));
    return {
      system: s,
      lossPercent: this.options.lossPercent,
      clients: {
        planned: this.mix.length,
        connected: this.connectedAt.size,
        idle,
        receiving: this.mix.length - idle,
        mosquittoSub: this.mix.filter((c) => c.stack === 'mosquitto_sub').length,
        mqttjs: this.mix.filter((c) => c.stack === 'mqtt.js').length,
      },
      measuredMs,
      clientHours: (this.connectedAt.size * measuredMs) / 3_600_000,
      falseDeaths: { wills: deaths.length, clients: new Set(deaths.map((d) => d.topic)).size, firstAtMs: deaths.slice(0, 20).map((d) => d.at - this.measureStart) },
      frontEnds,
      verdicts: verdicts.length,
      maxVerdictsPerSecond: maxPerSecond,
      verdictSamples: verdicts.slice(0, 5).map((v) => `${v.clientId ?? v.source} ${v.reason}${v.detail ? ` (${v.detail})` : ''} at +${((v.at - this.measureStart) / 1000).toFixed(1)} s`),
      brokerTimeouts: timeouts.length,
      clientSideReconnects: this.reconnects,
      pulled: [...this.pulls],
      probes: { keepAliveProbes: probes, idleClients: idle, idleClientHours: idleHours, perIdleClientHour: idleHours > 0 ? probes / idleHours : NaN },
      keepAliveLinkWaits,
      errors: [...this.errors],
    };
  }

  /** Stop everything this cell started and delete its namespaces. Safe to call twice. */
  async destroy(): Promise<void> {
    this.stopping = true;
    clearInterval(this.publishTimer);
    await this.pullLoop?.catch(() => undefined);
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await this.system?.stop().catch(() => undefined);
    for (const ns of [this.clientNs, ...this.lanes.map((l) => l.ns), this.server]) await ns.destroy();
  }
}
