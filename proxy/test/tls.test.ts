/**
 * The TLS listener in front of a real Mosquitto, with certificates made by
 * openssl for the test: mqtt.js over mqtts:// beside the plaintext listener,
 * TCP liveness options on the TLS sockets, client certificates, a verifying
 * client refusing an untrusted server, certificate rotation without dropping
 * open connections (and a bad new set keeping the old one), admission limits
 * before the handshake, and DISCONNECT 0x8B to an MQTT 5 client on shutdown.
 */
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { request } from 'undici';
import { readTcpLiveness } from '../src/liveness/tcp-options.ts';
import { startMosquitto } from './helpers/mosquitto.ts';
import { startProxy, type TestProxy } from './helpers/proxy.ts';
import { connectClient, eventually, nextMessages } from './helpers/clients.ts';
import type { ConfigInput } from '../src/config/types.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'mlp-tls-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string): string => path.join(dir, name);

function openssl(args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(name: string): void {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${name}`]);
}

/** A certificate with a chosen serial, signed by `ca` (or self-signed when ca is null). */
function makeCert(name: string, ca: string | null, serial: string, server: boolean): void {
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
  writeFileSync(file(`${name}.ext`), server ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' : 'extendedKeyUsage=clientAuth\n');
  const signer = ca ? ['-CA', `${ca}.crt`, '-CAkey', `${ca}.key`] : ['-signkey', `${name}.key`];
  openssl(['x509', '-req', '-in', `${name}.csr`, ...signer, '-set_serial', serial, '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.crt`]);
}

makeCa('ca');
makeCa('other-ca');
makeCert('server-a', 'ca', '0x1001', true);
makeCert('server-b', 'ca', '0x1002', true);
makeCert('self-signed', null, '0x2001', true);
makeCert('client-good', 'ca', '0x3001', false);
makeCert('client-bad', 'other-ca', '0x3002', false);
const pem = (name: string): Buffer => readFileSync(file(name));
const fingerprint = (crt: string): string => new X509Certificate(pem(crt)).fingerprint256;

/** Replace a file the way a deployment tool does: write beside it, then rename over it. */
function replace(target: string, content: Buffer | string): void {
  writeFileSync(`${target}.tmp`, content);
  renameSync(`${target}.tmp`, target);
}

/**
 * One connection attempt that does not hang: with TLS 1.3 a client learns that
 * the server refused its certificate only as a closed connection after its own
 * handshake finished, which mqtt.js connectAsync does not turn into an error.
 */
function attempt(url: string, options: IClientOptions): Promise<string> {
  return new Promise((resolve) => {
    const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
    const done = (outcome: string): void => { client.end(true); resolve(outcome); };
    client.once('connect', () => done('connected'));
    client.once('error', (e: Error & { code?: string | number }) => done(`error ${e.code ?? ''} ${e.message}`));
    client.once('close', () => done('closed'));
  });
}

function peer(client: MqttClient): tls.PeerCertificate {
  return (client.stream as tls.TLSSocket).getPeerCertificate();
}

async function rejectedTotal(proxy: TestProxy, reason: string): Promise<number> {
  const text = await (await request(`${proxy.adminUrl}/metrics`)).body.text();
  return Number(new RegExp(`^mqtt_liveness_connects_rejected_total\\{reason="${reason}"\\} (\\S+)$`, 'm').exec(text)?.[1]);
}

const broker = await startMosquitto();
t.teardown(() => broker.stop());

async function tlsProxy(t: Test, tlsConfig: NonNullable<ConfigInput['tls']>, extra: ConfigInput = {}): Promise<{ proxy: TestProxy; url: string }> {
  const proxy = await startProxy(broker.port, { tls: { listen: '127.0.0.1:0', ...tlsConfig }, probes: { enabled: false }, ...extra });
  t.teardown(() => proxy.stop());
  return { proxy, url: `mqtts://127.0.0.1:${proxy.app.tls!.address().port}` };
}

