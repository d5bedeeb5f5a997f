// Publish-to-push latency and delivery.
//
// SUBSCRIBERS WebSocket VUs subscribe to the prefix `bench:<run>:*` and hold; PUBLISHERS HTTP
// VUs each POST /invalidate/key ITERATIONS times at RATE per second, one key per request:
// `bench:<run>:<publisher>:<n>:<sent_ms>` (n = the publisher's own sequence number, from 0;
// sent_ms = Date.now() just before the POST), with a fresh `request_id` each time. After its
// last key a publisher POSTs `bench:<run>:<publisher>:fin:<count>` so that subscribers know
// exactly how many keys to expect from it (tail losses are losses too).
//
// Subscribers record, per event:
//   publish_to_push_ms         Date.now() at receipt - sent_ms from the key (same clock: one k6
//                              process), i.e. client send -> WebSocket receive;
//   server_publish_to_push_ms  Date.now() at receipt - the event's `published_at` (server clock,
//                              ms resolution);
// and at the end of their session, per publisher, the expected count (from the `fin` marker, or
// max sequence seen + 1 when the marker is missing) against the distinct sequence numbers
// received: Counters deliveries_expected / deliveries_received / deliveries_missing, and the Rate
// `delivery_ratio` (one true per delivery, one false per missing one), duplicate and
// out-of-order (per-connection `seq`) deliveries as Counters.
//
// Env (defaults): BASE_URL (http://127.0.0.1:4000), TOKEN, SUBSCRIBERS (10), PUBLISHERS (2),
// RATE (per publisher, 50/s), DURATION (publishing seconds, 20), WARMUP (s before publishing, 2),
// GRACE (extra s before the subscribers' deadline, 3), P99_MS (50), DELIVERY (0.999).

import http from 'k6/http';
import { check, sleep } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';
import { WebSocket } from 'k6/experimental/websockets';
import { setTimeout, clearTimeout } from 'k6/timers';
import { BASE_URL, httpHeaders, num, wsParams, wsUrl } from './lib.js';

const SUBSCRIBERS = num('SUBSCRIBERS', 10);
const PUBLISHERS = num('PUBLISHERS', 2);
const RATE = num('RATE', 50);
const DURATION = num('DURATION', 20);
const WARMUP = num('WARMUP', 2);
const GRACE = num('GRACE', 3);
const P99_MS = num('P99_MS', 50);
const DELIVERY = num('DELIVERY', 0.999);
const ITERATIONS = Math.max(1, Math.round(RATE * DURATION));
// Subscribers leave once every publisher's `fin` marker has arrived (events reach a connection in
// `seq` order, so nothing of that publisher can still be on its way), or at this deadline.
const HOLD_S = WARMUP + DURATION * 2 + GRACE;

const publishToPush = new Trend('publish_to_push_ms', true);
const serverToPush = new Trend('server_publish_to_push_ms', true);
const expected = new Counter('deliveries_expected');
const received = new Counter('deliveries_received');
const missing = new Counter('deliveries_missing');
const deliveryRatio = new Rate('delivery_ratio');
const duplicates = new Counter('deliveries_duplicate');
const outOfOrder = new Counter('deliveries_out_of_order');
const finMissing = new Counter('fin_markers_missing');
const subscribed = new Counter('subscribers_ready');
const wsErrors = new Counter('ws_errors');
const published = new Counter('publishes_ok');

