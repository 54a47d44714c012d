#!/usr/bin/env node
// Test-only OpenID Provider for jwtgate's integration tests. NOT for production.
//
// Usage:
//   node server.mjs                      start the IdP (configuration via env, see README.md)
//   node server.mjs genkey <alg> [kid]   print one private JWK (RS256 | PS256 | ES256) as JSON
//
// stdout carries exactly one line, `IDP_LISTENING <port>`, once the server accepts
// connections; everything else (ours and oidc-provider's notices) goes to stderr.

import { createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

const GENKEY_ALGS = {
  RS256: () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
  PS256: () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
  ES256: () => generateKeyPairSync('ec', { namedCurve: 'P-256' }),
};

function genKey(alg, kid) {
  const make = GENKEY_ALGS[alg];
  if (!make) {
    throw new Error(`unsupported alg ${JSON.stringify(alg)}; expected one of ${Object.keys(GENKEY_ALGS).join(', ')}`);
  }
  const { privateKey } = make();
  return {
    ...privateKey.export({ format: 'jwk' }),
    kid: kid || `${alg.toLowerCase()}-${randomBytes(6).toString('hex')}`,
    alg,
    use: 'sig',
  };
}

if (process.argv[2] === 'genkey') {
  try {
    const out = `${JSON.stringify(genKey(process.argv[3], process.argv[4]))}\n`;
    await new Promise((resolve) => { process.stdout.write(out, resolve); });
    process.exit(0);
  } catch (err) {
    process.stderr.write(`genkey: ${err.message}\nusage: node server.mjs genkey <RS256|PS256|ES256> [kid]\n`);
    process.exit(2);
  }
}

// oidc-provider prints its NOTICEs with console.info (stdout). Keep stdout reserved for the
// single IDP_LISTENING line the test harness parses: route console output to stderr *before*
// oidc-provider is loaded (hence the dynamic import below).
for (const level of ['log', 'info', 'debug']) {
  // eslint-disable-next-line no-console
  console[level] = (...args) => console.error(...args);
}
const log = (...args) => console.error('[test-idp]', ...args);

const { default: Provider, errors } = await import('oidc-provider');

// ---------------------------------------------------------------------------------------------
// configuration from the environment
// ---------------------------------------------------------------------------------------------
const env = process.env;
const HOST = '127.0.0.1';
const PORT = Number.parseInt(env.IDP_PORT ?? '0', 10);
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) {
  throw new Error(`invalid IDP_PORT ${JSON.stringify(env.IDP_PORT)}`);
}
const RESOURCE = env.IDP_RESOURCE || 'urn:jwtgate:test-api';
// Optional extra resource indicators (comma separated), e.g. to mint tokens with a "wrong" aud.
const EXTRA_RESOURCES = (env.IDP_EXTRA_RESOURCES || '').split(',').map((s) => s.trim()).filter(Boolean);
// Tokens for this resource are opaque (introspected, revocable), not JWTs.
const OPAQUE_RESOURCE = env.IDP_OPAQUE_RESOURCE || 'urn:jwtgate:opaque-api';
const RESOURCES = new Set([RESOURCE, ...EXTRA_RESOURCES, OPAQUE_RESOURCE]);
const CLIENT_ID = 'jwtgate-test';
const CLIENT_SECRET = 'jwtgate-test-secret';
const SCOPES = 'orders:read orders:write';
const ACCESS_TOKEN_TTL = Number.parseInt(env.IDP_ACCESS_TOKEN_TTL || '600', 10); // seconds
const JWKS_CACHE_CONTROL = env.IDP_JWKS_CACHE_CONTROL || 'max-age=60';
const JWKS_DELAY_MS = Number.parseInt(env.IDP_JWKS_DELAY_MS || '0', 10) || 0;
// Holds every introspection call this long before answering: concurrent callers then overlap.
const INTROSPECTION_DELAY_MS = Number.parseInt(env.IDP_INTROSPECTION_DELAY_MS || '0', 10) || 0;
// With IDP_DPOP_NONCES=1 the token endpoint demands a server nonce in every DPoP proof (RFC
// 9449 §8); off by default so a proof needs no round trip.
const DPOP_NONCES = env.IDP_DPOP_NONCES === '1';
// Stands in for a TLS-terminating proxy: the IdP listens on plain HTTP, so the client
// certificate of a certificate-bound token request (RFC 8705) arrives as a URL-encoded PEM in
// this request header. Test-only: anyone can set it.
const CLIENT_CERT_HEADER = 'x-client-cert';

