#!/usr/bin/env node
// Test-only DPoP client tooling (RFC 9449) made with npm `jose`, a library jwtgate does not
// use, so the gateway's proof checks and thumbprints are compared with an independent
// implementation. NOT for production.
//
// Usage (JSON on stdout, one document):
//   node dpop.mjs keygen <ES256|EdDSA|PS256|RS256>
//       {"alg","private_jwk","public_jwk","jkt"}   jkt: RFC 7638 thumbprint of public_jwk
//   node dpop.mjs proof < spec.json      spec, or an array of specs -> a proof, or an array
//   node dpop.mjs verify <proof>         {"header","payload","jkt"}, or exits 1 saying why
//   node dpop.mjs thumbprint <jwk json>  {"jkt"}
//   node dpop.mjs ath <access token>     {"ath"}: base64url SHA-256 of the token
//
// A proof spec:
//   { "key": <private JWK with alg>, "htm": "GET", "htu": "https://…",
//     "token"?: <access token, sets ath>, "nonce"?: str, "iat_offset"?: seconds (default 0),
//     "jti"?: str (default random), "alg"?: override the header alg,
//     "claims"?: {…} merged into the payload last (null deletes a claim),
//     "header"?: {…} merged into the protected header last (null deletes a member),
//     "tamper"?: one of TAMPERS below, for attack tests }

import { createHash, createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

import {
  base64url, calculateJwkThumbprint, EmbeddedJWK, exportJWK, FlattenedSign, generateKeyPair, importJWK,
  jwtVerify,
} from 'jose';

const ALGS = ['ES256', 'EdDSA', 'PS256', 'RS256'];
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

// Deliberately bad proofs, each one thing a verifier must refuse.
const TAMPERS = {
  // The header jwk carries the private key too.
  private_jwk: (proof) => ({ ...proof, jwk: proof.key }),
  // An unsecured JWS: alg none and an empty signature.
  alg_none: (proof) => ({ ...proof, alg: 'none' }),
  // HMAC over the proof, keyed with the public JWK's thumbprint; the header still names the
  // public key, as an attacker confusing algorithms would.
  hs256: (proof) => ({ ...proof, alg: 'HS256' }),
  // Signed by a fresh key while the header names this one.
  other_key: (proof) => ({ ...proof, signer: 'other' }),
  wrong_typ: (proof) => ({ ...proof, typ: 'JWT' }),
  no_ath: (proof) => ({ ...proof, ath: undefined }),
};

const publicOf = (jwk) => Object.fromEntries(
  Object.entries(jwk).filter(([name]) => !PRIVATE_MEMBERS.includes(name) && !['alg', 'use', 'key_ops', 'ext', 'kid'].includes(name)),
);

async function keygen(alg) {
  if (!ALGS.includes(alg)) throw new Error(`unsupported alg ${JSON.stringify(alg)}; expected one of ${ALGS.join(', ')}`);
  const { privateKey } = await generateKeyPair(alg, { extractable: true, modulusLength: 2048 });
  const privateJwk = { ...(await exportJWK(privateKey)), alg };
  const publicJwk = publicOf(privateJwk);
  return { alg, private_jwk: privateJwk, public_jwk: publicJwk, jkt: await calculateJwkThumbprint(publicJwk) };
}

const ath = (token) => createHash('sha256').update(token).digest('base64url');

const merge = (base, overrides) => {
  const out = { ...base };
  for (const [name, value] of Object.entries(overrides || {})) {
    if (value === null) delete out[name];
    else out[name] = value;
  }
  return out;
};

const encode = (part) => base64url.encode(JSON.stringify(part));

async function sign(alg, signingInput, privateJwk) {
  if (alg === 'none') return '';
  if (alg === 'HS256') {
    const secret = await calculateJwkThumbprint(publicOf(privateJwk));
    return createHmac('sha256', secret).update(signingInput).digest('base64url');
  }
  // Raw JWS signing over the exact bytes, so a header jose would refuse to sign still gets a
  // valid signature for this key.
  const key = await importJWK(privateJwk, alg);
  const [encodedHeader, encodedPayload] = signingInput.split('.');
  const header = JSON.parse(new TextDecoder().decode(base64url.decode(encodedHeader)));
  const jws = await new FlattenedSign(base64url.decode(encodedPayload))
    .setProtectedHeader(header)
    .sign(key);
  if (jws.protected !== encodedHeader) throw new Error('jose re-encoded the protected header');
  return jws.signature;
}

async function proof(spec) {
  const key = spec.key;
  if (!key || !key.alg) throw new Error('spec.key must be a private JWK with "alg"');
  const plan = (TAMPERS[spec.tamper] || ((p) => p))({
    key,
    jwk: publicOf(key),
    alg: spec.alg || key.alg,
    typ: 'dpop+jwt',
    ath: spec.token === undefined ? undefined : ath(spec.token),
    signer: 'self',
  });
  if (spec.tamper && !TAMPERS[spec.tamper]) throw new Error(`unknown tamper ${JSON.stringify(spec.tamper)}; expected one of ${Object.keys(TAMPERS).join(', ')}`);

  const header = merge({ typ: plan.typ, alg: plan.alg, jwk: plan.jwk }, spec.header);
  const payload = merge({
    jti: spec.jti || randomBytes(16).toString('base64url'),
    htm: spec.htm,
    htu: spec.htu,
    iat: Math.floor(Date.now() / 1000) + (spec.iat_offset || 0),
    ...(plan.ath === undefined ? {} : { ath: plan.ath }),
    ...(spec.nonce === undefined ? {} : { nonce: spec.nonce }),
  }, spec.claims);
  const signingInput = `${encode(header)}.${encode(payload)}`;
  const signer = plan.signer === 'other' ? (await keygen(key.alg)).private_jwk : key;
  return `${signingInput}.${await sign(header.alg, signingInput, signer)}`;
}

async function verify(jwt) {
  const { payload, protectedHeader } = await jwtVerify(jwt, EmbeddedJWK, { algorithms: ALGS, typ: 'dpop+jwt' });
  if (PRIVATE_MEMBERS.some((name) => name in protectedHeader.jwk)) throw new Error('private key members in jwk');
  return { header: protectedHeader, payload, jkt: await calculateJwkThumbprint(protectedHeader.jwk) };
}

async function main([command, arg]) {
  switch (command) {
    case 'keygen': return keygen(arg);
    case 'proof': {
      const spec = JSON.parse(readFileSync(0, 'utf8'));
      return Array.isArray(spec) ? Promise.all(spec.map(proof)) : proof(spec);
    }
    case 'verify': return verify(arg);
    case 'thumbprint': return { jkt: await calculateJwkThumbprint(JSON.parse(arg)) };
    case 'ath': return { ath: ath(arg) };
    default: throw new Error(`unknown command ${JSON.stringify(command)}; see the head of dpop.mjs`);
  }
}

try {
  const out = `${JSON.stringify(await main(process.argv.slice(2)))}\n`;
  await new Promise((resolve) => { process.stdout.write(out, resolve); });
} catch (err) {
  process.stderr.write(`dpop.mjs: ${err.message}\n`);
  process.exitCode = 1;
}
