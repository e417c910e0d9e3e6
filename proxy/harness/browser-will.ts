/**
 * A browser MQTT client's Will, timed: headless Chromium in a cable's network
 * namespace loads a page using mqtt.js's browser build (dist/mqtt.min.js) over
 * ws://, subscribes, publishes and receives its own message; then the page is
 * frozen (CDP Page.setWebLifecycleState 'frozen': no JS runs, so no PINGREQ,
 * while the browser's network stack keeps the TCP connection and answers
 * WebSocket pings) or the cable is pulled (nftables drops everything: a
 * laptop that left Wi-Fi). A watcher subscribed on the broker times the Will.
 * Used by proxy/test/browser.test.ts and proxy/bench/browser.ts.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import { createRequire } from 'node:module';
import mqtt from 'mqtt';
import { launchChromium } from './chromium.ts';
import type { Cable } from './netns.ts';

const MQTT_BROWSER_BUILD = createRequire(import.meta.url).resolve('mqtt/dist/mqtt.min');

const PAGE = `<!doctype html><meta charset="utf-8"><title>mqtt in a browser</title>
<script src="/mqtt.min.js"></script>
<script>
window.lastPacketAt = 0;
window.start = (url, clientId, keepalive, willTopic, protocolVersion) => new Promise((resolve, reject) => {
  const client = mqtt.connect(url, { clientId, keepalive, protocolVersion, reconnectPeriod: 0, connectTimeout: 10000,
    will: { topic: willTopic, payload: 'gone:' + clientId, qos: 1, retain: false } });
  window.client = client;
  client.on('packetsend', () => { window.lastPacketAt = Date.now(); });
  client.on('packetreceive', () => { window.lastPacketAt = Date.now(); });
  client.on('connect', () => client.subscribe('browser/echo/' + clientId, { qos: 1 }, (err) => {
    if (err) return reject(String(err));
    client.publish('browser/echo/' + clientId, 'hello from chromium', { qos: 1 });
  }));
  client.on('message', (topic, payload) => resolve({ topic, payload: payload.toString(), protocol: client.stream && client.stream.socket ? client.stream.socket.protocol : null }));
  client.on('error', (e) => reject(String(e)));
});
</script>`;

export interface BrowserWillOptions {
  cable: Cable;
  /** ws:// URL reachable from the namespace (on cable.hostAddress). */
  wsUrl: string;
  /** Where the watcher subscribes to the Will (mqtt:// on the root namespace). */
  watchUrl: string;
  mode: 'frozen' | 'cut';
  keepalive: number;
  protocolVersion?: 4 | 5;
  /** Stay connected this long before freezing/cutting, checking that no Will comes while the page lives. */
  aliveMs?: number;
  /** Give up waiting for the Will after this long, ms. */
  timeoutMs?: number;
}

export interface BrowserWillResult {
  /** What the page received back from its own publish. */
  echoed: string;
  /** The WebSocket subprotocol the page got. */
  subprotocol: string | null;
  /** A Will during the alive period (must not happen). */
  willWhileAlive: boolean;
  /** From the freeze/pull to the Will at the watcher, ms; null: none within timeoutMs. */
  willAfterMs: number | null;
  /** From the page's last MQTT packet (sent or received) to the Will, ms. */
  willAfterLastPacketMs: number | null;
}

let runs = 0;
const trace = process.env.MLP_TRACE ? (...a: unknown[]) => console.error(Date.now(), ...a) : () => {};

export async function measureBrowserWill(o: BrowserWillOptions): Promise<BrowserWillResult> {
  const clientId = `browser-${process.pid}-${runs++}`;
  const willTopic = `browser/will/${clientId}`;
  const page = http.createServer((req, res) => {
    if (req.url === '/mqtt.min.js') res.writeHead(200, { 'Content-Type': 'text/javascript' }).end(readFileSync(MQTT_BROWSER_BUILD));
    else res.writeHead(200, { 'Content-Type': 'text/html' }).end(PAGE);
  });
  await new Promise<void>((resolve) => page.listen(0, o.cable.hostAddress, resolve));
  const pageUrl = `http://${o.cable.hostAddress}:${(page.address() as net.AddressInfo).port}/`;
  const watcher = await mqtt.connectAsync(o.watchUrl, { reconnectPeriod: 0, clientId: `watch-${clientId}` }, false);
  let willAt: number | null = null;
  let notify: () => void = () => {};
  const willArrived = new Promise<void>((resolve) => { notify = resolve; });
  watcher.on('message', (topic) => {
    if (topic === willTopic && willAt === null) { willAt = Date.now(); notify(); }
  });
  await watcher.subscribeAsync(willTopic, { qos: 1 });
  trace('launch');
  const browser = await launchChromium({ cable: o.cable });
  trace('launched');
  try {
    await browser.send('Page.enable');
    await browser.send('Page.navigate', { url: pageUrl });
    for (let i = 0; (await browser.evaluate<string>('typeof window.start')) !== 'function'; i++) {
      if (i > 200) throw new Error('the page did not load');
      await new Promise((r) => setTimeout(r, 50));
    }
    const echo = await browser.evaluate<{ payload: string; protocol: string | null }>(
      `start(${JSON.stringify(o.wsUrl)}, ${JSON.stringify(clientId)}, ${o.keepalive}, ${JSON.stringify(willTopic)}, ${o.protocolVersion ?? 4})`);
    trace('echoed', echo);
    if (o.aliveMs) await new Promise((r) => setTimeout(r, o.aliveMs));
    const willWhileAlive = willAt !== null;
    const lastPacketAt = await browser.evaluate<number>('window.lastPacketAt');
    const cutAt = Date.now();
    if (o.mode === 'frozen') await browser.send('Page.setWebLifecycleState', { state: 'frozen' });
    else await o.cable.pull();
    trace('cut');
    const timeoutMs = o.timeoutMs ?? o.keepalive * 1500 + 30_000;
    await Promise.race([willArrived, new Promise((r) => setTimeout(r, timeoutMs))]);
    const at = willAt as number | null;
    return {
      echoed: echo.payload,
      subprotocol: echo.protocol,
      willWhileAlive,
      willAfterMs: at === null ? null : at - cutAt,
      willAfterLastPacketMs: at === null ? null : at - lastPacketAt,
    };
  } finally {
    trace('closing');
    await browser.close();
    trace('closed');
    await watcher.endAsync(true);
    if (o.cable.pulled) await o.cable.restore();
    // The page's keep-alive connection may have lost its FIN to the pulled cable.
    page.closeAllConnections();
    await new Promise<void>((resolve) => page.close(() => resolve()));
  }
}
