// invalidator dashboard: live events over /ws, metrics polling, audit search.
// Plain JavaScript, no build step. Every server field is read defensively: the
// metrics document grows over time and unknown or missing fields must not break the page.
(function () {
  'use strict';

  const MAX_EVENTS = 200;
  const MAX_POINTS = 300; // 5 minutes of 1 s samples
  const POLL_MS = 1000;
  const TOKEN_KEY = 'invalidator.token';

  const $ = (id) => document.getElementById(id);

  // ---------- small helpers ----------

  const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  const get = (obj, path) => {
    let cur = obj;
    for (const p of path.split('.')) {
      if (!isObj(cur)) return undefined;
      cur = cur[p];
    }
    return cur;
  };

  function fmtInt(v) {
    const n = num(v);
    if (n === null) return '–';
    return Math.round(n).toLocaleString('en-US');
  }

  function fmtCompact(v) {
    const n = num(v);
    if (n === null) return '–';
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(2) + 'G';
    if (a >= 1e6) return (n / 1e6).toFixed(2) + 'M';
    if (a >= 1e4) return (n / 1e3).toFixed(1) + 'k';
    return Number.isInteger(n) ? n.toLocaleString('en-US') : n.toFixed(2);
  }

  function fmtRate(v) {
    const n = num(v);
    if (n === null) return '–';
    if (n === 0) return '0';
    if (n < 10) return n.toFixed(2);
    return fmtCompact(n);
  }

  function fmtUs(v) {
    const n = num(v);
    if (n === null) return '–';
    if (n >= 1e6) return +(n / 1e6).toFixed(2) + ' s';
    if (n >= 1e3) return +(n / 1e3).toFixed(n >= 1e5 ? 0 : n >= 1e4 ? 1 : 2) + ' ms';
    return Math.round(n) + ' µs';
  }

  function fmtDuration(secs) {
    const s = num(secs);
    if (s === null) return '–';
    let rest = Math.floor(s);
    const d = Math.floor(rest / 86400); rest -= d * 86400;
    const h = Math.floor(rest / 3600); rest -= h * 3600;
    const m = Math.floor(rest / 60); rest -= m * 60;
    if (d) return `${d}d ${h}h ${m}m`;
    if (h) return `${h}h ${m}m ${rest}s`;
    if (m) return `${m}m ${rest}s`;
    return `${rest}s`;
  }

  function fmtTime(iso) {
    if (typeof iso !== 'string') return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    const p = (n, w = 2) => String(n).padStart(w, '0');
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  }

  function fmtDateTime(iso) {
    if (typeof iso !== 'string') return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    const p = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${fmtTime(iso)}`;
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k.startsWith('data-') || k === 'title' || k === 'id' || k === 'colspan') e.setAttribute(k, String(v));
        else e[k] = v;
      }
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function text(v) {
    if (v === null || v === undefined) return '';
    if (typeof v === 'string') return v;
    try { return JSON.stringify(v); } catch (_) { return String(v); }
  }

  // Keys (or tags) as a compact cell: the first few, then "+N more"; the full list in the tooltip.
  function keysCell(list, limit = 4) {
    const arr = Array.isArray(list) ? list.map(text) : [];
    const td = el('td', { class: 'keys' });
    if (arr.length === 0) {
      td.append(el('span', { class: 'muted', text: '(none)' }));
      return td;
    }
    arr.slice(0, limit).forEach((k) => td.append(el('code', { class: 'key', text: k }), ' '));
    if (arr.length > limit) td.append(el('span', { class: 'muted', text: `+${arr.length - limit} more` }));
    td.title = arr.join('\n');
    return td;
  }

  // ---------- auth ----------

  const auth = {
    token: (() => { try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (_) { return ''; } })(),
    prompting: false,
    set(t) {
      this.token = t || '';
      try {
        if (this.token) sessionStorage.setItem(TOKEN_KEY, this.token);
        else sessionStorage.removeItem(TOKEN_KEY);
      } catch (_) { /* storage disabled: keep it in memory */ }
    },
    headers() {
      return this.token ? { Authorization: `Bearer ${this.token}` } : {};
    },
  };

  class HttpError extends Error {
    constructor(status, body) {
      const msg = (isObj(body) && isObj(body.error) && body.error.message) || `HTTP ${status}`;
      super(msg);
      this.status = status;
      this.code = isObj(body) && isObj(body.error) ? body.error.code : undefined;
      this.field = isObj(body) && isObj(body.error) ? body.error.field : undefined;
    }
  }

  async function api(path, opts = {}) {
    const res = await fetch(path, {
      ...opts,
      headers: { Accept: 'application/json', ...auth.headers(), ...(opts.headers || {}) },
      cache: 'no-store',
      credentials: 'same-origin',
    });
    let body = null;
    const ct = res.headers.get('content-type') || '';
    if (ct.includes('json')) {
      try { body = await res.json(); } catch (_) { body = null; }
    } else {
      try { await res.text(); } catch (_) { /* ignore */ }
    }
    if (res.status === 401) {
      showTokenDialog(auth.token ? 'The stored token was refused (401). Enter another token.' : null);
    }
    if (!res.ok) throw new HttpError(res.status, body);
    return body;
  }

  function showTokenDialog(reason) {
    const dlg = $('token-dialog');
    if (reason) $('token-reason').textContent = reason;
    if (!dlg.hidden) return;
    auth.prompting = true;
    dlg.hidden = false;
    $('token-input').value = '';
    setTimeout(() => $('token-input').focus(), 0);
  }

  function hideTokenDialog() {
    $('token-dialog').hidden = true;
    auth.prompting = false;
  }

  function onTokenChanged() {
    hideTokenDialog();
    updateTokenButton();
    metrics.resetSeries();
    metrics.pollNow();
    ws.restart();
  }

  function updateTokenButton() {
    $('token-button').textContent = auth.token ? 'token ✓' : 'token';
  }

  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    auth.set($('token-input').value.trim());
    onTokenChanged();
  });
  $('token-clear').addEventListener('click', () => { auth.set(''); onTokenChanged(); });
  $('token-cancel').addEventListener('click', hideTokenDialog);
  $('token-button').addEventListener('click', () => showTokenDialog(null));
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && !$('token-dialog').hidden) hideTokenDialog(); });

  // ---------- status badges ----------

  function setBadge(id, state, label) {
    const b = $(id);
    b.dataset.state = state;
    b.textContent = label;
  }

  // ---------- live events (WebSocket) ----------

  const events = {
    rows: [],        // newest first, DOM rows
    pending: [],     // events that arrived while paused, oldest first
    paused: false,
    filter: '',
    received: 0,

    add(ev) {
      this.received++;
      if (this.paused) {
        this.pending.push(ev);
        if (this.pending.length > MAX_EVENTS) this.pending.splice(0, this.pending.length - MAX_EVENTS);
        this.updateCount();
        return;
      }
      this.insert(ev);
      this.updateCount();
    },

    insert(ev) {
      const tr = renderEventRow(ev);
      const body = $('events-body');
      body.insertBefore(tr, body.firstChild);
      this.rows.unshift(tr);
      while (this.rows.length > MAX_EVENTS) this.rows.pop().remove();
      this.applyFilter(tr);
      $('events-empty').hidden = true;
    },

    notice(message, kind = 'info') {
      const tr = el('tr', { class: `notice-row ${kind}`, 'data-testid': 'event-notice' },
        el('td', { colspan: 7, text: `${fmtTime(new Date().toISOString())}  ${message}` }));
      const body = $('events-body');
      body.insertBefore(tr, body.firstChild);
      this.rows.unshift(tr);
      while (this.rows.length > MAX_EVENTS) this.rows.pop().remove();
      $('events-empty').hidden = true;
    },

    setPaused(p) {
      this.paused = p;
      const btn = $('pause-button');
      btn.setAttribute('aria-pressed', String(p));
      btn.classList.toggle('active', p);
      if (!p) {
        const queued = this.pending;
        this.pending = [];
        for (const ev of queued) this.insert(ev);
      }
      this.updateCount();
    },

    clear() {
      this.rows.forEach((r) => r.remove());
      this.rows = [];
      this.pending = [];
      $('events-empty').hidden = false;
      this.updateCount();
    },

    updateCount() {
      const shown = this.rows.filter((r) => r.dataset.testid === 'event-row').length;
      let s = `${shown} shown · ${this.received} received`;
      if (this.paused) s += ` · paused, ${this.pending.length} waiting`;
      $('event-count').textContent = s;
      $('pause-button').textContent = this.paused ? `Resume (${this.pending.length})` : 'Pause';
    },

    applyFilter(tr) {
      const f = this.filter;
      if (!f || !tr.dataset.search) { tr.hidden = false; return; }
      tr.hidden = !tr.dataset.search.includes(f);
    },
  };

  function eventKind(ev) {
    if (Array.isArray(ev.tags) && ev.tags.length) return 'tags';
    if (ev.pattern !== null && ev.pattern !== undefined) return 'pattern';
    return 'keys';
  }

  function renderEventRow(ev) {
    const kind = eventKind(ev);
    const keys = Array.isArray(ev.keys) ? ev.keys : [];
    const tr = el('tr', {
      'data-testid': 'event-row',
      'data-seq': ev.seq,
      'data-request-id': text(ev.request_id),
      'data-kind': kind,
      class: ev.soft === true ? 'soft' : '',
    });
    tr.append(el('td', { class: 'num', text: text(ev.seq) }));
    tr.append(el('td', { class: 'time', text: fmtTime(ev.published_at), title: text(ev.published_at) }));
    const kindTd = el('td', {}, el('span', { class: `kind kind-${kind}`, text: kind }));
    if (kind === 'pattern' && ev.pattern_type) kindTd.append(' ', el('span', { class: 'muted small', text: text(ev.pattern_type) }));
    tr.append(kindTd);
    let what;
    if (kind === 'pattern') {
      what = el('td', { class: 'keys' }, el('code', { class: 'pattern', text: text(ev.pattern) }));
      if (keys.length) {
        const sub = keysCell(keys, 3);
        what.append(' → ', ...Array.from(sub.childNodes));
        what.title = `${text(ev.pattern)}\n${keys.map(text).join('\n')}`;
      }
    } else if (kind === 'tags') {
      what = keysCell(keys, 3);
      what.prepend(el('span', { class: 'muted small', text: `tags ${ev.tags.map(text).join(', ')} → ` }));
    } else {
      what = keysCell(keys);
    }
    tr.append(what);
    tr.append(el('td', { text: text(ev.triggered_by) }));
    const rid = el('td', { class: 'rid', title: text(ev.request_id) });
    if (ev.request_id) {
      rid.append(el('a', {
        href: '#audit-panel', text: text(ev.request_id), title: 'Search the audit log for this request id',
        onclick: (e) => { e.preventDefault(); auditSearchFor({ request_id: text(ev.request_id) }); },
      }));
    }
    tr.append(rid);
    tr.append(el('td', {}, ev.soft === true ? el('span', { class: 'tag soft', text: 'soft' }) : ''));
    tr.dataset.search = [ev.seq, ev.request_id, ev.triggered_by, ev.pattern, ...(keys || []), ...(ev.tags || [])]
      .map(text).join('\n').toLowerCase();
    return tr;
  }

  $('pause-button').addEventListener('click', () => events.setPaused(!events.paused));
  $('clear-button').addEventListener('click', () => events.clear());
  $('event-filter').addEventListener('input', (e) => {
    events.filter = e.target.value.trim().toLowerCase();
    events.rows.forEach((r) => events.applyFilter(r));
  });

  const ws = {
    sock: null,
    epoch: null,
    seq: null,         // position of the last event (or heartbeat) seen
    seen: new Set(),   // recent "epoch:seq" ids, to drop replayed duplicates
    attempt: 0,
    timer: null,
    pingTimer: null,
    connectedOnce: false,
    stopped: false,

    url() {
      const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
      let u = `${proto}//${location.host}/ws`;
      if (auth.token) u += `?token=${encodeURIComponent(auth.token)}`;
      return u;
    },

    connect() {
      clearTimeout(this.timer);
      this.timer = null;
      if (auth.prompting) {
        setBadge('ws-status', 'auth', 'ws: waiting for token');
        this.timer = setTimeout(() => this.connect(), 2000);
        return;
      }
      setBadge('ws-status', 'connecting', this.attempt ? `ws: reconnecting (try ${this.attempt + 1})` : 'ws: connecting');
      let sock;
      try {
        sock = new WebSocket(this.url());
      } catch (err) {
        this.scheduleReconnect(String(err));
        return;
      }
      this.sock = sock;
      let opened = false;
      sock.onopen = () => {
        opened = true;
        this.send({ op: 'subscribe', id: 'dash-sub', patterns: ['*'] });
      };
      sock.onmessage = (m) => {
        if (sock !== this.sock) return;
        let f;
        try { f = JSON.parse(m.data); } catch (_) { return; }
        if (isObj(f)) this.onFrame(f);
      };
      sock.onclose = (e) => {
        if (sock !== this.sock) return;
        this.sock = null;
        clearInterval(this.pingTimer);
        if (this.stopped) return;
        const why = e.code === 4008 ? 'closed: slow consumer' : `closed (${e.code}${e.reason ? ' ' + e.reason : ''})`;
        if (this.connectedOnce) events.notice(`WebSocket ${why}; reconnecting`, 'warn');
        // The upgrade's status is not visible to scripts: a refused upgrade (401/403) shows as 1006
        // before open. Ask the metrics endpoint, which answers 401 (and so prompts) when a token is needed.
        if (!opened) metrics.pollNow();
        this.scheduleReconnect(why);
      };
      sock.onerror = () => { /* onclose follows */ };
    },

    send(obj) {
      if (this.sock && this.sock.readyState === WebSocket.OPEN) {
        this.sock.send(JSON.stringify(obj));
        return true;
      }
      return false;
    },

    onFrame(f) {
      switch (f.type) {
        case 'hello': {
          const node = text(f.node_id);
          $('node-info').textContent = `node ${node} · epoch ${text(f.epoch)}`;
          $('node-info').title = `protocol ${text(f.protocol)}`;
          this.helloEpoch = f.epoch;
          break;
        }
        case 'subscribed': {
          const wasConnected = this.connectedOnce;
          this.attempt = 0;
          setBadge('ws-status', 'open', 'ws: live');
          clearInterval(this.pingTimer);
          this.pingTimer = setInterval(() => this.send({ op: 'ping' }), 20000);
          if (wasConnected && this.epoch !== null && this.seq !== null) {
            setBadge('ws-status', 'resuming', 'ws: resuming');
            this.send({ op: 'resume', id: 'dash-resume', epoch: this.epoch, since_seq: this.seq });
          } else {
            this.epoch = this.helloEpoch ?? null;
            if (num(f.seq) !== null) this.seq = f.seq;
          }
          this.connectedOnce = true;
          break;
        }
        case 'resumed':
          setBadge('ws-status', 'open', 'ws: live');
          events.notice(`Reconnected: replayed ${fmtInt(f.replayed)} missed event(s)`, 'info');
          if (num(f.seq) !== null && (this.seq === null || f.seq > this.seq)) this.seq = f.seq;
          this.epoch = this.helloEpoch ?? this.epoch;
          break;
        case 'reset':
          setBadge('ws-status', 'open', 'ws: live');
          events.notice(`Reset (${text(f.reason)}): events may have been missed while disconnected`, 'warn');
          this.epoch = this.helloEpoch ?? this.epoch;
          this.seq = null;
          break;
        case 'invalidate':
          if (num(f.seq) !== null) {
            // A replay after a reconnect may overlap what was shown: show each (epoch, seq) once.
            const id = `${text(f.epoch)}:${f.seq}`;
            if (this.seen.has(id)) return;
            this.seen.add(id);
            if (this.seen.size > 2 * MAX_EVENTS) this.seen.delete(this.seen.values().next().value);
            if (this.seq === null || f.seq > this.seq) this.seq = f.seq;
          }
          if (f.epoch) this.epoch = f.epoch;
          events.add(f);
          break;
        case 'heartbeat':
        case 'pong':
          // A quiet connection learns its position; only move forward once live (not mid-resume).
          if (num(f.seq) !== null && this.seq !== null && f.seq > this.seq && $('ws-status').dataset.state === 'open') this.seq = f.seq;
          break;
        case 'error':
          events.notice(`Server error frame: ${text(f.code)}: ${text(f.message)}`, 'error');
          if (f.code === 'forbidden' || f.code === 'unauthorized') setBadge('ws-status', 'error', `ws: ${f.code}`);
          break;
        default:
          break; // unknown frame types are ignored
      }
    },

    scheduleReconnect(why) {
      if (this.stopped) return;
      this.attempt++;
      const delay = Math.min(10000, 500 * 2 ** Math.min(this.attempt - 1, 5)) * (0.8 + Math.random() * 0.4);
      const secs = Math.max(1, Math.round(delay / 1000));
      setBadge('ws-status', 'down', `ws: ${why}, retry in ${secs}s`);
      $('ws-status').title = `WebSocket /ws: ${why}`;
      this.timer = setTimeout(() => this.connect(), delay);
    },

    restart() {
      if (this.sock) {
        const s = this.sock;
        this.sock = null;
        try { s.close(1000, 'token changed'); } catch (_) { /* ignore */ }
      }
      this.attempt = 0;
      this.connect();
    },
  };

  // ---------- metrics polling, cards, charts, tables ----------

  const charts = {};
  const cssVar = (name, fallback) => getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;

  function makeChart(id, series, opts = {}) {
    const host = $(id);
    if (typeof window.uPlot !== 'function') {
      host.textContent = 'chart library not loaded';
      return null;
    }
    const grid = { stroke: cssVar('--grid', '#2a3140'), width: 1 };
    const axisStroke = cssVar('--muted', '#8b95a7');
    const u = new window.uPlot({
      width: Math.max(200, host.clientWidth || 400),
      height: opts.height || 180,
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: { x: { time: true, range: (u, min, max) => (max === null || max === undefined ? [Date.now() / 1000 - 30, Date.now() / 1000] : [Math.min(min, max - 30), max]) }, y: { range: (u, min, max) => [0, Math.max(max * 1.1, opts.minMax || 1)] } },
      axes: [
        { stroke: axisStroke, grid, ticks: grid },
        { stroke: axisStroke, grid, ticks: grid, size: 64, values: (u, vals) => vals.map((v) => (opts.fmt || fmtCompact)(v)) },
      ],
      series: [{}, ...series.map((s) => ({
        label: s.label, stroke: s.color, width: 2, fill: s.fill, points: { show: false },
        spanGaps: false, value: (u, v) => (v === null || v === undefined ? '–' : (opts.fmt || fmtRate)(v)),
      }))],
    }, [[], ...series.map(() => [])], host);
    host.dataset.ready = 'true';
    u.over.addEventListener('mouseenter', () => hovered.add(u));
    u.over.addEventListener('mouseleave', () => {
      hovered.delete(u);
      const n = u.data[0].length;
      if (n) setTimeout(() => u.setLegend({ idx: n - 1 }), 0);
    });
    return u;
  }

  const metrics = {
    timer: null,
    inflight: false,
    prev: null,       // { t, total, delivered, uptime }
    x: [],
    rate: [], p50: [], p90: [], p99: [], deliv: [],
    lastOk: 0,

    resetSeries() {
      this.prev = null;
      this.x = []; this.rate = []; this.p50 = []; this.p90 = []; this.p99 = []; this.deliv = [];
      redrawCharts(this);
    },

    pollNow() {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.poll(), 0);
    },

    async poll() {
      clearTimeout(this.timer);
      if (this.inflight) return;
      this.inflight = true;
      const started = performance.now();
      try {
        const m = await api('/invalidate/metrics');
        if (isObj(m)) this.apply(m);
        this.lastOk = Date.now();
        setBadge('metrics-status', 'open', 'metrics: live');
      } catch (err) {
        if (err instanceof HttpError && err.status === 401) setBadge('metrics-status', 'auth', 'metrics: token needed');
        else if (err instanceof HttpError && err.status === 403) setBadge('metrics-status', 'error', 'metrics: forbidden');
        else setBadge('metrics-status', 'down', `metrics: ${err instanceof HttpError ? err.status : 'unreachable'}`);
        $('metrics-status').title = String(err && err.message);
      } finally {
        this.inflight = false;
        const wait = Math.max(50, POLL_MS - (performance.now() - started));
        this.timer = setTimeout(() => this.poll(), auth.prompting ? 3000 : wait);
      }
    },

    apply(m) {
      try { renderCards(m); } catch (e) { console.warn('cards', e); }
      try { renderTables(m); } catch (e) { console.warn('tables', e); }
      try { renderMore(m); } catch (e) { console.warn('more metrics', e); }
      try { this.sample(m); } catch (e) { console.warn('charts', e); }
    },

    sample(m) {
      const t = Date.now() / 1000;
      const total = num(get(m, 'invalidations.total'));
      const delivered = num(get(m, 'events.delivered'));
      const uptime = num(m.uptime_seconds);
      let rate = null;
      let deliv = null;
      const p = this.prev;
      // A server restart (uptime or a counter going back) starts the deltas afresh.
      const restarted = p && ((uptime !== null && p.uptime !== null && uptime < p.uptime) ||
        (total !== null && p.total !== null && total < p.total));
      if (p && !restarted) {
        const dt = t - p.t;
        if (dt > 0.05) {
          if (total !== null && p.total !== null) rate = (total - p.total) / dt;
          if (delivered !== null && p.delivered !== null) deliv = Math.max(0, (delivered - p.delivered) / dt);
        }
      }
      this.prev = { t, total, delivered, uptime };
      if (!p || restarted) return; // the first sample only sets the baseline
      const lat = get(m, 'latency_us');
      this.x.push(t);
      this.rate.push(rate);
      this.deliv.push(deliv);
      this.p50.push(num(get(lat, 'p50')));
      this.p90.push(num(get(lat, 'p90')));
      this.p99.push(num(get(lat, 'p99')));
      for (const k of ['x', 'rate', 'deliv', 'p50', 'p90', 'p99']) {
        if (this[k].length > MAX_POINTS) this[k].splice(0, this[k].length - MAX_POINTS);
      }
      redrawCharts(this);
      const card = $('metric-invalidations');
      card.querySelector('.sub').textContent = `${fmtRate(rate)}/s now · ${fmtRate(get(m, 'invalidations.per_second_1m'))}/s 1m`;
    },
  };

  function redrawCharts(s) {
    const put = (u, data) => {
      if (!u) return;
      u.setData(data);
      // Without a cursor over the chart the legend shows the latest values, not dashes.
      if (!hovered.has(u) && data[0].length) u.setLegend({ idx: data[0].length - 1 });
    };
    put(charts.rate, [s.x, s.rate]);
    put(charts.latency, [s.x, s.p50, s.p90, s.p99]);
    put(charts.deliveries, [s.x, s.deliv]);
  }
  const hovered = new Set();

  function setCard(id, value, sub, title) {
    const c = $(id);
    if (!c) return;
    c.querySelector('.value').textContent = value;
    if (sub !== undefined) c.querySelector('.sub').textContent = sub;
    if (title) c.title = title;
  }

  function renderCards(m) {
    const ready = get(m, 'audit.store_ready');
    const durability = get(m, 'audit.durability');
    setCard('metric-uptime', fmtDuration(m.uptime_seconds),
      [typeof ready === 'boolean' ? (ready ? 'store ready' : 'store NOT ready') : '',
        typeof durability === 'string' ? durability : ''].filter(Boolean).join(' · '),
      typeof durability === 'string' ? `audit durability: ${durability}${get(m, 'audit.push_after_durable') === true ? ', push after durable' : ''}` : '');
    $('metric-uptime').classList.toggle('bad', get(m, 'audit.store_ready') === false);

    const c = isObj(m.connections) ? m.connections : {};
    setCard('metric-connections', fmtInt(c.active),
      `${fmtInt(c.active)} active · ${fmtInt(c.total)} total` + (num(c.slow_consumer_closes) ? ` · ${fmtInt(c.slow_consumer_closes)} slow closes` : ''));
    $('metric-connections').dataset.active = num(c.active) ?? '';
    $('metric-connections').dataset.total = num(c.total) ?? '';

    const idx = isObj(m.index) ? m.index : {};
    setCard('metric-subscriptions', fmtCompact(idx.subscriptions), '');
    setCard('metric-tracked-keys', fmtCompact(idx.tracked_keys), '');

    const inv = isObj(m.invalidations) ? m.invalidations : {};
    setCard('metric-invalidations', fmtInt(inv.total), undefined,
      `keys ${fmtInt(inv.keys_total)} · duplicates ${fmtInt(inv.duplicates)} · rejected ${fmtInt(inv.rejected)}`);
    $('metric-invalidations').dataset.total = num(inv.total) ?? '';

    const ev = isObj(m.events) ? m.events : {};
    setCard('metric-events', fmtCompact(ev.delivered), `${fmtInt(ev.dropped)} dropped`);

    const a = isObj(m.audit) ? m.audit : {};
    // "pending": records durable in the write-ahead log (the spool) but not yet in the store, as the
    // Prometheus gauge invalidator_audit_pending; "queued": still in the writer's channel.
    const pending = num(a.pending) ?? num(a.spooled) ?? 0;
    setCard('metric-audit', fmtCompact(a.written),
      `queued ${fmtInt(a.queued)} · pending ${fmtInt(pending)}` + (num(a.failed_batches) ? ` · ${fmtInt(a.failed_batches)} failed batches` : ''),
      `written ${fmtInt(a.written)}, queued ${fmtInt(a.queued)}, spooled ${fmtInt(a.spooled)}, pending ${fmtInt(pending)}`);
    $('metric-audit').dataset.pending = pending;
    $('metric-audit').classList.toggle('warn', pending > 1000 || num(a.failed_batches) > 0);

    const l = isObj(m.latency_us) ? m.latency_us : {};
    setCard('metric-latency', fmtUs(l.p99), `p50 ${fmtUs(l.p50)} · p90 ${fmtUs(l.p90)} · max ${fmtUs(l.max)}`);
  }

  function fillCountTable(tableId, rows, labelKey) {
    const body = $(tableId).tBodies[0];
    body.replaceChildren();
    const list = Array.isArray(rows) ? rows.filter(isObj) : [];
    if (list.length === 0) {
      body.append(el('tr', {}, el('td', { colspan: 2, class: 'muted', text: 'none yet' })));
      return;
    }
    const max = Math.max(1, ...list.map((r) => num(r.count) ?? 0));
    for (const r of list) {
      const pct = Math.round(((num(r.count) ?? 0) / max) * 100);
      const label = el('td', { class: 'bar-cell', title: text(r[labelKey]) },
        el('span', { class: 'bar', style: `width:${pct}%` }), el('code', { text: text(r[labelKey]) }));
      body.append(el('tr', { 'data-testid': `${tableId}-row` }, label, el('td', { class: 'num', text: fmtInt(r.count) })));
    }
  }

  function renderTables(m) {
    fillCountTable('top-patterns', get(m, 'invalidations.top_patterns'), 'pattern');
    fillCountTable('top-prefixes', get(m, 'invalidations.top_prefixes'), 'prefix');
    const bt = get(m, 'invalidations.by_type');
    fillCountTable('by-type', isObj(bt) ? Object.entries(bt).map(([type, count]) => ({ type, count })) : [], 'type');
  }

  // Everything else the server reports (limits, pattern_cache, audit details, future fields), as
  // flattened key/value pairs, so new metrics show up without a dashboard change.
  const SHOWN = new Set(['uptime_seconds', 'connections', 'index', 'events']);
  function flatten(prefix, v, out, depth) {
    if (out.length > 400) return;
    if (isObj(v) && depth < 6) {
      for (const [k, x] of Object.entries(v)) flatten(prefix ? `${prefix}.${k}` : k, x, out, depth + 1);
    } else if (Array.isArray(v)) {
      out.push([prefix, v.length > 20 ? `[${v.length} items]` : text(v)]);
    } else {
      out.push([prefix, typeof v === 'number' ? fmtCompact(v) : text(v)]);
    }
  }
  function renderMore(m) {
    const det = $('more-metrics');
    if (!det.open) return;
    const out = [];
    for (const [k, v] of Object.entries(m)) {
      if (SHOWN.has(k)) continue;
      if (k === 'invalidations' && isObj(v)) {
        const { top_patterns, top_prefixes, by_type, ...rest } = v; // eslint-disable-line no-unused-vars
        flatten(k, rest, out, 0);
      } else flatten(k, v, out, 0);
    }
    const body = $('more-metrics-body');
    body.replaceChildren(...out.map(([k, v]) => el('div', { class: 'kv-row' }, el('span', { class: 'k', text: k }), el('span', { class: 'v', text: v }))));
  }
  $('more-metrics').addEventListener('toggle', () => metrics.pollNow());

  // ---------- audit search ----------

  const audit = {
    params: null,     // the filters of the current search (without paging)
    cursors: [],      // stack of pages: { before_id, offset, start } for "newer"
    page: null,       // the page shown: { before_id, offset, start }
    lastRows: [],
    total: null,
  };

  function toRfc3339(v, field) {
    const s = v.trim();
    if (!s) return '';
    // Already RFC 3339 with an offset: send it as typed.
    if (/^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/i.test(s)) return s.replace(' ', 'T');
    const d = new Date(s);
    if (Number.isNaN(d.getTime())) throw new Error(`${field}: not a date/time (use RFC 3339, e.g. 2025-01-15T10:30:00Z)`);
    return d.toISOString(); // local time as typed, converted to UTC
  }

  function readAuditForm() {
    const f = $('audit-form');
    const p = {};
    for (const name of ['triggered_by', 'request_id', 'key', 'pattern']) {
      const v = f.elements[name].value;
      if (v.trim() !== '') p[name] = v.trim();
    }
    for (const name of ['since', 'until']) {
      const v = toRfc3339(f.elements[name].value, name);
      if (v) p[name] = v;
    }
    const limit = parseInt(f.elements.limit.value, 10);
    p.limit = Number.isFinite(limit) ? limit : 50;
    const offset = parseInt(f.elements.offset.value, 10);
    return { params: p, offset: Number.isFinite(offset) && offset > 0 ? offset : 0 };
  }

  async function runAudit(page) {
    const err = $('audit-error');
    err.hidden = true;
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(audit.params)) q.set(k, String(v));
    if (page.before_id !== undefined && page.before_id !== null) q.set('before_id', String(page.before_id));
    if (page.offset) q.set('offset', String(page.offset));
    $('audit-search').disabled = true;
    $('audit-panel').dataset.loading = 'true';
    try {
      const res = await api(`/audit/logs?${q}`);
      const logs = Array.isArray(res && res.logs) ? res.logs.filter(isObj) : [];
      audit.page = page;
      audit.lastRows = logs;
      audit.total = num(res && res.total_count);
      audit.hasMore = res && typeof res.has_more === 'boolean' ? res.has_more : logs.length >= (audit.params.limit || 50);
      renderAudit(logs);
    } catch (e) {
      err.textContent = e instanceof HttpError
        ? `${e.status} ${e.code || ''}${e.field ? ` (${e.field})` : ''}: ${e.message}`
        : `Request failed: ${e.message}`;
      err.hidden = false;
    } finally {
      $('audit-search').disabled = false;
      delete $('audit-panel').dataset.loading;
    }
  }

  function renderAudit(logs) {
    const body = $('audit-body');
    body.replaceChildren();
    for (const r of logs) {
      const kind = text(r.kind) || (r.pattern ? 'pattern' : 'keys');
      const tr = el('tr', { 'data-testid': 'audit-row', 'data-id': r.id, 'data-request-id': text(r.request_id), class: r.soft === true ? 'soft' : '' });
      tr.append(el('td', { class: 'num', text: text(r.id) }));
      tr.append(el('td', { class: 'num', text: text(r.seq) }));
      tr.append(el('td', { class: 'time', text: fmtDateTime(r.timestamp), title: text(r.timestamp) }));
      const kindTd = el('td', {}, el('span', { class: `kind kind-${kind}`, text: kind }));
      if (r.pattern_type) kindTd.append(' ', el('span', { class: 'muted small', text: text(r.pattern_type) }));
      tr.append(kindTd);
      let what;
      if (r.pattern !== null && r.pattern !== undefined) {
        what = keysCell(r.keys, 3);
        what.prepend(el('code', { class: 'pattern', text: text(r.pattern) }), ' → ');
      } else {
        what = keysCell(r.keys, 4);
      }
      tr.append(what);
      tr.append(el('td', { class: 'num', text: r.matched_count === undefined ? '' : text(r.matched_count) }));
      tr.append(el('td', { text: text(r.triggered_by) }));
      tr.append(el('td', { class: 'muted', text: text(r.token_name) }));
      tr.append(el('td', { class: 'rid', text: text(r.request_id), title: text(r.request_id) }));
      tr.append(el('td', { class: 'num', text: num(r.latency_us) !== null ? fmtInt(r.latency_us) : text(r.latency) }));
      tr.append(el('td', {}, r.soft === true ? el('span', { class: 'tag soft', text: 'soft' }) : ''));
      tr.append(el('td', { class: 'muted', text: text(r.node_id) }));
      if (r.hash) tr.title = `hash ${text(r.hash)}`;
      body.append(tr);
    }
    $('audit-empty').hidden = logs.length > 0;
    $('audit-empty').textContent = 'No audit rows match these filters.';
    const start = audit.page.start;
    const total = audit.total;
    $('audit-total').textContent = total === null ? '' : `${fmtInt(total)} matching`;
    $('audit-total').dataset.total = total ?? '';
    $('audit-range').textContent = logs.length
      ? `rows ${fmtInt(start + 1)}–${fmtInt(start + logs.length)}${total !== null ? ` of ${fmtInt(total)}` : ''}`
      : (total !== null ? `0 of ${fmtInt(total)}` : '');
    $('audit-prev').disabled = audit.cursors.length === 0;
    const more = audit.hasMore && logs.length > 0 && num(logs[logs.length - 1].id) !== null;
    $('audit-next').disabled = !more;
  }

  function startAuditSearch() {
    let form;
    try {
      form = readAuditForm();
    } catch (e) {
      $('audit-error').textContent = e.message;
      $('audit-error').hidden = false;
      return;
    }
    audit.params = form.params;
    audit.cursors = [];
    runAudit({ before_id: null, offset: form.offset, start: form.offset });
  }

  function auditSearchFor(filters) {
    const f = $('audit-form');
    for (const name of ['triggered_by', 'request_id', 'key', 'pattern', 'since', 'until']) f.elements[name].value = filters[name] || '';
    f.elements.offset.value = '0';
    startAuditSearch();
    $('audit-panel').scrollIntoView({ behavior: 'smooth', block: 'start' });
  }

  $('audit-form').addEventListener('submit', (e) => { e.preventDefault(); startAuditSearch(); });
  $('audit-reset').addEventListener('click', () => {
    $('audit-form').reset();
    startAuditSearch();
  });
  $('audit-next').addEventListener('click', () => {
    if (!audit.page || audit.lastRows.length === 0) return;
    const last = audit.lastRows[audit.lastRows.length - 1];
    audit.cursors.push(audit.page);
    // Keyset paging: the next (older) page is everything below the last row's id.
    runAudit({ before_id: last.id, offset: 0, start: audit.page.start + audit.lastRows.length });
  });
  $('audit-prev').addEventListener('click', () => {
    const prev = audit.cursors.pop();
    if (prev) runAudit(prev);
  });

  // ---------- start ----------

  function initCharts() {
    const colors = {
      a: cssVar('--accent', '#5aa9ff'), b: cssVar('--c2', '#f5b14c'), c: cssVar('--c3', '#ef6b73'), d: cssVar('--c4', '#54d38a'),
    };
    charts.rate = makeChart('chart-rate', [{ label: 'invalidations/s', color: colors.a, fill: 'rgba(90,169,255,0.12)' }]);
    charts.latency = makeChart('chart-latency', [
      { label: 'p50', color: colors.d }, { label: 'p90', color: colors.b }, { label: 'p99', color: colors.c },
    ], { fmt: fmtUs, minMax: 10 });
    charts.deliveries = makeChart('chart-deliveries', [{ label: 'deliveries/s', color: colors.d, fill: 'rgba(84,211,138,0.12)' }]);
    const resize = () => {
      for (const [k, u] of Object.entries(charts)) {
        if (!u) continue;
        const host = $(`chart-${k}`);
        const w = Math.max(200, host.clientWidth);
        if (Math.abs(w - u.width) > 2) u.setSize({ width: w, height: u.height });
      }
    };
    if (typeof ResizeObserver === 'function') {
      const ro = new ResizeObserver(() => resize());
      document.querySelectorAll('.chart').forEach((c) => ro.observe(c));
    } else {
      window.addEventListener('resize', resize);
    }
  }

  updateTokenButton();
  events.updateCount();
  initCharts();
  metrics.poll();
  ws.connect();

  // For tests and the curious: a read-only view of the live state.
  window.invalidatorDashboard = Object.freeze({
    get wsState() { return $('ws-status').dataset.state; },
    get lastSeq() { return ws.seq; },
    get epoch() { return ws.epoch; },
    dropSocket() { if (ws.sock) ws.sock.close(4000, 'dropped by test'); },
    chartData() {
      const max = (a) => a.reduce((m, v) => (v !== null && v > m ? v : m), 0);
      return {
        points: metrics.x.length, maxRate: max(metrics.rate), maxDeliveries: max(metrics.deliv),
        maxP50: max(metrics.p50), maxP99: max(metrics.p99),
      };
    },
  });
})();