t.test('mqtts through the TLS listener, beside the plaintext one; TCP liveness options on TLS sockets', async (t) => {
  const live = file('live');
  writeFileSync(`${live}.crt`, pem('server-a.crt'));
  writeFileSync(`${live}.key`, pem('server-a.key'));
  const { proxy, url } = await tlsProxy(t, { cert: `${live}.crt`, key: `${live}.key` });
  const secure = await connectClient(url, { ca: pem('ca.crt'), clientId: 'tls-sub' });
  const plain = await connectClient(proxy.url, { clientId: 'plain-pub', protocolVersion: 5 });
  t.teardown(() => { secure.end(true); plain.end(true); });
  t.equal(peer(secure).serialNumber, '1001');
  t.ok((secure.stream as tls.TLSSocket).authorized, 'the client verified the server against the CA');
  await secure.subscribeAsync('tls/t', { qos: 1 });
  const got = nextMessages(secure, 1);
  await plain.publishAsync('tls/t', 'plain to tls', { qos: 1 });
  t.equal((await got)[0].payload.toString(), 'plain to tls');

  const conns = [...proxy.app.proxy.connections];
  const tlsConn = conns.find((c) => c.connect?.clientId === 'tls-sub')!;
  t.ok(tlsConn, 'the TLS client is a relayed connection like any other');
  const socket = tlsConn.transport.stream as tls.TLSSocket;
  t.ok(socket instanceof tls.TLSSocket);
  const k = tlsConn.liveness.kernelSettings();
  const applied = readTcpLiveness(socket);
  t.match(applied, { keepAlive: true, idleSeconds: k.idleSeconds, intervalSeconds: k.intervalSeconds }, 'this connection\'s keep-alive timing set on the TLS socket fd');
  t.ok(applied!.userTimeoutMs >= k.userTimeoutMs && applied!.count >= k.count, 'the kernel\'s backstop (TCP_USER_TIMEOUT, TCP_KEEPCNT) set too');
  t.notOk(proxy.logs.some((l) => /falling back to setKeepAlive/.test(String(l.msg))), 'no fallback warning');
  t.match(proxy.logs.find((l) => l.msg === 'TLS listener listening'), { serialNumber: '1001', requestCert: false });
});

t.test('client certificates: required and verified against tls.ca', async (t) => {
  const { proxy, url } = await tlsProxy(t, { cert: file('server-a.crt'), key: file('server-a.key'), ca: file('ca.crt'), requestCert: true });
  const good = await connectClient(url, { ca: pem('ca.crt'), cert: pem('client-good.crt'), key: pem('client-good.key') });
  t.ok(good.connected, 'a client certificate from tls.ca is accepted');
  good.end(true);
  const bad = await attempt(url, { ca: pem('ca.crt'), cert: pem('client-bad.crt'), key: pem('client-bad.key') });
  t.not(bad, 'connected', `a certificate from another CA is refused (${bad})`);
  const none = await attempt(url, { ca: pem('ca.crt') });
  t.not(none, 'connected', `no certificate is refused (${none})`);
  const failures = proxy.logs.filter((l) => l.event === 'tls_handshake_failed').map((l) => String(l.error));
  t.equal(failures.length, 2, `the proxy logged both handshakes as failed: ${failures.join('; ')}`);
  t.equal(proxy.app.proxy.connections.size, 0, 'neither became a relayed connection');
});

t.test('a verifying client refuses a server certificate it does not trust', async (t) => {
  const { proxy, url } = await tlsProxy(t, { cert: file('self-signed.crt'), key: file('self-signed.key') });
  const outcome = await attempt(url, { ca: pem('ca.crt') });
  t.match(outcome, /^error .*(SELF_SIGNED|UNABLE_TO_VERIFY|unable to verify|self.signed)/i, `refused: ${outcome}`);
  await eventually(() => proxy.app.proxy.admission.openCount === 0, 2000, 'the socket freed');
  t.pass('a client that leaves mid-handshake frees its socket at once (not after the handshake timeout)');
  const trusting = await connectClient(url, { ca: pem('self-signed.crt') });
  t.ok(trusting.connected, 'the same server is fine for a client that trusts it');
  trusting.end(true);
});

