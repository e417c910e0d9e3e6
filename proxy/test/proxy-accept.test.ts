/**
 * readProxyHeader() on real sockets: a header split over writes with MQTT
 * right behind it (put back for the next reader, who resumes), a bad header,
 * a peer that closes early, and one that never finishes (deadline).
 */
import t, { type Test } from 'tap';
import net from 'node:net';
import { readProxyHeader, effectivePeer, type ProxyAcceptResult } from '../src/listeners/proxy-accept.ts';
import { connectFrame, sleep } from './helpers/clients.ts';

/** A listener whose first accepted socket is handed to `use`; returns the client side. */
async function pair(t: Test, use: (socket: net.Socket) => void): Promise<net.Socket> {
  const server = net.createServer(use);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  client.on('error', () => {});
  await new Promise((r) => client.once('connect', r));
  t.teardown(() => client.destroy());
  return client;
}

t.test('split header, MQTT behind it is read by the next reader', async (t) => {
  const connect = connectFrame({ clientId: 'behind-header', keepalive: 10 });
  let result!: Promise<ProxyAcceptResult>;
  let server!: net.Socket;
  const client = await pair(t, (s) => { server = s; result = readProxyHeader(s, { timeoutMs: 5000 }); });
  client.write('PROXY TCP6 2001:db8::5 2001:db8::1 4');
  await sleep(30);
  client.write(Buffer.concat([Buffer.from('0000 1883\r\n'), connect.subarray(0, 7)]));
  const r = await result;
  t.match(r, { ok: true, header: { source: { address: '2001:db8::5', port: 40000 } } });
  t.same(effectivePeer(server, r.ok ? r.header : null), { remoteAddress: '2001:db8::5', remotePort: 40000, localAddress: '2001:db8::1', localPort: 1883 });
  const got: Buffer[] = [];
  server.on('data', (d) => got.push(d));
  server.resume();
  client.write(connect.subarray(7));
  while (Buffer.concat(got).length < connect.length) await sleep(10);
  t.ok(Buffer.concat(got).equals(connect), 'the bytes after the header arrive unchanged and in order');
});

t.test('bad header, early close, deadline', async (t) => {
  let bad!: Promise<ProxyAcceptResult>;
  const c1 = await pair(t, (s) => { bad = readProxyHeader(s, { timeoutMs: 5000 }); });
  c1.write(connectFrame({ clientId: 'no-header', keepalive: 10 }));
  t.match(await bad, { ok: false, code: 'not_proxy_protocol' });

  let early!: Promise<ProxyAcceptResult>;
  const c2 = await pair(t, (s) => { early = readProxyHeader(s, { timeoutMs: 5000 }); });
  c2.end('PROXY TCP4 1.2');
  t.match(await early, { ok: false, code: 'closed' });

  let slow!: Promise<ProxyAcceptResult>;
  let server!: net.Socket;
  const c3 = await pair(t, (s) => { server = s; slow = readProxyHeader(s, { timeoutMs: 300 }); });
  const start = performance.now();
  c3.write('PROXY TCP4 1.2.3.4 ');
  t.match(await slow, { ok: false, code: 'timeout' });
  const waited = Math.round(performance.now() - start);
  t.ok(waited >= 250, `deadline kept (${waited} ms)`);
  t.same(effectivePeer(server, null).remoteAddress, '127.0.0.1', 'without a header the TCP peer is the client');
});
