#!/usr/bin/env bash
# Regenerates the seed tokens in fuzz/corpus/verify_token/ with the
# test-only fixture keys (tests/fixtures/keys/) and the fuzz-only HMAC
# secret of fuzz_targets/verify_token.rs. Run from the repository root after
# `cargo build --bin jwtgate`. Tokens carry iat = the target's fixed NOW.
set -euo pipefail
cd "$(dirname "$0")/.."

jwtgate=target/debug/jwtgate
keys=tests/fixtures/keys
out=fuzz/corpus/verify_token
now=1800000000
mkdir -p "$out"

secret=$(mktemp)
trap 'rm -f "$secret"' EXIT
printf %s 'jwtgate-fuzz-only-hmac-secret-32' >"$secret"

mint() {
  local name=$1
  shift
  "$jwtgate" token mint --claim iat=$now --claim exp=$((now + 600)) "$@" | tr -d '\n' >"$out/seed-$name"
}

jwks=(--iss https://issuer.test --sub alice)
strict=(--claim 'realm_access={"roles":["admin","ops"]}' --claim tenant=acme)

mint rs256 --key $keys/rsa.pem --alg RS256 --kid rsa-1 "${jwks[@]}" --aud api --scope 'read write' "${strict[@]}"
mint ps256 --key $keys/rsa.pem --alg PS256 --kid rsa-1 --typ at+jwt "${jwks[@]}" --aud api --aud orders --scope 'read admin' --claim nbf=$now
mint es256 --key $keys/ec256.pem --alg ES256 --kid ec256-1 "${jwks[@]}" --aud api
mint eddsa --key $keys/ed25519.pem --alg EdDSA --kid ed25519-1 --typ application/JWT "${jwks[@]}" --aud api --claim 'scp=["read","write"]'
mint hs256 --key "$secret" --alg HS256 --iss https://hmac.test --aud api --claim token_use=access \
  --claim 'perm={"scopes":["read","write"]}' "${strict[@]}"
ls -l "$out"
