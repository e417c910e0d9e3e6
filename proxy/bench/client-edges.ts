/**
 * `node --import tsx proxy/bench/client-edges.ts [--window 7]` (no root needed):
 * what real clients do when a server (the proxy, when the broker is down)
 * ends their connection in different ways. Decides the proxy's defaults for an
 * unreachable broker and for the MQTT 5 DISCONNECT reason (issue 14 item 5).
 *
 * A tiny fake server per case reads the CONNECT and then:
 *   connack-refused     CONNACK 3 "server unavailable" (5: 0x88) and closes
 *   close-no-connack    closes without CONNACK
 *   close-after-connack CONNACK 0, closes 300 ms later (bare close mid-session)
 *   disconnect-0xNN     (MQTT 5) CONNACK 0, DISCONNECT reason 0xNN 300 ms later, closes
 * Clients, each with its defaults, run for the window (default 7 s):
 *   mqtt.js (npm, reconnectPeriod default 1000), Paho Python (Debian
 *   python3-paho-mqtt, loop_forever()), mosquitto_sub (Debian).
 * Printed per case and client: connections the server saw in the window
 * (> 1: the client reconnects), whether the client exited, and its first error.
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import { parseArgs } from 'node:util';
import { findExecutable } from '../src/broker/supervisor.ts';

const { values } = parseArgs({ options: { window: { type: 'string' } } });
const WINDOW_MS = Number(values.window ?? 7) * 1000;

type Version = 4 | 5;
interface Case { name: string; version: Version; after: (socket: net.Socket, version: Version) => void }

const CONNACK_OK = { 4: Buffer.from([0x20, 0x02, 0x00, 0x00]), 5: Buffer.from([0x20, 0x03, 0x00, 0x00, 0x00]) };
const later = (fn: () => void) => setTimeout(fn, 300);
const cases: Case[] = [];
for (const version of [4, 5] as const) {
  cases.push({ name: 'connack-refused', version, after: (s) => s.end(version === 5 ? Buffer.from([0x20, 0x03, 0x00, 0x88, 0x00]) : Buffer.from([0x20, 0x02, 0x00, 0x03])) });
  cases.push({ name: 'close-no-connack', version, after: (s) => s.end() });
  cases.push({ name: 'close-after-connack', version, after: (s) => { s.write(CONNACK_OK[version]); later(() => s.end()); } });
}
for (const code of [0x88, 0x89, 0x8b, 0x80]) {
  cases.push({ name: `disconnect-0x${code.toString(16)}`, version: 5, after: (s) => { s.write(CONNACK_OK[5]); later(() => s.end(Buffer.from([0xe0, 0x02, code, 0x00]))); } });
}

/** Counts connections; answers each once a whole CONNECT arrived. */
async function fakeServer(c: Case): Promise<{ port: number; connections: () => number; close: () => void }> {
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = Buffer.alloc(0);
    let answered = false;
    socket.on('data', (d) => {
      if (answered) return;
      buf = Buffer.concat([buf, d]);
      let length = 0;
      let i = 1;
      for (let mul = 1; i < buf.length && i <= 4; i++, mul *= 128) {
        length += (buf[i] & 0x7f) * mul;
        if ((buf[i] & 0x80) === 0) break;
      }
      if (i >= buf.length || buf.length < i + 1 + length) return;
      answered = true;
      c.after(socket, c.version);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => connections,
    close: () => { for (const s of sockets) s.destroy(); server.close(); },
  };
}

const MQTTJS = `
const mqtt = require('mqtt');
const [port, version, id] = process.argv.slice(1);
const c = mqtt.connect({ host: '127.0.0.1', port: Number(port), protocolVersion: Number(version), clientId: id });
c.on('error', (e) => console.log('error: ' + e.message));
c.on('disconnect', (p) => console.log('disconnect packet 0x' + (p.reasonCode ?? 0).toString(16)));
`;
const PAHO = `
import sys, paho.mqtt.client as mqtt
port, version, cid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311)
def on_connect(c, u, f, rc, props=None): print("connack rc=%s" % rc, flush=True)
def on_disconnect(c, u, rc, props=None): print("disconnect rc=%s" % rc, flush=True)
c.on_connect = on_connect; c.on_disconnect = on_disconnect
c.connect("127.0.0.1", port, 60)
c.loop_forever()
print("loop_forever returned", flush=True)
`;

interface Outcome { connections: number; exited: boolean; exitCode: number | null; said: string }

async function runClient(client: 'mqtt.js' | 'paho' | 'mosquitto_sub', c: Case, index: number): Promise<Outcome> {
  const server = await fakeServer(c);
  const id = `edge-${index}-${client}`;
  const [cmd, args] =
    client === 'mqtt.js' ? [process.execPath, ['-e', MQTTJS, String(server.port), String(c.version), id]]
    : client === 'paho' ? ['/usr/bin/python3', ['-c', PAHO, String(server.port), String(c.version), id]]
    : [findExecutable('mosquitto_sub')!, ['-h', '127.0.0.1', '-p', String(server.port), '-t', 'edge', '-i', id, '-V', c.version === 5 ? '5' : '311']];
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let said = '';
  proc.stdout.on('data', (d: Buffer) => { said += d.toString(); });
  proc.stderr.on('data', (d: Buffer) => { said += d.toString(); });
  let exited = false;
  const exitedP = new Promise<void>((resolve) => proc.once('exit', () => { exited = true; resolve(); }));
  await Promise.race([exitedP, new Promise((r) => setTimeout(r, WINDOW_MS))]);
  const outcome = { connections: server.connections(), exited, exitCode: proc.exitCode, said: summarize(said) };
  proc.kill('SIGKILL');
  server.close();
  return outcome;
}

/** The distinct lines, in order, with counts. */
function summarize(text: string): string {
  const counts = new Map<string, number>();
  for (const line of text.split('\n').map((l) => l.trim()).filter(Boolean)) counts.set(line, (counts.get(line) ?? 0) + 1);
  return [...counts].map(([l, n]) => (n > 1 ? `${l} (x${n})` : l)).join(' | ').slice(0, 160);
}

const clients = ['mqtt.js', 'paho', 'mosquitto_sub'] as const;
const jobs = cases.flatMap((c, i) => clients.map((client) => ({ c, client, run: () => runClient(client, c, i) })));
// Six at a time: bounded load on a shared machine.
const results: Array<{ c: Case; client: string; o: Outcome }> = [];
for (let i = 0; i < jobs.length; i += 6) {
  const batch = jobs.slice(i, i + 6);
  const outs = await Promise.all(batch.map((j) => j.run()));
  batch.forEach((j, k) => results.push({ c: j.c, client: j.client, o: outs[k] }));
}
console.log(`window ${WINDOW_MS / 1000} s; "reconnects" = the server saw more than one connection`);
for (const r of results) {
  const verdict = r.o.connections > 1 ? `reconnects (${r.o.connections} conns)` : r.o.exited ? `exits (code ${r.o.exitCode})` : 'stays down (1 conn, alive)';
  console.log(`${`${r.c.name} v${r.c.version === 5 ? '5' : '3.1.1'}`.padEnd(28)} ${r.client.padEnd(14)} ${verdict.padEnd(26)} ${r.o.said}`);
}
