/**
 * The keep-alive watch on hand-made TCP_INFO samples (keepalive-watch.ts): a frozen client is cut
 * at keep-alive + grace on a clean link, a client whose PINGREQ met an outage is not, and the
 * broker's 1.5 x keep-alive stays the cap. Times are Clock ms; the last byte came at 0.
 */
import t from 'tap';
import { KeepAliveWatch, solicitAt, type KeepAliveTimes } from '../src/liveness/keepalive-watch.ts';
import { newTcpInfoSample, type TcpInfoSample } from '../src/liveness/tcp-options.ts';

// Keep-alive 30 s, base grace 2 s, adaptive grace 2 s (a clean link), cap 45 s.
const TIMES: KeepAliveTimes = { dueAt: 30_000, frozenAt: 32_000, capAt: 45_000, baseGraceMs: 2_000 };
const LINK = { rtoMs: 200, srttMs: 1, rttvarMs: 1 };
// While watched the kernel probes idle 1 s after the last ACK, then every second.
const PROBE = { idleMs: 1_000, intervalMs: 1_000 };

/** An idle connection's sample: `probes` unanswered, the last ACK `lastAckMs` ago, segment counters as given. */
function idle(segsOut: number, segsIn: number, lastAckMs: number, probes = 0): TcpInfoSample {
  return { ...newTcpInfoSample(), rtoUs: 200_000, rttUs: 1_000, segsOut, segsIn, lastAckRecvMs: lastAckMs, lastDataRecvMs: 30_000 + lastAckMs, probes };
}

function started(at: number, s: TcpInfoSample): KeepAliveWatch {
  const w = new KeepAliveWatch();
  w.start(s, at, TIMES, LINK, -1);
  t.equal(w.active, true);
  return w;
}

t.test('solicitAt: a second after the due time, or half the grace when that is shorter', async (t) => {
  t.equal(solicitAt(TIMES), 31_000);
  t.equal(solicitAt({ dueAt: 2_000, frozenAt: 3_000, capAt: 3_000, baseGraceMs: 1_000 }), 2_500, 'keep-alive 2: grace 1 s');
});

t.test('frozen client on a clean link: dead at keep-alive + grace once a probe asked for after the due time was answered', async (t) => {
  // A natural probe was answered at 27 s; the watch asks for one at 31 s.
  const w = started(31_000, idle(10, 10, 4_000));
  let d = w.judge(idle(10, 10, 4_000), 31_000, TIMES, LINK, PROBE);
  t.same({ ...d }, { dead: false, nextAt: 32_000 }, 'no ACK since the request yet: look again an interval later');
  d = w.judge(idle(11, 11, 990), 32_000, TIMES, LINK, PROBE);
  t.equal(d.dead, true, 'answered at 31.01 s, nothing lost: dead at 32 s = keep-alive + 2 s');
  t.equal(w.troubles, 0);
});

t.test('answered early: the verdict waits for keep-alive + grace, not less', async (t) => {
  const w = started(31_000, idle(10, 10, 4_000));
  const d = w.judge(idle(11, 11, 5), 31_010, { ...TIMES, frozenAt: 34_000 }, LINK, PROBE);
  t.same({ ...d }, { dead: false, nextAt: 34_000 });
  t.equal(w.judge(idle(14, 14, 5), 34_000, { ...TIMES, frozenAt: 34_000 }, LINK, PROBE).dead, true);
});

t.test('a 4 s outage over the due time: no verdict while the link is silent, then time for the retransmitted PINGREQ', async (t) => {
  // Outage 29.5-33.5 s. The PINGREQ sent at 30 s is retransmitted at 30.2, 30.6, 31.4, 33.0, 36.2 s.
  const w = started(31_000, idle(10, 10, 2_500));
  t.equal(w.judge(idle(10, 10, 2_500), 31_000, TIMES, LINK, PROBE).dead, false);
  // Probes at 31 and 32 s unanswered.
  let d = w.judge(idle(12, 10, 3_500, 2), 32_000, TIMES, LINK, PROBE);
  t.same({ ...d }, { dead: false, nextAt: 33_000 }, 'overdue: link trouble, look again an interval later');
  d = w.judge(idle(13, 10, 4_500, 3), 33_000, TIMES, LINK, PROBE);
  t.equal(d.dead, false, 'past keep-alive + grace, but the link is still silent');
  // The probe at 34 s is answered.
  d = w.judge(idle(14, 11, 1, 0), 34_002, TIMES, LINK, PROBE);
  t.equal(d.dead, false, 'the link is back at 34 s');
  t.equal(w.troubles, 1);
  t.ok(w.notBefore >= 36_200 + 2_000, `no verdict before the retransmission at 36.2 s and a base grace (${w.notBefore})`);
  t.equal(d.nextAt, w.notBefore);
  t.ok(w.notBefore <= TIMES.capAt, 'within the broker\'s own deadline');
  // A frozen client behind the same outage: dead once that time has passed with the link answering.
  t.equal(w.judge(idle(20, 17, 500), w.notBefore, TIMES, LINK, PROBE).dead, true);
});

t.test('a probe lost between two looks counts as link trouble', async (t) => {
  const w = started(31_000, idle(10, 10, 2_500));
  // Two probes out since the request (31 s lost, 32 s answered): one segment more out than in.
  const d = w.judge(idle(12, 11, 1, 0), 32_002, TIMES, LINK, PROBE);
  t.equal(d.dead, false);
  t.equal(w.troubles, 1);
  t.ok(w.notBefore >= 32_002 + 2_002 + 2_000, `notBefore ${w.notBefore}`);
});

