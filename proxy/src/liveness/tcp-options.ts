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
const TCP_THIN_LINEAR_TIMEOUTS = 16;
const TCP_RTO_MAX_MS = 44; // Linux >= 6.15 (1000..120000); ENOPROTOOPT before
// struct tcp_info byte offsets, each checked with offsetof() against linux/tcp.h (gcc, linux-libc-dev):
// u8 fields first, then u32 fields read as host-endian Uint32Array indexes (byte offset / 4).
const TCPI_BYTE_RETRANSMITS = 2; // icsk_retransmits: RTO retransmissions in the current episode
const TCPI_BYTE_PROBES = 3; // icsk_probes_out: keep-alive / zero-window probes sent and unanswered
const TCPI_BYTE_BACKOFF = 4;
const TCPI_RTO = 8 / 4; // microseconds
const TCPI_UNACKED = 24 / 4; // segments sent and not acknowledged
const TCPI_LOST = 32 / 4;
const TCPI_RETRANS = 36 / 4; // segments retransmitted and still unacknowledged
const TCPI_LAST_DATA_SENT = 44 / 4; // ms
const TCPI_LAST_DATA_RECV = 52 / 4; // ms
const TCPI_LAST_ACK_RECV = 56 / 4; // ms since the peer last acknowledged anything
const TCPI_RTT = 68 / 4; // microseconds, the kernel's smoothed RTT
const TCPI_RTTVAR = 72 / 4; // microseconds
const TCPI_TOTAL_RETRANS = 100 / 4; // lifetime retransmitted segments
const TCPI_SEGS_OUT = 136 / 4; // every segment sent, pure ACKs and probes included
const TCPI_SEGS_IN = 140 / 4;
const TCPI_NOTSENT_BYTES = 144 / 4; // queued in the kernel, not sent yet (e.g. behind a zero window)
const TCPI_DATA_SEGS_IN = 152 / 4;
const TCPI_DATA_SEGS_OUT = 156 / 4; // segments with payload sent, retransmissions included
/** Bytes of struct tcp_info we need the kernel to fill (up to data_segs_out: Linux >= 4.6). */
const TCPI_MIN_LEN = 160;

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
const tcpInfoBytes = new Uint8Array(tcpInfo.buffer);

const errnoNames = new Map<number, string>(
  Object.entries(osConstants.errno).map(([name, num]) => [num, name]),
);

