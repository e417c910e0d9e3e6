/**
 * Micro-benchmarks of the proxy's pure hot-path code, apart from the network
 * suite: Framer.push over many 64 B PUBLISH frames (ns/frame, MB/s), and the
 * keep-alive policy (decideKeepAlive) and deadline evaluation (evaluate).
 *
 *   npm run bench:micro        or   npm run bench -- --micro
 *
 * Each case runs a warm-up, then repeats for about `--seconds` (default 1 s,
 * bounded in iterations too) and reports the best of 5 samples.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { PACKAGE_ROOT } from '../src/package.ts';
import { fileURLToPath } from 'node:url';
import { Framer, PASS, type FrameHandler, type HeaderDecision } from '../src/mqtt/framer.ts';
import { decideKeepAlive, policyFor, type ClientHello } from '../src/liveness/policy.ts';
import { evaluate, newDeadlineState } from '../src/liveness/deadlines.ts';
import { defaultConfig } from '../src/config/load.ts';
import { batchOf, publishFrame } from './lib/wire.ts';

const ROOT = PACKAGE_ROOT;

interface MicroResult {
  name: string;
  nsPerOp: number;
  opsPerSecond: number;
  mbPerSecond?: number;
  unit: string;
}

let sink = 0;

/** Run `body` (which does `opsPerCall` operations) for about `ms`; best of 5 samples. */
function measure(name: string, unit: string, opsPerCall: number, bytesPerCall: number, ms: number, body: () => void): MicroResult {
  // Warm-up: let the JIT settle.
  const warmEnd = performance.now() + Math.min(300, ms / 2);
  for (let i = 0; i < 1e7 && performance.now() < warmEnd; i++) body();
  let best = Infinity;
  for (let sample = 0; sample < 5; sample++) {
    let calls = 0;
    const t0 = performance.now();
    const end = t0 + ms / 5;
    // Check the clock every 16 calls; never more than 1e8 calls.
    while (calls < 1e8) {
      for (let k = 0; k < 16; k++) body();
      calls += 16;
      if (performance.now() >= end) break;
    }
    const ns = ((performance.now() - t0) * 1e6) / (calls * opsPerCall);
    if (ns < best) best = ns;
  }
  const r: MicroResult = { name, nsPerOp: best, opsPerSecond: 1e9 / best, unit };
  if (bytesPerCall) r.mbPerSecond = (bytesPerCall / opsPerCall / best) * 1e3;
  return r;
}

/** The handler the relay uses for client -> broker traffic once CONNECTed, minus I/O. */
function passHandler(): FrameHandler & { bytes: number } {
  const packets = new Float64Array(32);
  const h = {
    bytes: 0,
    onHeader(type: number): HeaderDecision {
      packets[type] += 1;
      return PASS;
    },
    onHeld(frame: Buffer): Buffer | null {
      return frame;
    },
    emit(bytes: Buffer): void {
      h.bytes += bytes.length;
    },
  };
  return h;
}

function framerCases(ms: number): MicroResult[] {
  const out: MicroResult[] = [];
  for (const [label, payload, chunkBytes] of [
    ['64 B PUBLISH, 64 KiB chunks', 64, 64 * 1024],
    ['64 B PUBLISH, 1460 B chunks (split frames)', 64, 1460],
    ['16 KiB PUBLISH, 64 KiB chunks', 16 * 1024, 64 * 1024],
  ] as const) {
    const { frame } = publishFrame('bench/t', payload);
    const frames = Math.max(1, Math.floor((256 * 1024) / frame.length));
    const stream = batchOf(frame, frames);
    const chunks: Buffer[] = [];
    for (let i = 0; i < stream.length; i += chunkBytes) chunks.push(stream.subarray(i, Math.min(stream.length, i + chunkBytes)));
    const handler = passHandler();
    const framer = new Framer(handler, 16 * 1024 * 1024);
    out.push(measure(`Framer.push: ${label} (${frame.length} B frames)`, 'frame', frames, stream.length, ms, () => {
      for (let c = 0; c < chunks.length; c++) {
        const err = framer.push(chunks[c]);
        if (err) throw err;
      }
    }));
    sink += handler.bytes;
  }
  return out;
}

