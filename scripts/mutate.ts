/**
 * Mutation check of the liveness paths (`npm run mutate`): each deliberate
 * breakage below is applied on its own to a scratch copy of the repository,
 * its test files run there, and the breakage counts as caught when at least
 * one of them fails. Prints `caught N/M` and exits non-zero if any survives.
 *
 * Each breakage is a search/replace on one file; every search text must occur
 * exactly once in the current code, or the run stops before testing anything
 * (so a refactor that moves the code fails loudly instead of "catching" a
 * breakage that was never applied). Update the table when the code moves.
 *
 *   npm run mutate                     all breakages
 *   npm run mutate -- --only grace     breakages whose name contains "grace"
 *   npm run mutate -- --all-tests      run every listed file, not just until the first failure
 *   npm run mutate -- --baseline       first run the listed files unbroken (they must pass)
 *   npm run mutate -- --list           check the patterns and list the table, run nothing
 */
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

interface Breakage {
  name: string;
  /** What the breakage does, in words. */
  what: string;
  /** Repository-relative file the edits apply to. */
  file: string;
  /** [search, replace] pairs; each search must occur exactly once in the file. */
  edits: Array<[string, string]>;
  /** Test files expected to catch it, cheapest first. */
  tests: string[];
}

// ---- the table: keep every pattern here --------------------------------------

const CONNECTION = 'proxy/src/relay/connection.ts';

const BREAKAGES: Breakage[] = [
  {
    name: 'probe-deferral',
    what: 'the canary decides a probe failed at its deadline, without the one loop turn that lets a waiting PINGRESP be read',
    file: 'proxy/src/probes/probe-state.ts',
    edits: [
      ['    r.timer = this.clock.setTimer(() => {\n      r.timer = null;\n      if (r.pingDone && r.publishDone) return;',
        '    r.timer = null;\n    ((): void => {\n      if (r.pingDone && r.publishDone) return;'],
      ['      if (this.sessionMisses >= this.o.missesPerSession) this.replaceSession();\n    }, 0);',
        '      if (this.sessionMisses >= this.o.missesPerSession) this.replaceSession();\n    })();'],
    ],
    tests: ['proxy/test/probe-state.test.ts'],
  },
  {
    name: 'tcp-info-check',
    what: 'the proxy never reads TCP_INFO for unacknowledged data (the kernel\'s own TCP_USER_TIMEOUT alone decides)',
    file: CONNECTION,
    edits: [['    const state = tcpAckState(this.client);', '    const state = false ? tcpAckState(this.client) : null;']],
    tests: ['proxy/test/liveness-cable.test.ts'],
  },
  {
    name: 'keepalive-grace',
    what: 'the keep-alive deadline is the keep-alive itself, without the grace',
    file: 'proxy/src/liveness/policy.ts',
    edits: [['  return Math.min(keepAlive + grace, keepAlive * 1.5) * 1000;', '  return Math.min(keepAlive + 0 * grace, keepAlive * 1.5) * 1000;']],
    tests: ['proxy/test/policy.test.ts', 'proxy/test/verdict-order.test.ts', 'proxy/test/liveness-frozen.test.ts'],
  },
  {
    name: 'injected-pingresp',
    what: 'the PINGRESP to a PINGREQ the proxy injected is forwarded to the client',
    file: CONNECTION,
    edits: [['        this.schedule(this.ctx.clock.now());\n        return null;', '        this.schedule(this.ctx.clock.now());\n        return frame;']],
    tests: ['proxy/test/pingresp-interleave.test.ts'],
  },
  {
    name: 'disconnect-reason',
    what: 'on a verdict an MQTT 5 broker gets DISCONNECT 0x00 (normal, Will discarded) instead of 0x04',
    file: CONNECTION,
    edits: [['this.upstream.end(disconnectV5(REASON.disconnectWithWill));', 'this.upstream.end(disconnectV5(0x00));']],
    tests: ['proxy/test/verdict-order.test.ts', 'proxy/test/liveness-frozen.test.ts'],
  },
  {
    name: 'verdict-before-close',
    what: 'the verdict is counted (close event: metrics, webhook) before the broker side is told and closed',
    file: CONNECTION,
    edits: [['  end(reason: Reason, detail: string | null): void {\n    if (this.reason !== null) return;\n    this.setReason(reason, detail);\n',
      '  end(reason: Reason, detail: string | null): void {\n    if (this.reason !== null) return;\n    this.setReason(reason, detail);\n    this.finish();\n']],
    tests: ['proxy/test/verdict-order.test.ts'],
  },
  // Beyond the issue's six: the cleanup and backpressure paths that issue 16 point 3 added tests for.
  {
    name: 'client-backpressure',
    what: 'the proxy keeps reading from a client while the broker side does not take bytes',
    file: CONNECTION,
    edits: [['    if (!this.upstream.write(bytes)) this.client.pause();', '    this.upstream.write(bytes);']],
    tests: ['proxy/test/backpressure.test.ts'],
  },
  {
    name: 'refusal-cut',
    what: 'a refused client that never reads nor closes keeps its socket',
    file: CONNECTION,
    edits: [['    // A client that never reads its CONNACK must not hold the socket.\n    this.cutLater(2000);', '    // A client that never reads its CONNACK must not hold the socket.']],
    tests: ['proxy/test/lingering.test.ts'],
  },
  {
    name: 'linger-cut',
    what: 'a half-closed connection whose other side never finishes is kept',
    file: CONNECTION,
    edits: [['    this.cutLater(LINGER_MS);', '    void LINGER_MS;']],
    tests: ['proxy/test/lingering.test.ts', 'proxy/test/shutdown.test.ts'],
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
  },
});

