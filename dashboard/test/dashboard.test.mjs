// Browser test of the dashboard: the real server binary, Debian's Chromium through playwright-core.
//
//   INVALIDATOR_BIN=/path/to/invalidator node dashboard.test.mjs
//
// Env: INVALIDATOR_BIN (default <repo>/target/debug/invalidator), DASHBOARD_SCREENSHOT=1 (writes
// <repo>/docs/dashboard.png), CHROMIUM (default /usr/bin/chromium), DASHBOARD_PIDFILE (server pids are
// appended there so a calling script can clean up), DASHBOARD_DEVSERVER=1 (force the dev server).
// The page is served by the server's own /dashboard route when it answers 200; otherwise by
// devserver.mjs, which serves dashboard/ and proxies the API (printed either way).
// Ends with the line "dashboard: N passed, N failed"; exit code 1 on any failure.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startDevServer, dashboardFiles, CONTENT_TYPES } from './devserver.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const dashDir = path.resolve(here, '..');
const repo = path.resolve(dashDir, '..');
const BIN = process.env.INVALIDATOR_BIN || path.join(repo, 'target', 'debug', 'invalidator');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = process.env.DASHBOARD_SCREENSHOT === '1';
const RUN_ID = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`;

// ---------- tiny harness ----------

let passed = 0;
let failed = 0;
const t0 = Date.now();
async function check(name, fn) {
  const start = Date.now();
  try {
    await fn();
    passed++;
    console.log(`  ok   ${name} (${Date.now() - start} ms)`);
  } catch (e) {
    failed++;
    console.log(`  FAIL ${name} (${Date.now() - start} ms)\n       ${String(e && e.stack || e).split('\n').slice(0, 4).join('\n       ')}`);
  }
}
function assert(cond, msg) { if (!cond) throw new Error(`assertion failed: ${msg}`); }
function eq(a, b, msg) { if (a !== b) throw new Error(`${msg}: expected ${JSON.stringify(b)}, got ${JSON.stringify(a)}`); }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(fn, timeoutMs, what) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    await sleep(50);
  }
}

// ---------- server ----------

const children = new Set();
function killChildren() {
  for (const c of children) { try { c.kill('SIGTERM'); } catch (_) { /* gone */ } }
}
process.on('exit', killChildren);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => { killChildren(); process.exit(130); });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

async function startServer(name, { config, dir, port } = {}) {
  dir = dir || fs.mkdtempSync(path.join(os.tmpdir(), `inv-dash-${name}-`));
  port = port || await freePort();
  const args = ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', path.join(dir, 'data')];
  if (config) {
    fs.writeFileSync(path.join(dir, 'config.toml'), config);
    args.push('--config', path.join(dir, 'config.toml'));
  }
  const logPath = path.join(dir, 'server.log');
  const log = fs.openSync(logPath, 'a');
  const env = { ...process.env };
  for (const k of ['DATABASE_URL', 'NATS_URL', 'INVALIDATOR_CONFIG', 'INVALIDATOR_LISTEN', 'INVALIDATOR_DATA_DIR']) delete env[k];
  const child = spawn(BIN, args, { stdio: ['ignore', log, log], env });
  children.add(child);
  child.on('exit', () => children.delete(child));
  if (process.env.DASHBOARD_PIDFILE) fs.appendFileSync(process.env.DASHBOARD_PIDFILE, `${child.pid}\n`);
  const url = `http://127.0.0.1:${port}`;
  try {
    await until(async () => {
      if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
      const r = await fetch(`${url}/healthz`);
      return r.ok;
    }, 20000, `${name} server /healthz`);
  } catch (e) {
    console.log(fs.readFileSync(logPath, 'utf8').split('\n').slice(-20).join('\n'));
    throw e;
  }
  return {
    url, dir, port, logPath, child,
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await Promise.race([new Promise((r) => child.once('exit', r)), sleep(5000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

// Where the page comes from: the server's own route when it has one, else the dev server.
async function pageOrigin(server) {
  let status = 0;
  try { status = (await fetch(`${server.url}/dashboard`)).status; } catch (_) { /* unreachable */ }
  if (status === 200 && process.env.DASHBOARD_DEVSERVER !== '1') return { origin: server.url, mode: 'route', close: async () => {} };
  const dev = await startDevServer({ target: server.url });
  return { origin: dev.url, mode: `devserver (server /dashboard answered ${status})`, close: dev.close };
}

async function post(base, p, body, headers = {}) {
  const r = await fetch(`${base}${p}`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body),
  });
  const j = await r.json().catch(() => null);
  if (!r.ok) throw new Error(`POST ${p}: ${r.status} ${JSON.stringify(j)}`);
  return j;
}

// ---------- browser ----------

function watchConsole(page, allow = []) {
  const errors = [];
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const t = m.text();
    if (allow.some((re) => re.test(t))) return;
    errors.push(`console.error: ${t}`);
  });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('requestfailed', (r) => {
    const f = r.failure();
    // Aborted fetches (navigation away) are not page faults.
    if (f && /ERR_ABORTED/.test(f.errorText)) return;
    errors.push(`requestfailed: ${r.url()} ${f ? f.errorText : ''}`);
  });
  return errors;
}