// Further clients beside jwtgate-test, each with the secret `<client_id>-secret`:
//   dpop-client           its tokens are DPoP-bound (cnf.jkt); the token request needs a proof
//   mtls-client           its tokens are certificate-bound (cnf["x5t#S256"])
//   gateway-introspector  a resource server: it may only introspect
// and, when IDP_INTROSPECTOR_PUBLIC_KEY names a PEM public key file (its kid:
// IDP_INTROSPECTOR_KEY_ID, or none), one without a secret:
//   introspector-jwt      like gateway-introspector, authenticated by private_key_jwt
//                         (RFC 7523 client assertions signed by that key's private half)
// Both introspectors get RFC 9701 JWT responses when they ask with
// `Accept: application/token-introspection+jwt`, JSON otherwise.
const secretOf = (clientId) => `${clientId}-secret`;
const tokenClient = (clientId, metadata) => ({
  client_id: clientId,
  client_secret: secretOf(clientId),
  // client_secret_post is accepted too: oidc-provider treats basic/post as interchangeable.
  token_endpoint_auth_method: 'client_secret_basic',
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  scope: SCOPES,
  // Its default, RS256, is refused when no RS256 key is published.
  introspection_signed_response_alg: SIGNING_KEY.alg,
  ...metadata,
});

function loadKeys() {
  if (!env.IDP_KEYS_FILE) {
    const key = genKey('RS256', `rs256-${randomBytes(6).toString('hex')}`);
    log(`IDP_KEYS_FILE not set, generated an ephemeral RS256 signing key kid=${key.kid}`);
    return [key];
  }
  const jwks = JSON.parse(readFileSync(env.IDP_KEYS_FILE, 'utf8'));
  if (!jwks || !Array.isArray(jwks.keys) || jwks.keys.length === 0) {
    throw new Error(`${env.IDP_KEYS_FILE}: expected {"keys": [<private JWK>, ...]} with at least one key`);
  }
  jwks.keys.forEach((k, i) => {
    if (typeof k.kid !== 'string' || !k.kid || typeof k.alg !== 'string' || !k.alg || !k.d) {
      throw new Error(`${env.IDP_KEYS_FILE}: keys[${i}] must be a PRIVATE JWK with "kid" and "alg"`);
    }
  });
  log(`loaded ${jwks.keys.length} key(s) from ${env.IDP_KEYS_FILE}: ${jwks.keys.map((k) => `${k.kid}/${k.alg}`).join(', ')}`);
  return jwks.keys;
}

const KEYS = loadKeys();
const SIGNING_KEY = { alg: KEYS[0].alg, kid: KEYS[0].kid };

// A resource server's client: no grant, it only introspects. Its signed introspection
// responses use the access tokens' key, so a gateway verifies both with the one JWKS.
const introspector = (clientId, metadata) => ({
  client_id: clientId,
  grant_types: [],
  response_types: [],
  redirect_uris: [],
  id_token_signed_response_alg: SIGNING_KEY.alg,
  introspection_signed_response_alg: SIGNING_KEY.alg,
  ...metadata,
});

// The public key introspector-jwt's assertions are checked with; tests make the pair.
function privateKeyJwtIntrospectors() {
  const file = env.IDP_INTROSPECTOR_PUBLIC_KEY;
  if (!file) return [];
  const jwk = createPublicKey(readFileSync(file, 'utf8')).export({ format: 'jwk' });
  // An assertion whose header names a kid only matches a registered key with that kid.
  if (env.IDP_INTROSPECTOR_KEY_ID) jwk.kid = env.IDP_INTROSPECTOR_KEY_ID;
  log(`introspector-jwt: private_key_jwt with the ${jwk.kty}${jwk.crv ? ` ${jwk.crv}` : ''} key of ${file}`);
  return [introspector('introspector-jwt', { token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [jwk] } })];
}

