// Test helper: runs the REAL invalidator binary as a child process.
//
// The binary: $INVALIDATOR_BIN (when set, nothing else), else <repo>/target/debug/invalidator (../../target from the
// package), else /tmp/inv-bin/invalidator. Every child is SIGKILLed when the test process exits.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, openSync, closeSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const packageDir = path.resolve(here, "..");

export function serverBinary() {
  const explicit = process.env.INVALIDATOR_BIN;
  if (explicit) {
    if (!existsSync(explicit)) throw new Error(`INVALIDATOR_BIN=${explicit} does not exist`);
    return explicit;
  }
  const candidates = [
    path.resolve(packageDir, "../../target/debug/invalidator"),
    "/tmp/inv-bin/invalidator",
  ].filter(Boolean);
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new Error(`no invalidator binary (tried ${candidates.join(", ")}); set INVALIDATOR_BIN`);
  return found;
}

const children = new Set();
const dirs = new Set();
process.on("exit", () => {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch {
      // gone
    }
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** A fresh directory, removed when the test process exits. */
export function tempDir(prefix = "inv-ts-") {
  const d = mkdtempSync(path.join(tmpdir(), prefix));
  dirs.add(d);
  return d;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A running server. `start()` again after `kill()` reuses the port and the data dir. */
export class Server {
  constructor({ port, dataDir, config } = {}) {
    this.port = port;
    this.dataDir = dataDir;
    this.config = config;
    this.child = null;
    this.ownsDir = !dataDir;
  }

  static async start(opts = {}) {
    const s = new Server(opts);
    if (!s.port) s.port = await freePort();
    if (!s.dataDir) s.dataDir = tempDir();
    if (s.config) {
      const file = path.join(s.dataDir, "config.toml");
      writeFileSync(file, s.config);
      s.configFile = file;
    }
    await s.start();
    return s;
  }

  get http() {
    return `http://127.0.0.1:${this.port}`;
  }

  get ws() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  async start() {
    const args = ["serve", "--listen", `127.0.0.1:${this.port}`, "--data-dir", this.dataDir];
    if (this.configFile) args.push("--config", this.configFile);
    const log = openSync(path.join(this.dataDir, "server.log"), "a");
    const env = { ...process.env };
    for (const k of ["DATABASE_URL", "NATS_URL", "INVALIDATOR_CONFIG", "INVALIDATOR_LISTEN", "INVALIDATOR_DATA_DIR"]) delete env[k];
    const child = spawn(serverBinary(), args, { stdio: ["ignore", log, log], env });
    closeSync(log);
    children.add(child);
    child.on("exit", () => children.delete(child));
    this.child = child;
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}; see ${this.dataDir}/server.log`);
      try {
        const r = await fetch(`${this.http}/healthz`);
        if (r.ok) return;
      } catch {
        // not up yet
      }
      if (Date.now() > deadline) throw new Error("server did not answer /healthz within 30 s");
      await sleep(50);
    }
  }

  /** Kill the process (SIGKILL by default) and wait for it to be gone. */
  async kill(signal = "SIGKILL") {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once("exit", r));
    child.kill(signal);
    await gone;
    this.child = null;
  }

  async stop() {
    await this.kill("SIGKILL");
    if (this.ownsDir) rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** POST a JSON body; resolves to {status, body}. */
  async post(route, body, headers = {}) {
    const r = await fetch(`${this.http}${route}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify(body),
    });
    const text = await r.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: r.status, body: json };
  }

  async invalidateKeys(keys, extra = {}) {
    const r = await this.post("/invalidate/key", { keys, triggered_by: "ts-test", ...extra });
    if (r.status !== 200) throw new Error(`POST /invalidate/key: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  async invalidatePattern(pattern, extra = {}) {
    const r = await this.post("/invalidate/pattern", { pattern, triggered_by: "ts-test", ...extra });
    if (r.status !== 200) throw new Error(`POST /invalidate/pattern: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }
}

export { sleep };
