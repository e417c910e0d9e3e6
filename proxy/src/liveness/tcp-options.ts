// Per-socket TCP liveness (keep-alive timing + TCP_USER_TIMEOUT) on Linux.
//
// Node only exposes SO_KEEPALIVE + TCP_KEEPIDLE (socket.setKeepAlive); the probe
// interval, probe count and TCP_USER_TIMEOUT need setsockopt, and changing the
// net.ipv4.tcp_keepalive_* sysctls would affect the whole host. So we call libc
// setsockopt on the socket's fd through koffi, and degrade to setKeepAlive when
// that is impossible (non-Linux, koffi missing, no fd: unconnected socket or a
// stream-wrapped socket; tls.TLSSocket over TCP does expose the fd on Node 20).
import type net from 'node:net';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';

export interface TcpLivenessOptions {
  idleSeconds: number;
  intervalSeconds: number;
  count: number;
  /** 0 = leave TCP_USER_TIMEOUT unset (kernel default). */
  userTimeoutMs: number;
}

export interface TcpLivenessResult {
  mode: 'native' | 'fallback' | 'none';
  error?: string;
}

export interface TcpLivenessReadback {
  keepAlive: boolean;
  idleSeconds: number;
  intervalSeconds: number;
  count: number;
  userTimeoutMs: number;
}

// Linux constants (uapi: asm-generic/socket.h, linux/tcp.h).
const SOL_SOCKET = 1;
const SO_KEEPALIVE = 9;
const IPPROTO_TCP = 6;
const TCP_KEEPIDLE = 4;
const TCP_KEEPINTVL = 5;
const TCP_KEEPCNT = 6;
const TCP_INFO = 11;
const TCP_USER_TIMEOUT = 18;
// struct tcp_info: 8 x u8, then u32 rto, ato, snd_mss, rcv_mss, unacked -> byte 24
// (checked with offsetof against linux/tcp.h). Read as host-endian u32 index 6.
const TCPI_UNACKED_INDEX = 6;
// ... then u32 sacked, lost, retrans, fackets, last_data_sent, last_ack_sent, last_data_recv,
// last_ack_recv -> byte 56 (milliseconds since the last ACK arrived).
const TCPI_LAST_ACK_RECV_INDEX = 14;

type SockoptFn = (fd: number, level: number, name: number, val: unknown, len: unknown) => number;
interface Ffi {
  setsockopt: SockoptFn;
  getsockopt: SockoptFn;
  errno: () => number;
}

// undefined = not tried yet; null = tried and failed (loadError says why). Loaded once.
let ffi: Ffi | null | undefined;
let loadError = '';

function loadFfi(): Ffi | null {
  if (ffi !== undefined) return ffi;
  try {
    if (process.platform !== 'linux') throw new Error(`unsupported platform ${process.platform}`);
    // require() so a missing/broken koffi install only disables the native path.
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi').default;
    const libc = koffi.load('libc.so.6');
    // Typed arrays/Buffers are passed by reference for plain pointers, so getsockopt
    // writes straight into them (no _Out_ copy-back needed).
    ffi = {
      setsockopt: libc.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)'),
      getsockopt: libc.func('int getsockopt(int fd, int level, int optname, void *optval, uint32_t *optlen)'),
      errno: () => koffi.errno(),
    };
  } catch (err) {
    ffi = null;
    loadError = `koffi/libc unavailable: ${(err as Error).message}`;
  }
  return ffi;
}

// Reused scratch memory: this runs once per accepted connection, so no per-call allocation.
const intVal = new Int32Array(1);
const lenVal = new Uint32Array(1);
const tcpInfo = new Uint32Array(64); // 256 bytes; kernel truncates struct tcp_info to this

const errnoNames = new Map<number, string>(
  Object.entries(osConstants.errno).map(([name, num]) => [num, name]),
);

function fdOf(socket: net.Socket): number {
  const fd: unknown = (socket as any)._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : -1;
}

function setInt(f: Ffi, fd: number, level: number, name: number, value: number, label: string): void {
  intVal[0] = value;
  if (f.setsockopt(fd, level, name, intVal, 4) !== 0) {
    const e = f.errno();
    throw new Error(`setsockopt(${label}=${value}) failed: ${errnoNames.get(e) ?? 'errno ' + e}`);
  }
}

