/** Throughput: a QoS 0 flood through each target, rounds alternating the order of targets. */
import { ForeignLoad, CpuSnapshot, busyCores, systemCpu } from '../lib/proc.ts';
import { LoadChild } from '../lib/child.ts';
import type { Service, TargetName } from '../lib/services.ts';
import { median, si } from '../lib/stats.ts';
import { CFG, CORES, SIZES, TARGETS, cpuOf, log, sleep, topic } from './context.ts';
import { quietMoment, undisturbed } from './quiet.ts';
import type { Results } from './results.ts';

interface ThroughputRun {
  rate: number;
  sendRate: number;
  cpu: number | null;
  brokerCpu: number;
  /** CPU seconds of the publisher and subscriber processes. */
  loadCpu: number;
  /** Busy cores on the machine during the run (of CORES), and the softirq part. */
  machineBusy: number;
  machineSoftirq: number;
  /** Cores used by processes outside this benchmark meanwhile. */
  foreignCores: number;
  received: number;
  /** Messages the publisher wrote in the same window. */
  sent: number;
  seconds: number;
}

async function throughputOnce(svc: Service, broker: Service, payloadSize: number): Promise<ThroughputRun> {
  const t = topic('tp');
  const hardLimitMs = CFG.warmupMs + CFG.durationMs + 60_000;
  const sub = new LoadChild({ role: 'sub-count', host: svc.host, port: svc.port, topic: t, hardLimitMs });
  const pub = new LoadChild({ role: 'pub-flood', host: svc.host, port: svc.port, topic: t, payloadSize, batchBytes: 64 * 1024, maxMessages: 2e9, hardLimitMs });
  try {
    await sub.next('ready', 30_000);
    await pub.next('ready', 30_000);
    pub.send('go');
    await sleep(CFG.warmupMs);
    const [s0, p0] = await Promise.all([sub.sample(), pub.sample()]);
    const c0 = cpuOf(svc);
    const b0 = CpuSnapshot.take(broker.pid!);
    const l0 = [CpuSnapshot.take(pub.pid!), CpuSnapshot.take(sub.pid!)];
    const m0 = systemCpu();
    const foreign = new ForeignLoad(CORES);
    await sleep(CFG.durationMs);
    const [s1, p1] = await Promise.all([sub.sample(), pub.sample()]);
    const c1 = cpuOf(svc);
    const b1 = CpuSnapshot.take(broker.pid!);
    const l1 = [CpuSnapshot.take(pub.pid!), CpuSnapshot.take(sub.pid!)];
    const machine = busyCores(m0, systemCpu(), CORES);
    const received = s1.count - s0.count;
    return {
      rate: (received / (s1.t - s0.t)) * 1000,
      sendRate: ((p1.count - p0.count) / (p1.t - p0.t)) * 1000,
      cpu: c0 && c1 ? c1.secondsSince(c0) : null,
      brokerCpu: b1.secondsSince(b0),
      loadCpu: l1[0].secondsSince(l0[0]) + l1[1].secondsSince(l0[1]),
      machineBusy: machine.busy,
      machineSoftirq: machine.softirq,
      foreignCores: foreign.measure().foreign,
      received,
      sent: p1.count - p0.count,
      seconds: (s1.t - s0.t) / 1000,
    };
  } finally {
    await pub.stop();
    await sub.stop();
  }
}

/** Every payload size against every target; fills results.throughput. */
export async function measureThroughput(services: Map<TargetName, Service>, broker: Service, results: Results): Promise<void> {
  for (const size of SIZES) {
    const key = `${size}`;
    results.throughput[key] = {};
    const runs = new Map<TargetName, ThroughputRun[]>();
    for (let round = 0; round < CFG.rounds; round++) {
      // Alternate the order so drift and neighbours' load fall on every target alike.
      const order = round % 2 === 0 ? TARGETS : [...TARGETS].reverse();
      for (const name of order) {
        const quiet = await quietMoment();
        log(`throughput ${size} B -> ${name}${CFG.rounds > 1 ? ` (round ${round + 1})` : ''}${quiet}`);
        const r = await undisturbed(`${size} B -> ${name}`, () => throughputOnce(services.get(name)!, broker, size));
        runs.set(name, [...(runs.get(name) ?? []), r]);
        log(`  ${si(r.rate)} msg/s received, ${si(r.sendRate)} msg/s sent; CPU s: relay ${r.cpu?.toFixed(2) ?? '-'}, mosquitto ${r.brokerCpu.toFixed(2)}, pub+sub ${r.loadCpu.toFixed(2)}; machine ${r.machineBusy.toFixed(2)} cores busy, ${r.foreignCores.toFixed(2)} by others, over ${r.seconds.toFixed(1)} s`);
      }
    }
    for (const [name, rs] of runs) {
      const direct = runs.get('direct');
      const relay = runs.get('node-relay');
      const haproxy = runs.get('haproxy');
      const perMillion = (r: ThroughputRun): number | null => (r.cpu === null ? null : r.cpu / (r.received / 1e6));
      results.throughput[key][name] = {
        payloadSize: size,
        rate: median(rs.map((r) => r.rate)),
        rates: rs.map((r) => r.rate),
        // Ratios per round (runs next to each other in time), then the median.
        vsDirect: direct ? median(rs.map((r, i) => r.rate / direct[i].rate)) : null,
        sendRate: median(rs.map((r) => r.sendRate)),
        cpuPerMillion: rs[0].cpu === null ? null : median(rs.map((r) => perMillion(r)!)),
        cpuVsNodeRelay: relay && rs[0].cpu !== null ? median(rs.map((r, i) => perMillion(r)! / perMillion(relay[i])!)) : null,
        vsHaproxy: haproxy ? median(rs.map((r, i) => r.rate / haproxy[i].rate)) : null,
        cpuVsHaproxy: haproxy && rs[0].cpu !== null ? median(rs.map((r, i) => perMillion(r)! / perMillion(haproxy[i])!)) : null,
        // Written minus received in the same window: what Mosquitto dropped for a
        // slow subscriber, give or take what sits in socket buffers at either edge.
        lostShare: median(rs.map((r) => (r.sent - r.received) / r.sent)),
        lostShares: rs.map((r) => (r.sent - r.received) / r.sent),
        mosquittoCpuPerMillion: median(rs.map((r) => r.brokerCpu / (r.received / 1e6))),
        loadCpuPerMillion: median(rs.map((r) => r.loadCpu / (r.received / 1e6))),
        machineBusyCores: median(rs.map((r) => r.machineBusy)),
        foreignCores: Math.max(...rs.map((r) => r.foreignCores)),
      };
    }
  }
}
