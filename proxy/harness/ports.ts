/**
 * Ports for tests that run in parallel with other test files (tap runs two at
 * once) and other processes on the machine.
 *
 * A port number whose probe socket was closed can be handed to anyone before
 * the test binds it. Instead, `reservedPort()` keeps a socket bound to the port
 * (SO_REUSEADDR, never listening) for the life of the test process:
 * - the kernel's port-0 allocation skips it, so no other test or process is
 *   given it, even across broker restarts on that port;
 * - a server that binds it with SO_REUSEADDR (Node and Mosquitto both set it)
 *   may still bind and listen on it;
 * - while no server listens, a connection to it is refused: a "closed" upstream
 *   that stays closed.
 * `closedPort()` is the same without SO_REUSEADDR: nobody can bind it at all.
 *
 * Node cannot bind a TCP socket without listening, so this goes through libc
 * with koffi (a dependency of the proxy already, see tcp-options.ts).
 */
import { createRequire } from 'node:module';
import { isIPv4 } from 'node:net';

type Fn = (...args: unknown[]) => number;
let libc: { socket: Fn; setsockopt: Fn; bind: Fn; getsockname: Fn; close: Fn } | null = null;

function sys(): NonNullable<typeof libc> {
  if (libc) return libc;
  const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi').default;
  const lib = koffi.load('libc.so.6');
  libc = {
    socket: lib.func('int socket(int domain, int type, int protocol)') as Fn,
    setsockopt: lib.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)') as Fn,
    bind: lib.func('int bind(int fd, const void *addr, uint32_t len)') as Fn,
    getsockname: lib.func('int getsockname(int fd, _Out_ uint8_t *addr, _Inout_ uint32_t *len)') as Fn,
    close: lib.func('int close(int fd)') as Fn,
  };
  return libc;
}

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;

const held = new Set<number>();
process.once('exit', () => { for (const fd of held) sys().close(fd); });

function hold(host: string, shareable: boolean): number {
  if (!isIPv4(host)) throw new Error(`test ports: IPv4 addresses only (got ${host})`);
  const c = sys();
  const fd = c.socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw new Error('test ports: socket() failed');
  if (shareable && c.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, new Int32Array([1]), 4) !== 0) {
    c.close(fd);
    throw new Error('test ports: setsockopt(SO_REUSEADDR) failed');
  }
  const addr = Buffer.alloc(16);
  addr.writeUInt16LE(AF_INET, 0); // sa_family is host order (little-endian here)
  addr.writeUInt16BE(0, 2); // port 0: the kernel picks a free one
  Buffer.from(host.split('.').map(Number)).copy(addr, 4);
  if (c.bind(fd, addr, 16) !== 0) {
    c.close(fd);
    throw new Error(`test ports: bind(${host}:0) failed`);
  }
  const out = Buffer.alloc(16);
  if (c.getsockname(fd, out, [16]) !== 0) {
    c.close(fd);
    throw new Error('test ports: getsockname() failed');
  }
  held.add(fd);
  return out.readUInt16BE(2);
}

/** A port no one else is given while this process lives; a server of this test may bind it (SO_REUSEADDR). */
export function reservedPort(host = '127.0.0.1'): number {
  return hold(host, true);
}

/** A port where connections are refused for the life of this process: bound, never listening, not shareable. */
export function closedPort(host = '127.0.0.1'): number {
  return hold(host, false);
}
