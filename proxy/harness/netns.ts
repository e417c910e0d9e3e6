// "Pulled cable" harness: a network namespace joined to the root namespace by a veth
// pair. pull() drops every packet on both veth ends with nftables (no RST, no FIN,
// no ICMP, no ARP) so the peers see a dead link exactly like an unplugged cable.
// Needs root, iproute2 and nft. Everything stays inside the veth pair we create.
import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';

/** Script to run with `cable.exec('node', ['--import', 'tsx', NETNS_CLIENT, JSON.stringify(args)])`. */
export const NETNS_CLIENT = fileURLToPath(new URL('./netns-client.ts', import.meta.url));

export interface Cable {
  /** Namespace name, also the name of the nft table on each side. */
  readonly name: string;
  readonly hostDevice: string;
  readonly clientDevice: string;
  /** Root-namespace side: where proxies/brokers listen. */
  readonly hostAddress: string;
  /** Namespace side: the source address of clients started with exec(). */
  readonly clientAddress: string;
  readonly pulled: boolean;
  /** Spawn inside the namespace; 'node' means this very node binary. Killed by destroy(). */
  exec(cmd: string, args: string[], opts?: SpawnOptions): ChildProcess;
  pull(): Promise<void>;
  restore(): Promise<void>;
  destroy(): Promise<void>;
}

/** Run a command without a shell; reject with its output on failure. */
export function run(cmd: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, (err, stdout, stderr) => {
      if (err) reject(new Error(`\`${cmd} ${args.join(' ')}\` failed (${err.code ?? err.signal}): ${stderr}${stdout}`.trim()));
      else resolve(stdout);
    });
    // A command that exits without reading stdin gives EPIPE here; its exit status is what counts.
    child.stdin?.on('error', () => {}).end(input ?? '');
  });
}

/** A promise whose failure does not matter (cleanup of what may already be gone). */
export const quiet = <T>(p: Promise<T>): Promise<T | undefined> => p.catch(() => undefined);

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

// Names embed the creating pid, so leftovers of a crashed run are those whose pid is gone.
const NAME_RE = /^mlp-(\d+)-[a-z0-9]+$/;
const isStale = (name: string) => {
  const m = NAME_RE.exec(name);
  return m !== null && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]));
};

let sweptStale = false;
async function removeStale(): Promise<void> {
  if (sweptStale) return;
  sweptStale = true;
  for (const line of (await run('ip', ['netns', 'list'])).split('\n')) {
    const ns = line.split(' ')[0] ?? '';
    if (!isStale(ns)) continue;
    // Deleting a veth end removes the pair at once, even if stray processes keep the namespace alive.
    const links = await quiet(run('ip', ['-n', ns, '-o', 'link', 'show', 'type', 'veth']));
    for (const m of (links ?? '').matchAll(/^\d+: ([^:@]+)/gm)) await quiet(run('ip', ['-n', ns, 'link', 'delete', m[1]]));
    await quiet(run('ip', ['netns', 'delete', ns]));
  }
  for (const m of (await run('nft', ['list', 'tables', 'netdev'])).matchAll(/^table netdev (\S+)$/gm)) {
    if (isStale(m[1])) await quiet(run('nft', ['delete', 'table', 'netdev', m[1]]));
  }
}

// Sync last-resort cleanup when the process exits without teardown having run.
const live = new Set<{ name: string; hostDevice: string; children: Set<ChildProcess> }>();
process.once('exit', () => {
  for (const c of live) {
    for (const child of c.children) child.kill('SIGKILL');
    for (const args of [['link', 'delete', c.hostDevice], ['netns', 'delete', c.name]]) {
      try { execFileSync('ip', args, { stdio: 'ignore' }); } catch { /* already gone */ }
    }
    try { execFileSync('nft', ['delete', 'table', 'netdev', c.name], { stdio: 'ignore' }); } catch { /* not pulled */ }
  }
});

const dropTable = (name: string, dev: string) =>
  `table netdev ${name} {\n  chain cut {\n    type filter hook ingress device "${dev}" priority 0; policy drop;\n  }\n}\n`;

let counter = 0;
const BLOCKS = 16384; // /30 blocks in 10.231.0.0/16