function getInt(f: Ffi, fd: number, level: number, name: number): number | null {
  lenVal[0] = 4;
  return f.getsockopt(fd, level, name, intVal, lenVal) === 0 ? intVal[0]! : null;
}

/**
 * Enable keep-alive with the given timing (and TCP_USER_TIMEOUT) on a connected socket.
 * Never throws and never logs: on failure it falls back to socket.setKeepAlive (idle
 * only, kernel-default interval/count) and reports the reason so the caller can warn.
 * Do not call socket.setKeepAlive afterwards: libuv would reset interval/count.
 */
export function applyTcpLiveness(socket: net.Socket, opts: TcpLivenessOptions): TcpLivenessResult {
  let error: string;
  const f = loadFfi();
  const fd = fdOf(socket);
  if (!f) error = loadError;
  else if (fd < 0) error = 'socket has no file descriptor (not connected, or wrapping a non-TCP stream)';
  else {
    try {
      setInt(f, fd, SOL_SOCKET, SO_KEEPALIVE, 1, 'SO_KEEPALIVE');
      setInt(f, fd, IPPROTO_TCP, TCP_KEEPIDLE, opts.idleSeconds, 'TCP_KEEPIDLE');
      setInt(f, fd, IPPROTO_TCP, TCP_KEEPINTVL, opts.intervalSeconds, 'TCP_KEEPINTVL');
      setInt(f, fd, IPPROTO_TCP, TCP_KEEPCNT, opts.count, 'TCP_KEEPCNT');
      if (opts.userTimeoutMs > 0) {
        setInt(f, fd, IPPROTO_TCP, TCP_USER_TIMEOUT, opts.userTimeoutMs, 'TCP_USER_TIMEOUT');
      }
      return { mode: 'native' };
    } catch (err) {
      error = (err as Error).message;
    }
  }
  try {
    socket.setKeepAlive(true, opts.idleSeconds * 1000);
    return { mode: 'fallback', error };
  } catch (err) {
    return { mode: 'none', error: `${error}; setKeepAlive failed: ${(err as Error).message}` };
  }
}

/** Read the kernel's current liveness settings for the socket (null if not possible). */
export function readTcpLiveness(socket: net.Socket): TcpLivenessReadback | null {
  const f = loadFfi();
  const fd = fdOf(socket);
  if (!f || fd < 0) return null;
  const keepAlive = getInt(f, fd, SOL_SOCKET, SO_KEEPALIVE);
  const idleSeconds = getInt(f, fd, IPPROTO_TCP, TCP_KEEPIDLE);
  const intervalSeconds = getInt(f, fd, IPPROTO_TCP, TCP_KEEPINTVL);
  const count = getInt(f, fd, IPPROTO_TCP, TCP_KEEPCNT);
  const userTimeoutMs = getInt(f, fd, IPPROTO_TCP, TCP_USER_TIMEOUT);
  if (keepAlive === null || idleSeconds === null || intervalSeconds === null || count === null || userTimeoutMs === null) {
    return null;
  }
  return { keepAlive: keepAlive !== 0, idleSeconds, intervalSeconds, count, userTimeoutMs };
}

/** Segments in flight and milliseconds since the peer last acknowledged anything (TCP_INFO). */
export interface TcpAckState {
  /**
   * tcpi_unacked: segments sent but not acknowledged. Non-zero when a dead peer
   * was detected while data was pending (a user-timeout case); zero for an idle
   * connection killed by keep-alive probes.
   */
  unacked: number;
  msSinceLastAck: number;
}

export function tcpAckState(socket: net.Socket): TcpAckState | null {
  const f = loadFfi();
  const fd = fdOf(socket);
  if (!f || fd < 0) return null;
  lenVal[0] = tcpInfo.byteLength;
  if (f.getsockopt(fd, IPPROTO_TCP, TCP_INFO, tcpInfo, lenVal) !== 0) return null;
  if (lenVal[0]! < (TCPI_LAST_ACK_RECV_INDEX + 1) * 4) return null;
  return { unacked: tcpInfo[TCPI_UNACKED_INDEX]!, msSinceLastAck: tcpInfo[TCPI_LAST_ACK_RECV_INDEX]! };
}
