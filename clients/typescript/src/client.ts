/**
 * The cache-manager client: keeps a local cache coherent with an invalidator server.
 *
 * A {@link CacheClient} holds one WebSocket connection to `GET /ws`. It subscribes to the
 * configured patterns, applies every `invalidate` event to its local cache, tracks the keys
 * the application fills (one-shot, as the server does), and on any disconnect (network,
 * server restart, a 4008 slow-consumer close) reconnects with full-jitter exponential backoff
 * and `resume`s from the last position it has applied: it re-subscribes and re-tracks every
 * key it still holds first, so the replay covers exactly what it missed. A `reset` (history
 * gap, epoch change) clears the local cache: the only safe answer when events may be lost.
 *
 * Fills go through the fill guard ({@link CacheClient.beginFill} /
 * {@link CacheClient.completeFill}, or {@link CacheClient.getOrFill}): a value read before an
 * invalidation of its key is never stored after it.
 *
 * Position rule: the position (epoch, seq) advances on events, heartbeats, pongs and
 * subscription replies, but not while a `resume` is in flight: replayed events arrive then,
 * and a disconnect mid-replay must resume from the old position again.
 */

import { type CacheEntry, type LocalCache, LruCache } from "./cache.js";
import {
  ClosedError,
  ConnectError,
  InvalidatorError,
  NotConnectedError,
  ServerError,
  TimeoutError,
} from "./errors.js";
import { FillGuard, type FillToken } from "./fill.js";
import { type PatternType, PatternCache, PatternError } from "./pattern.js";
import {
  type Transport,
  type WebSocketConstructor,
  type WebSocketFactory,
  type WebSocketLike,
  defaultTransport,
  fromConstructor,
  messageText,
} from "./transport.js";

/** A subscription: a pattern string (type inferred) or an explicit pattern and type. */
export type Subscription = string | { pattern: string; pattern_type?: PatternType | null };

export interface Logger {
  info(...args: unknown[]): void;
  warn(...args: unknown[]): void;
}

export interface CacheClientOptions<V> {
  /** `ws://host:port/ws` (or `wss://`). */
  url: string;
  /** A token with the `subscribe` scope, when the server has tokens. */
  token?: string;
  /**
   * How the token is sent: `header` (`Authorization: Bearer`, Node's `ws` only) or `query`
   * (`?token=`). Default: `header` when the implementation can send headers, else `query`.
   */
  tokenTransport?: "header" | "query";
  /** Patterns to subscribe to (every key they match is invalidated for this client). */
  subscriptions?: readonly Subscription[];
  /** The local cache (default: an {@link LruCache} of `maxEntries`). */
  cache?: LocalCache<V>;
  /** Size of the default LRU (default 10,000 entries). */
  maxEntries?: number;
  /**
   * Soft invalidation: how long a soft-invalidated entry may still be served while it is
   * refetched (default 30,000 ms). 0 makes soft invalidations drop entries like hard ones.
   */
  maxStaleMs?: number;
  /** First reconnect backoff ceiling (default 100 ms); doubles up to `reconnectMaxMs`. */
  reconnectMinMs?: number;
  /** Largest reconnect backoff ceiling (default 5,000 ms). Delays are drawn from [0, ceiling). */
  reconnectMaxMs?: number;
  /** How long an operation waits for the server's reply (default 10,000 ms). */
  requestTimeoutMs?: number;
  /** How long opening a connection may take, handshake and setup included (default 10,000 ms). */
  connectTimeoutMs?: number;
  /**
   * With no frame from the server for this long the client sends a `ping` (default 20,000 ms;
   * the server sends a heartbeat every 15 s when idle). 0 disables the watchdog.
   */
  pingIntervalMs?: number;
  /** With no frame for this long the connection is taken as dead and replaced (default 45,000 ms). */
  idleTimeoutMs?: number;
  /** A WHATWG-style WebSocket constructor to use instead of the default for the runtime. */
  WebSocket?: WebSocketConstructor;
  /** Whether `WebSocket` accepts `{headers}` as its third argument, as `ws` does (default false). */
  webSocketSendsHeaders?: boolean;
  /** Full control over opening connections (wins over `WebSocket`). */
  createWebSocket?: WebSocketFactory;
  /** Extra handshake headers (only where the implementation can send them). */
  headers?: Record<string, string>;
  /** Where to log connection changes (default: nowhere; listen to events instead). */
  logger?: Logger;
  /** The clock (default `Date.now`). */
  now?: () => number;
}

