#!/usr/bin/env node
// A cache manager in front of a (simulated) database, kept coherent by an invalidator server.
//
//   npm run build
//   node examples/cache-manager.mjs ws://127.0.0.1:4000/ws [pattern ...]
//
// Subscribes to the patterns (default `product:*`), reads a few keys through getOrFill every
// two seconds and prints hits and misses, and prints every event it applies. Invalidate from
// another shell and watch the next read miss:
//
//   curl -s -X POST http://127.0.0.1:4000/invalidate/key -H 'content-type: application/json' \
//     -d '{"keys": ["product:1"], "triggered_by": "me"}'
//   curl -s -X POST http://127.0.0.1:4000/invalidate/pattern -H 'content-type: application/json' \
//     -d '{"pattern": "product:*", "triggered_by": "me"}'
//
// Env: INVALIDATOR_TOKEN (a token with the `subscribe` scope, if the server has tokens),
// EXAMPLE_RUN_SECONDS (stop after that long; default: until Ctrl-C).
import { CacheClient } from "invalidator-client";

const url = process.argv[2] ?? "ws://127.0.0.1:4000/ws";
const patterns = process.argv.length > 3 ? process.argv.slice(3) : ["product:*"];
const keys = ["product:1", "product:2", "product:3", "user:7:profile"];

// The source of truth: every read returns the current version of the row.
const versions = new Map();
async function loadFromDatabase(key) {
  await new Promise((r) => setTimeout(r, 20)); // a query's latency
  const version = versions.get(key) ?? 1;
  versions.set(key, version + 1); // pretend somebody writes between reads
  return { key, version, loadedAt: new Date().toISOString() };
}

const client = await CacheClient.connect({
  url,
  token: process.env.INVALIDATOR_TOKEN,
  subscriptions: patterns,
  maxEntries: 1000,
  maxStaleMs: 10_000,
});
const st = client.status;
console.log(`connected to ${url}: epoch ${st.epoch}, seq ${st.seq}, subscribed to ${patterns.join(", ")}`);

client.on("invalidate", (ev) => {
  const what = ev.pattern ? `pattern ${ev.pattern} (${ev.pattern_type})` : ev.tags?.length ? `tags ${ev.tags.join(",")}` : "keys";
  console.log(`event seq ${ev.seq}: ${what}${ev.soft ? " [soft]" : ""} keys=${JSON.stringify(ev.keys)} by ${ev.triggered_by}`);
});
client.on("reset", (reason) => console.log(`reset (${reason}): local cache cleared`));
client.on("disconnect", ({ code, reconnecting }) => {
  if (reconnecting) console.log(`disconnected (${code}); reconnecting...`);
});
client.on("connect", () => {
  const s = client.status;
  if (s.sessions > 1) console.log(`reconnected (session ${s.sessions}), resuming from seq ${s.seq}`);
});
client.on("error", (err) => console.log(`background error: ${err.message}`));

async function readAll() {
  const line = [];
  for (const key of keys) {
    const cached = client.getEntry(key);
    const row = await client.getOrFill(key, loadFromDatabase);
    line.push(`${key}=v${row.version}${cached ? (cached.stale ? " (stale)" : " (hit)") : " (miss)"}`);
  }
  console.log(line.join("  "));
}

await readAll();
const timer = setInterval(() => readAll().catch((e) => console.log(`read failed: ${e.message}`)), 2000);

async function stop() {
  clearInterval(timer);
  await client.close();
  const s = client.status;
  console.log(`closed: ${s.events} events applied, ${s.resets} resets, position seq ${s.seq}`);
  process.exit(0);
}
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
const seconds = Number(process.env.EXAMPLE_RUN_SECONDS ?? 0);
if (seconds > 0) setTimeout(stop, seconds * 1000);
