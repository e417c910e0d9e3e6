/**
 * Process accounting from /proc: CPU time (utime + stime, clock ticks) of a
 * process and its descendants (socat forks one child per connection), and
 * resident memory.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

let clkTck: number | null = null;

/** Clock ticks per second (getconf CLK_TCK; 100 on Linux). */
export function clockTicks(): number {
  if (clkTck === null) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

interface Stat {
  ppid: number;
  ticks: number;
}

function readStat(pid: number): Stat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name may hold spaces and parentheses: fields start after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
  return { ppid: Number(rest[1]), ticks: Number(rest[11]) + Number(rest[12]) };
}

/** CPU ticks of each process in the tree rooted at pid. */
export function treeTicks(pid: number): Map<number, number> {
  const all = new Map<number, Stat>();
  for (const name of readdirSync('/proc')) {
    const p = Number(name);
    if (!Number.isInteger(p) || p <= 0) continue;
    const s = readStat(p);
    if (s) all.set(p, s);
  }
  const children = new Map<number, number[]>();
  for (const [p, s] of all) {
    const list = children.get(s.ppid);
    if (list) list.push(p);
    else children.set(s.ppid, [p]);
  }
  const out = new Map<number, number>();
  const stack = [pid];
  while (stack.length > 0) {
    const p = stack.pop()!;
    const s = all.get(p);
    if (!s) continue;
    out.set(p, s.ticks);
    for (const c of children.get(p) ?? []) stack.push(c);
  }
  return out;
}

/** User and system CPU ticks of one process. */
export function userSystemTicks(pid: number): { user: number; system: number } {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { user: Number(rest[11]), system: Number(rest[12]) };
  } catch {
    return { user: NaN, system: NaN };
  }
}

/** CPU ticks of one process only (cheap). */
export function ownTicks(pid: number): number {
  return readStat(pid)?.ticks ?? 0;
}

/** A CPU snapshot; `since(prev)` gives the CPU seconds used in between. */
export class CpuSnapshot {
  private constructor(readonly pid: number, readonly tree: boolean, readonly ticks: Map<number, number>) {}

  static take(pid: number, tree = false): CpuSnapshot {
    return new CpuSnapshot(pid, tree, tree ? treeTicks(pid) : new Map([[pid, ownTicks(pid)]]));
  }

  /**
   * CPU seconds from `earlier` to this snapshot. Processes born in between count
   * from zero; processes that died in between are lost (take snapshots while
   * the connections are still open).
   */
  secondsSince(earlier: CpuSnapshot): number {
    let ticks = 0;
    for (const [p, t] of this.ticks) ticks += t - (earlier.ticks.get(p) ?? 0);
    return ticks / clockTicks();
  }
}

/** A field of /proc/<pid>/status in kB (VmRSS, VmHWM...). */
export function statusKb(pid: number, field: 'VmRSS' | 'VmHWM' | 'VmSize'): number {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

export function openFiles(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}

/** The soft and hard open-files limits of a process. */
export function fileLimits(pid: number | 'self' = 'self'): { soft: number; hard: number } {
  const text = readFileSync(`/proc/${pid}/limits`, 'utf8');
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(text);
  const n = (s: string | undefined): number => (s === undefined || s === 'unlimited' ? Infinity : Number(s));
  return { soft: n(m?.[1]), hard: n(m?.[2]) };
}

/** Whole-machine CPU counters from /proc/stat (ticks, all cores). */
export interface SystemCpu {
  busy: number;
  total: number;
  softirq: number;
}

export function systemCpu(): SystemCpu {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]; // cpu  user nice system idle iowait irq softirq steal
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = f[3] + f[4];
  return { busy: total - idle, total, softirq: f[6] };
}

/** Busy cores (0..ncpu) between two samples, and how much of it was softirq. */
export function busyCores(a: SystemCpu, b: SystemCpu, cores: number): { busy: number; softirq: number } {
  const total = b.total - a.total;
  if (total <= 0) return { busy: NaN, softirq: NaN };
  return { busy: ((b.busy - a.busy) / total) * cores, softirq: ((b.softirq - a.softirq) / total) * cores };
}

/**
 * CPU the rest of the machine uses (cores) while `ms` pass: all busy time
 * minus that of our own process tree (this process, the brokers, relays and
 * load generators it started).
 */
export class ForeignLoad {
  private readonly sys = systemCpu();
  private readonly ours = CpuSnapshot.take(process.pid, true);

  constructor(private readonly cores: number) {}

  /** Foreign cores busy since construction, and our own. */
  measure(): { foreign: number; ours: number; busy: number } {
    const sys = systemCpu();
    const ours = CpuSnapshot.take(process.pid, true);
    const total = sys.total - this.sys.total;
    if (total <= 0) return { foreign: NaN, ours: NaN, busy: NaN };
    const seconds = total / clockTicks() / this.cores;
    const busy = ((sys.busy - this.sys.busy) / total) * this.cores;
    const oursCores = ours.secondsSince(this.ours) / seconds;
    return { foreign: Math.max(0, busy - oursCores), ours: oursCores, busy };
  }
}

/**
 * Wait (at most maxWaitMs) until the rest of the machine uses less than
 * `threshold` cores over a 1 s window. Returns the last foreign load seen.
 */
export async function waitForQuiet(cores: number, threshold: number, maxWaitMs: number): Promise<number> {
  const end = Date.now() + maxWaitMs;
  let foreign: number;
  do {
    const f = new ForeignLoad(cores);
    await new Promise((r) => setTimeout(r, 1000));
    foreign = f.measure().foreign;
    if (foreign < threshold) return foreign;
  } while (Date.now() < end);
  return foreign;
}
