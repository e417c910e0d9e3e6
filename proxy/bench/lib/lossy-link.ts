/**
 * Lossy links between network namespaces, for the lossy-link bench and tests.
 *
 * A Namespace is `mlp-<pid>-<tag>` (the naming of harness/netns.ts, so a
 * crashed run's leftovers are swept by either). A Link is a veth pair between
 * two namespaces; each end drops IPv4 packets at random on ingress
 * (`numgen random mod 100 < P drop`, so both directions lose P %) and can be
 * cut entirely (outage, pulled cable): a higher-priority chain with `drop`.
 * No tc/netem needed. Every process started in a namespace is killed, and every
 * namespace deleted, on destroy() and on process exit.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { pidAlive, quiet, run } from '../../harness/netns.ts';

export { run };

let swept = false;
/** Delete namespaces of earlier runs whose process is gone (same naming as harness/netns.ts). */
export async function sweepStaleNamespaces(): Promise<void> {
  if (swept) return;
  swept = true;
  for (const line of (await run('ip', ['netns', 'list'])).split('\n')) {
    const ns = line.split(' ')[0] ?? '';
    const m = /^mlp-(\d+)-[a-z0-9]+$/.exec(ns);
    if (!m || Number(m[1]) === process.pid || pidAlive(Number(m[1]))) continue;
    const links = await quiet(run('ip', ['-n', ns, '-o', 'link', 'show', 'type', 'veth']));
    for (const l of (links ?? '').matchAll(/^\d+: ([^:@]+)/gm)) await quiet(run('ip', ['-n', ns, 'link', 'delete', l[1]]));
    await quiet(run('ip', ['netns', 'delete', ns]));
  }
}

const allNamespaces = new Set<Namespace>();
process.once('exit', () => {
  for (const ns of allNamespaces) ns.destroySync();
});

export class Namespace {
  readonly children = new Set<ChildProcess>();
  private destroyed = false;

  private constructor(readonly name: string) {}

  static async create(tag: string): Promise<Namespace> {
    if (!/^[a-z0-9]{1,10}$/.test(tag)) throw new Error(`bad namespace tag ${tag}`);
    await sweepStaleNamespaces();
    const ns = new Namespace(`mlp-${process.pid}-${tag}`);
    await run('ip', ['netns', 'add', ns.name]);
    allNamespaces.add(ns);
    await run('ip', ['-n', ns.name, 'link', 'set', 'lo', 'up']);
    return ns;
  }

  /** Spawn inside the namespace (`ip netns exec` execs in place: the child's pid is the command's). */
  exec(cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const bin = cmd === 'node' ? process.execPath : cmd;
    const child = spawn('ip', ['netns', 'exec', this.name, bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    child.on('error', () => {}); // reported through exit
    return child;
  }

  /** Run a command inside the namespace and return its stdout. */
  run(cmd: string, args: string[], input?: string): Promise<string> {
    return run('ip', ['netns', 'exec', this.name, cmd, ...args], input);
  }

  /** TcpExt and Tcp counters of this namespace (/proc/net/netstat and /proc/net/snmp). */
  async tcpCounters(): Promise<Record<string, number>> {
    const text = await this.run('cat', ['/proc/net/netstat', '/proc/net/snmp']);
    const out: Record<string, number> = {};
    const lines = text.split('\n');
    for (let i = 0; i + 1 < lines.length; i++) {
      const head = lines[i].split(/\s+/);
      const vals = lines[i + 1].split(/\s+/);
      if (head[0] !== vals[0] || !/^(TcpExt|Tcp):$/.test(head[0] ?? '')) continue;
      for (let k = 1; k < head.length; k++) out[`${head[0].slice(0, -1)}.${head[k]}`] = Number(vals[k]);
      i++;
    }
    return out;
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    for (const child of [...this.children]) {
      if (child.exitCode === null && child.signalCode === null) {
        const gone = once(child, 'exit');
        child.kill('SIGKILL');
        await gone;
      }
    }
    this.destroyed = true;
    const links = await quiet(run('ip', ['-n', this.name, '-o', 'link', 'show', 'type', 'veth']));
    for (const l of (links ?? '').matchAll(/^\d+: ([^:@]+)/gm)) await quiet(run('ip', ['-n', this.name, 'link', 'delete', l[1]]));
    await quiet(run('ip', ['netns', 'delete', this.name]));
    allNamespaces.delete(this);
  }

  /** Last resort on process exit. */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const child of this.children) child.kill('SIGKILL');
    try { execFileSync('ip', ['netns', 'delete', this.name], { stdio: 'ignore' }); } catch { /* gone */ }
  }
}