export async function createCable(name?: string): Promise<Cable> {
  if (name !== undefined && !/^[a-z0-9]{1,8}$/.test(name)) throw new Error(`bad cable name ${name}`);
  await removeStale();
  const index = counter++;
  const ns = `mlp-${process.pid}-${name ?? index}`;
  await run('ip', ['netns', 'add', ns]);
  // Claim a /30 by creating the root-side veth named after it: link creation fails
  // with EEXIST if another process (tap runs files in parallel) already owns the block.
  let block = (process.pid * 7 + index * 131) % BLOCKS; // spread start points; collisions just probe on
  let hostDevice = '';
  let clientDevice = '';
  for (let tries = 0; ; tries++, block = (block + 1) % BLOCKS) {
    hostDevice = `mlph${block}`;
    clientDevice = `mlpc${block}`;
    try {
      await run('ip', ['link', 'add', hostDevice, 'type', 'veth', 'peer', 'name', clientDevice, 'netns', ns]);
      break;
    } catch (err) {
      if (!/File exists/.test(String(err)) || tries > 64) {
        await quiet(run('ip', ['netns', 'delete', ns]));
        throw err;
      }
    }
  }
  const ip = (off: number) => `10.231.${(block * 4) >> 8}.${((block * 4) & 255) + off}`;
  const hostAddress = ip(1);
  const clientAddress = ip(2);
  const children = new Set<ChildProcess>();
  const entry = { name: ns, hostDevice, children };
  live.add(entry);

  let pulled = false;
  let destroyed = false;
  const cable: Cable = {
    name: ns, hostDevice, clientDevice, hostAddress, clientAddress,
    get pulled() { return pulled; },
    exec(cmd, args, opts = {}) {
      const bin = cmd === 'node' ? process.execPath : cmd;
      // ip netns exec execs in place (same pid) and keeps env and cwd.
      const child = spawn('ip', ['netns', 'exec', ns, bin, ...args], {
        cwd: process.cwd(), env: process.env, stdio: ['pipe', 'pipe', 'pipe'], ...opts,
      });
      children.add(child);
      child.once('exit', () => children.delete(child));
      return child;
    },
    async pull() {
      if (pulled) return;
      pulled = true;
      await run('nft', ['-f', '-'], dropTable(ns, hostDevice));
      await run('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], dropTable(ns, clientDevice));
    },
    async restore() {
      pulled = false;
      // quiet: after a half-failed pull one of the tables may not exist.
      await quiet(run('nft', ['delete', 'table', 'netdev', ns]));
      await quiet(run('ip', ['netns', 'exec', ns, 'nft', 'delete', 'table', 'netdev', ns]));
    },
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      for (const child of children) {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGKILL');
          await once(child, 'exit');
        }
      }
      await quiet(run('ip', ['link', 'delete', hostDevice])); // removes the peer too
      await quiet(run('nft', ['delete', 'table', 'netdev', ns]));
      await run('ip', ['netns', 'delete', ns]);
      live.delete(entry);
    },
  };
  try {
    await run('ip', ['addr', 'add', `${hostAddress}/30`, 'dev', hostDevice]);
    await run('ip', ['link', 'set', hostDevice, 'up']);
    await run('ip', ['-n', ns, 'addr', 'add', `${clientAddress}/30`, 'dev', clientDevice]);
    await run('ip', ['-n', ns, 'link', 'set', clientDevice, 'up']);
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  } catch (err) {
    await cable.destroy();
    throw err;
  }
  return cable;
}

/** Create a cable destroyed when the test ends (even on failure), and after fn. */
export async function withCable<T>(
  t: { teardown(fn: () => unknown): void },
  fn: (cable: Cable) => Promise<T>,
  name?: string,
): Promise<T> {
  const cable = await createCable(name);
  t.teardown(() => cable.destroy());
  try {
    return await fn(cable);
  } finally {
    await cable.destroy();
  }
}

// JSON-lines reader for children such as netns-client: keeps lines that arrive
// between waits so no event is lost.
type Reader = { lines: Record<string, unknown>[]; wake: () => void; ended: boolean };
const readers = new WeakMap<ChildProcess, Reader>();

/** A JSON object line as it came; anything else (not JSON, or not an object) as a 'raw' event. */
function parseEventLine(line: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(line);
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch { /* not JSON: kept as raw below */ }
  return { event: 'raw', line };
}

/** Wait for (and consume) the oldest unconsumed stdout JSON line with this event. */
export async function waitForEvent(child: ChildProcess, event: string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
  let r = readers.get(child);
  if (!r) {
    const state = { lines: [] as Record<string, unknown>[], wake: () => {}, ended: false, buf: '' };
    const stdout = child.stdout!.setEncoding('utf8');
    // 'end' (not process exit) marks the last line: exit can come before the pipe drains.
    stdout.on('end', () => { state.ended = true; state.wake(); });
    stdout.on('data', (chunk: string) => {
      const parts = (state.buf + chunk).split('\n');
      state.buf = parts.pop()!;
      for (const line of parts) {
        if (!line.trim()) continue;
        state.lines.push(parseEventLine(line));
      }
      state.wake();
    });
    readers.set(child, (r = state));
  }
  const reader = r;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const i = reader.lines.findIndex((l) => l.event === event);
    if (i >= 0) return reader.lines.splice(i, 1)[0];
    const left = deadline - Date.now();
    if (left <= 0 || reader.ended) {
      throw new Error(`no "${event}" event ${reader.ended ? 'before stdout closed' : `within ${timeoutMs} ms`}`);
    }
    await new Promise<void>((res) => {
      const timer = setTimeout(res, Math.min(left, 500));
      reader.wake = () => { clearTimeout(timer); res(); };
    });
  }
}
