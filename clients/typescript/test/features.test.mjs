// Soft invalidation, tags and tokens, against the real server. Soft and tags are detected: a
// server without them skips those tests (they run in full once the server has them).
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { CacheClient, ConnectError } from "../dist/index.js";
import { Server, sleep } from "./server.mjs";

let server;
const clients = [];

async function connect(opts = {}) {
  const c = await CacheClient.connect({ url: server.ws, reconnectMinMs: 20, reconnectMaxMs: 200, ...opts });
  clients.push(c);
  return c;
}

async function fill(client, key, value, opts) {
  const token = await client.beginFill(key, opts);
  assert.equal(client.completeFill(token, value), true, `fill of ${key} refused`);
}

function nextEvent(client, pred = () => true, within = 2000) {
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

/** Does the server support soft invalidation? (It echoes `soft` in the response.) */
async function softSupported() {
  const r = await server.invalidateKeys(["probe:soft"], { soft: true });
  return r.soft === true;
}

/** Does the server have POST /invalidate/tag? */
async function tagsSupported() {
  const r = await server.post("/invalidate/tag", { tags: ["probe:tag"], triggered_by: "ts-test" });
  if (r.status === 404 || r.status === 405) return false;
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return true;
}

async function invalidateTags(tags, extra = {}) {
  const r = await server.post("/invalidate/tag", { tags, triggered_by: "ts-test", ...extra });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

before(async () => {
  server = await Server.start();
});

after(async () => {
  for (const c of clients) await c.close();
  await server.stop();
});

describe("soft invalidation", () => {
  test("a soft event marks the entry stale; it is served up to maxStaleMs while refetched", async (t) => {
    if (!(await softSupported())) return t.skip("server lacks soft invalidation");
    const c = await connect({ maxStaleMs: 400 });
    await fill(c, "soft:1", "v1");
    const ev = nextEvent(c, (e) => e.keys.includes("soft:1"));
    await server.invalidateKeys(["soft:1"], { soft: true });
    assert.equal((await ev).soft, true);
    const e = c.getEntry("soft:1");
    assert.ok(e, "a soft invalidation dropped the entry");
    assert.equal(e.stale, true);
    assert.equal(c.get("soft:1"), "v1");
    // getOrFill serves the stale value at once and refetches in the background.
    let loads = 0;
    const v = await c.getOrFill("soft:1", async () => {
      loads++;
      return "v2";
    });
    assert.equal(v, "v1");
    assert.ok(await c.waitUntil(() => c.getEntry("soft:1")?.stale === false, 2000), "no background refresh");
    assert.equal(c.get("soft:1"), "v2");
    assert.equal(loads, 1);
    // The refresh re-tracked the key: a second soft event arrives; past maxStaleMs it is gone.
    const ev2 = nextEvent(c, (e) => e.keys.includes("soft:1"));
    await server.invalidateKeys(["soft:1"], { soft: true });
    await ev2;
    assert.equal(c.getEntry("soft:1")?.stale, true);
    await sleep(500);
    assert.equal(c.get("soft:1"), undefined, "served beyond maxStaleMs");
  });

  test("a soft event voids fills in progress, and a hard one still drops", async (t) => {
    if (!(await softSupported())) return t.skip("server lacks soft invalidation");
    const c = await connect();
    const token = await c.beginFill("soft:2");
    const ev = nextEvent(c, (e) => e.keys.includes("soft:2"));
    await server.invalidateKeys(["soft:2"], { soft: true });
    await ev;
    assert.equal(c.completeFill(token, "read-before"), false);
    await fill(c, "soft:3", "x");
    const hard = nextEvent(c, (e) => e.keys.includes("soft:3"));
    await server.invalidateKeys(["soft:3"]);
    assert.equal((await hard).soft ?? false, false);
    assert.equal(c.cache.has("soft:3"), false);
  });

  test("soft pattern events mark every matching local key stale", async (t) => {
    if (!(await softSupported())) return t.skip("server lacks soft invalidation");
    const c = await connect({ subscriptions: ["softp:*"] });
    c.cache.set("softp:a:1", { value: 1, storedAt: Date.now() });
    c.cache.set("softp:b:1", { value: 2, storedAt: Date.now() });
    const ev = nextEvent(c, (e) => e.pattern === "softp:a:*");
    await server.invalidatePattern("softp:a:*", { soft: true });
    await ev;
    assert.equal(c.getEntry("softp:a:1")?.stale, true);
    assert.equal(c.getEntry("softp:b:1")?.stale, false);
  });
});

describe("tags", () => {
  test("a tag invalidation drops the keys tracked with that tag, and only those", async (t) => {
    if (!(await tagsSupported())) return t.skip("server lacks tags");
    const c = await connect();
    await fill(c, "tag:1", "p42", { tags: ["product:42"] });
    await fill(c, "tag:2", "cat", { tags: ["catalog"] });
    await fill(c, "tag:3", "plain");
    const ev = nextEvent(c, (e) => Array.isArray(e.tags) && e.tags.includes("product:42"));
    const r = await invalidateTags(["product:42"]);
    assert.deepEqual(r.tags, ["product:42"]);
    const e = await ev;
    assert.deepEqual(e.keys, ["tag:1"]);
    assert.deepEqual(e.tags, ["product:42"]);
    assert.equal(c.cache.has("tag:1"), false);
    assert.equal(c.get("tag:2"), "cat");
    assert.equal(c.get("tag:3"), "plain");
  });

  test("tags are one-shot like keys, and re-tracked with their tags after a reconnect", async (t) => {
    if (!(await tagsSupported())) return t.skip("server lacks tags");
    const c = await connect();
    await fill(c, "tago:1", "v", { tags: ["tago"] });
    const first = nextEvent(c, (e) => e.keys.includes("tago:1"));
    await invalidateTags(["tago"]);
    await first;
    // Not tracked any more: the next tag invalidation does not reach this connection.
    let late = false;
    c.on("invalidate", (e) => {
      if (e.tags?.includes("tago")) late = true;
    });
    await invalidateTags(["tago"]);
    await c.track(["tago:sentinel"]);
    const s = nextEvent(c, (e) => e.keys.includes("tago:sentinel"));
    await server.invalidateKeys(["tago:sentinel"]);
    await s;
    assert.equal(late, false);
    // Fill again with the tag, reconnect: the key is re-tracked with its tag.
    await fill(c, "tago:1", "v2", { tags: ["tago"] });
    c.disconnect();
    assert.ok(await c.waitUntil((st) => !st.connected, 2000));
    c.reconnect();
    assert.ok(await c.waitUntil((st) => st.connected && !st.resuming, 5000));
    const again = nextEvent(c, (e) => e.keys.includes("tago:1"));
    await invalidateTags(["tago"]);
    await again;
    assert.equal(c.cache.has("tago:1"), false);
  });

  test("a tag invalidation voids a fill carrying the tag", async (t) => {
    if (!(await tagsSupported())) return t.skip("server lacks tags");
    const c = await connect();
    const token = await c.beginFill("tagf:1", { tags: ["tagf"] });
    const ev = nextEvent(c, (e) => e.tags?.includes("tagf"));
    await invalidateTags(["tagf"]);
    await ev;
    assert.equal(c.completeFill(token, "stale"), false);
    assert.equal(c.cache.has("tagf:1"), false);
  });
});

describe("tokens", () => {
  let authServer;
  before(async () => {
    authServer = await Server.start({
      config: [
        "[[tokens]]",
        'name = "reader"',
        'token = "reader-secret"',
        'scopes = ["subscribe"]',
        'prefixes = ["auth:"]',
        "",
        "[[tokens]]",
        'name = "writer"',
        'token = "writer-secret"',
        'scopes = ["invalidate"]',
        "",
      ].join("\n"),
    });
  });
  after(async () => authServer.stop());

  const writer = { authorization: "Bearer writer-secret" };

  test("the token goes in the Authorization header (Node) and events flow", async () => {
    const c = await CacheClient.connect({ url: authServer.ws, token: "reader-secret", subscriptions: ["auth:*"] });
    clients.push(c);
    c.cache.set("auth:1", { value: 1, storedAt: Date.now() });
    const r = await authServer.post("/invalidate/key", { keys: ["auth:1"], triggered_by: "ts-test" }, writer);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.ok(await c.waitUntil(() => !c.cache.has("auth:1"), 2000));
  });

  test("the token goes in ?token= with a WHATWG WebSocket that cannot send headers (browser path)", async () => {
    const seen = [];
    class BrowserLike extends WebSocket {
      constructor(url, protocols) {
        seen.push(url);
        super(url, protocols);
      }
    }
    const c = await CacheClient.connect({ url: authServer.ws, token: "reader-secret", WebSocket: BrowserLike, subscriptions: ["auth:*"] });
    clients.push(c);
    assert.match(seen[0], /[?&]token=reader-secret/);
    c.cache.set("auth:2", { value: 2, storedAt: Date.now() });
    const r = await authServer.post("/invalidate/key", { keys: ["auth:2"], triggered_by: "ts-test" }, writer);
    assert.equal(r.status, 200);
    assert.ok(await c.waitUntil(() => !c.cache.has("auth:2"), 2000));
  });

  test("no token or a wrong token is refused; so is a subscription outside the token's prefixes", async () => {
    await assert.rejects(CacheClient.connect({ url: authServer.ws }), (e) => e instanceof ConnectError && !/reader-secret/.test(e.message));
    await assert.rejects(CacheClient.connect({ url: authServer.ws, token: "nope", tokenTransport: "query" }), (e) => e instanceof ConnectError && !/nope/.test(e.message));
    await assert.rejects(
      CacheClient.connect({ url: authServer.ws, token: "reader-secret", subscriptions: ["orders:*"] }),
      (e) => e instanceof ConnectError && /forbidden/.test(e.message),
    );
  });

  test("a track outside the token's prefixes is refused with the server's code", async () => {
    const c = await CacheClient.connect({ url: authServer.ws, token: "reader-secret" });
    clients.push(c);
    await assert.rejects(c.track(["orders:1"]), (e) => e.code === "forbidden");
    await assert.rejects(c.beginFill("orders:1"), (e) => e.code === "forbidden");
    assert.equal(await c.track(["auth:ok"]), 1);
  });
});
