/**
 * Mutation check of the liveness paths (`npm run mutate`): each deliberate
 * breakage below is applied on its own to a scratch copy of the repository,
 * its test files run there, and the breakage counts as caught when at least
 * one of them fails. Prints `caught N/M` and exits non-zero if any survives.
 *
 * Each breakage is a search/replace on one file; every search text must occur
 * exactly once in the current code, or the run stops before testing anything
 * (so a refactor that moves the code fails loudly instead of "catching" a
 * breakage that was never applied); the message names the breakage, its file,
 * where in the file it was and the behaviour it breaks, so the pattern can be
 * moved to the new code in a minute. The table is below: one entry per breakage.
 *
 *   npm run mutate                     all breakages
 *   npm run mutate -- --only grace     breakages whose name contains "grace"
 *   npm run mutate -- --all-tests      run every listed file, not just until the first failure
 *   npm run mutate -- --baseline       first run the listed files unbroken (they must pass)
 *   npm run mutate -- --list           check the patterns and list the table, run nothing
 *   npm run mutate -- --skip-stale     run the breakages that still apply; the stale ones are
 *                                      reported and the exit is still non-zero
 *   npm run mutate -- --no-typecheck   skip `tsc` on each mutant (by default a mutant that does
 *                                      not type-check is reported INVALID, not caught: tap
 *                                      type-checks and would fail it for the wrong reason)
 */
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

interface Breakage {
  name: string;
  /** The behaviour it breaks, in words. */
  what: string;
  /** Repository-relative file the edits apply to. */
  file: string;
  /** Where in the file, to find the code again when it moved (function, branch). */
  where: string;
  /** [search, replace] pairs; each search must occur exactly once in the file. */
  edits: Array<[string, string]>;
  /** Test files expected to catch it, fast unit tests first. */
  tests: string[];
}

// ---- the table: every breakage and its patterns, one entry each -----------------

const CONNECTION = 'proxy/src/relay/connection.ts';
const CONNECTION_END = 'proxy/src/relay/connection-end.ts';
const T = (name: string): string => `proxy/test/${name}.test.ts`;

