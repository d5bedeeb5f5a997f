// Unit tests that need no server: the LRU, the fill guard, and the browser-safety of dist/.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { FillGuard, LruCache, parsePattern } from "../dist/index.js";

const entry = (value) => ({ value, storedAt: 0 });

test("LruCache evicts the least recently used entry and reports it", () => {
  const evicted = [];
  const c = new LruCache({ maxEntries: 3, onEvict: (k) => evicted.push(k) });
  c.set("a", entry(1));
  c.set("b", entry(2));
  c.set("c", entry(3));
  assert.equal(c.get("a").value, 1); // a is now the most recent
  c.peek("b"); // peek does not count as a use
  c.set("d", entry(4));
  assert.deepEqual(evicted, ["b"]);
  assert.deepEqual([...c.keys()].sort(), ["a", "c", "d"]);
  c.set("c", entry(33)); // overwrite refreshes recency without evicting
  assert.equal(c.size, 3);
  c.set("e", entry(5));
  assert.deepEqual(evicted, ["b", "a"]);
  assert.equal(c.delete("c"), true);
  assert.equal(c.has("c"), false);
  c.clear();
  assert.equal(c.size, 0);
  assert.deepEqual(evicted, ["b", "a"], "deletes and clears are not evictions");
  assert.throws(() => new LruCache({ maxEntries: 0 }), RangeError);
});

test("FillGuard: a token survives only if nothing covering its key was invalidated", () => {
  const g = new FillGuard();
  let stored = 0;
  const store = () => stored++;
  let t = g.begin("a");
  assert.equal(g.complete(t, store), true);
  assert.equal(stored, 1);
  assert.equal(g.complete(t, store), false, "a token is used once");

  t = g.begin("a");
  g.voidKey("a");
  assert.equal(g.complete(t, store), false);

  const u = g.begin("user:1");
  const o = g.begin("order:1");
  const p = parsePattern("user:*");
  g.voidMatching((k) => p.isMatch(k));
  assert.equal(g.complete(u, store), false);
  assert.equal(g.complete(o, store), true);

  const tagged = g.begin("x", ["product:42"]);
  const other = g.begin("x", ["other"]);
  g.voidTags(new Set(["product:42"]));
  assert.equal(g.isValid(tagged), false);
  assert.equal(g.isValid(other), true);
  g.voidAll();
  assert.equal(g.complete(other, store), false);
  assert.equal(g.size, 0);

  const a1 = g.begin("k");
  const a2 = g.begin("k");
  g.abandon(a1);
  assert.equal(g.size, 1);
  assert.equal(g.complete(a2, store), true);
  assert.equal(g.size, 0);
  assert.equal(g.isFilling("k"), false);
});

test("dist/ has no Node-only import on the browser path", () => {
  const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../dist");
  const files = readdirSync(dist).filter((f) => f.endsWith(".js"));
  assert.ok(files.length >= 5, "build dist/ first");
  for (const f of files) {
    const src = readFileSync(path.join(dist, f), "utf8")
      .replace(/\/\*[\s\S]*?\*\//g, "")
      .replace(/^\s*\/\/.*$/gm, "");
    assert.doesNotMatch(src, /from\s+["'](node:|ws["'])/, `${f} imports a Node module statically`);
    assert.doesNotMatch(src, /\brequire\(/, `${f} uses require`);
    assert.doesNotMatch(src, /(?<![.\w])(process|Buffer)\.\w/, `${f} touches a Node global outside a guard`);
  }
});
