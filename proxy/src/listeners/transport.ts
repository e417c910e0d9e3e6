/**
 * What a listener hands to the relay for each accepted client: the relay's
 * ClientTransport (relay/transport.ts), with the fields the listeners in this
 * folder always fill in.
 */
import type tls from 'node:tls';
import type { ClientTransport } from '../relay/transport.ts';
import type { ProxyHeader } from './proxy-protocol.ts';

export type { ClientTransport } from '../relay/transport.ts';
export type TransportName = ClientTransport['transport'];

export interface AcceptedTransport extends ClientTransport {
  proxyHeader: ProxyHeader | null;
  tlsSocket: tls.TLSSocket | null;
  localAddress: string;
  localPort: number;
}