const BREAKAGES: Breakage[] = [
  // Issue 16's six.
  {
    // Breaks: a PINGRESP already waiting in the socket when the probe deadline fires still counts.
    name: 'probe-deferral',
    what: 'the canary decides a probe failed at its deadline, without the one loop turn that lets a waiting PINGRESP be read',
    file: 'proxy/src/probes/probe-state.ts',
    where: 'ProbeState, the probe deadline timer (setTimer(..., 0) around the miss handling)',
    edits: [
      ['    r.timer = this.clock.setTimer(() => {\n      r.timer = null;\n      if (r.pingDone && r.publishDone) return;',
        '    r.timer = null;\n    ((): void => {\n      if (r.pingDone && r.publishDone) return;'],
      ['      if (this.sessionMisses >= this.o.missesPerSession) this.replaceSession();\n    }, 0);',
        '      if (this.sessionMisses >= this.o.missesPerSession) this.replaceSession();\n    })();'],
    ],
    tests: [T('probe-state')],
  },
  {
    // Breaks: the proxy's own unacknowledged-data verdict (TCP_INFO), ahead of the kernel's slower abort.
    name: 'tcp-info-check',
    what: 'the proxy never reads TCP_INFO (the kernel\'s backstop timers alone decide, far later)',
    file: 'proxy/src/relay/server.ts',
    where: 'ProxyServer constructor, ctx.readTcpInfo',
    edits: [['readTcpInfo: (transport, into) => (transport.tcpSocket ? readTcpInfo(transport.tcpSocket, into) : false),', 'readTcpInfo: () => false,']],
    tests: [T('liveness-cable')],
  },
  {
    // Breaks: a client whose PINGREQ is a little late is cut at exactly the keep-alive.
    name: 'keepalive-grace',
    what: 'the keep-alive deadline is the keep-alive itself, without the grace',
    file: 'proxy/src/liveness/policy.ts',
    where: 'allowedSilenceMs',
    edits: [['  return Math.min(keepAlive + grace, keepAlive * 1.5) * 1000;', '  return Math.min(keepAlive + 0 * grace, keepAlive * 1.5) * 1000;']],
    tests: [T('policy'), T('relay-parts'), T('connection'), T('verdict-order'), T('liveness-frozen')],
  },
  {
    // Breaks: injected packets never leak; the client gets a PINGRESP it never asked for.
    name: 'injected-pingresp',
    what: 'the PINGRESP to a PINGREQ the proxy injected is forwarded to the client',
    file: CONNECTION,
    where: 'Connection.brokerHeld, the PINGRESP branch (answeredProxy)',
    edits: [['        this.liveness.schedule(this.ctx.clock.now());\n        return null;', '        this.liveness.schedule(this.ctx.clock.now());\n        return frame;']],
    tests: [T('connection'), T('pingresp-interleave')],
  },
  {
    // Breaks: the Will on a verdict (0x00 is a normal disconnect: the broker discards the Will).
    name: 'disconnect-reason',
    what: 'on a verdict an MQTT 5 broker gets DISCONNECT 0x00 (normal, Will discarded) instead of 0x04',
    file: CONNECTION_END,
    where: 'ConnectionEnd.end, the tellBrokerWill branch',
    edits: [['this.upstream.end(disconnectV5(REASON.disconnectWithWill));', 'this.upstream.end(disconnectV5(0x00));']],
    tests: [T('connection'), T('verdict-order'), T('liveness-frozen')],
  },
  {
    // Breaks: the order metrics/webhook consumers rely on: the broker knows (Will) before the close is reported.
    name: 'verdict-before-close',
    what: 'the verdict is counted (close event: metrics, webhook) before the broker side is told and closed',
    file: CONNECTION_END,
    where: 'ConnectionEnd.end, its first lines (finish() emits the close event)',
    edits: [['  end(reason: Reason, detail: string | null): void {\n    if (this.reason !== null) return;\n    this.setReason(reason, detail);\n',
      '  end(reason: Reason, detail: string | null): void {\n    if (this.reason !== null) return;\n    this.setReason(reason, detail);\n    this.finish();\n']],
    tests: [T('connection'), T('verdict-order')],
  },
  // Beyond the six: cleanup and backpressure paths (issue 16 point 3).
  {
    // Breaks: memory bound per connection when the broker stops reading.
    name: 'client-backpressure',
    what: 'the proxy keeps reading from a client while the broker side does not take bytes',
    file: CONNECTION,
    where: 'Connection.writeUpstream',
    edits: [['    if (!this.upstream.write(bytes)) this.client.pause();', '    this.upstream.write(bytes);']],
    tests: [T('backpressure')],
  },
  {
    // Breaks: a refused client that never reads its CONNACK is freed after 2 s.
    name: 'refusal-cut',
    what: 'a refused client that never reads nor closes keeps its socket',
    file: CONNECTION_END,
    where: 'ConnectionEnd.refuse, the cutLater(REFUSAL_MS) at its end',
    edits: [['    // A client that never reads its CONNACK must not hold the stream.\n    this.cutLater(REFUSAL_MS);', '    // A client that never reads its CONNACK must not hold the stream.\n    void REFUSAL_MS;']],
    tests: [T('connection'), T('lingering')],
  },
  {
    // Breaks: a half-closed connection is freed after 10 s.
    name: 'linger-cut',
    what: 'a half-closed connection whose other side never finishes is kept',
    file: CONNECTION_END,
    where: 'ConnectionEnd.lingerThenCut',
    edits: [['    this.cutLater(LINGER_MS);', '    void LINGER_MS;']],
    tests: [T('connection'), T('lingering')], // (shutdown.test.ts passes with it: SIGTERM cuts after shutdownGrace, not the linger timer)
  },
  // The Connection's parts, each alone.
  {
    // Breaks: a dead verdict of the TCP-silence check (proxy/src/liveness/tcp-verdict.ts) never ends the connection.
    name: 'tcp-dead-ignored',
    what: 'the connection\'s timer reads a dead TCP verdict and carries on',
    file: 'proxy/src/relay/liveness-timer.ts',
    where: 'LivenessTimer.checkTcp, the dead branch',
    edits: [["    if (state === 'dead' && reason !== null) {", "    if (state === 'dead' && reason !== null && now < 0) {"]],
    tests: [T('connection'), T('liveness-cable')],
  },
  {
    // Breaks: PINGRESPs answer PINGREQs in order; the client's own PINGRESP is swallowed as the proxy's.
    name: 'ping-ledger-order',
    what: 'every held PINGRESP is taken as the answer to the proxy\'s PINGREQ, whoever sent the oldest one',
    file: 'proxy/src/relay/ping-ledger.ts',
    where: 'PingLedger.answeredProxy',
    edits: [['    if (this.unanswered.shift() !== FROM_PROXY) return false;', '    this.unanswered.shift();']],
    // Only the unit test sees it: with equal counts of PINGRESPs the bytes each side gets are the same.
    tests: [T('relay-parts')],
  },
  {
    // Breaks: the Will on a verdict, decided in the close classification.
    name: 'tell-broker-will',
    what: 'a liveness verdict never sends the MQTT 5 broker DISCONNECT 0x04 (abrupt close only)',
    file: 'proxy/src/relay/close-reason.ts',
    where: 'tellBrokerWill',
    edits: [['  return isLivenessReason(reason) && protocolVersion === 5 && connectForwarded && atFrameBoundary;', '  return isLivenessReason(reason) && protocolVersion === 55 && connectForwarded && atFrameBoundary;']],
    tests: [T('relay-parts'), T('connection'), T('verdict-order')],
  },
  // The adaptive liveness model (proxy/src/liveness; pure, being wired into the Connection).
  {
    // Breaks: correlated silences (a shared path down) would cut many healthy clients at once.
    name: 'verdict-ignores-hold',
    what: 'a TCP-silence dead verdict ignores LocalHealth\'s hold while the proxy is degraded',
    file: 'proxy/src/liveness/tcp-verdict.ts',
    where: 'TcpSilenceCheck.check, the dead branch (shouldHold)',
    edits: [['      if (this.health?.shouldHold(now) && (', '      if (this.health?.shouldHold(now) && now < 0 && (']],
    tests: [T('tcp-verdict')],
  },
  {
    // Breaks: patience on lossy links: n probes from the budget (q^n), not a fixed count.
    name: 'budget-ignores-loss',
    what: 'the number of failed transmissions before a verdict ignores the link\'s loss (n fixed at minProbes)',
    file: 'proxy/src/liveness/verdict-budget.ts',
    where: 'deriveThresholds, nIdle and nData',
    edits: [
      ['  const nIdle = Math.max(nNew, probesFor(q, x.budgetPerHour / idleEpisodes, minN, MAX_PROBES));', '  const nIdle = Math.max(nNew, minN + 0 * idleEpisodes);'],
      ['  const nData = Math.max(nNew, probesFor(q, x.budgetPerHour / dataEpisodes, minN, MAX_PROBES));', '  const nData = Math.max(nNew, minN + 0 * dataEpisodes);'],
    ],
    tests: [T('verdict-budget'), T('tcp-verdict'), T('connection-liveness')],
  },
  {
    // Breaks: a newcomer on a lossy link in a clean fleet is cut by its first failure streak.
    name: 'newcomer-rule-dropped',
    what: 'a new connection gets the fleet prior\'s n at once, before its own rounds showed its link is not bad',
    file: 'proxy/src/liveness/verdict-budget.ts',
    where: 'deriveThresholds, nNew',
    edits: [['  const nNew = Math.min(link.newcomerN ?? 0, MAX_PROBES);', '  const nNew = 0 * Math.min(link.newcomerN ?? 0, MAX_PROBES);']],
    tests: [T('verdict-budget'), T('connection-liveness')],
  },
  {
    // Breaks: the same as verdict-ignores-hold, from the other side: nothing is ever held.
    name: 'health-never-degrades',
    what: 'LocalHealth never becomes degraded, however many connections go silent together',
    file: 'proxy/src/liveness/local-health.ts',
    where: 'LocalHealth.update, the threshold comparison',
    edits: [['    if (inWindow >= threshold) {', '    if (inWindow >= threshold + Infinity) {']],
    tests: [T('local-health'), T('tcp-verdict')],
  },
  {
    // Breaks: a lossy link's late PINGREQ gets the adaptive grace before keepalive_timeout.
    name: 'adaptive-grace-dropped',
    what: 'the keep-alive dead deadline uses only the base grace, never the adaptive one',
    file: 'proxy/src/liveness/connection-liveness.ts',
    where: 'ConnectionLiveness.keepAliveSilenceMs',
    edits: [['deadAfterMs: ka + this.thresholds.keepAliveGraceMs }', 'deadAfterMs: ka + this.thresholds.keepAliveGraceBaseMs }']],
    tests: [T('connection-liveness')],
  },
  {
    // Breaks: learning the link: thresholds follow the measured loss, not the prior.
    name: 'estimate-not-applied',
    what: 'a connection\'s thresholds are never re-derived from its TCP_INFO samples',
    file: 'proxy/src/liveness/connection-liveness.ts',
    where: 'ConnectionLiveness.onSample',
    edits: [['    if (this.estimate?.update(sample, now)) this.thresholds = this.derive();', '    this.estimate?.update(sample, now);']],
    tests: [T('connection-liveness')],
  },
];

