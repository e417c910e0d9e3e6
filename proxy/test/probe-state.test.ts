/**
 * The canary's state machine on a ManualClock: probe scheduling, answers and
 * timeouts, the readiness window, up/down transitions, reconnect backoff.
 */
import t from 'tap';
import { once } from 'node:events';
import net from 'node:net';
import { ManualClock, systemClock } from '../src/liveness/clock.ts';
import { PINGREQ_BYTES } from '../src/mqtt/packets.ts';
import { ProbeState, type BrokerState, type ProbeOptions } from '../src/probes/probe-state.ts';
import { connectFrame, eventually, sleep } from './helpers/clients.ts';
import { startMosquitto } from './helpers/mosquitto.ts';

interface Harness {
  clock: ManualClock;
  probe: ProbeState;
  calls: string[];
  states: Array<[BrokerState, string]>;
  rtts: Array<[string, number]>;
  failures: string[];
  /** Clock times of every ping() and publish() call. */
  pings: number[];
  publishes: Array<[number, number]>;
}

function harness(options: Partial<ProbeOptions> = {}): Harness {
  const clock = new ManualClock();
  const h: Harness = { clock, probe: null as unknown as ProbeState, calls: [], states: [], rtts: [], failures: [], pings: [], publishes: [] };
  h.probe = new ProbeState(clock, { intervalMs: 1000, timeoutMs: 500, deep: false, random: () => 0.5, ...options }, {
    connect: () => h.calls.push('connect'),
    disconnect: () => h.calls.push('disconnect'),
    ping: () => { h.calls.push('ping'); h.pings.push(clock.now()); },
    publish: (seq) => { h.calls.push(`publish ${seq}`); h.publishes.push([seq, clock.now()]); },
  }, {
    onState: (state, why) => h.states.push([state, why]),
    onRtt: (kind, ms) => h.rtts.push([kind, ms]),
    onFailure: (kind, reason) => h.failures.push(`${kind}:${reason}`),
  });
  return h;
}

/** Start and open the session at once. */
function running(options: Partial<ProbeOptions> = {}): Harness {
  const h = harness(options);
  h.probe.start();
  h.probe.connected();
  return h;
}

t.test('a ping at once after CONNACK, then one per interval; answered pings keep the state up', async (t) => {
  const h = harness();
  t.equal(h.probe.state, 'starting');
  t.same(h.probe.readiness(), { ok: false, detail: 'the canary has no answer from the broker yet' });
  h.probe.start();
  t.same(h.calls, ['connect']);
  t.same(h.probe.readiness(), { ok: false, detail: 'the canary has no answer from the broker yet (connecting)' });
  h.clock.advance(3);
  h.probe.connected();
  t.same(h.pings, [3], 'first PINGREQ right after the session opened');
  h.clock.advance(2);
  h.probe.pingResp();
  t.equal(h.probe.state, 'up');
  t.same(h.rtts, [['ping', 2]]);
  t.equal(h.states.length, 1);
  t.match(h.states[0][1], /PINGRESP in 2\.00 ms/);
  for (let i = 0; i < 5; i++) {
    h.clock.advance(1000); // the next PINGREQ went out 2 ms ago
    h.probe.pingResp();
  }
  t.same(h.pings, [3, 1003, 2003, 3003, 4003, 5003], 'one PINGREQ per interval, no drift');
  t.equal(h.rtts.length, 6);
  t.same(h.failures, []);
  t.equal(h.states.length, 1, 'no further state change');
  const ready = h.probe.readiness();
  t.equal(ready.ok, true);
  t.equal(ready.detail, 'broker answers probes: PINGRESP in 2.00 ms, 0.00 s ago');
});

t.test('an unanswered ping turns the state down after the timeout (plus one loop turn)', async (t) => {
  const h = running();
  h.probe.pingResp();
  t.equal(h.probe.state, 'up');
  h.clock.advance(1000); // ping 2 goes out at 1000
  h.clock.advance(499);
  t.equal(h.probe.state, 'up', 'not before the timeout');
  h.clock.advance(1);
  // The deadline arms a 0 ms confirmation, which the manual clock fires at once.
  t.equal(h.probe.state, 'down');
  t.same(h.failures, ['ping:timeout']);
  t.equal(h.states.at(-1)![1], 'no PINGRESP within 0.50 s');
  const r = h.probe.readiness();
  t.equal(r.ok, false);
  t.match(r.detail, /^no PINGRESP within 0\.50 s; last success 1\.50 s ago$/);
});