t.test('rotation: new connections get the new certificate, open ones stay; a bad new set keeps the old one', async (t) => {
  const live = file('rotating');
  writeFileSync(`${live}.crt`, pem('server-a.crt'));
  writeFileSync(`${live}.key`, pem('server-a.key'));
  const { proxy, url } = await tlsProxy(t, { cert: `${live}.crt`, key: `${live}.key` });
  const old = await connectClient(url, { ca: pem('ca.crt'), clientId: 'old' });
  t.teardown(() => old.end(true));
  t.equal(peer(old).serialNumber, '1001');
  t.equal(peer(old).fingerprint256, fingerprint('server-a.crt'));
  await old.subscribeAsync('rot/t', { qos: 1 });

  const changedAt = performance.now();
  replace(`${live}.key`, pem('server-b.key'));
  replace(`${live}.crt`, pem('server-b.crt'));
  const loaded = await eventually(() => proxy.logs.find((l) => l.event === 'tls_reloaded'), 10_000, 'tls_reloaded');
  t.comment(`rotation picked up ${Math.round(performance.now() - changedAt)} ms after the files changed`);
  t.match(loaded, { serialNumber: '1002', previous: '1001', trigger: 'files changed' });
  t.notOk(proxy.logs.some((l) => l.event === 'tls_reload_failed'), 'cert and key written one after the other loaded as a pair');
  const fresh = await connectClient(url, { ca: pem('ca.crt'), clientId: 'fresh' });
  t.teardown(() => fresh.end(true));
  t.equal(peer(fresh).serialNumber, '1002', 'a new connection sees the new serial');
  t.equal(peer(fresh).fingerprint256, fingerprint('server-b.crt'));
  t.ok(old.connected, 'the old connection is still up');
  t.equal(peer(old).serialNumber, '1001', 'and still on its session with the old certificate');
  const got = nextMessages(old, 1);
  await fresh.publishAsync('rot/t', 'across the rotation', { qos: 1 });
  t.equal((await got)[0].payload.toString(), 'across the rotation', 'the old connection still relays');

  replace(`${live}.crt`, 'not a certificate\n');
  const bad = await eventually(() => proxy.logs.find((l) => l.event === 'tls_reload_failed'), 10_000, 'tls_reload_failed');
  t.match(bad, { level: 'error', serving: '1002', error: /no start line|PEM/ }, `logged why: ${String(bad!.error)}`);
  const still = await connectClient(url, { ca: pem('ca.crt') });
  t.equal(peer(still).serialNumber, '1002', 'the previous certificate is still served');
  still.end(true);

  replace(`${live}.crt`, pem('server-a.crt')); // the key is still server-b's
  const mismatch = await eventually(() => proxy.logs.filter((l) => l.event === 'tls_reload_failed')[1], 10_000, 'second tls_reload_failed');
  t.match(mismatch, { error: /key values mismatch/ }, `logged why: ${String(mismatch.error)}`);
  const again = await connectClient(url, { ca: pem('ca.crt') });
  t.equal(peer(again).serialNumber, '1002');
  again.end(true);
  t.ok(old.connected && fresh.connected, 'no connection was dropped by any of it');
});

t.test('limits apply before the handshake; MQTT 5 over TLS gets DISCONNECT 0x8B on shutdown', async (t) => {
  const { proxy, url } = await tlsProxy(t, { cert: file('server-a.crt'), key: file('server-a.key') }, { limits: { maxConnectionsPerSource: 1 } });
  const v5 = await connectClient(url, { ca: pem('ca.crt'), protocolVersion: 5 });
  const port = proxy.app.tls!.address().port;
  const refused = await new Promise<string>((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca: pem('ca.crt') });
    s.once('secureConnect', () => { s.destroy(); resolve('handshake completed'); });
    s.once('error', (e: Error & { code?: string }) => resolve(e.code ?? e.message));
  });
  t.match(refused, /ECONNRESET|socket disconnected|EPIPE/, `the second TLS socket from 127.0.0.1 closed before a handshake (${refused})`);
  t.equal(await rejectedTotal(proxy, 'limit_per_source'), 1);
  t.match(proxy.logs.find((l) => l.event === 'connection_refused'), { listener: 'mqtts', reason: 'limit_per_source' });

  const told = new Promise<number | undefined>((resolve) => {
    v5.once('disconnect', (p) => resolve(p.reasonCode));
    v5.once('close', () => resolve(undefined));
  });
  await proxy.stop();
  t.equal(await told, 0x8b, 'DISCONNECT 0x8B reached the TLS client');
});

t.test('a configuration reload can point at other files and require client certificates', async (t) => {
  const { proxy, url } = await tlsProxy(t, { cert: file('server-a.crt'), key: file('server-a.key') });
  const before = await connectClient(url, { ca: pem('ca.crt') });
  t.teardown(() => before.end(true));
  t.equal(peer(before).serialNumber, '1001');
  const running = proxy.app.config;
  const plan = proxy.app.reconfigure({
    ...running,
    tls: { ...running.tls, listen: { host: '127.0.0.1', port: 1 }, cert: file('server-b.crt'), key: file('server-b.key'), ca: file('ca.crt'), requestCert: true },
  });
  t.same(plan.changed, ['tls.cert', 'tls.key', 'tls.ca', 'tls.requestCert']);
  t.same(plan.restartNeeded, ['tls.listen'], 'the TLS address stays');
  t.same(proxy.app.config.tls.listen, { host: '127.0.0.1', port: 0 });
  t.match(proxy.logs.find((l) => l.event === 'tls_reloaded'), { trigger: 'configuration reloaded', serialNumber: '1002', requestCert: true });
  t.not(await attempt(url, { ca: pem('ca.crt') }), 'connected', 'a client without a certificate is now refused');
  const withCert = await connectClient(url, { ca: pem('ca.crt'), cert: pem('client-good.crt'), key: pem('client-good.key') });
  t.equal(peer(withCert).serialNumber, '1002', 'new connections get the new files');
  withCert.end(true);
  t.ok(before.connected, 'the connection from before is still up');
});
