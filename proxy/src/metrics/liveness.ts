/**
 * Adaptive liveness metrics (docs/liveness.md, names in docs/METRICS-CONTRACT.md): the link
 * estimate across connections (observed when a connection's timer updates it, never per packet),
 * suspicions, held verdicts, local health, and the kernel's keep-alive probe count (what idle
 * clients pay in radio wake-ups), read from /proc/net/netstat at scrape time.
 */
import { readFileSync } from 'node:fs';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { ProxyEvents, SuspectEvent } from '../relay/events.ts';
import { SUSPECT_KINDS } from '../relay/events.ts';
import { scrapedCounter } from './scraped-counter.ts';

const P = 'mqtt_liveness_';
const RTT_BUCKETS = [0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5];
const LOSS_BUCKETS = [0.001, 0.003, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 1];

/** What the metrics read from the proxy at scrape time. */
export interface LivenessSource {
  /** Connections suspect now (keep-alive or TCP). */
  suspectNow(): number;
  /** Dead verdicts held so far because many connections went silent together. */
  heldVerdicts(): number;
  /** 1 while local health is degraded. */
  degraded(): number;
}

/** TcpExt TCPKeepAlive of this network namespace (every keep-alive probe sent, by any socket); NaN if unreadable. */
export function kernelKeepAliveProbes(file = '/proc/net/netstat'): number {
  try {
    const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.startsWith('TcpExt:'));
    if (lines.length < 2) return NaN;
    const names = lines[0].split(' ');
    const values = lines[1].split(' ');
    const i = names.indexOf('TCPKeepAlive');
    return i < 0 ? NaN : Number(values[i]);
  } catch {
    return NaN;
  }
}

export function livenessMetrics(registers: Registry[], events: ProxyEvents, source: LivenessSource) {
  const linkRtt = new Histogram({
    name: `${P}link_rtt_seconds`,
    help: "Clients' smoothed TCP round-trip time (the kernel's), observed each time a connection's timer updates its link estimate.",
    buckets: RTT_BUCKETS,
    registers,
  });
  const linkLoss = new Histogram({
    name: `${P}link_loss_ratio`,
    help: "Estimated probability that one transmission and its ACK fail (95% upper bound), observed each time a connection's timer updates its link estimate.",
    buckets: LOSS_BUCKETS,
    registers,
  });
  const suspects = new Counter({
    name: `${P}suspects_total`,
    help: 'Connections that turned suspect, by kind (keepalive, tcp_idle, tcp_data); only a dead verdict ends a session.',
    labelNames: ['kind'],
    registers,
  });
  for (const kind of SUSPECT_KINDS) suspects.inc({ kind }, 0);
  const suspectConnections = new Gauge({
    name: `${P}suspect_connections`,
    help: 'Connections suspect now.',
    registers,
    collect() {
      this.set(source.suspectNow());
    },
  });
  const heldVerdicts = scrapedCounter({
    name: `${P}held_verdicts_total`,
    help: 'TCP-level dead verdicts held (kept suspect) because many connections went silent together.',
    registers,
  }, [{ read: () => source.heldVerdicts() }]);
  const localHealthDegraded = new Gauge({
    name: `${P}local_health_degraded`,
    help: '1 while many connections went silent together and TCP verdicts are held.',
    registers,
    collect() {
      this.set(source.degraded());
    },
  });
  const keepAliveLinkWaits = new Counter({
    name: `${P}keepalive_link_waits_total`,
    help: "Keep-alive verdicts put off because the client's link failed to answer after its PINGREQ was due (an outage, not a frozen client); each wait ends when the client speaks, at 1.5 x keep-alive at the latest.",
    registers,
  });
  // Counted from the proxy's start (the namespace's count before it is not the proxy's doing).
  const probesAtStart = kernelKeepAliveProbes() || 0;
  const keepAliveProbes = scrapedCounter({
    name: `${P}tcp_keepalive_probes_total`,
    help: "TCP keep-alive probes sent in the proxy's network namespace since it started (TcpExt TCPKeepAlive), read at scrape; each wakes an idle client's radio.",
    registers,
  }, [{ read: () => Math.max(0, (kernelKeepAliveProbes() || 0) - probesAtStart) }]);

  const onEstimate = (rttSeconds: number, loss: number): void => {
    linkRtt.observe(rttSeconds);
    linkLoss.observe(loss);
  };
  const onSuspect = (e: SuspectEvent): void => {
    if (e.phase === 'start') suspects.inc({ kind: e.kind });
  };
  const onLinkWait = (): void => {
    keepAliveLinkWaits.inc();
  };
  events.on('linkEstimate', onEstimate);
  events.on('suspect', onSuspect);
  events.on('keepAliveLinkWait', onLinkWait);
  return {
    linkRtt,
    linkLoss,
    suspects,
    suspectConnections,
    heldVerdicts,
    localHealthDegraded,
    keepAliveProbes,
    keepAliveLinkWaits,
    detach: () => {
      events.off('linkEstimate', onEstimate);
      events.off('suspect', onSuspect);
      events.off('keepAliveLinkWait', onLinkWait);
    },
  };
}
