/**
 * A real browser as the MQTT client: headless Chromium (Debian's) in a network
 * namespace, mqtt.js's browser build over ws:// through the WebSocket listener
 * to a real Mosquitto. It subscribes, publishes and receives its own message;
 * then (1) the page is frozen, (2) the cable is pulled, and the Will must reach
 * a subscriber. While the page lives (1.75 keep-alive intervals) no Will comes.
 *
 * Phase 1: the listener only pipes to Mosquitto (no proxy liveness yet), so the
 * Will comes from Mosquitto's own keep-alive check (1.5 x keep-alive after the
 * client's last packet). Phase 2 runs the same page through the proxy with its
 * deadline. `npm run bench:browser` prints the side-by-side times.
 */
import t from 'tap';
import { createCable } from './helpers/netns.ts';
import { startMosquitto } from './helpers/mosquitto.ts';
import { startWsBridge } from './helpers/ws-bridge.ts';
import { measureBrowserWill } from './helpers/browser-will.ts';

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