t.test('an answer already waiting when the deadline fires still counts (stalled process, real timers)', async (t) => {
  // The real case: a PINGREQ goes to a real Mosquitto, and this process then blocks its
  // event loop well past the probe timeout. Mosquitto (another process) answers at once,
  // so the PINGRESP waits in the socket while the deadline passes. When the loop turns
  // again, timers run before sockets are read: the deadline fires first and must give the
  // waiting answer one more turn of the loop instead of blaming the broker.
  //
  // The PINGREQ is written in the check phase (setImmediate) of the turn the probe asked for
  // it, and the stall follows at once, so the next phase is the timers phase, before any
  // socket read. (Blocking inside the timer that asked would not do: the loop polls sockets
  // before the next timers phase.) Written from the probe's own timer instead, the PINGRESP
  // of an idle, fast Mosquitto was now and then read in that turn's poll phase, before the
  // stall: such a round proves nothing, and CI once saw only 2 of 8 rounds prove it.
  const broker = await startMosquitto();
  t.teardown(() => broker.stop());
  const socket = net.connect({ host: broker.host, port: broker.port, noDelay: true });
  t.teardown(() => { socket.destroy(); });
  await once(socket, 'connect');
  const timeoutMs = 100;
  const blockMs = 500;
  const failures: string[] = [];
  /** Per stalled round: the PINGREQ's time, and when the PINGRESP was read. */
  const stalledRounds: Array<{ sentAt: number; stallEnd: number; readAt: number }> = [];
  let stallNext = false;
  const probe = new ProbeState(systemClock, { intervalMs: 700, timeoutMs, deep: false, random: () => 0.5 }, {
    connect: () => socket.write(connectFrame({ clientId: 'probe-state-stall', keepalive: 30 })),
    disconnect: () => socket.destroy(),
    ping: () => {
      if (!stallNext) {
        socket.write(PINGREQ_BYTES);
        return;
      }
      const round = { sentAt: performance.now(), stallEnd: -1, readAt: -1 };
      stalledRounds.push(round);
      setImmediate(() => {
        socket.write(PINGREQ_BYTES);
        // Busy-wait: the stalled process (GC pause, CPU starvation, a long synchronous job).
        const until = performance.now() + blockMs;
        while (performance.now() < until) { /* stalled */ }
        round.stallEnd = performance.now();
      });
    },
    publish: () => undefined,
  }, {
    onFailure: (kind, reason, detail) => failures.push(`${kind}:${reason}: ${detail}`),
  });
  t.teardown(() => probe.stop());
  let buffered = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => {
    buffered = Buffer.concat([buffered, d]);
    while (buffered.length >= 2 && buffered.length >= 2 + buffered[1]) {
      const type = buffered[0] >> 4;
      buffered = buffered.subarray(2 + buffered[1]);
      if (type === 2) probe.connected(); // CONNACK
      else if (type === 13) {
        const last = stalledRounds.at(-1);
        if (last && last.readAt < 0) last.readAt = performance.now();
        probe.pingResp();
      }
    }
  });
  probe.start();
  await eventually(() => probe.state === 'up', 10_000, 'first probe answered');
  // Stalled rounds until three of them had their answer read only after the stall (each one
  // should: the answer can only arrive during the stall).
  stallNext = true;
  const proving = (): typeof stalledRounds => stalledRounds.filter((r) => r.stallEnd > 0 && r.readAt >= r.stallEnd);
  await eventually(() => proving().length >= 3 || stalledRounds.length >= 8 || failures.length > 0, 20_000, 'stalled rounds');
  stallNext = false;
  await sleep(50);
  t.same(failures, [], 'no probe failure: the answers were waiting in the socket');
  const proven = proving();
  t.ok(proven.length >= 3, `${proven.length} of ${stalledRounds.length} stalled rounds had the PINGRESP waiting through a ${blockMs} ms stall, past the ${timeoutMs} ms deadline`);
  t.ok(proven.every((r) => r.readAt - r.sentAt > timeoutMs), 'each read after its deadline had passed');
  t.equal(probe.state, 'up');
  t.equal(probe.lateAnswers, 0);
});

t.test('the broker comes back: a late answer triggers a new probe at once', async (t) => {
  const h = running();
  h.probe.pingResp();
  h.clock.advance(1000 + 500); // ping 2 times out
  t.equal(h.probe.state, 'down');
  h.clock.advance(300); // t = 1800: SIGCONT; the broker answers ping 2 late
  h.probe.pingResp();
  t.equal(h.probe.state, 'down', 'a late answer is not a success');
  t.same(h.pings, [0, 1000, 1800], 'but a fresh PINGREQ goes out at once');
  t.equal(h.probe.lateAnswers, 1);
  t.equal(h.probe.lastLateRtt, 800);
  h.clock.advance(1);
  h.probe.pingResp();
  t.equal(h.probe.state, 'up', 'up one round trip after the broker came back');
  t.equal(h.probe.readiness().ok, true);
  h.clock.advance(1000);
  t.same(h.pings, [0, 1000, 1800, 2800], 'the schedule restarts from the fresh probe');
});