function occurrences(text: string, search: string): number {
  let n = 0;
  for (let i = text.indexOf(search); i >= 0; i = text.indexOf(search, i + 1)) n++;
  return n;
}

/** Every pattern must match exactly once; all problems reported together. */
function checkPatterns(breakages: Breakage[]): void {
  const problems: string[] = [];
  for (const b of breakages) {
    const text = readFileSync(path.join(ROOT, b.file), 'utf8');
    b.edits.forEach(([search], i) => {
      const n = occurrences(text, search);
      if (n !== 1) problems.push(`${b.name}: edit ${i + 1} matches ${n} times in ${b.file} (expected once):\n    ${JSON.stringify(search)}`);
    });
  }
  if (problems.length > 0) {
    console.error(`mutate: the code moved; update the table in scripts/mutate.ts:\n  ${problems.join('\n  ')}`);
    process.exit(2);
  }
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

async function main(): Promise<void> {
  const selected = BREAKAGES.filter((b) => !opts.only || b.name.includes(opts.only));
  if (selected.length === 0) throw new Error(`no breakage named like ${opts.only}`);
  checkPatterns(selected);
  if (opts.list) {
    for (const b of selected) console.log(`${b.name.padEnd(22)} ${b.file}  ->  ${b.tests.join(', ')}\n${' '.repeat(23)}${b.what}`);
    return;
  }
  const dir = scratchCopy();
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true });
  process.once('SIGINT', () => { cleanup(); process.exit(130); });
  console.log(`mutate: scratch copy ${dir}`);
  const results: Array<{ b: Breakage; caughtBy: FileRun | null; runs: FileRun[] }> = [];
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
      try {
        for (const file of b.tests) {
          const r = await runTest(dir, file);
          runs.push(r);
          if (!r.passed && !caughtBy) caughtBy = r;
          if (caughtBy && !opts['all-tests']) break;
        }
      } finally {
        writeFileSync(target, original);
      }
      results.push({ b, caughtBy, runs });
      const verdict = caughtBy ? `caught by ${caughtBy.file}` : 'SURVIVED';
      console.log(`\n${b.name}: ${verdict}  (${b.what})`);
      for (const r of runs) console.log(`  ${r.passed ? 'pass' : 'FAIL'} ${r.file} (${Math.round(r.ms / 1000)} s)${r.failures.map((f) => `\n      not ok - ${f}`).join('')}`);
    }
  } finally {
    cleanup();
  }
  const caught = results.filter((r) => r.caughtBy).length;
  console.log(`\ncaught ${caught}/${results.length}`);
  for (const r of results) console.log(`  ${r.caughtBy ? 'caught  ' : 'SURVIVED'} ${r.b.name.padEnd(22)} ${r.caughtBy ? r.caughtBy.file : r.runs.map((x) => x.file).join(', ')}`);
  if (caught < results.length) process.exitCode = 1;
}

await main();
