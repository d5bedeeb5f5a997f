// Ingest throughput: POST /invalidate/key as fast as VUS closed-loop VUs can (default), or at a
// fixed open-loop ARRIVAL_RATE per second, each request with a fresh `request_id` (so the
// idempotency path is exercised, as SPEC's "new ids cost at most 10%" asks).
//
// Env (defaults): BASE_URL (http://127.0.0.1:4000), TOKEN, VUS (16), DURATION (s, 30),
// ARRIVAL_RATE (unset: closed loop), KEYS (per request, 1), REQUEST_IDS (1; 0 = no request_id),
// P99_MS (50), MAX_FAILED (0.001, fraction of failed requests).

import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { Counter } from 'k6/metrics';
import { BASE_URL, httpHeaders, num } from './lib.js';

const VUS = num('VUS', 16);
const DURATION = num('DURATION', 30);
const ARRIVAL_RATE = num('ARRIVAL_RATE', 0);
const KEYS = Math.max(1, num('KEYS', 1));
const REQUEST_IDS = num('REQUEST_IDS', 1) !== 0;
const P99_MS = num('P99_MS', 50);
const MAX_FAILED = num('MAX_FAILED', 0.001);

const accepted = new Counter('invalidations_accepted');
const keysSent = new Counter('keys_invalidated');

const scenario = ARRIVAL_RATE > 0
  ? {
      executor: 'constant-arrival-rate',
      rate: ARRIVAL_RATE,
      timeUnit: '1s',
      duration: `${DURATION}s`,
      preAllocatedVUs: VUS,
      maxVUs: VUS * 4,
    }
  : { executor: 'constant-vus', vus: VUS, duration: `${DURATION}s` };

export const options = {
  scenarios: { ingest: { ...scenario, exec: 'ingest' } },
  thresholds: {
    http_req_failed: [`rate<${MAX_FAILED}`],
    http_req_duration: [`p(99)<${P99_MS}`],
    checks: ['rate>0.999'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'p(99.9)', 'max'],
};

export function setup() {
  return { run: `${Date.now()}${Math.floor(Math.random() * 1e6)}` };
}

export function ingest(data) {
  const vu = exec.vu.idInTest;
  const n = exec.vu.iterationInScenario;
  const keys = [];
  for (let i = 0; i < KEYS; i++) keys.push(`ingest:${data.run}:${vu}:${n}:${i}`);
  const body = { keys, triggered_by: 'k6-ingest' };
  if (REQUEST_IDS) body.request_id = `${vu}-${n}-${Date.now()}-${data.run}`;
  const res = http.post(`${BASE_URL}/invalidate/key`, JSON.stringify(body), {
    headers: httpHeaders(),
    tags: { name: 'POST /invalidate/key' },
  });
  const ok = check(res, {
    'status 200': (r) => r.status === 200,
    'accepted, not a duplicate': (r) => {
      try {
        const b = r.json();
        return b.success === true && b.duplicate === false && b.invalidated_count === KEYS;
      } catch (_) {
        return false;
      }
    },
  });
  if (ok) {
    accepted.add(1);
    keysSent.add(KEYS);
  }
}