function fdOf(socket: net.Socket): number {
  // Node keeps the fd on its internal handle; it is not public API.
  const fd: unknown = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
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
  return f.getsockopt(fd, level, name, intVal, lenVal) === 0 ? intVal[0] : null;
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

// Kept for the existing check in connection.ts: one TCP_INFO read, the two fields it needs.
export function tcpAckState(socket: net.Socket): TcpAckState | null {
  if (!fillTcpInfo(socket)) return null;
  return { unacked: tcpInfo[TCPI_UNACKED], msSinceLastAck: tcpInfo[TCPI_LAST_ACK_RECV] };
}

/** The struct tcp_info fields the liveness model reads. Times in ms unless the name says us. */
export interface TcpInfoSample {
  /** icsk_retransmits: RTO retransmissions in the current loss episode (0 once ACKed). */
  retransmits: number;
  /** icsk_probes_out: keep-alive (or zero-window) probes sent and not answered yet. */
  probes: number;
  backoff: number;
  rtoUs: number;
  unacked: number;
  lost: number;
  retrans: number;
  lastDataSentMs: number;
  lastDataRecvMs: number;
  /** Milliseconds since any ACK arrived (a keep-alive probe's answer included). */
  lastAckRecvMs: number;
  rttUs: number;
  rttvarUs: number;
  totalRetrans: number;
  segsOut: number;
  segsIn: number;
  dataSegsOut: number;
  dataSegsIn: number;
  /** Bytes queued in the kernel and not sent yet: > 0 behind a zero window, where probes are window probes. */
  notsentBytes: number;
}

export function newTcpInfoSample(): TcpInfoSample {
  return {
    retransmits: 0, probes: 0, backoff: 0, rtoUs: 0, unacked: 0, lost: 0, retrans: 0,
    lastDataSentMs: 0, lastDataRecvMs: 0, lastAckRecvMs: 0, rttUs: 0, rttvarUs: 0,
    totalRetrans: 0, segsOut: 0, segsIn: 0, dataSegsOut: 0, dataSegsIn: 0, notsentBytes: 0,
  };
}

function fillTcpInfo(socket: net.Socket): boolean {
  const f = loadFfi();
  const fd = fdOf(socket);
  if (!f || fd < 0) return false;
  lenVal[0] = tcpInfo.byteLength;
  if (f.getsockopt(fd, IPPROTO_TCP, TCP_INFO, tcpInfo, lenVal) !== 0) return false;
  return lenVal[0] >= TCPI_MIN_LEN;
}

/**
 * Read TCP_INFO into a caller-owned sample (reuse one: no allocation per read).
 * False when it cannot be read (no fd, no koffi, kernel older than 4.6); `into` is then untouched.
 */
export function readTcpInfo(socket: net.Socket, into: TcpInfoSample): boolean {
  if (!fillTcpInfo(socket)) return false;
  const w = tcpInfo;
  into.retransmits = tcpInfoBytes[TCPI_BYTE_RETRANSMITS]!;
  into.probes = tcpInfoBytes[TCPI_BYTE_PROBES]!;
  into.backoff = tcpInfoBytes[TCPI_BYTE_BACKOFF]!;
  into.rtoUs = w[TCPI_RTO]!;
  into.unacked = w[TCPI_UNACKED]!;
  into.lost = w[TCPI_LOST]!;
  into.retrans = w[TCPI_RETRANS]!;
  into.lastDataSentMs = w[TCPI_LAST_DATA_SENT]!;
  into.lastDataRecvMs = w[TCPI_LAST_DATA_RECV]!;
  into.lastAckRecvMs = w[TCPI_LAST_ACK_RECV]!;
  into.rttUs = w[TCPI_RTT]!;
  into.rttvarUs = w[TCPI_RTTVAR]!;
  into.totalRetrans = w[TCPI_TOTAL_RETRANS]!;
  into.segsOut = w[TCPI_SEGS_OUT]!;
  into.segsIn = w[TCPI_SEGS_IN]!;
  into.dataSegsOut = w[TCPI_DATA_SEGS_OUT]!;
  into.dataSegsIn = w[TCPI_DATA_SEGS_IN]!;
  into.notsentBytes = w[TCPI_NOTSENT_BYTES]!;
  return true;
}

/** Kernel probe timers to change on a live socket; a field left out is left as it is. */
export interface TcpProbeTimers {
  idleSeconds?: number;
  intervalSeconds?: number;
  count?: number;
  /** TCP_USER_TIMEOUT; 0 resets it to the kernel default. */
  userTimeoutMs?: number;
  /** TCP_THIN_LINEAR_TIMEOUTS: no RTO backoff for the first 6 retransmissions of a thin stream. */
  thinLinearTimeouts?: boolean;
  /** TCP_RTO_MAX_MS (Linux >= 6.15): cap on the retransmission backoff, 1000..120000 ms. */
  rtoMaxMs?: number;
}

/**
 * Change keep-alive timing / user timeout on a connected socket (the adaptive model does it per
 * connection). Returns null on success, else why not (no fd, no koffi, or the kernel's errno);
 * options set before a failing one stay set. Never throws.
 */
export function setTcpProbeTimers(socket: net.Socket, t: TcpProbeTimers): string | null {
  const f = loadFfi();
  if (!f) return loadError;
  const fd = fdOf(socket);
  if (fd < 0) return 'socket has no file descriptor';
  try {
    if (t.idleSeconds !== undefined) setInt(f, fd, IPPROTO_TCP, TCP_KEEPIDLE, t.idleSeconds, 'TCP_KEEPIDLE');
    if (t.intervalSeconds !== undefined) setInt(f, fd, IPPROTO_TCP, TCP_KEEPINTVL, t.intervalSeconds, 'TCP_KEEPINTVL');
    if (t.count !== undefined) setInt(f, fd, IPPROTO_TCP, TCP_KEEPCNT, t.count, 'TCP_KEEPCNT');
    if (t.userTimeoutMs !== undefined) setInt(f, fd, IPPROTO_TCP, TCP_USER_TIMEOUT, t.userTimeoutMs, 'TCP_USER_TIMEOUT');
    if (t.thinLinearTimeouts !== undefined) {
      setInt(f, fd, IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, t.thinLinearTimeouts ? 1 : 0, 'TCP_THIN_LINEAR_TIMEOUTS');
    }
    if (t.rtoMaxMs !== undefined) setInt(f, fd, IPPROTO_TCP, TCP_RTO_MAX_MS, t.rtoMaxMs, 'TCP_RTO_MAX_MS');
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

/** TCP_THIN_LINEAR_TIMEOUTS and TCP_RTO_MAX_MS of the socket (null: cannot be read; rtoMaxMs null before Linux 6.15). */
export function readRetransmitOptions(socket: net.Socket): { thinLinearTimeouts: boolean; rtoMaxMs: number | null } | null {
  const f = loadFfi();
  const fd = fdOf(socket);
  if (!f || fd < 0) return null;
  const thin = getInt(f, fd, IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS);
  if (thin === null) return null;
  return { thinLinearTimeouts: thin !== 0, rtoMaxMs: getInt(f, fd, IPPROTO_TCP, TCP_RTO_MAX_MS) };
}
