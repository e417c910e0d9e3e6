/** The shape of bench-results/latest.json's results, filled by the measurements. */
import type { TargetName } from '../lib/services.ts';
import type { LatencyRun } from './latency.ts';

export interface ThroughputResult {
  payloadSize: number;
  /** Messages per second received by the subscriber (median over rounds). */
  rate: number;
  rates: number[];
  /** Messages per second written by the publisher. */
  sendRate: number;
  /** CPU seconds of the intermediary per million messages received. */
  cpuPerMillion: number | null;
  mosquittoCpuPerMillion: number;
  /** Publisher + subscriber CPU seconds per million messages received. */
  loadCpuPerMillion: number;
  machineBusyCores: number;
  /** Cores used by processes outside this benchmark (the worst round). */
  foreignCores: number;
  /** Median over rounds of this target's rate / direct's rate in the same round. */
  vsDirect: number | null;
  /** Median over rounds of this target's CPU per message / the node relay's in the same round. */
  cpuVsNodeRelay: number | null;
  /** The same two ratios against HAProxy (the anchor of issue 13's targets). */
  vsHaproxy: number | null;
  cpuVsHaproxy: number | null;
  /** Median over rounds of (written - received) / written in the measured window, and each round's. */
  lostShare: number;
  lostShares: number[];
}

export interface IdleResult {
  clients: number;
  connected: number;
  failed: number;
  errors: Record<string, number>;
  connectRate: number;
  connectSeconds: number;
  listenOverflows: number;
  rssBeforeKb: number | null;
  rssAfterConnectKb: number | null;
  rssAfterRestKb: number | null;
  rssPerConnectionKb: number | null;
  openFiles: number | null;
  restSeconds: number;
  restCpuPercent: number | null;
  closedEarly: number;
  pings: number;
  /** Cores used by processes outside this benchmark during connect and rest. */
  foreignCoresConnect: number;
  foreignCoresRest: number | null;
  /** The rest CPU split into user and kernel time (the kernel part includes TCP keep-alive probe handling). */
  restUserPercent: number | null;
  restSystemPercent: number | null;
}

export interface Results {
  throughput: Record<string, Partial<Record<TargetName, ThroughputResult>>>;
  latency: Partial<Record<TargetName, LatencyRun>>;
  fanin: Partial<Record<TargetName, LatencyRun>>;
  idle: Partial<Record<TargetName, IdleResult>>;
}