t.test('a probe in flight is not trouble: wait for its answer', async (t) => {
  const w = started(31_000, idle(10, 10, 2_500));
  // The probe went out 50 ms ago (idle 1 s after the last ACK at 30.95 s).
  const d = w.judge(idle(12, 11, 1_050, 1), 32_000, TIMES, LINK, PROBE);
  t.equal(d.dead, false);
  t.equal(d.nextAt, 32_200, 'one answer wait later');
  t.equal(w.troubles, 0);
  t.equal(w.judge(idle(12, 12, 190), 32_200, TIMES, LINK, PROBE).dead, true, 'answered: dead');
});

t.test('data unacknowledged past one RTO and an answer wait is trouble; acknowledged data is evidence', async (t) => {
  const data = (lastAckMs: number, unacked: number, retrans: number): TcpInfoSample => ({
    ...idle(100, 50, lastAckMs), dataSegsOut: 80, unacked, totalRetrans: retrans,
  });
  const w = started(31_000, data(100, 0, 0));
  t.equal(w.judge(data(600, 3, 2), 32_000, TIMES, LINK, PROBE).dead, false);
  t.equal(w.troubles, 1);
  const ok = started(31_000, data(100, 0, 0));
  t.equal(ok.judge({ ...data(20, 0, 0), dataSegsOut: 84 }, 32_000, TIMES, LINK, PROBE).dead, true, 'data sent and acknowledged since the request: dead at 32 s');
});

t.test('a zero window is an answering peer whose reader is stuck: dead at keep-alive + grace', async (t) => {
  const zero = { ...idle(10, 10, 60_000, 5), notsentBytes: 50_000 };
  const w = started(31_000, zero);
  t.equal(w.judge(zero, 32_000, TIMES, LINK, PROBE).dead, true);
});

t.test('the broker\'s 1.5 x keep-alive caps every wait', async (t) => {
  const w = started(31_000, idle(10, 10, 2_500));
  const silent = idle(30, 10, 16_000, 14);
  const d = w.judge(silent, 44_000, TIMES, LINK, PROBE);
  t.same({ ...d }, { dead: false, nextAt: 45_000 });
  t.equal(w.judge(silent, 45_000, TIMES, LINK, PROBE).dead, true);
});

t.test('stop: the next silence starts afresh', async (t) => {
  const w = started(31_000, idle(10, 10, 2_500));
  w.judge(idle(12, 10, 3_500, 2), 32_000, TIMES, LINK, PROBE);
  w.stop();
  t.equal(w.active, false);
  t.equal(w.notBefore, 0);
  w.start(idle(20, 20, 0), 61_000, { dueAt: 60_000, frozenAt: 62_000, capAt: 75_000, baseGraceMs: 2_000 }, LINK, -1);
  t.equal(w.troubles, 0);
});

t.test('never dead before keep-alive + grace, never alive after the cap (random samples)', async (t) => {
  let seed = 7;
  const rnd = () => ((seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0) / 2 ** 32);
  let early = 0;
  let late = 0;
  let badNext = 0;
  for (let i = 0; i < 2_000; i++) {
    const w = new KeepAliveWatch();
    w.start(idle(10, 10, 1_000), 31_000, TIMES, LINK, -1);
    let out = 10;
    let inn = 10;
    for (let now = 31_000; now <= 46_000; now += 250 + Math.floor(rnd() * 1_000)) {
      out += Math.floor(rnd() * 2);
      inn = Math.min(out, inn + Math.floor(rnd() * 2));
      const probes = out - inn;
      const d = w.judge(idle(out, inn, Math.floor(rnd() * 5_000), probes), now, TIMES, LINK, PROBE);
      if (d.dead && now < TIMES.frozenAt) early++;
      if (!d.dead && now >= TIMES.capAt) late++;
      if (d.dead) break;
      if (!(d.nextAt > now && d.nextAt <= TIMES.capAt)) badNext++;
    }
  }
  t.equal(early, 0, 'no verdict before keep-alive + grace');
  t.equal(late, 0, 'none outlived the cap');
  t.equal(badNext, 0, 'the next look is always ahead and within the cap');
});

t.test('a loss the link estimate committed just before the watch began counts as link trouble', async (t) => {
  const w = new KeepAliveWatch();
  // Committed at 30.8 s: the PINGREQ sent at 30 s may have been lost then; its retransmission comes by 31.8 s + RTO.
  w.start(idle(10, 10, 2_500), 31_000, TIMES, LINK, 30_800);
  t.equal(w.troubles, 1);
  t.equal(w.notBefore, 30_800 + 800 + 200 + 1 + 2_000);
  const d = w.judge(idle(11, 11, 5), 32_000, TIMES, LINK, PROBE);
  t.same({ ...d }, { dead: false, nextAt: w.notBefore }, 'answered, but the verdict waits for the retransmission');
  t.equal(w.judge(idle(13, 13, 5), w.notBefore, TIMES, LINK, PROBE).dead, true);
  const old = new KeepAliveWatch();
  old.start(idle(10, 10, 2_500), 31_000, TIMES, LINK, 10_000);
  t.equal(old.troubles, 0, 'a loss long before the due time holds nothing up');
  t.equal(old.notBefore, 0);
});
