/**
 * Client -> broker backpressure: a client floods while the broker is stopped
 * (SIGSTOP). The proxy must stop reading from the client once the broker side
 * stops taking bytes, so what it holds stays bounded by socket buffers, not by
 * what the client is willing to send. The proxy runs as its own process (the
 * CLI) so its memory is measured alone: VmRSS from /proc.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import mqttPacket from 'mqtt-packet';
import { freePort, startMosquitto } from './helpers/mosquitto.ts';
import { spawnCli } from './helpers/cli.ts';
import { connectFrame, eventually, RawClient, sleep } from './helpers/clients.ts';

const MB = 1024 * 1024;
const mb = (n: number): string => `${(n / MB).toFixed(1)} MB`;

function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

t.test('broker stopped while a client floods: the proxy holds a bounded amount, then relays on after SIGCONT', async (t) => {
  const broker = await startMosquitto();
  t.teardown(async () => {
    broker.proc.kill('SIGCONT');
    await broker.stop();
  });
  const [listen, admin] = [await freePort(), await freePort()];
  const run = spawnCli(['--listen', `127.0.0.1:${listen}`, '--admin', `127.0.0.1:${admin}`, '--upstream', `127.0.0.1:${broker.port}`, '--broker', 'none', '--log-level', 'info']);
  t.teardown(() => { run.proc.kill('SIGKILL'); });
  await run.waitFor((l) => l.msg === 'admin server listening', 20_000, 'proxy started');
  const pid = run.proc.pid!;

  const client = await RawClient.connect(listen);
  t.teardown(() => client.destroy());
  client.write(connectFrame({ clientId: 'flooder', keepalive: 60 }));
  await client.waitForBytes(4);
  const frame = mqttPacket.generate({ cmd: 'publish', topic: 'flood/x', payload: Buffer.alloc(64 * 1024, 0x78), qos: 0, retain: false, dup: false });
  await sleep(300);
  const rssBefore = rssOf(pid);

  broker.proc.kill('SIGSTOP');
  // Flood: as fast as the socket takes it, until this process itself holds 16 MB it could not
  // send (the proxy stopped reading), or 8 s, or 256 MB offered: bounded either way.
  const OWN_QUEUE_CAP = 16 * MB;
  const started = performance.now();
  let offered = 0;
  let rssPeak = rssBefore;
  let blockedAt = -1;
  while (performance.now() - started < 8_000 && offered < 256 * MB) {
    if (client.socket.writableLength >= OWN_QUEUE_CAP) {
      if (blockedAt < 0) blockedAt = performance.now();
      if (performance.now() - blockedAt > 2_000) break; // blocked for 2 s: the proxy really stopped reading
      await sleep(50);
    } else {
      client.socket.write(frame);
      offered += frame.length;
      if (offered % (4 * MB) < frame.length) await new Promise((r) => setImmediate(r));
    }
    rssPeak = Math.max(rssPeak, rssOf(pid));
  }
  const intoKernel = offered - client.socket.writableLength;
  t.ok(blockedAt > 0, `the client's writes were held back: ${mb(offered)} offered, ${mb(intoKernel)} left its socket, ${Math.round(performance.now() - started)} ms`);
  t.ok(intoKernel < 64 * MB, `at most socket buffers' worth left the client (${mb(intoKernel)})`);
  const grew = rssPeak - rssBefore;
  t.ok(grew < 48 * MB, `the proxy's RSS grew by ${mb(grew)} (${mb(rssBefore)} -> peak ${mb(rssPeak)}) while ${mb(intoKernel)} came its way`);

  // SIGCONT: the backlog drains through the proxy, and the session still works.
  broker.proc.kill('SIGCONT');
  await eventually(() => client.socket.writableLength === 0, 30_000, 'the client\'s backlog drained');
  const before = client.received.length;
  client.write([0xc0, 0x00]); // PINGREQ
  await client.until(() => client.received.length >= before + 2, 15_000, 'PINGRESP after the flood');
  t.same([...client.received.subarray(before, before + 2)], [0xd0, 0x00], 'the session is alive');
  t.equal(client.closed, false);
  t.comment(`flood: ${mb(offered)} offered; RSS ${mb(rssBefore)} -> peak ${mb(rssPeak)}`);
});