// ---------------------------------------------------------------------------------------------
// HTTP server first: with IDP_PORT=0 the issuer (which embeds the port) is only known after bind.
// ---------------------------------------------------------------------------------------------
let handler = (req, res) => { res.statusCode = 503; res.end('starting'); };
const server = http.createServer((req, res) => handler(req, res));
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(PORT, HOST, resolve);
});
const { port } = server.address();

// `{port}` in IDP_ISSUER is replaced by the bound port (handy together with IDP_PORT=0).
const ISSUER = (env.IDP_ISSUER || `http://${HOST}:{port}`).replaceAll('{port}', String(port));
const MOUNT_PATH = new URL(ISSUER).pathname.replace(/\/$/, ''); // '' unless the issuer has a path

// Routes (relative to the issuer path). These are oidc-provider's defaults, spelled out so the
// request counters below can match on them.
const ROUTES = { jwks: '/jwks', token: '/token', introspection: '/token/introspection' };
const DISCOVERY_PATH = '/.well-known/openid-configuration';

const provider = new Provider(ISSUER, {
  jwks: { keys: KEYS },
  clients: [
    // The client metadata default is RS256, which oidc-provider refuses when
    // no RS256 key is published; follow the signing key instead.
    { ...tokenClient(CLIENT_ID), client_secret: CLIENT_SECRET, id_token_signed_response_alg: SIGNING_KEY.alg },
    tokenClient('dpop-client', { dpop_bound_access_tokens: true, id_token_signed_response_alg: SIGNING_KEY.alg }),
    tokenClient('mtls-client', {
      tls_client_certificate_bound_access_tokens: true,
      id_token_signed_response_alg: SIGNING_KEY.alg,
    }),
    introspector('gateway-introspector', {
      client_secret: secretOf('gateway-introspector'),
      token_endpoint_auth_method: 'client_secret_basic',
    }),
    ...privateKeyJwtIntrospectors(),
  ],
  enabledJWA: {
    // The proof algorithms a gateway must accept (RFC 9449 leaves the list to the deployment).
    dPoPSigningAlgValues: ['ES256', 'EdDSA', 'Ed25519', 'PS256', 'RS256'],
    // oidc-provider's default leaves out ES384, which a P-384 client key signs with.
    clientAuthSigningAlgValues: ['RS256', 'PS256', 'ES256', 'ES384', 'Ed25519', 'EdDSA'],
  },
  scopes: ['openid', 'offline_access', ...SCOPES.split(' ')],
  routes: ROUTES,
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    dPoP: {
      enabled: true,
      nonceSecret: DPOP_NONCES ? randomBytes(32) : undefined,
      requireNonce: () => DPOP_NONCES,
    },
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      // oidc-provider computes x5t#S256 from this PEM itself.
      getCertificate: (ctx) => {
        const pem = ctx.get(CLIENT_CERT_HEADER);
        return pem ? decodeURIComponent(pem) : undefined;
      },
    },
    // RFC 7662 and RFC 7009 for opaque tokens. The default policies apply: a confidential
    // client may introspect any token, and revoke only its own.
    introspection: { enabled: true },
    // RFC 9701: a client with introspection_signed_response_alg asking for
    // application/token-introspection+jwt gets the response as a JWS.
    jwtIntrospection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // no `resource` parameter -> no resource server -> opaque (non-JWT) access token
      defaultResource: async (ctx, client, oneOf) => oneOf,
      useGrantedResource: async () => false,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        if (!RESOURCES.has(resourceIndicator)) {
          throw new errors.InvalidTarget();
        }
        return {
          scope: SCOPES, // requested scopes outside this list are silently dropped by oidc-provider
          audience: resourceIndicator,
          accessTokenTTL: ACCESS_TOKEN_TTL,
          accessTokenFormat: resourceIndicator === OPAQUE_RESOURCE ? 'opaque' : 'jwt',
          jwt: { sign: SIGNING_KEY }, // first key of the key set signs
        };
      },
    },
  },
  // Opaque tokens are only known through introspection, whose response has no sub without an
  // end user; a resource server keys identity and revocation on sub, so the client stands in,
  // as in the JWT access tokens (which oidc-provider gives sub = client_id itself).
  extraTokenClaims: async (ctx, token) => (
    token.resourceServer?.accessTokenFormat === 'opaque' && !token.accountId
      ? { sub: token.clientId }
      : undefined
  ),
  ttl: {
    AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL || ACCESS_TOKEN_TTL,
    ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL || ACCESS_TOKEN_TTL,
  },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
});

