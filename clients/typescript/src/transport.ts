/**
 * Which WebSocket implementation to use, without a Node-only import on the browser path.
 *
 * - An explicit `WebSocket` constructor or `createWebSocket` factory in the options wins.
 * - In Node (and runtimes that report `process.versions.node`), the `ws` package is loaded by a
 *   dynamic `import()`, so that the Authorization header can be sent; if it is not installed,
 *   a global `WebSocket` (Node 22+) is used instead.
 * - Elsewhere (browsers, workers, Deno), the global `WebSocket`.
 *
 * Browsers cannot set handshake headers, so with a global `WebSocket` the token travels as
 * `?token=` (which the server accepts too).
 */

/** The subset of the WHATWG WebSocket API the client uses (the `ws` package has it too). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

/** Opens one connection; `headers` are empty unless the implementation can send them. */
export type WebSocketFactory = (url: string, headers: Record<string, string>) => WebSocketLike;

/** A WHATWG-style constructor: `new WebSocket(url, protocols?, options?)`. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[], options?: unknown) => WebSocketLike;

export interface Transport {
  factory: WebSocketFactory;
  /** Whether the implementation sends handshake headers (else the token goes in the query). */
  headers: boolean;
}

/** A module name in a variable, so that bundlers leave the Node-only import alone. */
const WS_MODULE = "ws";

function isNode(): boolean {
  const proc = (globalThis as { process?: { versions?: { node?: string } } }).process;
  return typeof proc?.versions?.node === "string";
}

export function fromConstructor(Ctor: WebSocketConstructor, headers: boolean): Transport {
  return {
    headers,
    factory: (url, h) => (headers && Object.keys(h).length > 0 ? new Ctor(url, undefined, { headers: h }) : new Ctor(url)),
  };
}

/** The default implementation for this runtime. */
export async function defaultTransport(): Promise<Transport> {
  const globalWs = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (isNode()) {
    try {
      const mod = (await import(/* @vite-ignore */ /* webpackIgnore: true */ WS_MODULE)) as {
        default?: WebSocketConstructor;
        WebSocket?: WebSocketConstructor;
      };
      const Ctor = mod.WebSocket ?? mod.default;
      if (Ctor) return fromConstructor(Ctor, true);
    } catch {
      // `ws` is not installed: fall back to a global WebSocket below.
    }
  }
  if (globalWs) return fromConstructor(globalWs, false);
  throw new Error("no WebSocket implementation: install the `ws` package (Node) or pass the `WebSocket` option");
}

/** Text of a message event's data (string, or bytes from some implementations). */
export function messageText(data: unknown): string | undefined {
  if (typeof data === "string") return data;
  if (data instanceof ArrayBuffer) return new TextDecoder().decode(data);
  if (ArrayBuffer.isView(data)) return new TextDecoder().decode(data);
  if (Array.isArray(data)) {
    // `ws` fragments as Buffer[].
    const parts = data.filter((d): d is Uint8Array => ArrayBuffer.isView(d));
    const total = parts.reduce((n, p) => n + p.byteLength, 0);
    const all = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.byteLength;
    }
    return new TextDecoder().decode(all);
  }
  return undefined;
}
