/**
 * A real browser as the MQTT client: headless Chromium (Debian's) in a network
 * namespace, mqtt.js's browser build over ws:// through the WebSocket listener
 * to a real Mosquitto. It subscribes, publishes and receives its own message;
 * then (1) the page is frozen, (2) the cable is pulled, and the Will must reach
 * a subscriber. While the page lives (1.75 keep-alive intervals) no Will comes.
 *
 * Through the bare WebSocket listener (a bridge to Mosquitto, no proxy
 * liveness) the Will comes from Mosquitto's own keep-alive check (1.5 x
 * keep-alive after the client's last packet). Through the proxy's WebSocket
 * listener (websocket.listen) it comes at the proxy's deadline: keep-alive +
 * grace after the last packet. `npm run bench:browser` prints the side-by-side times.
 */
import t from 'tap';
import { createCable } from './helpers/netns.ts';
import { startMosquitto } from './helpers/mosquitto.ts';
import { startWsBridge } from './helpers/ws-bridge.ts';
import { measureBrowserWill } from './helpers/browser-will.ts';
import { startProxy } from './helpers/proxy.ts';

const KEEPALIVE = 4;

const cable = await createCable('brw');
t.teardown(() => cable.destroy());
const mosquitto = await startMosquitto();
t.teardown(() => mosquitto.stop());
const bridge = await startWsBridge(mosquitto, { host: cable.hostAddress });
t.teardown(() => bridge.close());
const wsUrl = `ws://${cable.hostAddress}:${bridge.port}/mqtt`;

for (const mode of ['frozen', 'cut'] as const) {
  t.test(`browser over ws://, page ${mode === 'frozen' ? 'frozen' : 'network cut'}: exchange, then the Will`, async (t) => {
    const r = await measureBrowserWill({ cable, wsUrl, watchUrl: mosquitto.url, mode, keepalive: KEEPALIVE, aliveMs: KEEPALIVE * 1750 });
    t.equal(r.echoed, 'hello from chromium', 'subscribe, publish and receive from the browser');
    t.notOk(r.willWhileAlive, 'no Will while the page lives and pings');
    t.not(r.willAfterMs, null, `the Will arrived (${r.willAfterMs} ms after the ${mode === 'frozen' ? 'freeze' : 'pull'})`);
    // Mosquitto ends the session 1.5 x keep-alive after the client's last packet.
    t.ok(r.willAfterLastPacketMs! >= KEEPALIVE * 1000, `not before one keep-alive after the last packet (${r.willAfterLastPacketMs} ms)`);
    t.ok(r.willAfterMs! <= KEEPALIVE * 1500 + 5000, `within Mosquitto's 1.5 x keep-alive plus slack (${r.willAfterMs} ms)`);
    t.same(bridge.refusals, []);
  });
}

// The proxy: its WebSocket listener on the cable's host side, keep-alive + 1 s grace.
const GRACE = 1;
const proxy = await startProxy(mosquitto.port, { websocket: { listen: `${cable.hostAddress}:0` }, keepAlive: { grace: GRACE } });
t.teardown(() => proxy.stop());
const proxyWsUrl = `ws://${cable.hostAddress}:${proxy.app.websocket!.address().port}/mqtt`;

for (const mode of ['frozen', 'cut'] as const) {
  t.test(`browser through the proxy's WebSocket listener, page ${mode === 'frozen' ? 'frozen' : 'network cut'}: the Will at the proxy's deadline`, async (t) => {
    const r = await measureBrowserWill({ cable, wsUrl: proxyWsUrl, watchUrl: mosquitto.url, mode, keepalive: KEEPALIVE, aliveMs: KEEPALIVE * 1750 });
    t.equal(r.echoed, 'hello from chromium', 'subscribe, publish and receive from the browser through the proxy');
    t.notOk(r.willWhileAlive, 'no Will while the page lives and pings');
    t.not(r.willAfterMs, null, `the Will arrived (${r.willAfterMs} ms after the ${mode === 'frozen' ? 'freeze' : 'pull'})`);
    const end = proxy.closes.filter((e) => e.transport === 'ws').at(-1);
    t.match(end, { reason: 'keepalive_timeout', transport: 'ws' }, 'ended by the proxy: keepalive_timeout on a ws connection');
    // The proxy never cuts before keep-alive + grace of silence (its own clock), and the Will follows at once.
    t.ok(end!.silenceMs >= (KEEPALIVE + GRACE) * 1000 - 5, `silence at the verdict ${Math.round(end!.silenceMs)} ms >= keep-alive + grace`);
    t.ok(r.willAfterLastPacketMs! >= KEEPALIVE * 1000, `not before one keep-alive after the last packet (${r.willAfterLastPacketMs} ms)`);
    t.ok(r.willAfterMs! <= (KEEPALIVE + GRACE) * 1000 + 3000, `within the proxy's deadline plus slack (${r.willAfterMs} ms; Mosquitto alone: up to ${KEEPALIVE * 1500} ms after the last packet)`);
  });
}
