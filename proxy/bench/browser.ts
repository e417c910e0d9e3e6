/**
 * `npm run bench:browser` (root): time from a frozen page / a pulled cable to
 * the Will for a browser client (headless Chromium, mqtt.js browser build over
 * ws://), side by side for each WebSocket endpoint:
 * - listener->mosquitto: this project's WebSocket listener piping to Debian's
 *   Mosquitto 2.0.11 over TCP, no proxy liveness (phase 1 baseline; Mosquitto's
 *   own WebSocket listener does not start on Debian 12: "Unable to start any
 *   listening sockets");
 * - aedes-ws: Aedes (the npm broker) behind a plain ws server, as a broker
 *   with its own WebSocket endpoint;
 * - proxy->mosquitto: the proxy's WebSocket listener (websocket.listen, default
 *   keep-alive policy: deadline keep-alive + min(2, keep-alive/2) s) in front of Mosquitto.
 * Method in proxy/harness/browser-will.ts. Runs one after another (one
 * Chromium at a time). Options: --keep-alive N (default 10), --mode frozen|cut (repeatable).
 */
import net from 'node:net';
import http from 'node:http';
import { parseArgs } from 'node:util';
import { Aedes } from 'aedes';
import { WebSocketServer, createWebSocketStream } from 'ws';
import { createCable, type Cable } from '../harness/netns.ts';
import { startMosquitto } from '../harness/mosquitto.ts';
import { startWsBridge } from '../harness/ws-bridge.ts';
import { measureBrowserWill, type BrowserWillResult } from '../harness/browser-will.ts';
import { startProxy } from '../harness/proxy.ts';

const { values } = parseArgs({ options: { 'keep-alive': { type: 'string' }, mode: { type: 'string', multiple: true } } });
const keepalive = Number(values['keep-alive'] ?? 10);
const modes = (values.mode ?? ['frozen', 'cut']) as Array<'frozen' | 'cut'>;

interface Endpoint { name: string; wsUrl: string; watchUrl: string; close(): Promise<void> }

async function listenerToMosquitto(cable: Cable): Promise<Endpoint> {
  const mosquitto = await startMosquitto();
  const bridge = await startWsBridge(mosquitto, { host: cable.hostAddress });
  return {
    name: 'listener->mosquitto', wsUrl: `ws://${cable.hostAddress}:${bridge.port}/mqtt`, watchUrl: mosquitto.url,
    async close() { await bridge.close(); await mosquitto.stop(); },
  };
}

async function proxyToMosquitto(cable: Cable): Promise<Endpoint> {
  const mosquitto = await startMosquitto();
  const proxy = await startProxy(mosquitto.port, { websocket: { listen: `${cable.hostAddress}:0` }, logLevel: 'warn' });
  return {
    name: 'proxy->mosquitto', wsUrl: `ws://${cable.hostAddress}:${proxy.app.websocket!.address().port}/mqtt`, watchUrl: mosquitto.url,
    async close() { await proxy.stop(); await mosquitto.stop(); },
  };
}

async function aedesWs(cable: Cable): Promise<Endpoint> {
  const aedes = await Aedes.createBroker();
  const tcp = net.createServer((socket) => aedes.handle(socket));
  await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
  const httpServer = http.createServer();
  const wss = new WebSocketServer({ server: httpServer });
  wss.on('connection', (ws) => aedes.handle(createWebSocketStream(ws)));
  await new Promise<void>((resolve) => httpServer.listen(0, cable.hostAddress, resolve));
  return {
    name: 'aedes-ws', wsUrl: `ws://${cable.hostAddress}:${(httpServer.address() as net.AddressInfo).port}/mqtt`,
    watchUrl: `mqtt://127.0.0.1:${(tcp.address() as net.AddressInfo).port}`,
    async close() {
      for (const ws of wss.clients) ws.terminate();
      httpServer.closeAllConnections();
      await new Promise<void>((r) => httpServer.close(() => r()));
      await new Promise<void>((r) => tcp.close(() => r()));
      await new Promise<void>((r) => aedes.close(() => r()));
    },
  };
}

const cable = await createCable('bbrw');
const rows: Array<{ endpoint: string; mode: string } & Partial<BrowserWillResult> & { error?: string }> = [];
try {
  for (const make of [proxyToMosquitto, aedesWs, listenerToMosquitto]) {
    for (const mode of modes) {
      const endpoint = await make(cable);
      try {
        const r = await measureBrowserWill({ cable, wsUrl: endpoint.wsUrl, watchUrl: endpoint.watchUrl, mode, keepalive, aliveMs: 1000 });
        rows.push({ endpoint: endpoint.name, mode, ...r });
      } catch (err) {
        rows.push({ endpoint: endpoint.name, mode, error: (err as Error).message });
      } finally {
        await endpoint.close();
      }
      const last = rows.at(-1)!;
      console.error(`${last.endpoint} ${last.mode}: ${last.error ?? `Will ${last.willAfterMs} ms after, ${last.willAfterLastPacketMs} ms after the last packet`}`);
    }
  }
} finally {
  await cable.destroy();
}
const s = (ms: number | null | undefined) => (ms === null || ms === undefined ? '   none' : `${(ms / 1000).toFixed(1).padStart(6)} s`);
console.log(`\nBrowser (headless Chromium, mqtt.js browser build, keep-alive ${keepalive} s): time to Will`);
console.log('endpoint              mode     after freeze/pull  after last packet  exchange');
for (const r of rows) {
  console.log(`${r.endpoint.padEnd(21)} ${r.mode.padEnd(8)} ${s(r.willAfterMs).padStart(17)}  ${s(r.willAfterLastPacketMs).padStart(17)}  ${r.error ? `ERROR ${r.error}` : r.echoed === 'hello from chromium' ? 'ok' : 'FAILED'}`);
}
