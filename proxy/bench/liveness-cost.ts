/**
 * What the adaptive liveness costs per connection, apart from sockets (issue 12: < 0.5 KB per idle
 * connection, < 2% CPU per message at 10k msg/s): heap of N connections' liveness state (the
 * LivenessTimer's model: estimate, silence check, shared thresholds), the per-write cost (the only
 * work on the message path) and the per-sample cost (timer-driven, one TCP_INFO read's judging).
 *   node --expose-gc --import tsx proxy/bench/liveness-cost.ts [N]
 */
import { ConnectionLiveness, phaseOf } from '../src/liveness/connection-liveness.ts';
import { livenessContextOf } from '../src/liveness/from-config.ts';
import { FleetPrior } from '../src/liveness/link-estimate.ts';
import { newTcpInfoSample } from '../src/liveness/tcp-options.ts';
import { defaultConfig } from '../src/config/load.ts';

const N = Number(process.argv[2] ?? 20_000);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc');
const ctx = livenessContextOf(defaultConfig(), true, new FleetPrior(), null, null);
const sample = { ...newTcpInfoSample(), rttUs: 20_000, rttvarUs: 5_000, rtoUs: 220_000 };

gc();
const before = process.memoryUsage().heapUsed;
const all: ConnectionLiveness[] = [];
for (let i = 0; i < N; i++) {
  const l = new ConnectionLiveness(ctx.settings, ctx.shared, phaseOf(i));
  l.setKeepAlive(60);
  l.onSample(sample, 0); // an idle connection after its first timer read
  all.push(l);
}
gc();
const perConn = (process.memoryUsage().heapUsed - before) / N;

// Per write (the message path): noteWrite when a watch is already planned.
const w = all[0];
w.onWrite(0);
let t0 = process.hrtime.bigint();
let sink = 0;
for (let i = 0; i < 10_000_000; i++) sink += w.onWrite(i) === Infinity ? 0 : 1;
const perWriteNs = Number(process.hrtime.bigint() - t0) / 10_000_000;

// Per sample (timer-driven): estimate update + verdict, evidence moving each time.
t0 = process.hrtime.bigint();
const S = 200_000;
for (let i = 0; i < S; i++) {
  sample.segsOut += 1;
  sample.segsIn += 1;
  all[i % N].onSample(sample, 5000 * (1 + Math.floor(i / N)));
}
const perSampleUs = Number(process.hrtime.bigint() - t0) / S / 1000;
console.log(JSON.stringify({ connections: N, heapBytesPerConnection: Math.round(perConn), perWriteNs: Number(perWriteNs.toFixed(2)), perSampleUs: Number(perSampleUs.toFixed(2)), thresholdSets: ctx.shared.thresholds.size, sink }));