const table = (dev: string, lossPercent: number) => [
  'table netdev lossy {',
  // Loss applies to IPv4 only (neighbours are static anyway, see Link.create).
  `  chain loss_${dev} { type filter hook ingress device "${dev}" priority 0; policy accept; ${lossPercent > 0 ? `meta protocol ip numgen random mod 100 < ${lossPercent} drop;` : ''} }`,
  `  chain cut_${dev} { type filter hook ingress device "${dev}" priority -1; policy accept; }`,
  '}',
  '',
].join('\n');

export interface LinkEnd {
  ns: Namespace;
  device: string;
  address: string;
}

/**
 * A veth pair between two namespaces with random loss on both ends. Cuts are
 * counted by reason ("outage", "pull"): the link is down while any is active.
 */
export class Link {
  private readonly cuts = new Set<string>();
  private down = false;
  private queue: Promise<void> = Promise.resolve();

  private constructor(readonly a: LinkEnd, readonly b: LinkEnd, readonly lossPercent: number) {}

  /** `subnet` is the third octet of 10.77.X.0/30: unique per namespace, not globally (namespaces isolate). */
  static async create(a: Namespace, devA: string, b: Namespace, devB: string, subnet: number, lossPercent: number): Promise<Link> {
    if (!Number.isInteger(lossPercent) || lossPercent < 0 || lossPercent > 100) throw new Error(`loss must be an integer percent, got ${lossPercent}`);
    const link = new Link(
      { ns: a, device: devA, address: `10.77.${subnet}.1` },
      { ns: b, device: devB, address: `10.77.${subnet}.2` },
      lossPercent,
    );
    await run('ip', ['-n', a.name, 'link', 'add', devA, 'type', 'veth', 'peer', 'name', devB, 'netns', b.name]);
    const mac = new Map<LinkEnd, string>();
    for (const end of [link.a, link.b]) {
      await run('ip', ['-n', end.ns.name, 'addr', 'add', `${end.address}/30`, 'dev', end.device]);
      await run('ip', ['-n', end.ns.name, 'link', 'set', end.device, 'up']);
      await end.ns.run('nft', ['-f', '-'], table(end.device, lossPercent));
      const shown = JSON.parse(await run('ip', ['-n', end.ns.name, '-j', 'link', 'show', end.device])) as Array<{ address: string }>;
      mac.set(end, shown[0].address);
    }
    // Static neighbours: no ARP on this link, as on a cellular or tunnelled one. A long cut would
    // otherwise leave a FAILED neighbour entry behind and new connections would get EHOSTUNREACH.
    for (const [end, peer] of [[link.a, link.b], [link.b, link.a]] as const) {
      await run('ip', ['-n', end.ns.name, 'neigh', 'replace', peer.address, 'lladdr', mac.get(peer)!, 'dev', end.device, 'nud', 'permanent']);
    }
    return link;
  }

  get isDown(): boolean {
    return this.down;
  }

  /** Start (on=true) or end a cut for `reason`; resolves once both ends drop (or pass) everything. */
  setCut(reason: string, on: boolean): Promise<void> {
    if (on) this.cuts.add(reason);
    else this.cuts.delete(reason);
    // Serialised, so overlapping outage and pull never leave a stale state behind.
    this.queue = this.queue.then(() => this.apply(), () => this.apply());
    return this.queue;
  }

  private async apply(): Promise<void> {
    const want = this.cuts.size > 0;
    if (want === this.down) return;
    await Promise.all([this.a, this.b].map((end) => end.ns.run('nft', ['-f', '-'],
      want ? `add rule netdev lossy cut_${end.device} drop\n` : `flush chain netdev lossy cut_${end.device}\n`)));
    this.down = want;
  }
}