// ---------------------------------------------------------------------------------------------
// test middleware: request counters, /test/stats, JWKS Cache-Control and artificial delay
// ---------------------------------------------------------------------------------------------
const stats = { discovery: 0, jwks: 0, token: 0 };
const byPath = new Map();
// Introspection calls by how the client authenticated: oidc-provider takes a secret in
// either place from any secret client, so only this tells basic from post.
const byAuth = new Map();
function clientAuthUsed(ctx) {
  if (/^basic /i.test(ctx.get('authorization'))) return 'client_secret_basic';
  if (ctx.oidc?.params?.client_assertion) return 'private_key_jwt';
  if (ctx.oidc?.params?.client_secret) return 'client_secret_post';
  return 'none';
}
const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

provider.use(async (ctx, next) => {
  if (ctx.path === '/test/stats' && ctx.method === 'GET') {
    ctx.set('cache-control', 'no-store');
    ctx.body = { ...stats, by_path: Object.fromEntries(byPath), introspection_auth: Object.fromEntries(byAuth) };
    return;
  }
  if (ctx.path === '/test/stats/reset' && ctx.method === 'POST') {
    for (const k of Object.keys(stats)) stats[k] = 0;
    byPath.clear();
    byAuth.clear();
    ctx.status = 204;
    return;
  }

  byPath.set(ctx.path, (byPath.get(ctx.path) || 0) + 1);
  const isJwks = ctx.path === ROUTES.jwks && ctx.method === 'GET';
  if (ctx.path === DISCOVERY_PATH && ctx.method === 'GET') stats.discovery += 1;
  else if (isJwks) stats.jwks += 1;
  else if (ctx.path === ROUTES.token && ctx.method === 'POST') stats.token += 1;

  if (isJwks && JWKS_DELAY_MS > 0) await sleep(JWKS_DELAY_MS);
  if (ctx.path === ROUTES.introspection && INTROSPECTION_DELAY_MS > 0) await sleep(INTROSPECTION_DELAY_MS);
  try {
    await next();
  } finally {
    // Refused clients count too.
    if (ctx.path === ROUTES.introspection) {
      const method = clientAuthUsed(ctx);
      byAuth.set(method, (byAuth.get(method) || 0) + 1);
    }
  }
  if (isJwks && ctx.status === 200) ctx.set('cache-control', JWKS_CACHE_CONTROL);
});

const callback = provider.callback();
handler = (req, res) => {
  // Issuer with a path component (e.g. http://127.0.0.1:1234/realm): strip it like koa-mount
  // would. /test/* stays reachable at the root.
  // (oidc-provider derives the mount path from req.originalUrl, express-style, when building
  // endpoint URLs.)
  if (MOUNT_PATH && (req.url === MOUNT_PATH || req.url.startsWith(`${MOUNT_PATH}/`) || req.url.startsWith(`${MOUNT_PATH}?`))) {
    req.originalUrl = req.url;
    req.url = req.url.slice(MOUNT_PATH.length) || '/';
    if (req.url.startsWith('?')) req.url = `/${req.url}`;
  }
  callback(req, res);
};

provider.on('server_error', (ctx, err) => log('server_error', ctx.method, ctx.path, err));
// A refused client answers only `invalid_client`; the reason is for the test's log.
for (const event of ['grant.error', 'introspection.error', 'revocation.error']) {
  provider.on(event, (ctx, err) => log(event, ctx.path, err.message, err.error_detail || '', err.cause?.message || ''));
}

log(`issuer=${ISSUER} resource(s)=${[...RESOURCES].join(',')} signing kid=${SIGNING_KEY.kid} alg=${SIGNING_KEY.alg}`);
log(`discovery=${ISSUER.replace(/\/$/, '')}${DISCOVERY_PATH} jwks=${provider.urlFor('jwks')} token=${provider.urlFor('token')}`);
process.stdout.write(`IDP_LISTENING ${port}\n`);

// ---------------------------------------------------------------------------------------------
// shutdown
// ---------------------------------------------------------------------------------------------
let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  log(`${signal} received, shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
