/**
 * Newcomers on a bad link in a clean fleet (the `newcomers` condition of the lossy-link bench).
 *
 * The healthy fleet of the cell is on a clean link; a fourth namespace sits behind a link with
 * 20 % loss each way, and in it short-lived clients come and go: each connects (mosquitto_sub,
 * KA 60, a Will on will/n/<id>), stays 40-50 s, idle, and leaves with a DISCONNECT; the next
 * one takes its place. That is a cellular client at the edge of coverage that reconnects often,
 * joining a fleet whose other clients are all fine: the fleet's prior says "clean", and a
 * newcomer's first failure streak comes before its own evidence. (Idle: in 40-50 s a newcomer
 * makes too few rounds to count in the fleet prior, so the prior stays that of the clean fleet,
 * as it would with a few such clients among many.) A Will of a newcomer before its own stop is
 * a false death.
 */
import { once } from 'node:events';
import { Link, Namespace } from './lossy-link.ts';
import { MosquittoSub } from './lossy-clients.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const NEWCOMER_LOSS_PERCENT = 20;
const LIFE_MS: readonly [number, number] = [40_000, 50_000];

export interface NewcomerResult {
  lossPercent: number;
  /** Newcomer connections that got their SUBACK. */
  connections: number;
  /** Newcomers whose Will came while they were alive (before their own stop). */
  falseDeaths: number;
  /** Front-end verdict reasons for the dead ones (proxy), and examples. */
  reasons: Record<string, number>;
  samples: string[];
}

interface Incarnation { id: string; sub: MosquittoSub; stopAt: number }

export class NewcomerChurn {
  private readonly done: Incarnation[] = [];
  private stopping = false;
  private loop?: Promise<void>;

  private constructor(readonly ns: Namespace, readonly link: Link) {}

  /** Namespace `<tag>n` behind a 20 % link from the cell's server namespace. */
  static async create(server: Namespace, tag: string): Promise<NewcomerChurn> {
    const ns = await Namespace.create(`${tag}n`);
    try {
      const link = await Link.create(server, 'sv2', ns, 'nl0', 3, NEWCOMER_LOSS_PERCENT);
      return new NewcomerChurn(ns, link);
    } catch (err) {
      await ns.destroy();
      throw err;
    }
  }

  /** `slots` newcomers at a time, each replaced when it leaves, until `until` (ms epoch). */
  start(slots: number, until: number): void {
    this.loop = Promise.all(Array.from({ length: slots }, async (_, slot) => {
      await sleep(slot * 1500); // not all at once
      for (let k = 0; !this.stopping && Date.now() + LIFE_MS[0] < until; k++) {
        const id = `n${slot}x${k}`;
        const sub = new MosquittoSub(this.ns, this.link.a.address, {
          id, protocolVersion: slot % 2 === 0 ? 4 : 5, keepalive: 60, willTopic: `will/n/${id}`,
          topic: `idle/${id}`, qos: 0,
        });
        const inc: Incarnation = { id, sub, stopAt: Infinity };
        this.done.push(inc);
        const life = LIFE_MS[0] + Math.random() * (LIFE_MS[1] - LIFE_MS[0]);
        const endAt = Math.min(Date.now() + life, until);
        while (Date.now() < endAt && !this.stopping && sub.proc.exitCode === null) await sleep(Math.min(500, endAt - Date.now()));
        inc.stopAt = Date.now();
        await stop(sub);
      }
    })).then(() => undefined);
  }

  /** Wait for every slot to finish, then judge: Wills before a newcomer's own stop are false deaths. */
  async finish(wills: ReadonlyArray<{ at: number; topic: string }>, ends: ReadonlyArray<{ clientId?: string; reason: string; detail?: string }>): Promise<NewcomerResult> {
    await this.loop;
    const connected = this.done.filter((i) => i.sub.subscribedAt > 0);
    const dead = connected.filter((i) => wills.some((w) => w.topic === `will/n/${i.id}` && w.at < i.stopAt) || i.sub.connects > 1);
    const reasons: Record<string, number> = {};
    const samples: string[] = [];
    for (const i of dead) {
      const e = ends.find((x) => x.clientId === i.id);
      const r = e?.reason ?? 'unknown';
      reasons[r] = (reasons[r] ?? 0) + 1;
      if (samples.length < 5) samples.push(`${i.id} ${r}${e?.detail ? ` (${e.detail})` : ''} ${Math.round((i.sub.lastPacketAt - i.sub.subscribedAt) / 1000)} s after its SUBACK`);
    }
    return { lossPercent: NEWCOMER_LOSS_PERCENT, connections: connected.length, falseDeaths: dead.length, reasons, samples };
  }

  async destroy(): Promise<void> {
    this.stopping = true;
    await this.loop?.catch(() => undefined);
    for (const i of this.done) if (i.sub.proc.exitCode === null && i.sub.proc.signalCode === null) i.sub.proc.kill('SIGKILL');
    await this.ns.destroy();
  }
}

/** A polite end (mosquitto_sub sends DISCONNECT on SIGTERM); SIGKILL after 5 s. */
async function stop(sub: MosquittoSub): Promise<void> {
  const p = sub.proc;
  if (p.exitCode !== null || p.signalCode !== null) return;
  const gone = once(p, 'exit');
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 5_000);
  await gone;
  clearTimeout(t);
}
