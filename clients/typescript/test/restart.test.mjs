// Server restarts and dead connections: the client reconnects, then resumes or resets, and the
// cache stays coherent. Each test runs its own server.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { CacheClient } from "../dist/index.js";
import { Server, freePort } from "./server.mjs";

async function fill(client, key, value, opts) {
  const token = await client.beginFill(key, opts);
  assert.equal(client.completeFill(token, value), true, `fill of ${key} refused`);
}

test("SIGKILL and restart on the same port and data dir: reconnect, then reset (new epoch) clears the cache", async (t) => {
  const server = await Server.start();
  const c = await CacheClient.connect({
    url: server.ws,
    subscriptions: ["rst:sub:*"],
    reconnectMinMs: 20,
    reconnectMaxMs: 250,
  });
  t.after(async () => {
    await c.close();
    await server.stop();
  });
  await fill(c, "rst:1", "one");
  await fill(c, "rst:2", "two");
  c.cache.set("rst:sub:1", { value: "s", storedAt: Date.now() });
  const before = await server.invalidateKeys(["rst:2"]);
  assert.ok(await c.waitUntil(() => !c.cache.has("rst:2"), 2000));
  const old = c.status;
  const resets = [];
  c.on("reset", (reason) => resets.push(reason));

  await server.kill("SIGKILL");
  assert.ok(await c.waitUntil((s) => !s.connected, 5000), "the client did not notice the kill");
  await server.start();
  assert.ok(
    await c.waitUntil((s) => s.sessions === 2 && s.connected && !s.resuming, 15_000),
    `no new session: ${JSON.stringify(c.status)}`,
  );
  const now = c.status;
  t.diagnostic(`after restart: epoch ${old.epoch} -> ${now.epoch}, resets ${now.resets}`);
  if (now.epoch !== old.epoch) {
    // Single-node restart without a persisted history: the epoch changes, so reset.
    assert.equal(now.resets, 1, "an epoch change must reset");
    assert.deepEqual(resets, ["epoch_changed"]);
    assert.equal(c.cache.size, 0, "the cache must be cleared by the reset");
  } else {
    // Resumed: nothing was invalidated meanwhile, so what was held is still valid.
    assert.equal(now.resets, 0);
    assert.equal(c.get("rst:1"), "one");
  }
  // Coherent from here on: new fills are tracked on the new server and invalidated.
  await fill(c, "rst:1", "one-again");
  c.cache.set("rst:sub:2", { value: "s2", storedAt: Date.now() });
  const after = await server.invalidateKeys(["rst:1", "rst:sub:2"]);
  assert.ok(after.seq > before.seq, `seq went back after the restart: ${after.seq} <= ${before.seq}`);
  assert.ok(await c.waitUntil(() => !c.cache.has("rst:1") && !c.cache.has("rst:sub:2"), 2000), "not coherent after restart");
  assert.ok(c.status.seq >= after.seq);
  // And a disconnect now resumes (same epoch) instead of resetting.
  await fill(c, "rst:3", "three");
  c.disconnect();
  assert.ok(await c.waitUntil((s) => !s.connected, 2000));
  await server.invalidateKeys(["rst:3"]);
  const resetsBefore = c.status.resets;
  c.reconnect();
  assert.ok(await c.waitUntil((s) => s.sessions === 3 && s.connected && !s.resuming, 5000));
  assert.equal(c.status.resets, resetsBefore, "same epoch: expected a resume");
  assert.equal(c.cache.has("rst:3"), false, "the replay did not drop the key");
});

/** A TCP proxy whose existing connections can be frozen (a half-open link). */
async function proxy(targetPort) {
  const port = await freePort();
  const pairs = new Set();
  const srv = net.createServer((down) => {
    const up = net.connect(targetPort, "127.0.0.1");
    const pair = { down, up };
    pairs.add(pair);
    down.pipe(up);
    up.pipe(down);
    const end = () => {
      pairs.delete(pair);
      down.destroy();
      up.destroy();
    };
    down.on("error", end).on("close", end);
    up.on("error", end).on("close", end);
  });
  await new Promise((r) => srv.listen(port, "127.0.0.1", r));
  return {
    port,
    freeze() {
      for (const { down, up } of pairs) {
        down.unpipe(up);
        up.unpipe(down);
        down.pause();
        up.pause();
      }
      const frozen = [...pairs];
      pairs.clear();
      return frozen;
    },
    close() {
      for (const { down, up } of pairs) {
        down.destroy();
        up.destroy();
      }
      return new Promise((r) => srv.close(r));
    },
  };
}

test("a silent (half-open) connection is detected by the idle watchdog and replaced, then resumed", async (t) => {
  const server = await Server.start();
  const p = await proxy(server.port);
  const c = await CacheClient.connect({
    url: `ws://127.0.0.1:${p.port}/ws`,
    pingIntervalMs: 150,
    idleTimeoutMs: 600,
    reconnectMinMs: 20,
    reconnectMaxMs: 100,
  });
  let frozen = [];
  t.after(async () => {
    await c.close();
    for (const { down, up } of frozen) {
      down.destroy();
      up.destroy();
    }
    await p.close();
    await server.stop();
  });
  await fill(c, "wd:1", "v");
  frozen = p.freeze();
  // Invalidated while the link is dead: only the resume can deliver it.
  await server.invalidateKeys(["wd:1"]);
  assert.ok(
    await c.waitUntil((s) => s.sessions === 2 && s.connected && !s.resuming, 5000),
    `the dead link was not replaced: ${JSON.stringify(c.status)}`,
  );
  assert.equal(c.status.resets, 0);
  assert.ok(await c.waitUntil(() => !c.cache.has("wd:1"), 2000), "the missed invalidation was not replayed");
});