/** Where the client stands. */
export interface Status {
  /** Epoch and last fully applied `seq`, once known. */
  epoch: string | undefined;
  seq: number;
  /** A session is open and its subscriptions and tracked keys are acknowledged. */
  connected: boolean;
  /** A `resume` is in flight (the position does not move until it is answered). */
  resuming: boolean;
  /** Sessions established so far (1 after the first connect). */
  sessions: number;
  /** `reset`s received (each cleared the cache). */
  resets: number;
  /** Events replayed by `resume`s. */
  replayed: number;
  /** `invalidate` events applied. */
  events: number;
}

/** An `invalidate` frame as the server sends it. */
export interface InvalidateEvent {
  type: "invalidate";
  seq: number;
  epoch: string;
  request_id?: string;
  triggered_by?: string;
  published_at?: string;
  keys: string[];
  pattern?: string | null;
  pattern_type?: PatternType | null;
  tags?: string[] | null;
  soft?: boolean;
  [field: string]: unknown;
}

export interface ClientEvents {
  /** An `invalidate` event was applied to the cache. */
  invalidate: (event: InvalidateEvent) => void;
  /** A `reset` cleared the cache. */
  reset: (reason: string) => void;
  /** A session is ready (subscribed and re-tracked). */
  connect: () => void;
  /** The connection closed; `reconnecting` unless offline ({@link CacheClient.disconnect}) or closed. */
  disconnect: (info: { code: number; reason: string; reconnecting: boolean }) => void;
  /** A background problem: a failed reconnect, a refused re-subscription, a failed refresh. */
  error: (error: Error) => void;
  /** The status changed. */
  status: (status: Status) => void;
}

export interface TrackOptions {
  /** Tags (surrogate keys) attached to every key of this `track`. */
  tags?: readonly string[];
}

/** An entry as {@link CacheClient.getEntry} returns it. */
export interface EntryView<V> {
  value: V;
  stale: boolean;
  storedAt: number;
  staleSince?: number;
  tags?: readonly string[];
}

interface Pending {
  resolve: (frame: Frame) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

type Frame = Record<string, unknown> & { type?: unknown; id?: unknown; seq?: unknown };

/** One connection. */
class Session {
  epoch = "";
  helloSeq = 0;
  nextId = 1;
  resuming = false;
  closed = false;
  ready = false;
  readonly pending = new Map<number, Pending>();
  lastFrameAt: number;
  readonly openedAt: number;
  watchdog: ReturnType<typeof setInterval> | undefined;

