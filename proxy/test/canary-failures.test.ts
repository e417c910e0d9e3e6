/**
 * The canary's failure paths reach /readyz with their reason: a SUBSCRIBE to
 * the deep probe topic refused, a broker that sends DISCONNECT, and a packet
 * that cannot be decoded. A tiny broker on a raw socket plays the broker:
 * Mosquitto cannot be made to do any of these on cue. (canary.test.ts covers
 * the paths Mosquitto can show: stopped, not there, wrong password.)
 */
import t from 'tap';
import net from 'node:net';
import { startProxy } from './helpers/proxy.ts';
import { metricsText, readyz } from './helpers/admin.ts';


/**
 * A broker that answers CONNECT with a success CONNACK (the MQTT 5 form, which an
 * MQTT 3.1.1 parser reads too), every PINGREQ with `onPing`, and a SUBSCRIBE with
 * a SUBACK carrying `subackCode`; counts its sessions.
 */
async function scriptedBroker(script: { onPing?: Buffer; subackCode?: number; protocolVersion: 4 | 5 }): Promise<{ port: number; sessions: () => number; close(): Promise<void> }> {
  let sessions = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sessions++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      // One packet per chunk: the canary waits for each answer before the next packet.
      if (d[0] === 0x10) s.write(Buffer.from(script.protocolVersion === 5 ? [0x20, 0x03, 0x00, 0x00, 0x00] : [0x20, 0x02, 0x00, 0x00]));
      else if (d[0] === 0xc0 && script.onPing) s.write(script.onPing);
      else if (d[0] === 0x82 && script.subackCode !== undefined) {
        const v5 = script.protocolVersion === 5;
        s.write(Buffer.from([0x90, v5 ? 4 : 3, d[2], d[3], ...(v5 ? [0x00] : []), script.subackCode])); // same packet id
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    sessions: () => sessions,
    close: () => new Promise((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()); }),
  };
}

// Mosquitto 2.0 grants a SUBSCRIBE its ACL denies (code 0, then withholds the messages),
// so the refusal comes from the scripted broker.
for (const [protocolVersion, code] of [[4, 0x80], [5, 0x87]] as const) {
  t.test(`deep probe SUBSCRIBE refused (MQTT ${protocolVersion === 5 ? '5' : '3.1.1'} SUBACK 0x${code.toString(16)}): /readyz 503 says so`, async (t) => {
    const broker = await scriptedBroker({ subackCode: code, protocolVersion });
    const proxy = await startProxy(broker.port, { probes: { interval: 1, timeout: 0.5, deepTopic: 'mlp/denied', protocolVersion } });
    t.teardown(async () => {
      await proxy.stop();
      await broker.close();
    });
    const r = await readyz(proxy);
    t.equal(r.status, 503);
    t.equal(r.body.checks.broker.ok, false);
    t.equal(r.body.checks.broker.detail, `cannot connect to the broker: SUBSCRIBE to the deep probe topic refused (code ${code}); no probe has succeeded yet`);
    t.equal(r.body.checks.upstream.ok, true, 'while the broker itself accepts connections');
    const text = await metricsText(proxy);
    t.match(text, /^mqtt_liveness_broker_probe_failures_total\{probe="ping",reason="connect"\} [1-9]/m, 'counted as a connect failure');
    t.match(text, /^mqtt_liveness_broker_up 0$/m);
  });
}

t.test('the broker sends DISCONNECT: /readyz 503 with the reason code', async (t) => {
  const broker = await scriptedBroker({ onPing: Buffer.from([0xe0, 0x01, 0x89]), protocolVersion: 5 }); // DISCONNECT 0x89 (server busy)
  const proxy = await startProxy(broker.port, { probes: { interval: 1, timeout: 0.5, protocolVersion: 5 } });
  t.teardown(async () => {
    await proxy.stop();
    await broker.close();
  });
  const r = await readyz(proxy);
  t.equal(r.status, 503);
  t.match(r.body.checks.broker.detail, /^the canary session was closed: the broker sent DISCONNECT 0x89; no probe has succeeded yet$/, r.body.checks.broker.detail);
  t.match(await metricsText(proxy), /^mqtt_liveness_broker_probe_failures_total\{probe="ping",reason="closed"\} [1-9]/m, 'counted as a closed session');
});

t.test('an undecodable packet from the broker: /readyz 503 says so, the session is dropped and retried', async (t) => {
  const broker = await scriptedBroker({ onPing: Buffer.from([0x00, 0x00]), protocolVersion: 4 }); // packet type 0 is reserved
  const proxy = await startProxy(broker.port, { probes: { interval: 1, timeout: 0.5 } });
  t.teardown(async () => {
    await proxy.stop();
    await broker.close();
  });
  const r = await readyz(proxy);
  t.equal(r.status, 503);
  t.match(r.body.checks.broker.detail, /^the canary session was closed: undecodable packet from the broker: .+; no probe has succeeded yet$/, r.body.checks.broker.detail);
  const before = broker.sessions();
  const deadline = performance.now() + 5_000;
  while (broker.sessions() === before && performance.now() < deadline) await new Promise((res) => setTimeout(res, 50));
  t.ok(broker.sessions() > before, `a new session after the bad one (${broker.sessions()} sessions)`);
  t.equal((await readyz(proxy)).status, 503, 'still not ready');
});