t.test('readiness window: up but no success for interval + timeout is not ready', async (t) => {
  const h = running();
  h.probe.pingResp();
  t.equal(h.probe.readiness(1500).ok, true, 'at interval + timeout: still ready');
  const stale = h.probe.readiness(1500.5);
  t.equal(stale.ok, false);
  t.match(stale.detail, /^no probe succeeded within 1\.50 s \(interval \+ timeout\); last success 1\.50 s ago$/);
});

t.test('rise and fall thresholds', async (t) => {
  const h = running({ rise: 2, fall: 2 });
  h.probe.pingResp();
  t.equal(h.probe.state, 'starting', 'one success is not enough with rise 2');
  h.clock.advance(1000);
  h.probe.pingResp();
  t.equal(h.probe.state, 'up');
  h.clock.advance(1500);
  t.equal(h.probe.state, 'up', 'one failure is not enough with fall 2');
  h.clock.advance(1000);
  t.equal(h.probe.state, 'down');
  t.same(h.failures, ['ping:timeout', 'ping:timeout']);
});

t.test('a session that misses three rounds is replaced; connect failures back off exponentially', async (t) => {
  const h = running({ connectTimeoutMs: 2000, backoffMinMs: 200, backoffMaxMs: 1000 });
  h.probe.pingResp();
  h.calls.length = 0;
  h.clock.advance(1000 + 500); // miss 1
  h.clock.advance(1000); // miss 2
  h.clock.advance(1000); // miss 3 at 3500: replaced
  t.same(h.calls, ['ping', 'ping', 'ping', 'disconnect']);
  t.equal(h.probe.inSession, false);
  h.calls.length = 0;
  h.clock.advance(199);
  t.same(h.calls, [], 'first reconnect after 200 ms (jitter 0.5 -> x1)');
  h.clock.advance(1);
  t.same(h.calls, ['connect']);
  // No CONNACK: fails after the connect timeout, then 400, 800, 1000, 1000 ms.
  const connectsAt: number[] = [h.clock.now()];
  const before = h.failures.length;
  const connects = (): number => h.calls.filter((c) => c === 'connect').length;
  for (let i = 0; i < 5; i++) {
    const n = connects();
    while (connects() === n) h.clock.advance(1);
    connectsAt.push(h.clock.now());
  }
  const waits = connectsAt.slice(1).map((at, i) => at - connectsAt[i] - 2000);
  t.same(waits, [400, 800, 1000, 1000, 1000], 'backoff doubles up to the maximum');
  t.same(h.failures.slice(before), Array(5).fill('ping:connect'));
  t.match(h.probe.why, /cannot connect to the broker: no CONNACK within 2\.00 s/);
  // A session at last: the backoff resets.
  h.probe.connected();
  h.probe.pingResp();
  t.equal(h.probe.state, 'up');
  h.probe.closed('ECONNRESET');
  t.equal(h.probe.state, 'down');
  t.match(h.probe.why, /closed: ECONNRESET/);
  t.same(h.failures.at(-1), 'ping:closed');
  const at = h.clock.now();
  h.calls.length = 0;
  while (!h.calls.includes('connect')) h.clock.advance(1);
  t.equal(h.clock.now() - at, 200, 'after a successful session the backoff starts over');
});

t.test('a refused connection (ECONNREFUSED) before any success: down with the reason', async (t) => {
  const h = harness();
  h.probe.start();
  h.probe.connectFailed('ECONNREFUSED');
  t.equal(h.probe.state, 'down');
  const r = h.probe.readiness();
  t.equal(r.ok, false);
  t.equal(r.detail, 'cannot connect to the broker: ECONNREFUSED; no probe has succeeded yet');
  t.same(h.failures, ['ping:connect']);
});

t.test('closed while connecting counts as a connect failure', async (t) => {
  const h = harness();
  h.probe.start();
  h.probe.closed('the broker closed the connection');
  t.same(h.failures, ['ping:connect']);
});

t.test('deep probe: the round succeeds when both the PINGRESP and the PUBLISH came back in time', async (t) => {
  const h = running({ deep: true });
  t.same(h.calls, ['connect', 'ping', 'publish 1']);
  h.clock.advance(1);
  h.probe.pingResp();
  t.equal(h.probe.state, 'starting', 'the PUBLISH has not come back yet');
  h.clock.advance(3);
  h.probe.publishReceived(1);
  t.equal(h.probe.state, 'up');
  t.same(h.rtts, [['ping', 1], ['publish', 4]]);
  t.match(h.probe.readiness().detail, /PINGRESP in 1\.00 ms, PUBLISH back in 4\.00 ms/);
  // Round 2: PINGRESP fine, the PUBLISH never comes back.
  h.clock.advance(996);
  h.probe.pingResp();
  h.clock.advance(500);
  t.equal(h.probe.state, 'down');
  t.same(h.failures, ['publish:timeout']);
  t.match(h.probe.why, /^no probe PUBLISH back within/);
  // Unknown or duplicate sequence numbers are ignored.
  h.probe.publishReceived(99);
  h.probe.publishReceived(1);
  t.equal(h.probe.state, 'down');
  // The late PUBLISH of round 2 arrives: new round at once, answered: up.
  h.clock.advance(100);
  h.probe.publishReceived(2);
  t.same(h.calls.slice(-2), ['ping', 'publish 3']);
  h.probe.pingResp();
  h.probe.publishReceived(3);
  t.equal(h.probe.state, 'up');
});

