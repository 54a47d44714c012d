//! Tokens signed by the test-only fixture keys (tests/fixtures/keys), and
//! those keys in the forms the attack tests need.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jwtgate::jose::Algorithm;
use serde_json::{Value, json};

use super::fixtures;

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Signs `claims` with a fixture key (file name under tests/fixtures/keys,
/// or an absolute path), putting `kid` and `typ: JWT` in the header.
pub fn sign(alg: Algorithm, key_file: &str, kid: &str, claims: Value) -> String {
    let path = fixtures().join(key_file);
    let map = claims.as_object().expect("claims are an object").clone();
    jwtgate::mint::Signer::from_file(&path, alg)
        .unwrap_or_else(|e| panic!("signer for {alg} from {key_file}: {e}"))
        .sign(&map, Some(kid), Some("JWT"))
        .unwrap_or_else(|e| panic!("signing with {alg}: {e}"))
}

/// `base` with every member of `extra` set over it; a `null` in `extra`
/// removes that claim instead.
pub fn merge_claims(mut base: Value, extra: Value) -> Value {
    let map = base.as_object_mut().expect("base claims are an object");
    for (name, value) in extra.as_object().expect("extra claims are an object") {
        if value.is_null() {
            map.remove(name);
        } else {
            map.insert(name.clone(), value.clone());
        }
    }
    base
}

/// Valid claims from `iss` for `sub`: audience `api`, issued now, five
/// minutes to live.
pub fn claims(iss: &str, sub: &str) -> Value {
    let now = now();
    json!({ "iss": iss, "sub": sub, "aud": "api", "iat": now, "exp": now + 300 })
}

/// `claims(iss, sub)` with `extra` merged over it (a `null` removes a claim).
pub fn claims_with(iss: &str, sub: &str, extra: Value) -> Value {
    merge_claims(claims(iss, sub), extra)
}

/// An RS256 token over `claims` from the key the fixture JWKS publishes as
/// `rsa-1`, which every issuer of the test configs trusts.
pub fn rs256(claims: Value) -> String {
    sign(Algorithm::RS256, "rsa.pem", "rsa-1", claims)
}

/// The token most tests send: valid for `iss` and `sub` as [`claims`] makes
/// it, with `extra` claims set over it (a `null` removes one).
pub fn token(iss: &str, sub: &str, extra: Value) -> String {
    rs256(claims_with(iss, sub, extra))
}

/// What `jwtgate token mint` is given for the README's demo token (the
/// demo issuer of the repository's gateway.yaml), with the key file `key`
/// and `scope`.
pub fn demo_token_args<'a>(key: &'a str, scope: &'a str) -> [&'a str; 12] {
    [
        "--key",
        key,
        "--kid",
        "demo-rs256",
        "--iss",
        "https://issuer.jwtgate.example",
        "--aud",
        "echo-api",
        "--sub",
        "alice",
        "--scope",
        scope,
    ]
}

/// The fixture key file and JWKS `kid` that sign `alg` for the test issuers.
pub fn key_for(alg: Algorithm) -> (&'static str, &'static str) {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => ("rsa.pem", "rsa-1"),
        ES256 => ("ec256.pem", "ec256-1"),
        ES384 => ("ec384.pem", "ec384-1"),
        EdDSA => ("ed25519.pem", "ed25519-1"),
        HS256 | HS384 | HS512 => ("hs256.secret", "hmac"),
    }
}

/// A compact JWS from arbitrary parts, for hand-built hostile tokens:
/// each part is base64url-encoded without padding, nothing is checked.
pub fn raw_token(header_json: &str, claims_json: &str, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header_json),
        URL_SAFE_NO_PAD.encode(claims_json),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// HMAC-SHA256 of `msg`, for algorithm-confusion tokens.
pub fn hmac_sha256(secret: &[u8], msg: &[u8]) -> Vec<u8> {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    aws_lc_rs::hmac::sign(&key, msg).as_ref().to_vec()
}

/// An HS256 token over `header_json` and `claims_json`, MACed with `secret`.
pub fn hs256_token(header_json: &str, claims_json: &str, secret: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header_json),
        URL_SAFE_NO_PAD.encode(claims_json)
    );
    let mac = hmac_sha256(secret, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac))
}

/// The bytes of a fixture file.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("read fixture {name}: {e}"))
}

/// The DER inside a PEM file (the first block).
pub fn pem_der(name: &str) -> Vec<u8> {
    let text = String::from_utf8(fixture_bytes(name)).expect("PEM is text");
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    STANDARD.decode(body.trim()).expect("PEM base64")
}

/// `der` as PEM text under `label`, 64 base64 characters a line.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// The public half of `rsa.pem` as PKCS#1 `RSAPublicKey` DER.
pub fn rsa_public_pkcs1_der() -> Vec<u8> {
    use aws_lc_rs::signature::KeyPair;
    let pair = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&pem_der("rsa.pem"))
        .expect("rsa.pem is PKCS#8");
    pair.public_key().as_ref().to_vec()
}

/// The modulus `n` of the `rsa-1` key: its base64url text in jwks.json and
/// its bytes.
pub fn rsa_modulus() -> (String, Vec<u8>) {
    let jwks: Value = serde_json::from_slice(&fixture_bytes("jwks.json")).expect("jwks.json");
    let n = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == "rsa-1")
        .expect("rsa-1 in jwks.json")["n"]
        .as_str()
        .expect("n")
        .to_string();
    let bytes = URL_SAFE_NO_PAD.decode(&n).expect("n is base64url");
    (n, bytes)
}