async function waitEventRow(page, key, timeoutMs) {
  const row = page.locator('[data-testid="event-row"]', { hasText: key });
  await row.first().waitFor({ state: 'visible', timeout: timeoutMs });
  return row.first();
}

// Clicks Search until a row shows up (the audit row is durable at the 200, but the store that
// /audit/logs reads may take a batch interval to show it), as an operator would press it again.
async function auditSearchUntilRows(page, minRows, timeoutMs) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    await page.click('[data-testid="audit-search"]');
    await page.waitForFunction(() => !document.getElementById('audit-panel').dataset.loading, null, { timeout: 5000 });
    const n = await page.locator('[data-testid="audit-row"]').count();
    if (n >= minRows || Date.now() > end) return n;
    await sleep(200);
  }
}

async function main() {
  console.log(`dashboard test: server ${BIN}`);
  if (!fs.existsSync(BIN)) {
    console.log(`  FAIL server binary not found at ${BIN} (set INVALIDATOR_BIN or build it)`);
    failed++;
    return;
  }
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  const servers = [];
  const contexts = [];
  const sites = [];
  try {
    const server = await startServer('open');
    servers.push(server);
    const site = await pageOrigin(server);
    sites.push(site);
    console.log(`dashboard served by: ${site.mode} at ${site.origin}/dashboard`);
    const base = site.origin; // the API through the same origin as the page

    // --- the route contract ---
    await check('every file in dashboard/FILES is served with its content type and bytes', async () => {
      const files = dashboardFiles();
      assert(files.includes('index.html') && files.includes('app.js'), 'FILES lists index.html and app.js');
      for (const f of files) {
        const r = await fetch(`${base}/dashboard/${f}`);
        eq(r.status, 200, `GET /dashboard/${f}`);
        const ct = (r.headers.get('content-type') || '').toLowerCase();
        const want = CONTENT_TYPES[path.extname(f)].split(';')[0];
        assert(ct.startsWith(want), `GET /dashboard/${f} content-type ${ct} should be ${want}`);
        const body = Buffer.from(await r.arrayBuffer());
        assert(body.equals(fs.readFileSync(path.join(dashDir, f))), `/dashboard/${f} is byte-identical to dashboard/${f} (a binary built before the last change to dashboard/?)`);
      }
      const idx = await fetch(`${base}/dashboard`);
      eq(idx.status, 200, 'GET /dashboard');
      assert((idx.headers.get('content-type') || '').startsWith('text/html'), 'GET /dashboard is text/html');
      assert((await idx.text()).includes('/dashboard/app.js'), '/dashboard is index.html');
      const missing = await fetch(`${base}/dashboard/no-such-file.js`);
      eq(missing.status, 404, 'GET /dashboard/no-such-file.js');
    });

    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    context.setDefaultTimeout(5000);
    contexts.push(context);
    const page = await context.newPage();
    const errors = watchConsole(page);

    await check('page loads with no console errors; WebSocket live; metrics cards filled', async () => {
      const resp = await page.goto(`${base}/dashboard`);
      eq(resp.status(), 200, 'page status');
      eq(await page.title(), 'invalidator · dashboard', 'title');
      await page.waitForFunction(() => document.getElementById('ws-status').dataset.state === 'open', null, { timeout: 5000 });
      await page.waitForFunction(() => document.getElementById('metrics-status').dataset.state === 'open', null, { timeout: 5000 });
      // The page's own WebSocket is an active connection, and its subscription counts.
      await until(async () => Number(await page.getAttribute('[data-testid="metric-connections"]', 'data-active')) >= 1, 3000, 'active connections >= 1');
      await until(async () => {
        const v = (await page.textContent('#metric-subscriptions .value')).trim();
        return v !== '–' && Number(v) >= 1;
      }, 3000, 'subscriptions card >= 1');
      assert(/\d/.test(await page.textContent('#metric-uptime .value')), 'uptime shown');
      eq(await page.locator('.chart .uplot').count(), 3, 'three uPlot charts');
      eq(errors.length, 0, `console errors: ${errors.join(' | ')}`);
    });

    const key = `dash:${RUN_ID}:k1`;
    const rid = `dash-${RUN_ID}-1`;
    let keyResp;
    await check('a POST /invalidate/key shows up as an event row within 1 s', async () => {
      keyResp = await post(server.url, '/invalidate/key', { keys: [key, `other:${RUN_ID}`], triggered_by: 'dashboard-test', request_id: rid });
      const row = await waitEventRow(page, key, 1000);
      eq(await row.getAttribute('data-seq'), String(keyResp.seq), 'row seq = response seq');
      eq(await row.getAttribute('data-request-id'), rid, 'row request id');
      eq(await row.getAttribute('data-kind'), 'keys', 'row kind');
      const cells = await row.locator('td').allTextContents();
      assert(cells.some((c) => c.trim() === 'dashboard-test'), `triggered_by cell in ${JSON.stringify(cells)}`);
      assert(cells.some((c) => c.includes(`other:${RUN_ID}`)), 'both keys shown');
      // Newest first.
      const key2 = `dash:${RUN_ID}:k2`;
      const r2 = await post(server.url, '/invalidate/key', { keys: [key2], triggered_by: 'dashboard-test' });
      await waitEventRow(page, key2, 1000);
      eq(await page.locator('[data-testid="event-row"]').first().getAttribute('data-seq'), String(r2.seq), 'newest row on top');
    });

    await check('a pattern invalidation shows its pattern and type', async () => {
      const pat = `dashpat:${RUN_ID}:*`;
      const r = await post(server.url, '/invalidate/pattern', { pattern: pat, triggered_by: 'dashboard-test', cache_keys: [`dashpat:${RUN_ID}:a`] });
      const row = await waitEventRow(page, pat, 1000);
      eq(await row.getAttribute('data-kind'), 'pattern', 'kind');
      eq(await row.getAttribute('data-seq'), String(r.seq), 'seq');
      assert((await row.textContent()).includes('prefix'), 'pattern type shown');
    });

    {
      // Soft invalidation (SPEC "Soft invalidation") is checked once the server reports it.
      const ks = `dash:${RUN_ID}:soft`;
      const rs = await post(server.url, '/invalidate/key', { keys: [ks], triggered_by: 'dashboard-test', soft: true });
      if (rs.soft === true) {
        await check('a soft invalidation is marked soft in the live list and the audit', async () => {
          const row = await waitEventRow(page, ks, 1000);
          assert((await row.getAttribute('class')).includes('soft'), 'row marked soft');
          eq(await row.locator('.tag.soft').count(), 1, 'soft badge');
          await page.click('[data-testid="audit-reset"]');
          await page.fill('[data-testid="audit-key"]', ks);
          eq(await auditSearchUntilRows(page, 1, 5000), 1, 'audit row');
          eq(await page.locator('[data-testid="audit-row"] .tag.soft').count(), 1, 'audit row marked soft');
          await page.fill('[data-testid="audit-key"]', '');
        });
      } else {
        await waitEventRow(page, ks, 1000);
        console.log('  skip soft invalidation: the server does not report `soft` yet (not counted)');
      }
    }

    await check('pause holds new events back; resume shows them', async () => {
      await page.click('[data-testid="pause-button"]');
      eq(await page.getAttribute('[data-testid="pause-button"]', 'aria-pressed'), 'true', 'pressed');
      const k = `dash:${RUN_ID}:paused`;
      await post(server.url, '/invalidate/key', { keys: [k], triggered_by: 'dashboard-test' });
      await until(async () => (await page.textContent('[data-testid="pause-button"]')).includes('(1)'), 1000, 'pause button counts 1 waiting');
      eq(await page.locator('[data-testid="event-row"]', { hasText: k }).count(), 0, 'paused: no row yet');
      await page.click('[data-testid="pause-button"]');
      await waitEventRow(page, k, 500);
    });

    await check('audit search by key finds the row (and total_count)', async () => {
      await page.fill('[data-testid="audit-key"]', key);
      const n = await auditSearchUntilRows(page, 1, 5000);
      eq(n, 1, 'audit rows for the key');
      const row = page.locator('[data-testid="audit-row"]').first();
      eq(await row.getAttribute('data-request-id'), rid, 'request id');
      const txt = await row.textContent();
      assert(txt.includes(key) && txt.includes('dashboard-test'), `row shows key and triggered_by: ${txt}`);
      eq(await page.getAttribute('[data-testid="audit-total"]', 'data-total'), '1', 'total_count');
      assert(!(await page.isVisible('[data-testid="audit-error"]')), 'no error');
      // By pattern: the pattern invalidation above.
      await page.fill('[data-testid="audit-key"]', '');
      await page.fill('[data-testid="audit-pattern"]', `dashpat:${RUN_ID}:*`);
      eq(await auditSearchUntilRows(page, 1, 5000), 1, 'audit rows for the pattern');
      const prow = await page.locator('[data-testid="audit-row"]').first().textContent();
      assert(prow.includes(`dashpat:${RUN_ID}:*`) && prow.includes(`dashpat:${RUN_ID}:a`) && prow.includes('prefix'), `pattern row: ${prow}`);
      await page.fill('[data-testid="audit-pattern"]', '');
    });

    await check('audit search by request_id from the event row link', async () => {
      await page.fill('[data-testid="event-filter"]', rid);
      await page.locator('[data-testid="event-row"]', { hasText: rid }).locator('td.rid a').click();
      eq(await page.inputValue('[data-testid="audit-request-id"]'), rid, 'form filled with the request id');
      eq(await page.inputValue('[data-testid="audit-key"]'), '', 'other filters cleared');
      await page.waitForFunction((r) => {
        const rows = document.querySelectorAll('[data-testid="audit-row"]');
        return rows.length === 1 && rows[0].dataset.requestId === r;
      }, rid, { timeout: 5000 });
      await page.fill('[data-testid="event-filter"]', '');
    });

    await check('audit paging: keyset (before_id) pages, back, offset and filters', async () => {
      const who = `pager-${RUN_ID}`;
      const seqs = [];
      for (let i = 0; i < 5; i++) seqs.push((await post(server.url, '/invalidate/key', { keys: [`page:${RUN_ID}:${i}`], triggered_by: who })).seq);
      await page.click('[data-testid="audit-reset"]');
      await page.fill('[data-testid="audit-triggered-by"]', who);
      await page.fill('[data-testid="audit-limit"]', '2');
      eq(await auditSearchUntilRows(page, 2, 5000), 2, 'page 1 rows');
      await until(async () => (await page.getAttribute('[data-testid="audit-total"]', 'data-total')) === '5', 5000, 'total 5');
      await page.click('[data-testid="audit-search"]');
      await page.waitForFunction(() => !document.getElementById('audit-panel').dataset.loading);
      const ids = async () => (await page.locator('[data-testid="audit-row"]').evaluateAll((rs) => rs.map((r) => Number(r.dataset.id))));
      const p1 = await ids();
      eq(p1.length, 2, 'page 1');
      eq(await page.isDisabled('[data-testid="audit-prev"]'), true, 'no newer page on page 1');
      const requests = [];
      const onReq = (r) => { if (r.url().includes('/audit/logs')) requests.push(new URL(r.url())); };
      page.on('request', onReq);
      await page.click('[data-testid="audit-next"]');
      await page.waitForFunction((first) => Number(document.querySelector('[data-testid="audit-row"]')?.dataset.id) !== first, p1[0]);
      const p2 = await ids();
      eq(requests.at(-1).searchParams.get('before_id'), String(p1[1]), 'next page asks before_id = last row id');
      eq(requests.at(-1).searchParams.get('triggered_by'), who, 'filters kept');
      eq(requests.at(-1).searchParams.get('limit'), '2', 'limit kept');
      eq(p2.length, 2, 'page 2');
      assert(p2[0] < p1[1], `page 2 older than page 1 (${p1} / ${p2})`);
      eq((await page.textContent('[data-testid="audit-range"]')).trim(), 'rows 3–4 of 5', 'range text');
      await page.click('[data-testid="audit-next"]');
      await page.waitForFunction(() => document.querySelectorAll('[data-testid="audit-row"]').length === 1);
      const p3 = await ids();
      assert(p3[0] < p2[1], 'page 3 older');
      eq(await page.isDisabled('[data-testid="audit-next"]'), true, 'no older page after the last');
      const all = [...p1, ...p2, ...p3];
      eq(new Set(all).size, 5, 'five distinct rows over the pages');
      await page.click('[data-testid="audit-prev"]');
      await page.waitForFunction((first) => Number(document.querySelector('[data-testid="audit-row"]')?.dataset.id) === first, p2[0]);
      eq(JSON.stringify(await ids()), JSON.stringify(p2), 'back to page 2');
      // Offset paging from the form.
      await page.fill('[data-testid="audit-offset"]', '4');
      await page.click('[data-testid="audit-search"]');
      await page.waitForFunction((id) => {
        const rows = document.querySelectorAll('[data-testid="audit-row"]');
        return rows.length === 1 && Number(rows[0].dataset.id) === id;
      }, p3[0]);
      eq(requests.at(-1).searchParams.get('offset'), '4', 'offset sent');
      // since in the future: nothing; since far back + until in the future: all five.
      await page.fill('[data-testid="audit-offset"]', '0');
      await page.fill('[data-testid="audit-limit"]', '50');
      await page.fill('[data-testid="audit-since"]', '2999-01-01T00:00:00Z');
      await page.click('[data-testid="audit-search"]');
      await page.waitForFunction(() => document.getElementById('audit-total').dataset.total === '0');
      await page.fill('[data-testid="audit-since"]', '2000-01-01T00:00:00Z');
      await page.fill('[data-testid="audit-until"]', '2999-01-01T00:00:00Z');
      await page.click('[data-testid="audit-search"]');
      await page.waitForFunction(() => document.querySelectorAll('[data-testid="audit-row"]').length === 5);
      eq(requests.at(-1).searchParams.get('since'), '2000-01-01T00:00:00Z', 'since sent as typed');
      page.off('request', onReq);
    });

    await check('an API error (an impossible since) is shown, the page keeps working', async () => {
      await page.click('[data-testid="audit-reset"]');
      await page.fill('[data-testid="audit-since"]', '2025-13-45T00:00:00Z'); // RFC 3339 in shape only
      await page.click('[data-testid="audit-search"]');
      await page.waitForSelector('[data-testid="audit-error"]:not([hidden])', { timeout: 3000 });
      const msg = await page.textContent('[data-testid="audit-error"]');
      assert(msg.includes('400') && msg.includes('validation_failed'), `error text: ${msg}`);
      // Chromium logs the failed load; that one is expected.
      for (let i = errors.length - 1; i >= 0; i--) if (/status of 400/.test(errors[i])) errors.splice(i, 1);
      await page.fill('[data-testid="audit-since"]', '');
      eq(await auditSearchUntilRows(page, 1, 3000) > 0, true, 'a search works again');
      assert(await page.isHidden('[data-testid="audit-error"]'), 'error cleared');
    });

    await check('the live list is capped at 200 rows', async () => {
      const n0 = await page.locator('[data-testid="event-row"]').count();
      const items = Array.from({ length: 210 }, (_, i) => ({ keys: [`cap:${RUN_ID}:${i}`] }));
      // One request per event; /invalidate/batch may not exist yet, so plain requests in parallel.
      await Promise.all(items.map((it) => post(server.url, '/invalidate/key', { ...it, triggered_by: 'dashboard-test' })));
      await until(async () => (await page.locator('[data-testid="event-row"]').count()) === 200, 3000,
        `200 rows (had ${n0})`);
      await sleep(200);
      eq(await page.locator('[data-testid="event-row"]').count(), 200, 'still 200');
    });

    await check('WebSocket drop: reconnects and resumes, replaying the missed event', async () => {
      const notices0 = await page.locator('[data-testid="event-notice"]').count();
      await page.evaluate(() => window.invalidatorDashboard.dropSocket());
      await page.waitForFunction(() => document.getElementById('ws-status').dataset.state === 'down', null, { timeout: 2000 });
      const k = `dash:${RUN_ID}:missed`;
      const r = await post(server.url, '/invalidate/key', { keys: [k], triggered_by: 'dashboard-test' });
      const row = await waitEventRow(page, k, 5000);
      eq(await row.getAttribute('data-seq'), String(r.seq), 'missed event replayed with its seq');
      await page.waitForFunction(() => document.getElementById('ws-status').dataset.state === 'open', null, { timeout: 5000 });
      const notes = await page.locator('[data-testid="event-notice"]').allTextContents();
      assert(notes.length > notices0, 'a notice row was added');
      assert(notes.some((n) => /replayed [1-9]/.test(n)), `resume replayed the event: ${JSON.stringify(notes.slice(0, 3))}`);
      eq(await page.locator('[data-testid="event-row"]', { hasText: k }).count(), 1, 'shown once');
      // And it is live again.
      const k2 = `dash:${RUN_ID}:after`;
      await post(server.url, '/invalidate/key', { keys: [k2], triggered_by: 'dashboard-test' });
      await waitEventRow(page, k2, 1000);
    });

    await check('charts have data: invalidations/s, latency, deliveries/s', async () => {
      // A few events over a few seconds so the deltas are non-zero.
      for (let i = 0; i < 6; i++) {
        await post(server.url, '/invalidate/key', { keys: [`user:${i}:profile`, `order:${RUN_ID}:${i}`], triggered_by: 'orders-service' });
        if (i % 2 === 0) await post(server.url, '/invalidate/pattern', { pattern: `user:${i}:*`, triggered_by: 'cache_manager', cache_keys: [`user:${i}:settings`] });
        await sleep(450);
      }
      await sleep(1200);
      const d = await page.evaluate(() => {
        const series = {};
        for (const id of ['chart-rate', 'chart-latency', 'chart-deliveries']) {
          series[id] = document.getElementById(id).querySelectorAll('.u-series').length;
        }
        return series;
      });
      eq(d['chart-latency'], 4, 'latency chart has time + p50/p90/p99');
      const state = await page.evaluate(() => window.invalidatorDashboard.chartData());
      assert(state.points >= 3, `>= 3 samples (${state.points})`);
      assert(state.maxRate > 0, `a positive invalidation rate (${state.maxRate})`);
      assert(state.maxDeliveries > 0, `a positive delivery rate (${state.maxDeliveries})`);
      assert(state.maxP99 > 0 && state.maxP99 >= state.maxP50, `p99 >= p50 > 0 (${state.maxP50}, ${state.maxP99})`);
      const top = await page.locator('[data-testid="top-prefixes-row"]').allTextContents();
      assert(top.some((t) => t.includes('user')), `top prefixes list user: ${JSON.stringify(top)}`);
      const tp = await page.locator('[data-testid="top-patterns-row"]').allTextContents();
      assert(tp.some((t) => t.includes('user:')), `top patterns list a user:* pattern: ${JSON.stringify(tp)}`);
    });

    await check('unknown, missing and odd metric fields do not break the page', async () => {
      const odd = {
        uptime_seconds: 'soon', // wrong type
        invalidations: { total: null, top_patterns: [{ pattern: 'x:*', count: 'many' }, 7, null], top_prefixes: 'none', by_type: null },
        latency_us: null,
        connections: { active: 3 },
        limits: { refused: { per_ip: 2, body_bytes: 1 }, max_connections: 50000 },
        brand_new_feature: { nested: [1, 2, 3], flag: true },
      };
      await page.route('**/invalidate/metrics', (route) => route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(odd) }));
      await page.click('#more-metrics summary');
      await until(async () => (await page.textContent('#more-metrics-body')).includes('limits.refused.per_ip'), 3000, 'limits listed under More metrics');
      eq((await page.textContent('#metric-connections .value')).trim(), '3', 'connections card from the odd document');
      eq((await page.textContent('#metric-uptime .value')).trim(), '–', 'uptime placeholder');
      assert((await page.textContent('#more-metrics-body')).includes('brand_new_feature.flag'), 'new nested field listed');
      await page.unroute('**/invalidate/metrics');
      await until(async () => /\d/.test(await page.textContent('#metric-uptime .value')), 3000, 'back to real metrics');
      // Still live.
      const k = `dash:${RUN_ID}:after-odd`;
      await post(server.url, '/invalidate/key', { keys: [k], triggered_by: 'dashboard-test' });
      await waitEventRow(page, k, 1000);
    });

    await check('server restart: the page reconnects, reports the reset (epoch changed) and is live again', async () => {
      const k0 = `dash:${RUN_ID}:before-restart`;
      await post(server.url, '/invalidate/key', { keys: [k0], triggered_by: 'dashboard-test' });
      await waitEventRow(page, k0, 1000);
      const epoch0 = await page.evaluate(() => window.invalidatorDashboard.epoch);
      const uptimeCard = async () => (await page.textContent('#metric-uptime .value')).trim();
      const nErr = errors.length;
      await server.stop();
      await page.waitForFunction(() => document.getElementById('ws-status').dataset.state === 'down', null, { timeout: 3000 });
      await until(async () => (await page.getAttribute('#metrics-status', 'data-state')) === 'down', 3000, 'metrics badge down');
      const restarted = await startServer('open', { dir: server.dir, port: server.port });
      servers.push(restarted);
      server.stop = restarted.stop;
      await page.waitForFunction(() => document.getElementById('ws-status').dataset.state === 'open', null, { timeout: 15000 });
      await until(async () => (await page.getAttribute('#metrics-status', 'data-state')) === 'open', 3000, 'metrics badge live');
      const notes = await page.locator('[data-testid="event-notice"]').allTextContents();
      const epoch1 = await page.evaluate(() => window.invalidatorDashboard.epoch);
      console.log(`       epoch ${epoch0} -> ${epoch1}: ${notes[0] || ''}`);
      if (epoch1 !== epoch0) {
        assert(notes.some((n) => /Reset \(epoch_changed\)/.test(n)), `reset notice: ${JSON.stringify(notes.slice(0, 3))}`);
      } else {
        assert(notes.some((n) => /Reconnected: replayed/.test(n)), `resumed notice: ${JSON.stringify(notes.slice(0, 3))}`);
      }
      const k1 = `dash:${RUN_ID}:after-restart`;
      const r = await post(restarted.url, '/invalidate/key', { keys: [k1], triggered_by: 'dashboard-test' });
      const row = await waitEventRow(page, k1, 1000);
      eq(await row.getAttribute('data-seq'), String(r.seq), 'seq after restart');
      await until(async () => /^\d+s$/.test(await uptimeCard()), 3000, 'uptime from the new process');
      // While the server was down, the browser logged refused connections (and the dev server
      // answered 502): expected here, not page faults.
      const during = errors.splice(nErr);
      for (const e of during) {
        if (!/ERR_CONNECTION_REFUSED|status of 502|WebSocket connection to .* failed|requestfailed: .*(invalidate\/metrics|\/ws)/.test(e)) errors.push(e);
      }
    });

    await check('no console errors over the whole session', async () => {
      eq(errors.length, 0, `console errors: ${errors.join(' | ')}`);
    });
    await context.close();
    await site.close();

    if (SCREENSHOT) {
      // On a fresh server, so the charts show ordinary traffic rather than the tests' bursts.
      const shotServer = await startServer('shot');
      servers.push(shotServer);
      const shotSite = await pageOrigin(shotServer);
      sites.push(shotSite);
      await check('screenshot to docs/dashboard.png', async () => {
        const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
        ctx.setDefaultTimeout(5000);
        contexts.push(ctx);
        const pg = await ctx.newPage();
        const errs = watchConsole(pg);
        await pg.goto(`${shotSite.origin}/dashboard`);
        await pg.waitForFunction(() => document.getElementById('ws-status').dataset.state === 'open');
        const services = ['orders-service', 'catalog-service', 'cache_manager'];
        for (let i = 0; i < 24; i++) {
          const n = 1 + ((i * 7) % 5);
          await Promise.all(Array.from({ length: n }, (_, j) => post(shotServer.url, '/invalidate/key', {
            keys: j % 2 ? [`order:${4000 + i * 5 + j}`] : [`product:${100 + i * 5 + j}`, `product:${100 + i * 5 + j}:price`],
            triggered_by: services[(i + j) % 3],
          })));
          if (i % 4 === 0) await post(shotServer.url, '/invalidate/pattern', { pattern: `catalog:${i % 3}:*`, triggered_by: 'cache_manager', cache_keys: [`catalog:${i % 3}:home`] });
          if (i % 6 === 3) await post(shotServer.url, '/invalidate/pattern', { pattern: 'user:*:profile', triggered_by: 'admin' });
          await sleep(350);
        }
        await sleep(1100);
        await pg.click('[data-testid="audit-search"]');
        await pg.waitForFunction(() => document.querySelectorAll('[data-testid="audit-row"]').length > 0);
        await pg.evaluate(() => window.scrollTo(0, 0));
        await sleep(300);
        const out = path.join(repo, 'docs', 'dashboard.png');
        fs.mkdirSync(path.dirname(out), { recursive: true });
        await pg.screenshot({ path: out, fullPage: true });
        console.log(`       wrote ${out}`);
        eq(errs.length, 0, `console errors: ${errs.join(' | ')}`);
        await ctx.close();
      });
    }

    // --- a server with tokens: the page asks for one ---
    const secret = `s3cret-${RUN_ID}`;
    const authServer = await startServer('auth', {
      config: `[[tokens]]\nname = "operator"\ntoken = "${secret}"\nscopes = ["invalidate", "subscribe", "audit:read", "metrics"]\n`,
    });
    servers.push(authServer);
    const authSite = await pageOrigin(authServer);
    sites.push(authSite);
    console.log(`dashboard (tokens) served by: ${authSite.mode}`);
    await check('with tokens: 401 -> token prompt; a wrong token is refused; the right one works on fetch and /ws', async () => {
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      ctx.setDefaultTimeout(5000);
      contexts.push(ctx);
      const pg = await ctx.newPage();
      const errs = watchConsole(pg, [/status of 401/, /WebSocket connection to .* failed/]);
      const r = await pg.goto(`${authSite.origin}/dashboard`);
      eq(r.status(), 200, 'the page itself needs no token');
      await pg.waitForSelector('[data-testid="token-dialog"]:not([hidden])', { timeout: 5000 });
      await pg.fill('[data-testid="token-input"]', 'wrong-token');
      await pg.click('[data-testid="token-submit"]');
      await pg.waitForSelector('[data-testid="token-dialog"]:not([hidden])', { timeout: 5000 });
      assert((await pg.textContent('#token-reason')).includes('refused'), 'says the token was refused');
      const wsUrls = [];
      pg.on('websocket', (w) => wsUrls.push(w.url()));
      const authHeaders = [];
      pg.on('request', (q) => { if (q.url().includes('/invalidate/metrics')) authHeaders.push(q.headers().authorization); });
      await pg.fill('[data-testid="token-input"]', secret);
      await pg.click('[data-testid="token-submit"]');
      await pg.waitForFunction(() => document.getElementById('metrics-status').dataset.state === 'open', null, { timeout: 5000 });
      await pg.waitForFunction(() => document.getElementById('ws-status').dataset.state === 'open', null, { timeout: 8000 });
      assert(await pg.isHidden('[data-testid="token-dialog"]'), 'dialog closed');
      assert(authHeaders.includes(`Bearer ${secret}`), 'Authorization: Bearer on fetch');
      assert(wsUrls.some((u) => u.endsWith(`/ws?token=${encodeURIComponent(secret)}`)), `?token= on the WebSocket: ${wsUrls}`);
      eq(await pg.evaluate(() => sessionStorage.getItem('invalidator.token')), secret, 'kept in sessionStorage');
      const k = `auth:${RUN_ID}:k`;
      await post(authServer.url, '/invalidate/key', { keys: [k], triggered_by: 'dashboard-test' }, { authorization: `Bearer ${secret}` });
      await waitEventRow(pg, k, 1000);
      await pg.fill('[data-testid="audit-key"]', k);
      eq(await auditSearchUntilRows(pg, 1, 5000), 1, 'audit row with the token');
      assert((await pg.locator('[data-testid="audit-row"]').first().textContent()).includes('operator'), 'token name shown');
      // A reload keeps the token (same tab session).
      await pg.reload();
      await pg.waitForFunction(() => document.getElementById('ws-status').dataset.state === 'open', null, { timeout: 5000 });
      assert(await pg.isHidden('[data-testid="token-dialog"]'), 'no prompt after reload');
      eq(errs.length, 0, `console errors: ${errs.join(' | ')}`);
      await ctx.close();
    });
    await authSite.close();
  } finally {
    for (const c of contexts) await c.close().catch(() => {});
    for (const s of sites) await s.close().catch(() => {});
    await browser.close().catch(() => {});
    for (const s of servers) await s.stop().catch(() => {});
    const dirs = [...new Set(servers.map((s) => s.dir))];
    if (failed === 0) {
      for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
    } else {
      for (const d of dirs) console.log(`server data and log kept: ${d}`);
    }
  }
}

try {
  await main();
} catch (e) {
  failed++;
  console.log(`  FAIL setup: ${e && e.stack || e}`);
}
killChildren();
console.log(`(${((Date.now() - t0) / 1000).toFixed(1)} s)`);
console.log(`dashboard: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
