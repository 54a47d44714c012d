// Test-only Status List server: Token Status Lists (draft-ietf-oauth-status-list)
// made by @sd-jwt/jwt-status-list, signed with jose, served on loopback.
// Not for production.
//
// Control (JSON bodies):
//   PUT /control/lists/<name>  {statuses, bits, key, kid, iss, sub?, exp_in?,
//                               ttl?, cache_control?, pad?, bomb_bytes?}
//                              makes the list served at GET /lists/<name>
//   PUT /control/fail/<name>   GET /lists/<name> answers 503 from now on
//   GET /control/requests      {path: count} of every GET seen
// Prints "listening <port>" once it listens (STATUS_PORT, 0: OS-chosen).

import http from 'node:http';
import { readFileSync } from 'node:fs';
import { StatusList, createHeaderAndPayload } from '@sd-jwt/jwt-status-list';
import { SignJWT, importPKCS8 } from 'jose';
import pako from 'pako';

const lists = new Map();
const failing = new Set();
const requests = {};

async function makeList(name, spec, base) {
  const bits = spec.bits ?? 1;
  const list = new StatusList(spec.statuses, bits);
  const now = Math.floor(Date.now() / 1000);
  const payload = { iss: spec.iss, sub: spec.sub ?? `${base}/lists/${name}`, iat: now };
  if (spec.exp_in !== null) payload.exp = now + (spec.exp_in ?? 3600);
  if (spec.ttl !== undefined) payload.ttl = spec.ttl;
  const header = { alg: 'RS256', typ: 'statuslist+jwt', kid: spec.kid ?? 'rsa-1' };
  const made = createHeaderAndPayload(list, payload, header);
  if (spec.bomb_bytes) {
    // Zeros compress about a thousandfold: a small token, a large list.
    const zeros = new Uint8Array(spec.bomb_bytes);
    made.payload.status_list.lst = Buffer.from(pako.deflate(zeros)).toString('base64url');
  }
  if (spec.pad) made.payload.pad = 'x'.repeat(spec.pad);
  const key = await importPKCS8(readFileSync(spec.key, 'utf8'), 'RS256');
  const token = await new SignJWT(made.payload).setProtectedHeader(made.header).sign(key);
  return { token, cacheControl: spec.cache_control };
}

function body(request) {
  return new Promise((resolve, reject) => {
    let text = '';
    request.on('data', (chunk) => { text += chunk; });
    request.on('end', () => resolve(text));
    request.on('error', reject);
  });
}

const server = http.createServer(async (request, response) => {
  const { pathname } = new URL(request.url, 'http://localhost');
  const base = `http://127.0.0.1:${server.address().port}`;
  try {
    if (request.method === 'PUT' && pathname.startsWith('/control/lists/')) {
      const name = pathname.slice('/control/lists/'.length);
      lists.set(name, await makeList(name, JSON.parse(await body(request)), base));
      failing.delete(name);
      response.writeHead(204).end();
    } else if (request.method === 'PUT' && pathname.startsWith('/control/fail/')) {
      failing.add(pathname.slice('/control/fail/'.length));
      response.writeHead(204).end();
    } else if (pathname === '/control/requests') {
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(requests));
    } else if (request.method === 'GET') {
      requests[pathname] = (requests[pathname] ?? 0) + 1;
      const name = pathname.startsWith('/lists/') ? pathname.slice('/lists/'.length) : null;
      const list = name && lists.get(name);
      if (!list || failing.has(name)) {
        response.writeHead(list ? 503 : 404).end();
        return;
      }
      if (request.headers.accept !== 'application/statuslist+jwt') {
        response.writeHead(406).end();
        return;
      }
      const headers = { 'content-type': 'application/statuslist+jwt' };
      if (list.cacheControl) headers['cache-control'] = list.cacheControl;
      response.writeHead(200, headers).end(list.token);
    } else {
      response.writeHead(405).end();
    }
  } catch (error) {
    response.writeHead(500, { 'content-type': 'text/plain' }).end(String(error));
  }
});

server.listen(Number(process.env.STATUS_PORT ?? 0), '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