// ---- the run -------------------------------------------------------------------

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: opts } = parseArgs({
  options: {
    only: { type: 'string' },
    'all-tests': { type: 'boolean', default: false },
    baseline: { type: 'boolean', default: false },
    list: { type: 'boolean', default: false },
    'skip-stale': { type: 'boolean', default: false },
    'no-typecheck': { type: 'boolean', default: false },
  },
});

function occurrences(text: string, search: string): number {
  let n = 0;
  for (let i = text.indexOf(search); i >= 0; i = text.indexOf(search, i + 1)) n++;
  return n;
}

/**
 * Every pattern must match exactly once. Returns, per breakage that does not apply, a message
 * naming the breakage, its file, where in it, the behaviour, and each search text that failed.
 */
function stalePatterns(breakages: Breakage[]): Map<string, string> {
  const stale = new Map<string, string>();
  for (const b of breakages) {
    const head = `breakage "${b.name}" (${b.what})\n    file ${b.file}, at ${b.where}:`;
    let text: string;
    try {
      text = readFileSync(path.join(ROOT, b.file), 'utf8');
    } catch {
      stale.set(b.name, `${head}\n    the file does not exist any more`);
      continue;
    }
    const lines: string[] = [];
    b.edits.forEach(([search], i) => {
      const n = occurrences(text, search);
      if (n !== 1) lines.push(`    edit ${i + 1} of ${b.edits.length} matches ${n} times (expected once): ${JSON.stringify(search)}`);
    });
    if (lines.length > 0) stale.set(b.name, `${head}\n${lines.join('\n')}`);
  }
  return stale;
}