t.test('stop: no more timers, the session is dropped, settled() resolves', async (t) => {
  const h = running();
  h.probe.pingResp();
  const waited = h.probe.settled(10_000);
  h.probe.stop();
  await waited;
  t.equal(h.calls.at(-1), 'disconnect');
  t.equal(h.clock.pending, 0, 'no timer left');
  const n = h.calls.length;
  h.clock.advance(10_000);
  t.equal(h.calls.length, n);
});

t.test('settled() waits for the first verdict, or gives up after maxWait', async (t) => {
  const h = harness();
  h.probe.start();
  let done = false;
  const p = h.probe.settled(1500).then(() => { done = true; });
  h.clock.advance(10);
  await Promise.resolve();
  t.equal(done, false);
  h.probe.connected();
  h.probe.pingResp();
  await p;
  t.equal(done, true);
  const h2 = harness();
  h2.probe.start();
  let gaveUp = false;
  const p2 = h2.probe.settled(1500).then(() => { gaveUp = true; });
  h2.clock.advance(1500);
  await p2;
  t.equal(gaveUp, true);
});

t.test('the timeout must be shorter than the interval', async (t) => {
  t.throws(() => harness({ intervalMs: 1000, timeoutMs: 1000 }), /shorter than the interval/);
});

t.test('thousands of rounds against a simulated broker with random answer times', async (t) => {
  // The broker answers PINGREQs in order, each after a random delay: mostly in time, sometimes late.
  const clock = new ManualClock();
  let seed = 42;
  const rnd = (): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed / 2 ** 31; };
  const queue: Array<{ sentAt: number; delay: number; answerAt: number }> = [];
  const delivered = { inTime: 0, late: 0, rttSum: 0 };
  const rtts: number[] = [];
  let timeouts = 0;
  let connectAt = -1;
  let inSessionPings: number[] = [];
  let maxGap = 0;
  let wrongState = 0;
  const probe: ProbeState = new ProbeState(clock, { intervalMs: 100, timeoutMs: 50, deep: false, random: () => 0.5 }, {
    connect: () => { connectAt = clock.now() + 5; },
    disconnect: () => { queue.length = 0; inSessionPings = []; },
    ping: () => {
      const now = clock.now();
      const delay = rnd() < 0.85 ? Math.floor(rnd() * 45) : 70;
      const prev = queue.at(-1)?.answerAt ?? 0;
      queue.push({ sentAt: now, delay, answerAt: Math.max(prev, now + delay) });
      if (inSessionPings.length > 0) maxGap = Math.max(maxGap, now - inSessionPings.at(-1)!);
      inSessionPings.push(now);
    },
    publish: () => undefined,
  }, {
    onRtt: (_kind, ms) => rtts.push(ms),
    onFailure: (_kind, reason) => { if (reason === 'timeout') timeouts++; },
  });
  probe.start();
  for (let step = 0; step < 300_000; step++) {
    clock.advance(1);
    if (connectAt >= 0 && clock.now() >= connectAt) {
      connectAt = -1;
      inSessionPings = [];
      probe.connected();
    }
    while (queue.length > 0 && queue[0].answerAt <= clock.now()) {
      const a = queue.shift()!;
      const rtt = clock.now() - a.sentAt;
      if (rtt < 50) { delivered.inTime++; delivered.rttSum += rtt; } else delivered.late++;
      probe.pingResp();
      if (rtt < 50 && probe.state !== 'up') wrongState++;
    }
  }
  t.ok(delivered.inTime > 2000 && probe.sessions > 1, `${delivered.inTime} answers in time, ${delivered.late} late, ${probe.sessions} sessions`);
  t.equal(rtts.length, delivered.inTime, 'one RTT for every answer in time');
  t.equal(rtts.reduce((a, b) => a + b, 0), delivered.rttSum, 'and each RTT is the simulated one');
  t.equal(probe.lateAnswers, delivered.late, 'late answers are recognised as such, never as RTTs');
  t.ok(timeouts >= delivered.late, `${timeouts} timeouts`);
  t.ok(maxGap <= 100, `PINGREQs at most one interval apart within a session (max gap ${maxGap} ms)`);
  t.equal(wrongState, 0, 'up after every answer in time');
});
