/**
 * proxyProtocol.trusted: the CIDR list of peers (load balancers) whose
 * connections must start with a PROXY header. net.BlockList does the matching,
 * including IPv4-mapped IPv6 peers (::ffff:10.0.0.5 matches 10.0.0.0/8).
 */
import net from 'node:net';

export class TrustedSources {
  private readonly list = new net.BlockList();
  readonly size: number;

  /** Throws a message naming the entry when one is not a valid address or CIDR. */
  constructor(readonly cidrs: readonly string[]) {
    for (const entry of cidrs) {
      const [address, prefixText, extra] = entry.trim().split('/');
      const family = net.isIP(address ?? '');
      const type = family === 6 ? 'ipv6' : 'ipv4';
      const max = family === 6 ? 128 : 32;
      const prefix = prefixText === undefined ? max : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
      if (family === 0 || extra !== undefined || !(prefix >= 0 && prefix <= max)) {
        throw new Error(`proxyProtocol.trusted: ${JSON.stringify(entry)} is not an IPv4/IPv6 address or CIDR (e.g. 10.0.0.0/8, fd00::/8)`);
      }
      this.list.addSubnet(address, prefix, type);
    }
    this.size = cidrs.length;
  }

  /** Whether a peer address (as net.Socket.remoteAddress gives it) is listed. */
  has(address: string | undefined): boolean {
    if (!address || this.size === 0) return false;
    const family = net.isIP(address);
    if (family === 0) return false;
    return this.list.check(address, family === 6 ? 'ipv6' : 'ipv4');
  }
}