/** The repository's type check in the scratch copy: a mutant that does not compile is no catch. */
function typecheck(dir: string): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    const proc = spawn(path.join(dir, 'node_modules/.bin/tsc'), ['--noEmit', '-p', '.'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    proc.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    proc.on('close', (code) => resolve({ ok: code === 0, out: out.slice(0, 600) }));
  });
}

function apply(text: string, edits: Array<[string, string]>): string {
  for (const [search, replace] of edits) text = text.replace(search, () => replace);
  return text;
}

/** A copy of the repository without node_modules (linked instead), .git and test output. */
function scratchCopy(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-mutate-'));
  const skip = new Set(['node_modules', '.git', '.tap', 'coverage', 'bench-results']);
  cpSync(ROOT, dir, { recursive: true, filter: (src) => !skip.has(path.basename(src)) || path.dirname(src) !== ROOT });
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  return dir;
}

interface FileRun { file: string; passed: boolean; failures: string[]; ms: number }

/** One test file with tap in the scratch copy; the names of its failed assertions. */
function runTest(dir: string, file: string): Promise<FileRun> {
  const started = performance.now();
  return new Promise((resolve) => {
    const proc = spawn(path.join(dir, 'node_modules/.bin/tap'), ['--disable-coverage', '--jobs', '1', '--reporter', 'tap', file], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    proc.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    proc.on('close', (code) => {
      // Failed assertions are the indented "not ok" lines (subtests that failed because of them are repeated above them).
      const failures = [...out.matchAll(/^ {8,}not ok \d+ - (.*)$/gm)].map((m) => m[1].slice(0, 160));
      resolve({ file, passed: code === 0, failures: failures.length > 0 ? failures : code === 0 ? [] : [`exit ${code}: ${out.slice(-300)}`], ms: performance.now() - started });
    });
  });
}

type Outcome = 'caught' | 'SURVIVED' | 'INVALID' | 'STALE';

async function main(): Promise<void> {
  const named = BREAKAGES.filter((b) => !opts.only || b.name.includes(opts.only));
  if (named.length === 0) throw new Error(`no breakage named like ${opts.only}`);
  const stale = stalePatterns(named);
  if (stale.size > 0) {
    console.error(`mutate: ${stale.size} breakage(s) no longer apply (the code moved); update their entries in scripts/mutate.ts:\n  ${[...stale.values()].join('\n  ')}`);
    if (!opts['skip-stale']) process.exit(2);
  }
  const selected = named.filter((b) => !stale.has(b.name));
  if (opts.list) {
    for (const b of selected) console.log(`${b.name.padEnd(22)} ${b.file}  ->  ${b.tests.join(', ')}\n${' '.repeat(23)}${b.what}`);
    if (stale.size > 0) process.exitCode = 2;
    return;
  }
  const dir = scratchCopy();
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true });
  process.once('SIGINT', () => { cleanup(); process.exit(130); });
  console.log(`mutate: scratch copy ${dir}`);
  const results: Array<{ b: Breakage; outcome: Outcome; caughtBy: FileRun | null; runs: FileRun[] }> = [];
  try {
    if (opts.baseline) {
      const files = [...new Set(selected.flatMap((b) => b.tests))];
      for (const file of files) {
        const r = await runTest(dir, file);
        console.log(`baseline ${file}: ${r.passed ? 'pass' : 'FAIL'} (${Math.round(r.ms / 1000)} s)${r.passed ? '' : `\n    ${r.failures.join('\n    ')}`}`);
        if (!r.passed) throw new Error(`baseline: ${file} fails without any breakage; fix that first`);
      }
    }
    for (const b of selected) {
      const target = path.join(dir, b.file);
      const original = readFileSync(target, 'utf8');
      writeFileSync(target, apply(original, b.edits));
      const runs: FileRun[] = [];
      let caughtBy: FileRun | null = null;
      let outcome: Outcome;
      try {
        const tc = opts['no-typecheck'] ? { ok: true, out: '' } : await typecheck(dir);
        if (!tc.ok) {
          outcome = 'INVALID';
          console.log(`\n${b.name}: INVALID, the mutant does not type-check (fix its replacement in scripts/mutate.ts)\n    ${tc.out.replaceAll('\n', '\n    ')}`);
        } else {
          for (const file of b.tests) {
            const r = await runTest(dir, file);
            runs.push(r);
            if (!r.passed && !caughtBy) caughtBy = r;
            if (caughtBy && !opts['all-tests']) break;
          }
          outcome = caughtBy ? 'caught' : 'SURVIVED';
        }
      } finally {
        writeFileSync(target, original);
      }
      results.push({ b, outcome, caughtBy, runs });
      if (outcome === 'INVALID') continue;
      const verdict = caughtBy ? `caught by ${caughtBy.file}` : 'SURVIVED';
      console.log(`\n${b.name}: ${verdict}  (${b.what})`);
      for (const r of runs) console.log(`  ${r.passed ? 'pass' : 'FAIL'} ${r.file} (${Math.round(r.ms / 1000)} s)${r.failures.map((f) => `\n      not ok - ${f}`).join('')}`);
    }
  } finally {
    cleanup();
  }
  for (const b of named) if (stale.has(b.name)) results.push({ b, outcome: 'STALE', caughtBy: null, runs: [] });
  const caught = results.filter((r) => r.outcome === 'caught').length;
  console.log(`\ncaught ${caught}/${results.length}`);
  for (const r of results) {
    const failing = (x: FileRun): string => `${x.file.replace('proxy/test/', '')}${x.passed ? '' : ' (FAIL)'}`;
    const detail = r.outcome === 'caught' ? `${r.runs.filter((x) => !x.passed).map((x) => x.file.replace('proxy/test/', '')).join(', ')}${opts['all-tests'] ? `; passed: ${r.runs.filter((x) => x.passed).map((x) => x.file.replace('proxy/test/', '')).join(', ') || '-'}` : ''}`
      : r.outcome === 'SURVIVED' ? `all passed: ${r.runs.map(failing).join(', ')}`
        : r.outcome === 'STALE' ? `pattern no longer matches in ${r.b.file}` : 'mutant does not type-check';
    console.log(`  ${r.outcome.padEnd(8)} ${r.b.name.padEnd(22)} ${detail}`);
  }
  if (caught < results.length) process.exitCode = 1;
}

await main();