export const options = {
  scenarios: {
    subscribers: {
      executor: 'per-vu-iterations',
      exec: 'subscriber',
      vus: SUBSCRIBERS,
      iterations: 1,
      maxDuration: `${HOLD_S + 30}s`,
    },
    publishers: {
      executor: 'per-vu-iterations',
      exec: 'publisher',
      vus: PUBLISHERS,
      iterations: ITERATIONS + 1, // the last one posts the `fin` marker
      startTime: `${WARMUP}s`,
      maxDuration: `${DURATION * 2 + 30}s`,
    },
  },
  thresholds: {
    publish_to_push_ms: [`p(99)<${P99_MS}`],
    delivery_ratio: [`rate>=${DELIVERY}`],
    deliveries_duplicate: ['count==0'],
    deliveries_out_of_order: ['count==0'],
    subscribers_ready: [`count>=${SUBSCRIBERS}`],
    'http_req_failed{scenario:publishers}': ['rate<0.001'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'p(99.9)', 'max'],
};

export function setup() {
  // One prefix per run, so that a rerun against the same server is not confused by old events.
  return { run: `${Date.now()}${Math.floor(Math.random() * 1e6)}` };
}

export function publisher(data) {
  const me = exec.vu.idInTest;
  const n = exec.vu.iterationInScenario;
  const start = Date.now();
  const key =
    n < ITERATIONS ? `bench:${data.run}:${me}:${n}:${start}` : `bench:${data.run}:${me}:fin:${ITERATIONS}`;
  const body = JSON.stringify({
    keys: [key],
    triggered_by: 'k6-latency',
    request_id: `${me}-${n}-${start}-${data.run}`,
  });
  const res = http.post(`${BASE_URL}/invalidate/key`, body, {
    headers: httpHeaders(),
    tags: { name: 'POST /invalidate/key' },
  });
  if (check(res, { 'publish 200': (r) => r.status === 200 })) published.add(1);
  // Pace to RATE per second per publisher (closed loop: a slow server lowers the rate).
  const left = 1 / RATE - (Date.now() - start) / 1000;
  if (left > 0) sleep(left);
}

export function subscriber(data) {
  const prefix = `bench:${data.run}:`;
  const seen = {}; // publisher -> { seqs: Set, max, fin }
  let lastSeq = -1;
  let fins = 0;
  const ws = new WebSocket(wsUrl(), null, wsParams({ name: 'GET /ws' }));
  const closeTimer = setTimeout(() => ws.close(), HOLD_S * 1000);

  // Subscribe as soon as the socket is open rather than on `hello`: k6's WebSocket client has
  // been seen to lose a connection's very first frame under a burst of connects (a raw client
  // always gets `hello` first), and the server accepts operations before it.
  ws.onopen = () => {
    ws.send(JSON.stringify({ op: 'subscribe', id: 'sub', patterns: [`${prefix}*`] }));
  };

  ws.onmessage = (e) => {
    const now = Date.now();
    let m;
    try {
      m = JSON.parse(e.data);
    } catch (_) {
      wsErrors.add(1);
      return;
    }
    if (m.type === 'subscribed') {
      subscribed.add(1);
    } else if (m.type === 'invalidate') {
      if (typeof m.seq === 'number') {
        if (m.seq <= lastSeq) outOfOrder.add(1);
        lastSeq = m.seq;
      }
      const serverTs = Date.parse(m.published_at);
      for (const key of m.keys || []) {
        if (!key.startsWith(prefix)) continue;
        const [pub, n, ts] = key.slice(prefix.length).split(':');
        const p = seen[pub] || (seen[pub] = { seqs: new Set(), max: -1, fin: undefined });
        if (n === 'fin') {
          if (p.fin === undefined) fins += 1;
          p.fin = Number(ts);
          if (fins >= PUBLISHERS) ws.close();
          continue;
        }
        const seq = Number(n);
        if (p.seqs.has(seq)) {
          duplicates.add(1);
          continue;
        }
        p.seqs.add(seq);
        if (seq > p.max) p.max = seq;
        publishToPush.add(now - Number(ts));
        if (Number.isFinite(serverTs)) serverToPush.add(now - serverTs);
        received.add(1);
        deliveryRatio.add(true);
      }
    } else if (m.type === 'error' || m.type === 'reset') {
      wsErrors.add(1, { type: m.type, code: m.code || m.reason || '' });
    }
  };
  ws.onerror = (e) => {
    wsErrors.add(1, { type: 'socket' });
    console.warn(`subscriber ${exec.vu.idInTest}: ${e.error}`);
  };
  ws.onclose = () => {
    clearTimeout(closeTimer);
    const pubs = Object.keys(seen);
    let exp = 0;
    let got = 0;
    for (const pub of pubs) {
      const p = seen[pub];
      if (p.fin === undefined) finMissing.add(1);
      const want = p.fin !== undefined ? p.fin : p.max + 1;
      let have = 0;
      for (const s of p.seqs) if (s < want) have += 1;
      exp += want;
      got += have;
    }
    // A publisher this subscriber never heard from: all of its keys are missing.
    for (let i = pubs.length; i < PUBLISHERS; i++) {
      exp += ITERATIONS;
      finMissing.add(1);
    }
    expected.add(exp);
    const lost = Math.max(0, exp - got);
    if (lost > 0) {
      missing.add(lost);
      for (let i = 0; i < lost; i++) deliveryRatio.add(false);
    }
  };
}