  constructor(
    readonly ws: WebSocketLike,
    now: number,
  ) {
    this.lastFrameAt = now;
    this.openedAt = now;
  }
}

function redact(url: string): string {
  return url.replace(/([?&]token=)[^&#]*/, "$1***");
}

function asSeq(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

function tagKey(tags: ReadonlySet<string> | undefined): string {
  return tags && tags.size > 0 ? JSON.stringify([...tags].sort()) : "";
}

/** A local cache kept coherent with an invalidator server. */
export class CacheClient<V = unknown> {
  /** The local cache (read it directly, or through {@link get} / {@link getEntry}). */
  readonly cache: LocalCache<V>;
  readonly maxStaleMs: number;

  private readonly opts: CacheClientOptions<V>;
  private readonly now: () => number;
  private readonly fills = new FillGuard();
  private readonly patterns = new PatternCache(256);
  /** Keys tracked on the server on our behalf, with their tags: re-tracked after a reconnect. */
  private readonly held = new Map<string, Set<string> | undefined>();
  /** `getOrFill` loads in flight (single flight per key while its token is valid). */
  private readonly loading = new Map<string, { token: FillToken; promise: Promise<V> }>();
  private readonly listeners: { [E in keyof ClientEvents]: Set<ClientEvents[E]> } = {
    invalidate: new Set(),
    reset: new Set(),
    connect: new Set(),
    disconnect: new Set(),
    error: new Set(),
    status: new Set(),
  };
  private readonly waiters = new Set<() => void>();
  private readonly state: Status = {
    epoch: undefined,
    seq: 0,
    connected: false,
    resuming: false,
    sessions: 0,
    resets: 0,
    replayed: 0,
    events: 0,
  };
  private transport: Transport | undefined;
  private session: Session | null = null;
  private connecting = false;
  private offline = false;
  private closed = false;
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;

  /**
   * Connect, subscribe, and keep the cache coherent from now on. Rejects if the first
   * connection cannot be made or its subscriptions are refused; later disconnects are
   * retried forever (until {@link close}).
   */
  static async connect<V = unknown>(opts: CacheClientOptions<V>): Promise<CacheClient<V>> {
    const client = new CacheClient<V>(opts);
    await client.start();
    return client;
  }

  private constructor(opts: CacheClientOptions<V>) {
    this.opts = opts;
    this.now = opts.now ?? Date.now;
    this.maxStaleMs = opts.maxStaleMs ?? 30_000;
    if (opts.cache) {
      this.cache = opts.cache;
    } else {
      const lru = new LruCache<V>(opts.maxEntries !== undefined ? { maxEntries: opts.maxEntries } : {});
      lru.onEvict = (key) => this.evicted(key);
      this.cache = lru;
    }
  }

  private async start(): Promise<void> {
    const o = this.opts;
    if (o.createWebSocket) this.transport = { factory: o.createWebSocket, headers: true };
    else if (o.WebSocket) this.transport = fromConstructor(o.WebSocket, o.webSocketSendsHeaders ?? false);
    else this.transport = await defaultTransport();
    this.connecting = true;
    try {
      this.session = await this.openSession();
    } finally {
      this.connecting = false;
    }
  }

  // ---- public API -------------------------------------------------------------------------

  /** A copy of the current status. */
  get status(): Status {
    return { ...this.state };
  }

  /**
   * Wait until `cond` holds; resolves false after `timeoutMs`. `cond` is re-checked after
   * every frame and every stored fill (so it may test the cache as well as the status).
   */
  waitUntil(cond: (s: Status) => boolean, timeoutMs = 10_000): Promise<boolean> {
    if (cond(this.status)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const check = () => {
        if (cond(this.status)) {
          clearTimeout(timer);
          this.waiters.delete(check);
          resolve(true);
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        resolve(false);
      }, timeoutMs);
      this.waiters.add(check);
    });
  }

  /** Listen to an event; returns a function that removes the listener. */
  on<E extends keyof ClientEvents>(event: E, listener: ClientEvents[E]): () => void {
    (this.listeners[event] as Set<ClientEvents[E]>).add(listener);
    return () => this.off(event, listener);
  }

  off<E extends keyof ClientEvents>(event: E, listener: ClientEvents[E]): void {
    (this.listeners[event] as Set<ClientEvents[E]>).delete(listener);
  }

  /**
   * The cached value: fresh, or soft-invalidated less than `maxStaleMs` ago. Use
   * {@link getEntry} to tell the two apart, or {@link getOrFill} to refetch stale values.
   */
  get(key: string): V | undefined {
    return this.getEntry(key)?.value;
  }

  /** The cached entry and whether it is stale (soft-invalidated); undefined when absent. */
  getEntry(key: string): EntryView<V> | undefined {
    const e = this.cache.get(key);
    if (e === undefined) return undefined;
    if (e.staleSince !== undefined && this.now() - e.staleSince > this.maxStaleMs) {
      this.cache.delete(key);
      return undefined;
    }
    const view: EntryView<V> = { value: e.value, stale: e.staleSince !== undefined, storedAt: e.storedAt };
    if (e.staleSince !== undefined) view.staleSince = e.staleSince;
    if (e.tags !== undefined) view.tags = e.tags;
    return view;
  }

  /**
   * Cache-aside read: a fresh value is returned at once; a stale one (soft-invalidated less
   * than `maxStaleMs` ago) is returned at once and refetched in the background; otherwise
   * `loader` runs under the fill guard and its value is returned (and stored, unless an
   * invalidation of the key arrived while it ran). Concurrent misses of one key share a load,
   * unless an invalidation voided it (later callers then start a fresh one).
   */
  async getOrFill(key: string, loader: (key: string) => V | Promise<V>, opts: TrackOptions = {}): Promise<V> {
    const e = this.getEntry(key);
    if (e !== undefined) {
      if (e.stale) this.refresh(key, loader, opts);
      return e.value;
    }
    return this.load(key, loader, opts);
  }

  /**
   * Start filling `key`: registers the fill and tracks the key (with `tags`) on the server,
   * then resolves. Read the source of truth only after this resolves, then call
   * {@link completeFill} (or {@link abandonFill}). While disconnected the key is tracked at the
   * reconnect, before the resume, so a missed invalidation still voids the token.
   */
  async beginFill(key: string, opts: TrackOptions = {}): Promise<FillToken> {
    const token = this.fills.begin(key, opts.tags ?? []);
    try {
      await this.track([key], opts);
    } catch (err) {
      if (!(err instanceof NotConnectedError)) {
        this.fills.abandon(token);
        throw err;
      }
    }
    return token;
  }

  /** Store `value` unless the token's key was invalidated since {@link beginFill}. */
  completeFill(token: FillToken, value: V): boolean {
    const stored = this.fills.complete(token, (key) => {
      const entry: CacheEntry<V> = { value, storedAt: this.now() };
      if (token.tags.length > 0) entry.tags = token.tags;
      this.cache.set(key, entry);
    });
    // A store is a local change no frame announces (a background refresh ends here):
    // re-check the waitUntil conditions, or they would sleep until the next frame.
    if (stored) this.wake();
    return stored;
  }

  /** Give a fill up (the load failed). */
  abandonFill(token: FillToken): void {
    this.fills.abandon(token);
  }

  /** Whether `token` would still be accepted by {@link completeFill}. */
  isFillValid(token: FillToken): boolean {
    return this.fills.isValid(token);
  }

  /**
   * Tell the server this client holds `keys` (one-shot tracking, optionally with tags).
   * Resolves to the number of keys the server now tracks for this connection. Rejects with
   * {@link NotConnectedError} while disconnected: the keys are tracked at the next connect.
   */
  async track(keys: readonly string[], opts: TrackOptions = {}): Promise<number> {
    const tags = opts.tags && opts.tags.length > 0 ? new Set(opts.tags) : undefined;
    for (const k of keys) this.held.set(k, tags);
    const fields: Record<string, unknown> = { keys };
    if (tags) fields.tags = [...tags];
    const reply = await this.request("track", fields);
    return Number(reply.count ?? 0);
  }

  /** Stop tracking `keys` on the server (the local entries stay). */
  async untrack(keys: readonly string[]): Promise<number> {
    for (const k of keys) this.held.delete(k);
    const reply = await this.request("untrack", { keys });
    return Number(reply.count ?? 0);
  }

  /** Drop a key locally and stop tracking it (unless a fill of it is in progress). */
  delete(key: string): boolean {
    const had = this.cache.delete(key);
    this.release(key);
    return had;
  }

  /** Drop every local entry and stop tracking them (keys being filled stay tracked). */
  clear(): void {
    this.cache.clear();
    const gone: string[] = [];
    for (const k of [...this.held.keys()]) {
      if (this.fills.isFilling(k)) continue;
      this.held.delete(k);
      gone.push(k);
    }
    this.sendUntrack(gone);
  }

  /** Ping the server; resolves to its current `seq` (the position advances to it). */
  async ping(): Promise<number> {
    const reply = await this.request("ping", {});
    return Number(reply.seq ?? 0);
  }

  /** Drop the connection and stay offline until {@link reconnect}. */
  disconnect(): void {
    this.offline = true;
    this.cancelReconnect();
    this.session?.ws.close(1000, "offline");
  }

  /** Reconnect (and resume) after {@link disconnect}, or right away if waiting to retry. */
  reconnect(): void {
    if (this.closed) return;
    this.offline = false;
    this.cancelReconnect();
    this.attempt = 0;
    this.reconnectNow();
  }

  /** Close the connection for good. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.cancelReconnect();
    const s = this.session;
    if (s && !s.closed) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1000);
        const prev = s.ws.onclose;
        s.ws.onclose = (ev) => {
          clearTimeout(timer);
          prev?.(ev);
          resolve();
        };
        s.ws.close(1000, "client closed");
      });
    }
    if (s) this.sessionClosed(s, 1000, "client closed");
    this.waiters.clear();
  }

  // ---- connection -------------------------------------------------------------------------

  private log(level: "info" | "warn", ...args: unknown[]): void {
    this.opts.logger?.[level]("[invalidator-client]", ...args);
  }

  private emit<E extends keyof ClientEvents>(event: E, ...args: Parameters<ClientEvents[E]>): void {
    for (const l of [...this.listeners[event]]) {
      try {
        (l as (...a: unknown[]) => void)(...args);
      } catch (err) {
        this.log("warn", `a ${event} listener threw`, err);
      }
    }
  }

  private changed(): void {
    this.wake();
    if (this.listeners.status.size > 0) this.emit("status", this.status);
  }

  /** Re-check every pending {@link waitUntil} condition. */
  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  private connectUrl(): { url: string; headers: Record<string, string> } {
    const o = this.opts;
    const headers: Record<string, string> = { ...(o.headers ?? {}) };
    let url = o.url;
    const canHeaders = this.transport!.headers;
    const mode = o.tokenTransport ?? (canHeaders ? "header" : "query");
    if (o.token !== undefined) {
      if (mode === "header" && canHeaders) {
        headers.authorization = `Bearer ${o.token}`;
      } else {
        const u = new URL(url);
        u.searchParams.set("token", o.token);
        url = u.toString();
      }
    }
    return { url, headers: canHeaders ? headers : {} };
  }

  /**
   * Open a connection, read `hello`, subscribe, re-track held keys and resume from the
   * position; resolves once the subscriptions and tracks are acknowledged.
   */
  private openSession(): Promise<Session> {
    const { url, headers } = this.connectUrl();
    const shown = redact(url);
    const timeoutMs = this.opts.connectTimeoutMs ?? 10_000;
    return new Promise<Session>((resolve, reject) => {
      let ws: WebSocketLike;
      try {
        ws = this.transport!.factory(url, headers);
      } catch (err) {
        reject(new ConnectError(shown, (err as Error).message));
        return;
      }
      const s = new Session(ws, this.now());
      let settled = false;
      let lastError = "";
      const fail = (message: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        try {
          ws.close();
        } catch {
          // already closing
        }
        reject(new ConnectError(shown, message));
      };
      const timer = setTimeout(() => fail(`no session within ${timeoutMs} ms`), timeoutMs);
      ws.onerror = (ev) => {
        const e = ev as { message?: string; error?: { message?: string } };
        lastError = e?.error?.message ?? e?.message ?? "connection error";
      };
      ws.onclose = (ev) => {
        const wasSettled = settled;
        fail(lastError || `closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ""})`);
        this.sessionClosed(s, ev.code, ev.reason, wasSettled);
      };
      ws.onmessage = (ev) => {
        const frame = this.parse(ev.data);
        if (!frame) return;
        s.lastFrameAt = this.now();
        if (frame.type !== "hello") {
          fail(`expected hello, got ${String(frame.type)}`);
          return;
        }
        ws.onmessage = (e) => {
          const f = this.parse(e.data);
          if (f) this.apply(s, f);
        };
        this.setup(s, frame).then(
          () => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            s.ready = true;
            this.state.connected = true;
            this.state.sessions += 1;
            this.startWatchdog(s);
            this.log("info", `connected to ${shown} (epoch ${s.epoch}, seq ${s.helloSeq})`);
            this.changed();
            this.emit("connect");
            resolve(s);
          },
          (err: Error) => fail(err.message),
        );
      };
    });
  }

  /** After `hello`: send subscribe, track and resume at once (one synchronous step). */
  private setup(s: Session, hello: Frame): Promise<unknown> {
    s.epoch = typeof hello.epoch === "string" ? hello.epoch : "";
    s.helloSeq = asSeq(hello.seq) ?? 0;
    // From here on tracks go to this session; the snapshot below covers every earlier one.
    this.session = s;
    const replies: Promise<unknown>[] = [];
    const subs = this.opts.subscriptions ?? [];
    if (subs.length > 0) {
      const patterns = subs.map((p) =>
        typeof p === "string" ? p : { pattern: p.pattern, pattern_type: p.pattern_type ?? null },
      );
      replies.push(this.send(s, "subscribe", { patterns }));
    }
    // Re-track what we still hold or are filling, grouped by tag set.
    const groups = new Map<string, { keys: string[]; tags: Set<string> | undefined }>();
    for (const [key, tags] of [...this.held]) {
      if (!this.cache.has(key) && !this.fills.isFilling(key)) {
        this.held.delete(key);
        continue;
      }
      const id = tagKey(tags);
      let g = groups.get(id);
      if (!g) groups.set(id, (g = { keys: [], tags }));
      g.keys.push(key);
    }
    for (const g of groups.values()) {
      for (let i = 0; i < g.keys.length; i += 10_000) {
        const fields: Record<string, unknown> = { keys: g.keys.slice(i, i + 10_000) };
        if (g.tags) fields.tags = [...g.tags];
        replies.push(this.send(s, "track", fields));
      }
    }
    if (this.state.epoch !== undefined) {
      s.resuming = true;
      this.state.resuming = true;
      this.send(s, "resume", { epoch: this.state.epoch, since_seq: this.state.seq }).catch((err: unknown) => {
        // A refused resume leaves us not knowing what we missed: the same answer as a reset.
        if (err instanceof ServerError && !s.closed && s.resuming) {
          this.reset(s, `resume refused: ${err.code}`);
          this.changed();
        }
      });
    } else {
      this.state.epoch = s.epoch;
      this.state.seq = s.helloSeq;
    }
    this.changed();
    return Promise.all(replies);
  }

  private startWatchdog(s: Session): void {
    const ping = this.opts.pingIntervalMs ?? 20_000;
    const idle = this.opts.idleTimeoutMs ?? 45_000;
    if (ping <= 0) return;
    s.watchdog = setInterval(
      () => {
        if (s.closed) return;
        const quiet = this.now() - s.lastFrameAt;
        if (quiet >= idle) {
          this.log("warn", `no frame for ${quiet} ms: replacing the connection`);
          const t = (s.ws as { terminate?: () => void }).terminate;
          if (typeof t === "function") t.call(s.ws);
          else s.ws.close(4000, "idle");
        } else if (quiet >= ping) {
          this.send(s, "ping", {}).catch(() => {});
        }
      },
      Math.max(50, Math.min(ping, idle) / 2),
    );
  }

  private sessionClosed(s: Session, code: number, reason: string, wasReady = true): void {
    if (s.closed) return;
    s.closed = true;
    if (s.watchdog) clearInterval(s.watchdog);
    for (const p of s.pending.values()) {
      clearTimeout(p.timer);
      p.reject(this.closed ? new ClosedError() : new NotConnectedError());
    }
    s.pending.clear();
    if (this.session !== s) return;
    this.session = null;
    this.state.connected = false;
    this.state.resuming = false;
    this.changed();
    if (!s.ready) return; // openSession's caller handles the failure.
    this.log("info", `disconnected (${code}${reason ? `: ${reason}` : ""})`);
    this.emit("disconnect", { code, reason, reconnecting: !this.closed && !this.offline });
    // A session that lived a while earns a fresh backoff; one that dies at once does not.
    if (wasReady && this.now() - s.openedAt > 1000) this.attempt = 0;
    this.scheduleReconnect();
  }

  private cancelReconnect(): void {
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
  }

  /** Full-jitter exponential backoff: a delay drawn from [0, min(max, min * 2^attempt)). */
  private scheduleReconnect(): void {
    if (this.closed || this.offline || this.reconnectTimer !== undefined) return;
    const min = this.opts.reconnectMinMs ?? 100;
    const max = this.opts.reconnectMaxMs ?? 5_000;
    const ceiling = Math.min(max, min * 2 ** Math.min(this.attempt, 30));
    this.attempt += 1;
    const delay = Math.random() * ceiling;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.reconnectNow();
    }, delay);
  }

