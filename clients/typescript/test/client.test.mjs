// CacheClient against the REAL server binary: a real WebSocket, real HTTP invalidations.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { CacheClient, ConnectError, parseEventPattern, parsePattern } from "../dist/index.js";
import { Server, sleep } from "./server.mjs";

/** How long an invalidation may take to reach a connected client (generous for CI). */
const BOUND_MS = Number(process.env.TS_TEST_BOUND_MS ?? 3000);

let server;
const clients = [];

async function connect(opts = {}) {
  const c = await CacheClient.connect({ url: server.ws, reconnectMinMs: 20, reconnectMaxMs: 200, ...opts });
  clients.push(c);
  return c;
}

/** Fill `key` through the guard (tracks it on the server) and check it was stored. */
async function fill(client, key, value, opts) {
  const token = await client.beginFill(key, opts);
  assert.equal(client.completeFill(token, value), true, `fill of ${key} refused`);
}

/** Resolves with the next invalidate event the predicate accepts. */
function nextEvent(client, pred = () => true, within = BOUND_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no matching event within ${within} ms`));
    }, within);
    const off = client.on("invalidate", (ev) => {
      if (!pred(ev)) return;
      clearTimeout(timer);
      off();
      resolve(ev);
    });
  });
}

before(async () => {
  server = await Server.start();
});

after(async () => {
  for (const c of clients) await c.close();
  await server.stop();
});

describe("connection", () => {
  test("connect reads hello and takes the server position", async () => {
    await server.invalidateKeys(["conn:warmup"]);
    const c = await connect();
    const st = c.status;
    assert.equal(st.connected, true);
    assert.equal(st.sessions, 1);
    assert.equal(typeof st.epoch, "string");
    assert.ok(st.epoch.length > 0);
    assert.ok(st.seq >= 1, `seq ${st.seq}`);
  });

  test("connecting to a port with no server rejects with ConnectError", async () => {
    await assert.rejects(
      CacheClient.connect({ url: "ws://127.0.0.1:1/ws", connectTimeoutMs: 3000 }),
      (e) => e instanceof ConnectError && e.code === "connect_failed",
    );
  });

  test("a refused subscription fails the first connect", async () => {
    await assert.rejects(
      CacheClient.connect({ url: server.ws, subscriptions: [{ pattern: "(", pattern_type: "regex" }] }),
      (e) => e instanceof ConnectError && /invalid_pattern/.test(e.message),
    );
  });

  test("ping answers the server seq and the position follows it", async () => {
    const c = await connect();
    // An invalidation nobody here is interested in still moves the server's seq.
    const r = await server.invalidateKeys([`nobody:${Date.now()}`]);
    const seq = await c.ping();
    assert.ok(seq >= r.seq, `pong seq ${seq} < ${r.seq}`);
    assert.ok(c.status.seq >= r.seq, `position ${c.status.seq} did not follow the pong`);
  });
});

describe("invalidation", () => {
  test("subscribe + POST /invalidate/key drops the key within the bound", async () => {
    const c = await connect({ subscriptions: ["k1:*"] });
    c.cache.set("k1:a", { value: "A", storedAt: Date.now() }); // held but not tracked: only the subscription routes it
    c.cache.set("k1:b", { value: "B", storedAt: Date.now() });
    assert.equal(c.get("k1:a"), "A");
    const t0 = Date.now();
    const r = await server.invalidateKeys(["k1:a"]);
    assert.ok(await c.waitUntil(() => !c.cache.has("k1:a"), BOUND_MS), "key not dropped");
    const took = Date.now() - t0;
    assert.ok(took < BOUND_MS, `took ${took} ms`);
    assert.equal(c.get("k1:a"), undefined);
    assert.equal(c.get("k1:b"), "B", "an unrelated key was dropped");
    assert.ok(c.status.seq >= r.seq);
  });

  test("prefix, suffix, glob, regex and escaped pattern events drop exactly the matching local keys", async () => {
    const c = await connect({ subscriptions: ["pat:*"] });
    const keys = ["pat:a:1", "pat:a:2", "pat:b:1", "pat:b:22", "pat:c:profile", "pat:*", "pat:x", "pat:99:n"];
    for (const k of keys) c.cache.set(k, { value: k, storedAt: Date.now() });
    // `wire`: the pattern as events carry it, in its canonical form (an escaped exact key
    // arrives as the key itself, with an explicit type).
    const expectGone = async (pattern, extra, gone, wire = pattern) => {
      const ev = nextEvent(c, (e) => e.pattern === wire);
      await server.invalidatePattern(pattern, extra);
      const e = await ev;
      assert.deepEqual(e.keys, [], "untracked keys should not be listed");
      for (const k of gone) assert.equal(c.cache.has(k), false, `${k} should be gone after ${pattern}`);
    };
    await expectGone("pat:a:*", {}, ["pat:a:1", "pat:a:2"]);
    assert.equal(c.cache.has("pat:b:1"), true);
    await expectGone("pat:?:1", {}, ["pat:b:1"]);
    assert.equal(c.cache.has("pat:b:22"), true, "? must match exactly one character");
    await expectGone("pat:*:profile", {}, ["pat:c:profile"]);
    await expectGone("pat:\\*", {}, ["pat:*"], "pat:*");
    assert.equal(c.cache.has("pat:x"), true, "an escaped * is the literal character");
    await expectGone("pat:[0-9]+:n", { pattern_type: "regex" }, ["pat:99:n"]);
    assert.deepEqual([...c.cache.keys()].sort(), ["pat:b:22", "pat:x"]);
  });

  test("a pattern event reaching a tracked key lists it and drops it", async () => {
    const c = await connect();
    await fill(c, "tp:1", 1);
    const ev = nextEvent(c);
    await server.invalidatePattern("tp:*");
    const e = await ev;
    assert.deepEqual(e.keys, ["tp:1"]);
    assert.equal(c.cache.has("tp:1"), false);
  });

  test("tracked keys get events without subscriptions, one-shot until tracked again", async () => {
    const c = await connect();
    const key = `one:${Date.now()}`;
    assert.equal(await c.track([key]), 1);
    let events = 0;
    c.on("invalidate", (e) => {
      if (e.keys.includes(key)) events++;
    });
    const first = nextEvent(c, (e) => e.keys.includes(key));
    await server.invalidateKeys([key]);
    await first;
    assert.equal(events, 1);
    // The key is no longer tracked: the second invalidation is not delivered. Events come in
    // seq order, so once a later sentinel event has arrived, the second one would have too.
    await server.invalidateKeys([key]);
    await c.track(["one:sentinel"]);
    const sentinel = nextEvent(c, (e) => e.keys.includes("one:sentinel"));
    await server.invalidateKeys(["one:sentinel"]);
    await sentinel;
    assert.equal(events, 1, "an untracked key was delivered");
    // Tracked again: delivered again.
    await c.track([key]);
    const third = nextEvent(c, (e) => e.keys.includes(key));
    await server.invalidateKeys([key]);
    await third;
    assert.equal(events, 2);
  });

  test("untrack stops delivery", async () => {
    const c = await connect();
    const key = `untrack:${Date.now()}`;
    await c.track([key, "untrack:sentinel"]);
    assert.equal(await c.untrack([key]), 1);
    let got = false;
    c.on("invalidate", (e) => {
      if (e.keys.includes(key)) got = true;
    });
    await server.invalidateKeys([key]);
    const sentinel = nextEvent(c, (e) => e.keys.includes("untrack:sentinel"));
    await server.invalidateKeys(["untrack:sentinel"]);
    await sentinel;
    assert.equal(got, false);
  });

  test("the local matcher agrees with the server's (matched_keys over cache_keys)", async () => {
    const keys = [
      "user:1", "user:12", "user:123", "user:*", "user:\\*", "user:é23", "user:😀23", "user:123:profile",
      "user::profile", "a*b", "axb", "C:\\dir", "order:42", "order:x", "ab", "a", "", "é", "x:profile",
    ].filter(Boolean);
    const cases = [
      ["user:*"], ["user:\\*"], ["user:?23"], ["*:profile"], ["user:*:profile"], ["a*b"], ["a*b", "exact"],
      ["user:", "prefix"], [":profile", "suffix"], ["*"], ["C:\\dir"], ["order:[0-9]+", "regex"],
      ["(?i)USER:\\d+", "regex"], ["user:\\w+", "regex"], ["a|ab", "regex"], ["user:?", "glob"], ["??", "glob"],
      ["[^:]+:[^:]+", "regex"], ["user:.{1,2}23", "regex"],
    ];
    for (const [pattern, pattern_type] of cases) {
      const extra = { cache_keys: keys };
      if (pattern_type) extra.pattern_type = pattern_type;
      const r = await server.invalidatePattern(pattern, extra);
      const local = parsePattern(pattern, pattern_type);
      const mine = keys.filter((k) => local.isMatch(k));
      assert.deepEqual(mine, r.matched_keys, `${pattern} (${pattern_type ?? "inferred"})`);
      assert.equal(local.kind, r.pattern_type, `type of ${pattern}`);
      // Read back from an event (source + settled type), the pattern covers at least as much.
      const fromEvent = parseEventPattern(pattern, r.pattern_type);
      for (const k of r.matched_keys) assert.ok(fromEvent.isMatch(k), `event reading of ${pattern} misses ${k}`);
    }
  });
});

describe("fill guard", () => {
  test("a value read before an invalidation is refused", async () => {
    const c = await connect();
    const token = await c.beginFill("fg:1");
    // The application reads the source of truth here; meanwhile the key changes.
    const ev = nextEvent(c, (e) => e.keys.includes("fg:1"));
    await server.invalidateKeys(["fg:1"]);
    await ev;
    assert.equal(c.isFillValid(token), false);
    assert.equal(c.completeFill(token, "stale"), false);
    assert.equal(c.cache.has("fg:1"), false);
    // A fill with no invalidation in between is stored.
    await fill(c, "fg:1", "fresh");
    assert.equal(c.get("fg:1"), "fresh");
  });

  test("a pattern invalidation covering the key voids the fill too", async () => {
    const c = await connect({ subscriptions: ["fgp:*"] });
    const t1 = await c.beginFill("fgp:a:1");
    const t2 = await c.beginFill("fgp:b:1");
    const ev = nextEvent(c, (e) => e.pattern === "fgp:a:*");
    await server.invalidatePattern("fgp:a:*");
    await ev;
    assert.equal(c.completeFill(t1, "x"), false);
    assert.equal(c.completeFill(t2, "y"), true);
    assert.deepEqual([...c.cache.keys()], ["fgp:b:1"]);
  });

  test("getOrFill: an invalidation during the load keeps the value out of the cache", async () => {
    const c = await connect();
    let loads = 0;
    const loader = async (key) => {
      loads++;
      if (loads === 1) {
        // The write that the first read raced with.
        const ev = nextEvent(c, (e) => e.keys.includes(key));
        await server.invalidateKeys([key]);
        await ev;
        return "old";
      }
      return "new";
    };
    assert.equal(await c.getOrFill("gof:1", loader), "old");
    assert.equal(c.cache.has("gof:1"), false, "a value read before the invalidation was stored");
    assert.equal(await c.getOrFill("gof:1", loader), "new");
    assert.equal(c.get("gof:1"), "new");
    assert.equal(await c.getOrFill("gof:1", loader), "new");
    assert.equal(loads, 2, "a cached value was loaded again");
  });

  test("getOrFill shares one load between concurrent misses and forgets failed loads", async () => {
    const c = await connect();
    let loads = 0;
    const slow = async () => {
      loads++;
      await sleep(50);
      return loads;
    };
    const [a, b] = await Promise.all([c.getOrFill("sf:1", slow), c.getOrFill("sf:1", slow)]);
    assert.equal(a, 1);
    assert.equal(b, 1);
    assert.equal(loads, 1);
    await assert.rejects(c.getOrFill("sf:2", async () => Promise.reject(new Error("db down"))), /db down/);
    assert.equal(await c.getOrFill("sf:2", async () => "ok"), "ok");
  });
});

describe("bounded cache", () => {
  test("the default LRU holds maxEntries and untracks what it evicts", async () => {
    const c = await connect({ maxEntries: 2 });
    await fill(c, "ev:a", 1);
    await fill(c, "ev:b", 2);
    await fill(c, "ev:c", 3); // evicts ev:a
    assert.equal(c.cache.size, 2);
    assert.equal(c.cache.has("ev:a"), false);
    // The untrack of ev:a went out before this track: the server holds ev:b, ev:c, ev:probe.
    assert.equal(await c.track(["ev:probe"]), 3);
    let gotA = false;
    c.on("invalidate", (e) => {
      if (e.keys.includes("ev:a")) gotA = true;
    });
    await server.invalidateKeys(["ev:a"]);
    const probe = nextEvent(c, (e) => e.keys.includes("ev:probe"));
    await server.invalidateKeys(["ev:probe"]);
    await probe;
    assert.equal(gotA, false, "an evicted key is still tracked");
  });

  test("delete and clear untrack, but never a key whose fill is in progress", async () => {
    const c = await connect();
    await fill(c, "dc:1", 1);
    await fill(c, "dc:2", 2);
    const token = await c.beginFill("dc:3");
    c.delete("dc:1");
    c.clear();
    assert.equal(c.cache.size, 0);
    assert.equal(await c.track(["dc:probe"]), 2, "dc:3 (filling) and dc:probe should be tracked");
    const ev = nextEvent(c, (e) => e.keys.includes("dc:3"));
    await server.invalidateKeys(["dc:3"]);
    await ev;
    assert.equal(c.completeFill(token, "stale"), false);
  });
});

describe("resume", () => {
  test("after a disconnect the client re-tracks, resumes and replays what it missed", async () => {
    const c = await connect({ subscriptions: ["rs:sub:*"] });
    await fill(c, "rs:held", "v");
    c.cache.set("rs:sub:1", { value: 1, storedAt: Date.now() });
    c.cache.set("rs:keep", { value: 2, storedAt: Date.now() });
    c.disconnect();
    assert.ok(await c.waitUntil((s) => !s.connected, BOUND_MS));
    await server.invalidateKeys(["rs:held"]);
    await server.invalidateKeys(["rs:sub:1"]);
    await server.invalidateKeys(["rs:keep"]); // neither tracked nor subscribed: not ours
    assert.equal(c.cache.has("rs:held"), true, "applied while offline?");
    const before = c.status;
    // The position must not move while the replay is in flight.
    const during = [];
    const off = c.on("invalidate", () => {
      const s = c.status;
      if (s.resuming) during.push(s.seq);
    });
    c.reconnect();
    assert.ok(await c.waitUntil((s) => s.sessions === 2 && s.connected && !s.resuming, 5000), "did not resume");
    off();
    assert.deepEqual(during, [before.seq, before.seq], "the position moved during the replay");
    const st = c.status;
    assert.equal(st.resets, before.resets, "expected a resume, got a reset");
    assert.equal(st.replayed - before.replayed, 2, "replayed count");
    assert.equal(c.cache.has("rs:held"), false);
    assert.equal(c.cache.has("rs:sub:1"), false);
    assert.equal(c.get("rs:keep"), 2);
    assert.ok(st.seq > before.seq);
    // Live again.
    await fill(c, "rs:held", "v2");
    await server.invalidateKeys(["rs:held"]);
    assert.ok(await c.waitUntil(() => !c.cache.has("rs:held"), BOUND_MS));
  });

  test("a fill begun while offline is voided by an invalidation replayed at the resume", async () => {
    const c = await connect();
    c.disconnect();
    assert.ok(await c.waitUntil((s) => !s.connected, BOUND_MS));
    const token = await c.beginFill("rs:offline"); // not connected: tracked at the reconnect
    c.reconnect();
    assert.ok(await c.waitUntil((s) => s.connected, 5000));
    const ev = nextEvent(c, (e) => e.keys.includes("rs:offline"));
    await server.invalidateKeys(["rs:offline"]);
    await ev;
    assert.equal(c.completeFill(token, "stale"), false);
  });
});