function policyCases(ms: number): MicroResult[] {
  const config = defaultConfig();
  const out: MicroResult[] = [];
  const hellos: ClientHello[] = [
    { protocolVersion: 4, clientId: 'sensor-0001', username: undefined, keepAlive: 60 },
    { protocolVersion: 5, clientId: 'sensor-0002', username: 'u', keepAlive: 0 },
    { protocolVersion: 4, clientId: 'sensor-0003', username: undefined, keepAlive: 1200 },
    { protocolVersion: 5, clientId: 'sensor-0004', username: 'u', keepAlive: 30 },
  ];
  const policy = { ...config.keepAlive, max: 300, zero: 'assign' as const };
  let k = 0;
  out.push(measure('decideKeepAlive (mixed v4/v5 hellos)', 'call', 1, 0, ms, () => {
    const d = decideKeepAlive(policy, hellos[k++ & 3]);
    if (d.action === 'accept') sink += d.allowedSilenceMs;
  }));
  const rules = [
    { clientId: /^cam-.*$/s, username: null, policy },
    { clientId: null, username: /^fleet-.*$/s, policy },
  ];
  out.push(measure('policyFor (2 rules, no match)', 'call', 1, 0, ms, () => {
    sink += policyFor(config, rules, hellos[k++ & 3]).max;
  }));
  const state = newDeadlineState(0, 10_000, 10_000);
  state.connectDeadline = Infinity;
  state.allowedSilenceMs = 62_000;
  let now = 0;
  out.push(measure('evaluate (connected, keep-alive only)', 'call', 1, 0, ms, () => {
    now += 1;
    state.lastClientActivity = now;
    sink += evaluate(state, now).wakeAt;
  }));
  const probing = newDeadlineState(0, 10_000, 10_000);
  probing.connectDeadline = Infinity;
  probing.allowedSilenceMs = 62_000;
  probing.upstreamProbeIdleMs = 30_000;
  probing.probeTimeoutMs = 5_000;
  out.push(measure('evaluate (with upstream probes)', 'call', 1, 0, ms, () => {
    now += 1;
    probing.lastClientActivity = now;
    probing.lastUpstreamActivity = now;
    sink += evaluate(probing, now).wakeAt;
  }));
  return out;
}

export function runMicro(argv: string[] = process.argv.slice(2)): MicroResult[] {
  const i = argv.indexOf('--seconds');
  const ms = (i >= 0 ? Number(argv[i + 1]) : 1) * 1000;
  const results = [...framerCases(ms), ...policyCases(ms)];
  const width = Math.max(...results.map((r) => r.name.length));
  // MB/s is bytes framed per second; the framer skips PUBLISH bodies without reading them.
  const lines = [`${'case'.padEnd(width)}  ${'ns/op'.padStart(9)}  ${'ops/s'.padStart(12)}  ${'MB/s'.padStart(8)}`];
  for (const r of results) {
    lines.push(`${r.name.padEnd(width)}  ${r.nsPerOp.toFixed(1).padStart(9)}  ${Math.round(r.opsPerSecond).toLocaleString('en-US').padStart(12)}  ${(r.mbPerSecond === undefined ? '-' : r.mbPerSecond.toFixed(0)).padStart(8)}`);
  }
  lines.push('(MB/s: bytes framed per second; bodies are passed through as views, never read or copied)');
  process.stdout.write(`${lines.join('\n')}\n`);
  if (sink === 42) process.stdout.write('\n'); // keep results alive
  const out = path.join(ROOT, 'bench-results/micro.json');
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify({ date: new Date().toISOString(), node: process.version, results }, null, 2)}\n`);
  process.stderr.write(`wrote ${path.relative(process.cwd(), out)}\n`);
  return results;
}

// Run directly (npm run bench:micro), not when imported by run.ts.
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  runMicro();
}
