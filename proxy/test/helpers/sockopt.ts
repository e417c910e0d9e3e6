/**
 * Socket options the node API does not expose, set through koffi (as
 * proxy/src/liveness/tcp-options.ts does), for tests that need a stall soon.
 */
import { createRequire } from 'node:module';
import type net from 'node:net';

/** SO_RCVBUF on a socket: a small receive window fills after a few KB. Returns what happened, for a comment. */
export function shrinkReceiveBuffer(socket: net.Socket, bytes: number): string {
  try {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi').default;
    const libc = koffi.load('libc.so.6');
    const setsockopt = libc.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)');
    const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
    if (fd < 0) return 'no fd';
    const SOL_SOCKET = 1;
    const SO_RCVBUF = 8;
    return setsockopt(fd, SOL_SOCKET, SO_RCVBUF, new Int32Array([bytes]), 4) === 0 ? `SO_RCVBUF ${bytes}` : 'setsockopt failed';
  } catch (err) {
    return `koffi unavailable: ${(err as Error).message}`;
  }
}
