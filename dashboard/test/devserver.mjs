// Development tool only: serves dashboard/ under /dashboard/ (the files listed in dashboard/FILES,
// as the server embeds them) and proxies every other path, HTTP and the WebSocket upgrade at /ws,
// to a running invalidator. The Host header is passed through unchanged, so the server's Origin
// check sees the page as same-origin.
//
//   node devserver.mjs --target http://127.0.0.1:4000 [--listen 127.0.0.1:4100]
//
// Also importable: startDevServer({ target, host, port }) -> { url, close() }.
import http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const dashDir = path.resolve(here, '..');

export const CONTENT_TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

export function dashboardFiles() {
  return fs.readFileSync(path.join(dashDir, 'FILES'), 'utf8')
    .split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
}

export function startDevServer({ target, host = '127.0.0.1', port = 0 }) {
  const t = new URL(target);
  const files = new Set(dashboardFiles());

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let rel = null;
    if (url.pathname === '/dashboard' || url.pathname === '/dashboard/') rel = 'index.html';
    else if (url.pathname.startsWith('/dashboard/')) rel = decodeURIComponent(url.pathname.slice('/dashboard/'.length));
    if (rel !== null) {
      if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405); res.end(); return; }
      if (!files.has(rel)) { res.writeHead(404, { 'content-type': 'text/plain' }); res.end('not found\n'); return; }
      const body = fs.readFileSync(path.join(dashDir, rel));
      res.writeHead(200, {
        'content-type': CONTENT_TYPES[path.extname(rel)] || 'application/octet-stream',
        'content-length': body.length,
        'cache-control': 'no-cache',
        'x-content-type-options': 'nosniff',
      });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    const up = http.request({
      host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers,
    }, (ur) => { res.writeHead(ur.statusCode, ur.headers); ur.pipe(res); });
    up.on('error', (e) => { if (!res.headersSent) res.writeHead(502); res.end(`proxy error: ${e.message}\n`); });
    req.pipe(up);
  });

  // WebSocket (and any other) upgrade: replay the request head to the target, then splice the sockets.
  const tunnels = new Set();
  server.on('upgrade', (req, sock, head) => {
    tunnels.add(sock);
    sock.on('close', () => tunnels.delete(sock));
    const up = net.connect(Number(t.port), t.hostname, () => {
      let h = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) h += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(h + '\r\n');
      if (head && head.length) up.write(head);
      sock.pipe(up).pipe(sock);
    });
    const end = () => { sock.destroy(); up.destroy(); };
    up.on('error', end); sock.on('error', end); up.on('close', end); sock.on('close', end);
  });

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const a = server.address();
      resolve({
        url: `http://${host}:${a.port}`,
        close: () => new Promise((r) => { for (const t of tunnels) t.destroy(); server.closeAllConnections?.(); server.close(() => r()); }),
      });
    });
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const arg = (name, def) => { const i = process.argv.indexOf(name); return i > 0 ? process.argv[i + 1] : def; };
  const [host, port] = arg('--listen', '127.0.0.1:4100').split(':');
  const s = await startDevServer({ target: arg('--target', 'http://127.0.0.1:4000'), host, port: Number(port) });
  console.log(`devserver: ${s.url}/dashboard -> ${arg('--target', 'http://127.0.0.1:4000')}`);
}