  private reconnectNow(): void {
    if (this.closed || this.offline || this.session || this.connecting) return;
    this.connecting = true;
    this.openSession().then(
      (s) => {
        this.connecting = false;
        if (this.closed || this.offline) s.ws.close(1000, this.closed ? "client closed" : "offline");
      },
      (err: Error) => {
        this.connecting = false;
        this.log("info", `reconnect failed: ${err.message}`);
        this.emit("error", err);
        this.scheduleReconnect();
      },
    );
  }

  private parse(data: unknown): Frame | undefined {
    const text = messageText(data);
    if (text === undefined) return undefined;
    try {
      const v: unknown = JSON.parse(text);
      return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Frame) : undefined;
    } catch {
      this.log("warn", "the server sent a frame that is not JSON");
      return undefined;
    }
  }

  /** Send an op with an id; resolves with the reply frame (rejects on an `error` reply). */
  private send(s: Session, op: string, fields: Record<string, unknown>): Promise<Frame> {
    if (s.closed) return Promise.reject(new NotConnectedError());
    const id = s.nextId++;
    const timeoutMs = this.opts.requestTimeoutMs ?? 10_000;
    return new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => {
        s.pending.delete(id);
        reject(new TimeoutError(timeoutMs));
      }, timeoutMs);
      s.pending.set(id, { resolve, reject, timer });
      try {
        s.ws.send(JSON.stringify({ op, id, ...fields }));
      } catch {
        clearTimeout(timer);
        s.pending.delete(id);
        reject(new NotConnectedError());
      }
    });
  }

  private request(op: string, fields: Record<string, unknown>): Promise<Frame> {
    if (this.closed) return Promise.reject(new ClosedError());
    const s = this.session;
    if (!s || s.closed) return Promise.reject(new NotConnectedError());
    return this.send(s, op, fields);
  }

  private evicted(key: string): void {
    this.release(key);
  }

  /** The key is no longer cached: untrack it, unless a fill of it is in progress. */
  private release(key: string): void {
    if (this.fills.isFilling(key)) return;
    if (this.held.delete(key)) this.sendUntrack([key]);
  }

  /** Tell the server we no longer hold `keys` (best effort: a reconnect forgets them anyway). */
  private sendUntrack(keys: string[]): void {
    const s = this.session;
    if (!s || s.closed || keys.length === 0) return;
    this.send(s, "untrack", { keys }).catch(() => {});
  }

  // ---- applying frames ----------------------------------------------------------------------

  private advance(s: Session, seq: number | undefined): void {
    if (seq !== undefined && !s.resuming && seq > this.state.seq) this.state.seq = seq;
  }

  private apply(s: Session, frame: Frame): void {
    if (s.closed) return;
    s.lastFrameAt = this.now();
    const seq = asSeq(frame.seq);
    switch (frame.type) {
      case "invalidate":
        this.applyInvalidate(frame as unknown as InvalidateEvent);
        this.state.events += 1;
        if (s.resuming) this.state.replayed += 1;
        this.advance(s, seq);
        this.emit("invalidate", frame as unknown as InvalidateEvent);
        break;
      case "resumed":
        s.resuming = false;
        this.state.resuming = false;
        this.advance(s, seq);
        break;
      case "reset":
        this.reset(s, typeof frame.reason === "string" ? frame.reason : "unknown");
        break;
      case "heartbeat":
      case "pong":
      case "subscribed":
      case "unsubscribed":
        this.advance(s, seq);
        break;
      case "error":
        if (typeof frame.id !== "number" || !s.pending.has(frame.id)) {
          const err = new ServerError(String(frame.code ?? "error"), String(frame.message ?? ""));
          this.log("warn", err.message);
          this.emit("error", err);
        }
        break;
      default:
        break;
    }
    if (typeof frame.id === "number") {
      const p = s.pending.get(frame.id);
      if (p) {
        s.pending.delete(frame.id);
        clearTimeout(p.timer);
        if (frame.type === "error") p.reject(new ServerError(String(frame.code ?? "error"), String(frame.message ?? "")));
        else p.resolve(frame);
      }
    }
    this.changed();
  }

  /** Events may have been lost: clear everything and take this session's position. */
  private reset(s: Session, reason: string): void {
    this.log("info", `reset (${reason}): clearing the local cache`);
    this.fills.voidAll();
    this.cache.clear();
    this.held.clear();
    s.resuming = false;
    this.state.resuming = false;
    this.state.resets += 1;
    this.state.epoch = s.epoch;
    this.state.seq = s.helloSeq;
    this.emit("reset", reason);
  }

  /** Drop (or, when soft, mark stale) one local key, and void its fills. */
  private invalidateKey(key: string, soft: boolean): void {
    this.fills.voidKey(key);
    this.held.delete(key);
    if (soft) {
      const e = this.cache.peek(key);
      if (e !== undefined && e.staleSince === undefined) this.cache.set(key, { ...e, staleSince: this.now() });
    } else {
      this.cache.delete(key);
    }
  }

  /**
   * Apply an `invalidate` event: its keys; for a pattern event every local key the pattern
   * matches (the event's keys are only the keys this connection tracked, the cache may hold
   * others); for a tag event every local key carrying one of its tags.
   */
  private applyInvalidate(ev: InvalidateEvent): void {
    const soft = ev.soft === true && this.maxStaleMs > 0;
    if (Array.isArray(ev.keys)) for (const k of ev.keys) if (typeof k === "string") this.invalidateKey(k, soft);
    if (typeof ev.pattern === "string") {
      try {
        const p = this.patterns.get(ev.pattern, ev.pattern_type ?? null, true);
        this.fills.voidMatching((k) => p.isMatch(k));
        for (const k of [...this.cache.keys()]) if (p.isMatch(k)) this.invalidateKey(k, soft);
        for (const k of [...this.held.keys()]) if (p.isMatch(k)) this.held.delete(k);
      } catch (err) {
        if (!(err instanceof PatternError)) throw err;
        // Cannot tell what it covers: dropping everything is the only safe answer.
        this.log("warn", `cannot compile pattern ${JSON.stringify(ev.pattern)} (${err.message}): clearing the cache`);
        this.fills.voidAll();
        this.cache.clear();
      }
    }
    if (Array.isArray(ev.tags) && ev.tags.length > 0) {
      const tags = new Set(ev.tags.filter((t): t is string => typeof t === "string"));
      this.fills.voidTags(tags);
      for (const k of [...this.cache.keys()]) {
        const e = this.cache.peek(k);
        if (e?.tags?.some((t) => tags.has(t))) this.invalidateKey(k, soft);
      }
      for (const [k, held] of [...this.held]) if (held && [...held].some((t) => tags.has(t))) this.held.delete(k);
    }
  }

  // ---- fills ------------------------------------------------------------------------------

  private load(key: string, loader: (key: string) => V | Promise<V>, opts: TrackOptions): Promise<V> {
    const current = this.loading.get(key);
    if (current && this.fills.isValid(current.token)) return current.promise;
    // The token is taken synchronously, before anything can be read.
    const token = this.fills.begin(key, opts.tags ?? []);
    const promise = (async () => {
      try {
        await this.track([key], opts);
      } catch (err) {
        if (!(err instanceof NotConnectedError)) throw err;
      }
      const value = await loader(key);
      this.completeFill(token, value);
      return value;
    })();
    const slot = { token, promise };
    this.loading.set(key, slot);
    promise.then(
      () => this.loading.get(key) === slot && this.loading.delete(key),
      () => {
        this.fills.abandon(token);
        if (this.loading.get(key) === slot) this.loading.delete(key);
      },
    );
    return promise;
  }

  private refresh(key: string, loader: (key: string) => V | Promise<V>, opts: TrackOptions): void {
    this.load(key, loader, opts).catch((err: unknown) => {
      this.emit("error", err instanceof Error ? err : new InvalidatorError("refresh_failed", String(err)));
    });
  }
}
