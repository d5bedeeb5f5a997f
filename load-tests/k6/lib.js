// Shared settings of the k6 scripts: where the server is, how to authenticate, env parsing.

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:4000').replace(/\/+$/, '');
export const WS_URL = BASE_URL.replace(/^http/, 'ws');
export const TOKEN = __ENV.TOKEN || '';

/** A number from the environment, or the default. */
export function num(name, dflt) {
  const v = __ENV[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${name}=${v} is not a number`);
  return n;
}

/** Headers of an HTTP request: JSON body, and the bearer token when one is given. */
export function httpHeaders() {
  const h = { 'Content-Type': 'application/json' };
  if (TOKEN) h.Authorization = `Bearer ${TOKEN}`;
  return h;
}

/** The `/ws` URL (the token, if any, goes in the Authorization header: see wsParams). */
export function wsUrl() {
  return `${WS_URL}/ws`;
}

/** Parameters of `new WebSocket(url, null, params)`. */
export function wsParams(tags) {
  const p = { tags: tags || {} };
  if (TOKEN) p.headers = { Authorization: `Bearer ${TOKEN}` };
  return p;
}
