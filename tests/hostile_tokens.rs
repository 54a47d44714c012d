//! The hostile-token attack suite: one gateway, a table of named attacks,
//! each sent to the real `jwtgate` binary in front of a recording upstream.
//!
//! Every case must be refused with the exact status, `WWW-Authenticate`
//! challenge and metric `reason` the "Rejections" table (docs/reference/rejections.md) promises,
//! count exactly one deny decision, echo nothing of the token back, and
//! never reach the upstream. Tokens are built at test time (the fixture keys
//! are test-only); claim-level attacks are validly signed by the real key,
//! so they fail for the claim and not for the signature.

mod common;

use std::collections::HashSet;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use common::*;
use jsonwebtoken::{Algorithm as Jwa, EncodingKey};
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

/// Four issuers: `main` (every asymmetric family, strict lifetime and
/// `sub`), two token-type guarded ones (`typ` header, Cognito-style claim),
/// and an HMAC one. Routes: plain, scoped, typed, and one reading tokens
/// from the query string.
fn config() -> String {
    Config::new()
        .issuers(MAIN_ISSUER)
        .issuer_with(
            "typed",
            TYPED_ISS,
            &[
                "leeway: 30s",
                "require_sub: true",
                "token_type: { typ: [at+jwt] }",
            ],
        )
        .issuer_with(
            "cognito",
            COGNITO_ISS,
            &["token_type: { claim: token_use, values: [access] }"],
        )
        .issuers(HMAC_ISSUER)
        .routes(ROUTES)
}

const MAIN_ISSUER: &str = r#"
  - name: main
    issuer: https://main.hostile.test
    algorithms: [RS256, PS256, ES256, ES384, EdDSA]
    audiences: [api]
    leeway: 30s
    max_lifetime: 1h
    require_sub: true
    jwks_file: "{FIXTURES}/jwks.json"
"#;

const HMAC_ISSUER: &str = r#"
  - name: hmac
    issuer: https://hmac.hostile.test
    algorithms: [HS256]
    audiences: [api]
    hmac_secret_file: "{FIXTURES}/hs256.secret"
"#;

const ROUTES: &str = r#"
  - name: api
    match: { path_prefix: /api }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main, hmac] }
    forward: { claims: { sub: X-User-Id } }
  - name: scoped
    match: { path_prefix: /scoped }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main], scopes: { all_of: ["orders:read"] } }
  - name: typed
    match: { path_prefix: /typed }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [typed, cognito] }
  - name: query
    match: { path_prefix: /query }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main], token_query: access_token }
"#;

const MAIN_ISS: &str = "https://main.hostile.test";
const TYPED_ISS: &str = "https://typed.hostile.test";
const COGNITO_ISS: &str = "https://cognito.hostile.test";
const HMAC_ISS: &str = "https://hmac.hostile.test";

/// Where the `jku` and `x5u` headers point: a port nothing listens on.
const JKU: &str = "http://127.0.0.1:1/jwks.json";

/// The `issuer` label when no issuer was identified.
const NO_ISSUER: &str = "_none";
/// Shortest token segment the leak checks look for: shorter ones (`e30`)
/// could turn up by coincidence.
const MIN_SEGMENT: usize = 12;

/// The P-256 group order n.
const P256_N: &str = "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551";
/// The Ed25519 group order L, little-endian (as S is encoded).
const ED25519_L_LE: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
];

// ---------------------------------------------------------------------------
// The case table
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Route {
    /// The `route` metric label.
    name: &'static str,
    path: &'static str,
}

const API: Route = Route {
    name: "api",
    path: "/api/orders",
};
const SCOPED: Route = Route {
    name: "scoped",
    path: "/scoped/orders",
};
const TYPED: Route = Route {
    name: "typed",
    path: "/typed/orders",
};
const QUERY: Route = Route {
    name: "query",
    path: "/query/orders",
};

/// How the token travels.
#[derive(Debug, Clone)]
enum Via {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `?access_token=<token>` and nothing else.
    Query,
    /// The token in the query string and in `Authorization`.
    QueryAndBearer,
    /// Two `Authorization: Bearer` headers, the second with this token.
    TwoAuthorizations(String),
    /// `?access_token=<token>&access_token=<this>`.
    TwoQueryParameters(String),
}

/// What the gateway must answer.
#[derive(Debug, Clone, Copy)]
struct Expect {
    status: u16,
    reason: &'static str,
    /// The `issuer` metric label.
    issuer: &'static str,
}

/// 401 `invalid_token`.
const fn invalid(reason: &'static str, issuer: &'static str) -> Expect {
    Expect {
        status: 401,
        reason,
        issuer,
    }
}

/// 401 without an error code: no token was found.
const NO_TOKEN: Expect = Expect {
    status: 401,
    reason: "missing_token",
    issuer: NO_ISSUER,
};

/// 400 `invalid_request`: a token sent twice.
const AMBIGUOUS: Expect = Expect {
    status: 400,
    reason: "ambiguous_token",
    issuer: NO_ISSUER,
};

/// 403 `insufficient_scope` on the scoped route.
const FORBIDDEN: Expect = Expect {
    status: 403,
    reason: "insufficient_scope",
    issuer: "main",
};

impl Expect {
    fn error(&self) -> Option<&'static str> {
        match (self.status, self.reason) {
            (401, "missing_token") => None,
            (401, _) => Some("invalid_token"),
            (400, _) => Some("invalid_request"),
            (403, _) => Some("insufficient_scope"),
            (status, _) => panic!("no RFC 6750 error for {status}"),
        }
    }

    fn description(&self) -> &'static str {
        match (self.status, self.reason) {
            (401, "missing_token") => "bearer token required",
            (401, "expired") => "token expired",
            (401, "not_yet_valid") => "token not yet valid",
            (401, _) => "invalid token",
            (400, "ambiguous_token") => "token sent more than once",
            (400, _) => "malformed request",
            (403, _) => "insufficient scope",
            (status, _) => panic!("no description for {status}"),
        }
    }

    /// The exact `Bearer` challenge.
    fn challenge(&self) -> String {
        let mut value = format!("Bearer realm=\"{REALM}\"");
        if let Some(error) = self.error() {
            value.push_str(&format!(
                ", error=\"{error}\", error_description=\"{}\"",
                self.description()
            ));
        }
        if self.status == 403 {
            value.push_str(", scope=\"orders:read\"");
        }
        value
    }
}

/// One named attack.
struct Case {
    name: &'static str,
    route: Route,
    via: Via,
    token: String,
    /// Send the token here first and expect it to be accepted (so a
    /// verified-token cache holds it) before the attack.
    accepted_first_on: Option<Route>,
    expect: Expect,
}

impl Case {
    /// Every token the request carries.
    fn tokens(&self) -> Vec<&str> {
        let mut tokens = vec![self.token.as_str()];
        if let Via::TwoAuthorizations(other) | Via::TwoQueryParameters(other) = &self.via {
            tokens.push(other);
        }
        tokens
    }
}

#[derive(Default)]
struct Table {
    cases: Vec<Case>,
}

impl Table {
    /// Adds a case whose token travels as `Authorization: Bearer`. `build`
    /// gets the case name, to use as `jti` so every token is distinct.
    fn case(
        &mut self,
        name: &'static str,
        route: Route,
        expect: Expect,
        build: impl FnOnce(&str) -> String,
    ) {
        self.via(name, route, Via::Bearer, expect, build);
    }

    fn via(
        &mut self,
        name: &'static str,
        route: Route,
        via: Via,
        expect: Expect,
        build: impl FnOnce(&str) -> String,
    ) {
        self.cases.push(Case {
            name,
            route,
            via,
            token: build(name),
            accepted_first_on: None,
            expect,
        });
    }
}

// ---------------------------------------------------------------------------
// Token building
// ---------------------------------------------------------------------------

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A base64url decoder that tolerates non-canonical trailing bits: what a
/// lax verifier would use. Only to prove a mutated segment decodes to the
/// same bytes.
fn lax_decode(segment: &str) -> Vec<u8> {
    let lax = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone),
    );
    lax.decode(segment).expect("lax base64url")
}

/// Valid claims for `iss`: audience `api`, five minutes to live, and the
/// case name as `jti`.
fn claims(iss: &str, jti: &str) -> Value {
    let now = now();
    json!({
        "iss": iss,
        "sub": "mallory",
        "aud": "api",
        "iat": now,
        "exp": now + 300,
        "jti": jti,
    })
}

/// `claims(iss, jti)` with `extra` merged over it (`null` removes a claim).
fn claims_with(iss: &str, jti: &str, extra: Value) -> Value {
    merge_claims(claims(iss, jti), extra)
}

/// The JSON text of valid main-issuer claims with `members` appended
/// verbatim (for duplicate members and literal numbers).
fn claims_text_plus(iss: &str, jti: &str, members: &str) -> String {
    let text = claims(iss, jti).to_string();
    format!("{},{members}}}", &text[..text.len() - 1])
}

/// An encoding key for `alg` from a fixture file.
fn encoding_key(key_file: &str, alg: Jwa) -> EncodingKey {
    let bytes = fixture_bytes(key_file);
    match alg {
        Jwa::HS256 | Jwa::HS384 | Jwa::HS512 => {
            EncodingKey::from_secret(jwtgate::keys::secret_file_bytes(&bytes))
        }
        Jwa::RS256 | Jwa::RS384 | Jwa::RS512 | Jwa::PS256 | Jwa::PS384 | Jwa::PS512 => {
            EncodingKey::from_rsa_pem(&bytes).expect("RSA PEM")
        }
        Jwa::ES256 | Jwa::ES384 => EncodingKey::from_ec_pem(&bytes).expect("EC PEM"),
        Jwa::EdDSA => EncodingKey::from_ed_pem(&bytes).expect("Ed25519 PEM"),
        other => panic!("no fixture key for {other:?}"),
    }
}

/// A compact JWS over arbitrary header and claims bytes, really signed
/// with `alg` by the fixture key `key_file`.
fn jws_bytes(header: &[u8], claims: &[u8], key_file: &str, alg: Jwa) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &encoding_key(key_file, alg), alg)
        .unwrap_or_else(|e| panic!("signing with {alg:?} from {key_file}: {e}"));
    format!("{input}.{signature}")
}

fn jws(header: &str, claims: &str, key_file: &str, alg: Jwa) -> String {
    jws_bytes(header.as_bytes(), claims.as_bytes(), key_file, alg)
}

/// A compact JWS over `header` and `claims`, really signed with `alg` by
/// the fixture key `key_file`.
fn signed(header: &str, claims: &Value, key_file: &str, alg: Jwa) -> String {
    jws(header, &claims.to_string(), key_file, alg)
}

const RS256_HEADER: &str = r#"{"alg":"RS256","typ":"JWT","kid":"rsa-1"}"#;
const ES256_HEADER: &str = r#"{"alg":"ES256","typ":"JWT","kid":"ec256-1"}"#;
const EDDSA_HEADER: &str = r#"{"alg":"EdDSA","typ":"JWT","kid":"ed25519-1"}"#;

/// A genuine RS256 token of the main issuer's `rsa-1` key over `claims`.
fn rs256(claims: &Value) -> String {
    rs256_header(RS256_HEADER, claims)
}

/// A token with an arbitrary header, really signed by the `rsa-1` key.
fn rs256_header(header: &str, claims: &Value) -> String {
    signed(header, claims, "rsa.pem", Jwa::RS256)
}

/// A genuine RS256 token over claims given as JSON text.
fn rs256_text(claims: &str) -> String {
    jws(RS256_HEADER, claims, "rsa.pem", Jwa::RS256)
}

/// A token with `typ` in the header, from the real `rsa-1` key.
fn rs256_typ(typ: Option<&str>, claims: &Value) -> String {
    let header = match typ {
        Some(typ) => json!({"alg": "RS256", "typ": typ, "kid": "rsa-1"}),
        None => json!({"alg": "RS256", "kid": "rsa-1"}),
    };
    rs256_header(&header.to_string(), claims)
}

fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_string).collect()
}

/// `token` with its signature segment replaced.
fn with_signature_segment(token: &str, signature: &str) -> String {
    let (input, _) = token.rsplit_once('.').expect("a dot");
    format!("{input}.{signature}")
}

/// A 32-byte big-endian scalar from hex.
fn scalar(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    let digits = format!("{hex:0>64}");
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).expect("hex");
    }
    out
}

/// `value + 1` for a big-endian scalar.
fn plus_one(mut value: [u8; 32]) -> [u8; 32] {
    for byte in value.iter_mut().rev() {
        let (sum, carry) = byte.overflowing_add(1);
        *byte = sum;
        if !carry {
            break;
        }
    }
    value
}

fn ecdsa_raw(r: [u8; 32], s: [u8; 32]) -> Vec<u8> {
    let mut signature = r.to_vec();
    signature.extend_from_slice(&s);
    signature
}

/// DER: a tag, a definite length and the content.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER from big-endian unsigned bytes.
fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len() - 1);
    let mut content = Vec::new();
    if bytes[start] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(&bytes[start..]);
    der(0x02, &content)
}

/// The public half of `rsa.pem` as X.509 `SubjectPublicKeyInfo` DER: what
/// `openssl rsa -pubout` prints, and what an attacker would download.
fn rsa_spki_der() -> Vec<u8> {
    let algorithm = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0u8];
    bits.extend_from_slice(&rsa_public_pkcs1_der());
    let mut content = algorithm.to_vec();
    content.extend_from_slice(&der(0x03, &bits));
    der(0x30, &content)
}

/// A P-256 key the attacker generated, with its public JWK.
struct Attacker {
    pair: EcdsaKeyPair,
    jwk: Value,
    rng: SystemRandom,
}

impl Attacker {
    fn new() -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key");
        let point = pair.public_key().as_ref();
        assert_eq!(point.len(), 65, "uncompressed P-256 point");
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": b64(&point[1..33]),
            "y": b64(&point[33..65]),
            "use": "sig",
        });
        Self {
            pair,
            jwk,
            rng: SystemRandom::new(),
        }
    }

    /// An ES256 token over `header` and `claims`, signed by the attacker.
    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let signature = self
            .pair
            .sign(&self.rng, input.as_bytes())
            .expect("attacker signs");
        format!("{input}.{}", b64(signature.as_ref()))
    }
}

/// The last base64url character changed so the unused low bits differ:
/// the same bytes, a different (non-canonical) encoding.
fn non_canonical(segment: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert!(
        matches!(segment.len() % 4, 2 | 3),
        "a segment of length {} has no unused bits",
        segment.len()
    );
    let last = *segment.as_bytes().last().expect("non-empty");
    let value = ALPHABET.iter().position(|c| *c == last).expect("base64url");
    let mutated = format!(
        "{}{}",
        &segment[..segment.len() - 1],
        ALPHABET[value ^ 1] as char
    );
    assert_ne!(mutated, segment);
    assert_eq!(
        lax_decode(&mutated),
        URL_SAFE_NO_PAD.decode(segment).expect("canonical"),
        "the mutation must keep the decoded bytes"
    );
    mutated
}

// ---------------------------------------------------------------------------
// The attacks
// ---------------------------------------------------------------------------

fn hostile_cases() -> Table {
    let mut t = Table::default();
    let main = |jti: &str| claims(MAIN_ISS, jti);
    let attacker = Attacker::new();

    // --- alg: none, missing, not a string, unknown -------------------------
    // With a signature (any bytes: here a genuine RS256 one), so the token
    // gets past the parser to the algorithm check.
    for (name, alg) in [
        ("alg none with signature", "none"),
        ("alg None with signature", "None"),
        ("alg NONE with signature", "NONE"),
        ("alg nOnE with signature", "nOnE"),
        ("alg rs256 (wrong case)", "rs256"),
        ("alg ES512 (not implemented)", "ES512"),
    ] {
        t.case(name, API, invalid("unsupported_alg", "main"), |jti| {
            let header = json!({"alg": alg, "typ": "JWT", "kid": "rsa-1"}).to_string();
            rs256_header(&header, &main(jti))
        });
    }
    // Without a signature: an empty third segment is malformed.
    for (name, alg) in [
        ("alg none without signature", "none"),
        ("alg NONE without signature", "NONE"),
    ] {
        t.case(name, API, invalid("malformed", NO_ISSUER), |jti| {
            let header = json!({"alg": alg, "typ": "JWT"}).to_string();
            format!("{}.{}.", b64(header), b64(main(jti).to_string()))
        });
    }
    t.case(
        "alg none, two segments",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            format!(
                "{}.{}",
                b64(r#"{"alg":"none"}"#),
                b64(main(jti).to_string())
            )
        },
    );
    t.case("alg missing", API, invalid("malformed", NO_ISSUER), |jti| {
        rs256_header(r#"{"typ":"JWT","kid":"rsa-1"}"#, &main(jti))
    });
    t.case(
        "alg as a number",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| rs256_header(r#"{"alg":256,"typ":"JWT","kid":"rsa-1"}"#, &main(jti)),
    );
    t.case(
        "alg as an array",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| rs256_header(r#"{"alg":["RS256"],"kid":"rsa-1"}"#, &main(jti)),
    );

    // --- RS256 -> HS256 key confusion ---------------------------------------
    // HS256 with the RSA key's kid, MACed with the public key in every form
    // an attacker can get hold of. `main` does not allow HS256 at all.
    let spki = rsa_spki_der();
    let (modulus_text, modulus_bytes) = rsa_modulus();
    let confusion: [(&'static str, Vec<u8>); 6] = [
        (
            "HS256 keyed with the RSA public key PEM (SPKI)",
            to_pem("PUBLIC KEY", &spki).into_bytes(),
        ),
        (
            "HS256 keyed with the RSA public key PEM (PKCS#1)",
            to_pem("RSA PUBLIC KEY", &rsa_public_pkcs1_der()).into_bytes(),
        ),
        ("HS256 keyed with the RSA public key DER", spki.clone()),
        (
            "HS256 keyed with the JWKS JSON text",
            fixture_bytes("jwks.json"),
        ),
        ("HS256 keyed with the RSA modulus bytes", modulus_bytes),
        (
            "HS256 keyed with the RSA modulus base64url text",
            modulus_text.into_bytes(),
        ),
    ];
    for (name, secret) in confusion {
        t.case(name, API, invalid("alg_not_allowed", "main"), |jti| {
            hs256_token(
                r#"{"alg":"HS256","typ":"JWT","kid":"rsa-1"}"#,
                &main(jti).to_string(),
                &secret,
            )
        });
    }
    // Against the HMAC issuer (which does allow HS256), the RSA public key is
    // just a wrong secret: the kid cannot steer it to the RSA key.
    t.case(
        "HS256 on the HMAC issuer keyed with the RSA PEM",
        API,
        invalid("bad_signature", "hmac"),
        |jti| {
            hs256_token(
                r#"{"alg":"HS256","typ":"JWT","kid":"rsa-1"}"#,
                &claims(HMAC_ISS, jti).to_string(),
                to_pem("PUBLIC KEY", &spki).as_bytes(),
            )
        },
    );
    // `iss` only selects an issuer; its own allow-list still rules.
    t.case(
        "HS256 with the real HMAC secret claiming the RSA issuer",
        API,
        invalid("alg_not_allowed", "main"),
        |jti| {
            signed(
                r#"{"alg":"HS256","typ":"JWT"}"#,
                &main(jti),
                "hs256.secret",
                Jwa::HS256,
            )
        },
    );
    t.case(
        "RS256 by the real RSA key claiming the HMAC issuer",
        API,
        invalid("alg_not_allowed", "hmac"),
        |jti| rs256(&claims(HMAC_ISS, jti)),
    );

    // --- alg outside the allow-list, or not fitting the key ----------------
    // Each really signed with `alg` by `key_file`.
    for (name, header, key_file, alg) in [
        (
            "RS512 (not in the allow-list), real key",
            r#"{"alg":"RS512","typ":"JWT","kid":"rsa-1"}"#,
            "rsa.pem",
            Jwa::RS512,
        ),
        (
            "ES256 header with an RSA kid",
            r#"{"alg":"ES256","typ":"JWT","kid":"rsa-1"}"#,
            "ec256.pem",
            Jwa::ES256,
        ),
        (
            "PS256 with the RS256-only key",
            r#"{"alg":"PS256","typ":"JWT","kid":"rsa-rs256-only"}"#,
            "rsa-rs256-only.pem",
            Jwa::PS256,
        ),
        (
            "ES384 token claiming kid ec256-1",
            r#"{"alg":"ES384","typ":"JWT","kid":"ec256-1"}"#,
            "ec384.pem",
            Jwa::ES384,
        ),
        (
            "EdDSA header with a P-256 kid",
            r#"{"alg":"EdDSA","typ":"JWT","kid":"ec256-1"}"#,
            "ed25519.pem",
            Jwa::EdDSA,
        ),
    ] {
        t.case(name, API, invalid("alg_not_allowed", "main"), |jti| {
            signed(header, &main(jti), key_file, alg)
        });
    }

    // --- key material carried by the token: never read ---------------------
    t.case(
        "embedded jwk, attacker-signed, no kid",
        API,
        invalid("bad_signature", "main"),
        |jti| {
            attacker.sign(
                &json!({"alg": "ES256", "typ": "JWT", "jwk": attacker.jwk}),
                &main(jti),
            )
        },
    );
    t.case(
        "embedded jwk, attacker-signed, attacker kid",
        API,
        invalid("unknown_kid", "main"),
        |jti| {
            let mut jwk = attacker.jwk.clone();
            jwk["kid"] = json!("attacker-1");
            attacker.sign(
                &json!({"alg": "ES256", "typ": "JWT", "kid": "attacker-1", "jwk": jwk}),
                &main(jti),
            )
        },
    );
    t.case(
        "embedded jwk, attacker-signed, real kid ec256-1",
        API,
        invalid("bad_signature", "main"),
        |jti| {
            attacker.sign(
                &json!({"alg": "ES256", "typ": "JWT", "kid": "ec256-1", "jwk": attacker.jwk}),
                &main(jti),
            )
        },
    );
    t.case(
        "jku to 127.0.0.1:1, attacker kid",
        API,
        invalid("unknown_kid", "main"),
        |jti| {
            let header = json!({"alg": "ES256", "kid": "attacker-1", "jku": JKU});
            attacker.sign(&header, &main(jti))
        },
    );
    t.case(
        "jku to 127.0.0.1:1, real kid, attacker-signed",
        API,
        invalid("bad_signature", "main"),
        |jti| {
            let header = json!({"alg": "ES256", "kid": "ec256-1", "jku": JKU});
            attacker.sign(&header, &main(jti))
        },
    );
    t.case(
        "x5u to 127.0.0.1:1, impostor RSA key with kid rsa-1",
        API,
        invalid("bad_signature", "main"),
        |jti| {
            signed(
                r#"{"alg":"RS256","kid":"rsa-1","x5u":"http://127.0.0.1:1/cert.pem"}"#,
                &main(jti),
                "rsa-impostor.pem",
                Jwa::RS256,
            )
        },
    );
    t.case(
        "x5c junk chain, impostor RSA key, no kid",
        API,
        invalid("bad_signature", "main"),
        |jti| {
            signed(
                r#"{"alg":"RS256","x5c":["bm90IGEgY2VydGlmaWNhdGU=","AAAA"]}"#,
                &main(jti),
                "rsa-impostor.pem",
                Jwa::RS256,
            )
        },
    );

    // --- JOSE extensions and JWE ------------------------------------------
    t.case(
        "crit header naming exp",
        API,
        invalid("unsupported_header", NO_ISSUER),
        |jti| {
            rs256_header(
                r#"{"alg":"RS256","kid":"rsa-1","crit":["exp"],"exp":1}"#,
                &main(jti),
            )
        },
    );
    t.case(
        "crit header, empty list",
        API,
        invalid("unsupported_header", NO_ISSUER),
        |jti| rs256_header(r#"{"alg":"RS256","kid":"rsa-1","crit":[]}"#, &main(jti)),
    );
    t.case(
        "b64 false (unencoded payload)",
        API,
        invalid("unsupported_header", NO_ISSUER),
        |jti| {
            rs256_header(
                r#"{"alg":"RS256","kid":"rsa-1","b64":false,"crit":["b64"]}"#,
                &main(jti),
            )
        },
    );
    t.case(
        "b64 false without crit",
        API,
        invalid("unsupported_header", NO_ISSUER),
        |jti| rs256_header(r#"{"alg":"RS256","kid":"rsa-1","b64":false}"#, &main(jti)),
    );
    t.case(
        "five segments (JWE compact)",
        API,
        invalid("encrypted_token", NO_ISSUER),
        |jti| {
            format!(
                "{}.{}.{}.{}.{}",
                b64(r#"{"alg":"RSA-OAEP-256","enc":"A256GCM","kid":"rsa-1"}"#),
                b64([7u8; 256]),
                b64(jti),
                b64(main(jti).to_string()),
                b64([9u8; 16])
            )
        },
    );

    // --- encoding ---------------------------------------------------------
    t.case(
        "padded signature segment (==)",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            let token = rs256(&main(jti));
            let signature = segments(&token)[2].clone();
            assert_eq!(
                signature.len() % 4,
                2,
                "RS256 signatures need two pad chars"
            );
            with_signature_segment(&token, &format!("{signature}=="))
        },
    );
    t.case(
        "padded header segment (=)",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| rs256(&main(jti)).replacen('.', "=.", 1),
    );
    t.case(
        "standard base64 (+ and /) in the signature",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            // Re-sign with a counter until the signature has a '-' or '_'.
            (0..1000)
                .map(|n| rs256(&claims_with(MAIN_ISS, jti, json!({"n": n}))))
                .find(|token| segments(token)[2].contains(['-', '_']))
                .map(|token| {
                    let signature = segments(&token)[2].replace('-', "+").replace('_', "/");
                    with_signature_segment(&token, &signature)
                })
                .expect("some signature has a URL-safe character")
        },
    );
    t.case(
        "space inside the payload segment",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            let parts = segments(&rs256(&main(jti)));
            let (a, b) = parts[1].split_at(parts[1].len() / 2);
            format!("{}.{a} {b}.{}", parts[0], parts[2])
        },
    );
    t.case(
        "tab inside the signature segment",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            let parts = segments(&rs256(&main(jti)));
            let (a, b) = parts[2].split_at(parts[2].len() / 2);
            format!("{}.{}.{a}\t{b}", parts[0], parts[1])
        },
    );
    t.case(
        "trailing dot",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| format!("{}.", rs256(&main(jti))),
    );
    t.case("leading dot", API, invalid("malformed", NO_ISSUER), |jti| {
        format!(".{}", rs256(&main(jti)))
    });
    t.case(
        "extra fourth segment",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| format!("{}.{}", rs256(&main(jti)), b64("{}")),
    );
    t.case(
        "empty header segment",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            let parts = segments(&rs256(&main(jti)));
            format!(".{}.{}", parts[1], parts[2])
        },
    );
    t.case(
        "empty payload segment",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            let parts = segments(&rs256(&main(jti)));
            format!("{}..{}", parts[0], parts[2])
        },
    );
    t.case(
        "empty signature segment",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            let parts = segments(&rs256(&main(jti)));
            format!("{}.{}.", parts[0], parts[1])
        },
    );
    t.case("only dots", API, invalid("malformed", NO_ISSUER), |_| {
        "..".to_string()
    });
    t.case(
        "non-canonical trailing bits in the RS256 signature",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            let token = rs256(&main(jti));
            with_signature_segment(&token, &non_canonical(&segments(&token)[2]))
        },
    );
    t.case(
        "non-canonical trailing bits in the ES256 signature",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            let token = signed(ES256_HEADER, &main(jti), "ec256.pem", Jwa::ES256);
            with_signature_segment(&token, &non_canonical(&segments(&token)[2]))
        },
    );
    t.case(
        "header is a JSON array",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| rs256_header(r#"[{"alg":"RS256","kid":"rsa-1"}]"#, &main(jti)),
    );
    t.case(
        "payload is a JSON string",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| rs256_text(&Value::String(main(jti).to_string()).to_string()),
    );
    t.case(
        "payload is a JSON array",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| rs256_text(&json!([main(jti)]).to_string()),
    );
    t.case(
        "duplicate alg in the header",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| rs256_header(r#"{"alg":"RS256","kid":"rsa-1","alg":"none"}"#, &main(jti)),
    );
    t.case(
        "duplicate kid in the header",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            rs256_header(
                r#"{"alg":"RS256","kid":"rsa-1","kid":"attacker"}"#,
                &main(jti),
            )
        },
    );
    t.case(
        "nested duplicate in the header",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            rs256_header(
                r#"{"alg":"RS256","kid":"rsa-1","jwk":{"kty":"EC","kty":"RSA"}}"#,
                &main(jti),
            )
        },
    );
    t.case(
        "duplicate sub in the claims",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| rs256_text(&claims_text_plus(MAIN_ISS, jti, r#""sub":"admin""#)),
    );
    t.case(
        "duplicate exp in the claims",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            let late = now() + 10 * 365 * 86_400;
            rs256_text(&claims_text_plus(
                MAIN_ISS,
                jti,
                &format!(r#""exp":{late}"#),
            ))
        },
    );
    t.case(
        "duplicate iss in the claims",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            rs256_text(&claims_text_plus(
                MAIN_ISS,
                jti,
                &format!(r#""iss":"{HMAC_ISS}""#),
            ))
        },
    );
    t.case(
        "nested duplicate in the claims",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            rs256_text(&claims_text_plus(
                MAIN_ISS,
                jti,
                r#""realm_access":{"roles":["user"],"roles":["admin"]}"#,
            ))
        },
    );
    t.case(
        "duplicate inside an array of objects",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| rs256_text(&claims_text_plus(MAIN_ISS, jti, r#""x":[{"r":1,"r":2}]"#)),
    );
    t.case(
        "invalid UTF-8 in the claims",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            let mut bytes = claims_text_plus(MAIN_ISS, jti, r#""name":"AB""#).into_bytes();
            let at = bytes.len() - 3;
            bytes[at] = 0xff;
            bytes[at + 1] = 0xfe;
            jws_bytes(RS256_HEADER.as_bytes(), &bytes, "rsa.pem", Jwa::RS256)
        },
    );
    t.case(
        "invalid UTF-8 in the header",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            let header = b"{\"alg\":\"RS256\",\"kid\":\"rsa-\xc3\x28\"}";
            jws_bytes(
                header,
                main(jti).to_string().as_bytes(),
                "rsa.pem",
                Jwa::RS256,
            )
        },
    );
    t.case(
        "truncated JSON claims",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            let text = main(jti).to_string();
            rs256_text(&text[..text.len() - 1])
        },
    );
    t.case(
        "trailing bytes after the JSON claims",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| rs256_text(&format!("{} {{}}", main(jti))),
    );
    t.case(
        "UTF-8 BOM before the header JSON",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| {
            let header = format!("\u{feff}{RS256_HEADER}");
            rs256_header(&header, &main(jti))
        },
    );
    t.case(
        "token over 8 KiB",
        API,
        invalid("too_large", NO_ISSUER),
        |jti| {
            let token = rs256(&claims_with(
                MAIN_ISS,
                jti,
                json!({"pad": "x".repeat(6200)}),
            ));
            assert!(token.len() > 8192, "{} bytes", token.len());
            token
        },
    );

    // --- claim types (validly signed) ---------------------------------------
    let typed_claims: [(&'static str, Value, &'static str); 14] = [
        (
            "exp as a string",
            json!({"exp": (now() + 300).to_string()}),
            "main",
        ),
        ("exp negative", json!({"exp": -1}), "main"),
        ("exp 1e300", json!({"exp": 1e300}), "main"),
        ("exp u64::MAX", json!({"exp": u64::MAX}), "main"),
        ("exp as an array", json!({"exp": [null]}), "main"),
        ("nbf as a bool", json!({"nbf": true}), "main"),
        ("iat as a string", json!({"iat": now().to_string()}), "main"),
        ("aud as a number", json!({"aud": 42}), "main"),
        (
            "aud array containing a number",
            json!({"aud": ["api", 7]}),
            "main",
        ),
        ("aud as an object", json!({"aud": {"api": true}}), "main"),
        ("iss as a number", json!({"iss": 1}), NO_ISSUER),
        ("iss as an array", json!({"iss": [MAIN_ISS]}), NO_ISSUER),
        ("sub as an array", json!({"sub": ["admin"]}), "main"),
        ("sub empty string", json!({"sub": ""}), "main"),
    ];
    for (name, extra, issuer) in typed_claims {
        t.case(name, API, invalid("malformed", issuer), |jti| {
            rs256(&claims_with(MAIN_ISS, jti, extra))
        });
    }
    t.case(
        "sub as a number",
        API,
        invalid("malformed", "main"),
        |jti| rs256(&claims_with(MAIN_ISS, jti, json!({"sub": 0}))),
    );

    // --- signatures -------------------------------------------------------
    t.case(
        "impostor RSA key with kid rsa-1",
        API,
        invalid("bad_signature", "main"),
        |jti| signed(RS256_HEADER, &main(jti), "rsa-impostor.pem", Jwa::RS256),
    );
    t.case(
        "RS256 signature missing its last byte",
        API,
        invalid("bad_signature", "main"),
        |jti| {
            let token = rs256(&main(jti));
            let mut signature = URL_SAFE_NO_PAD.decode(&segments(&token)[2]).expect("b64");
            signature.pop();
            with_signature_segment(&token, &b64(signature))
        },
    );
    t.case(
        "RS256 signature with an extra byte",
        API,
        invalid("bad_signature", "main"),
        |jti| {
            let token = rs256(&main(jti));
            let mut signature = URL_SAFE_NO_PAD.decode(&segments(&token)[2]).expect("b64");
            signature.push(0);
            with_signature_segment(&token, &b64(signature))
        },
    );
    t.case(
        "RS256 signature of value 1",
        API,
        invalid("bad_signature", "main"),
        |jti| {
            let mut one = vec![0u8; 256];
            one[255] = 1;
            raw_token(RS256_HEADER, &main(jti).to_string(), &one)
        },
    );
    t.case(
        "RS256 signature equal to the modulus",
        API,
        invalid("bad_signature", "main"),
        |jti| raw_token(RS256_HEADER, &main(jti).to_string(), &rsa_modulus().1),
    );
    t.case(
        "signature from a different token",
        API,
        invalid("bad_signature", "main"),
        |jti| {
            let donor = rs256(&claims_with(
                MAIN_ISS,
                &format!("{jti} donor"),
                json!({"sub": "alice"}),
            ));
            let target = rs256(&claims_with(MAIN_ISS, jti, json!({"sub": "admin"})));
            with_signature_segment(&target, &segments(&donor)[2])
        },
    );
    t.case(
        "claims changed after signing",
        API,
        invalid("bad_signature", "main"),
        |jti| {
            let genuine = rs256(&main(jti));
            let parts = segments(&genuine);
            let tampered = claims_with(MAIN_ISS, jti, json!({"sub": "admin"}));
            format!("{}.{}.{}", parts[0], b64(tampered.to_string()), parts[2])
        },
    );

    // ECDSA "psychic signatures" (CVE-2022-21449) and out-of-range scalars.
    let n = scalar(P256_N);
    let zero = [0u8; 32];
    let one = plus_one(zero);
    let psychic: [(&'static str, [u8; 32], [u8; 32]); 7] = [
        ("ES256 r=s=0", zero, zero),
        ("ES256 r=0 s=1", zero, one),
        ("ES256 r=n s=1", n, one),
        ("ES256 r=1 s=n", one, n),
        ("ES256 r=s=n", n, n),
        ("ES256 r=n+1 s=1", plus_one(n), one),
        ("ES256 r=1 s=n+1", one, plus_one(n)),
    ];
    for (name, r, s) in psychic {
        t.case(name, API, invalid("bad_signature", "main"), |jti| {
            raw_token(ES256_HEADER, &main(jti).to_string(), &ecdsa_raw(r, s))
        });
    }
    t.case(
        "ES256 r=s=0xff..ff",
        API,
        invalid("bad_signature", "main"),
        |jti| raw_token(ES256_HEADER, &main(jti).to_string(), &[0xff; 64]),
    );
    t.case(
        "ES256 signature DER-encoded instead of r||s",
        API,
        invalid("bad_signature", "main"),
        |jti| {
            let token = signed(ES256_HEADER, &main(jti), "ec256.pem", Jwa::ES256);
            let raw = URL_SAFE_NO_PAD.decode(&segments(&token)[2]).expect("b64");
            assert_eq!(raw.len(), 64);
            let mut integers = der_uint(&raw[..32]);
            integers.extend_from_slice(&der_uint(&raw[32..]));
            with_signature_segment(&token, &b64(der(0x30, &integers)))
        },
    );
    t.case(
        "ES256 signature truncated to 63 bytes",
        API,
        invalid("bad_signature", "main"),
        |jti| {
            let token = signed(ES256_HEADER, &main(jti), "ec256.pem", Jwa::ES256);
            let raw = URL_SAFE_NO_PAD.decode(&segments(&token)[2]).expect("b64");
            with_signature_segment(&token, &b64(&raw[..63]))
        },
    );
    t.case(
        "EdDSA signature all zeros",
        API,
        invalid("bad_signature", "main"),
        |jti| raw_token(EDDSA_HEADER, &main(jti).to_string(), &[0u8; 64]),
    );
    t.case(
        "EdDSA malleated signature (S + L)",
        API,
        invalid("bad_signature", "main"),
        |jti| {
            let token = signed(EDDSA_HEADER, &main(jti), "ed25519.pem", Jwa::EdDSA);
            let mut raw = URL_SAFE_NO_PAD.decode(&segments(&token)[2]).expect("b64");
            assert_eq!(raw.len(), 64);
            let mut carry = 0u16;
            for (byte, l) in raw[32..].iter_mut().zip(ED25519_L_LE) {
                let sum = u16::from(*byte) + u16::from(l) + carry;
                *byte = sum as u8;
                carry = sum >> 8;
            }
            assert_eq!(carry, 0, "S + L fits in 256 bits");
            with_signature_segment(&token, &b64(raw))
        },
    );

    // --- kid attacks --------------------------------------------------------
    for (name, kid) in [
        ("kid path traversal", "../../../../etc/passwd".to_string()),
        ("kid SQL injection", "' OR '1'='1".to_string()),
        ("kid of 4 KiB", "k".repeat(4096)),
        ("kid with a NUL", "rsa-1\u{0}".to_string()),
        ("kid with a newline", "rsa-1\n".to_string()),
        (
            "kid with CRLF and a fake log line",
            "x\r\nINFO forged".to_string(),
        ),
        ("kid empty", String::new()),
        ("kid differing in case", "RSA-1".to_string()),
    ] {
        t.case(name, API, invalid("unknown_kid", "main"), |jti| {
            let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid}).to_string();
            let token = rs256_header(&header, &main(jti));
            assert!(token.len() < 8192, "{name}: {} bytes", token.len());
            token
        });
    }
    t.case(
        "kid as a number",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| rs256_header(r#"{"alg":"RS256","typ":"JWT","kid":1}"#, &main(jti)),
    );
    t.case("kid null", API, invalid("malformed", NO_ISSUER), |jti| {
        rs256_header(r#"{"alg":"RS256","typ":"JWT","kid":null}"#, &main(jti))
    });
    t.case(
        "typ as a number",
        API,
        invalid("malformed", NO_ISSUER),
        |jti| rs256_header(r#"{"alg":"RS256","typ":1,"kid":"rsa-1"}"#, &main(jti)),
    );

    // --- claims (validly signed) ---------------------------------------------
    let t0 = now();
    let claim_cases: [(&'static str, Value, Expect); 13] = [
        (
            "another audience",
            json!({"aud": "billing"}),
            invalid("wrong_audience", "main"),
        ),
        (
            "empty audience list",
            json!({"aud": []}),
            invalid("wrong_audience", "main"),
        ),
        (
            "audience differing in case",
            json!({"aud": "API"}),
            invalid("wrong_audience", "main"),
        ),
        (
            "missing aud",
            json!({"aud": null}),
            invalid("missing_claim", "main"),
        ),
        (
            "expired by 1 s beyond the leeway",
            json!({"exp": t0 - 31, "iat": t0 - 120}),
            invalid("expired", "main"),
        ),
        (
            "nbf in the future beyond the leeway",
            json!({"nbf": t0 + 120}),
            invalid("not_yet_valid", "main"),
        ),
        (
            "iat in the future beyond the leeway",
            json!({"iat": t0 + 120}),
            invalid("issued_in_future", "main"),
        ),
        (
            "missing exp",
            json!({"exp": null}),
            invalid("missing_claim", "main"),
        ),
        (
            "missing sub (require_sub)",
            json!({"sub": null}),
            invalid("missing_claim", "main"),
        ),
        (
            "lifetime 2h (exp - iat)",
            json!({"iat": t0, "exp": t0 + 7200}),
            invalid("lifetime_too_long", "main"),
        ),
        (
            "lifetime 2h without iat (exp - now)",
            json!({"iat": null, "exp": t0 + 7200}),
            invalid("lifetime_too_long", "main"),
        ),
        (
            "iss missing",
            json!({"iss": null}),
            invalid("missing_claim", NO_ISSUER),
        ),
        (
            "iss with a trailing slash",
            json!({"iss": format!("{MAIN_ISS}/")}),
            invalid("wrong_issuer", NO_ISSUER),
        ),
    ];
    for (name, extra, expect) in claim_cases {
        t.case(name, API, expect, |jti| {
            rs256(&claims_with(MAIN_ISS, jti, extra))
        });
    }
    t.case(
        "iss of a configured issuer the route does not accept",
        API,
        invalid("wrong_issuer", NO_ISSUER),
        |jti| rs256_typ(Some("at+jwt"), &claims(TYPED_ISS, jti)),
    );
    t.case(
        "unknown iss",
        API,
        invalid("wrong_issuer", NO_ISSUER),
        |jti| rs256(&claims("https://evil.example", jti)),
    );

    // --- token type -------------------------------------------------------
    t.case(
        "refresh token (typ refresh+jwt) on the typ-guarded issuer",
        TYPED,
        invalid("wrong_token_type", "typed"),
        |jti| rs256_typ(Some("refresh+jwt"), &claims(TYPED_ISS, jti)),
    );
    t.case(
        "ID token (typ JWT) where at+jwt is required",
        TYPED,
        invalid("wrong_token_type", "typed"),
        |jti| rs256_typ(Some("JWT"), &claims(TYPED_ISS, jti)),
    );
    t.case(
        "no typ where at+jwt is required",
        TYPED,
        invalid("wrong_token_type", "typed"),
        |jti| rs256_typ(None, &claims(TYPED_ISS, jti)),
    );
    t.case(
        "typ at+jwt only as a claim, not in the header",
        TYPED,
        invalid("wrong_token_type", "typed"),
        |jti| {
            rs256_typ(
                Some("JWT"),
                &claims_with(TYPED_ISS, jti, json!({"typ": "at+jwt"})),
            )
        },
    );
    t.case(
        "refresh token (token_use refresh) on an access route",
        TYPED,
        invalid("wrong_token_type", "cognito"),
        |jti| {
            rs256(&claims_with(
                COGNITO_ISS,
                jti,
                json!({"token_use": "refresh"}),
            ))
        },
    );
    t.case(
        "ID token (token_use id) on an access route",
        TYPED,
        invalid("wrong_token_type", "cognito"),
        |jti| rs256(&claims_with(COGNITO_ISS, jti, json!({"token_use": "id"}))),
    );
    t.case(
        "no token_use where it is required",
        TYPED,
        invalid("wrong_token_type", "cognito"),
        |jti| rs256(&claims(COGNITO_ISS, jti)),
    );

    // --- scopes -----------------------------------------------------------
    let scope_cases: [(&'static str, Value); 4] = [
        ("no scope on a scoped route", json!({})),
        (
            "scope as a prefix of the needed one",
            json!({"scope": "orders:readwrite orders"}),
        ),
        (
            "needed scope hidden in one array element",
            json!({"scope": ["orders:read orders:write"]}),
        ),
        (
            "scope a number, scp fallback not consulted",
            json!({"scope": 5, "scp": "orders:read"}),
        ),
    ];
    for (name, extra) in scope_cases {
        t.case(name, SCOPED, FORBIDDEN, |jti| {
            rs256(&claims_with(MAIN_ISS, jti, extra))
        });
    }

    // --- token sources -------------------------------------------------------
    t.via(
        "query token on a route without token_query",
        API,
        Via::Query,
        NO_TOKEN,
        |jti| rs256(&main(jti)),
    );
    t.via(
        "query token and Authorization on a token_query route",
        QUERY,
        Via::QueryAndBearer,
        AMBIGUOUS,
        |jti| rs256(&main(jti)),
    );
    t.via(
        "two Authorization headers",
        API,
        Via::TwoAuthorizations(rs256(&main("two Authorization headers (second)"))),
        AMBIGUOUS,
        |jti| rs256(&main(jti)),
    );
    t.via(
        "two access_token query parameters",
        QUERY,
        Via::TwoQueryParameters(rs256(&main("two access_token query parameters (second)"))),
        AMBIGUOUS,
        |jti| rs256(&main(jti)),
    );

    // --- a verified (cached) token replayed where it is not welcome ----------
    let replay = |name: &'static str, route: Route, expect: Expect, t: &mut Table| {
        t.case(name, route, expect, |jti| rs256(&main(jti)));
        t.cases.last_mut().expect("just added").accepted_first_on = Some(API);
    };
    replay(
        "token accepted on /api replayed on a route of other issuers",
        TYPED,
        invalid("wrong_issuer", NO_ISSUER),
        &mut t,
    );
    replay(
        "token accepted on /api replayed on a scoped route",
        SCOPED,
        FORBIDDEN,
        &mut t,
    );

    t
}

// ---------------------------------------------------------------------------
// Running the cases
// ---------------------------------------------------------------------------

fn request(gateway: &Gateway, route: Route, via: &Via, token: &str) -> reqwest::RequestBuilder {
    let client = gateway.client();
    let bearer = format!("Bearer {token}");
    let with_query = |extra: &str| {
        gateway.url(&format!(
            "{}?page=1&access_token={token}{extra}",
            route.path
        ))
    };
    match via {
        Via::Bearer => client
            .get(gateway.url(route.path))
            .header(AUTHORIZATION, bearer),
        Via::Query => client.get(with_query("")),
        Via::QueryAndBearer => client.get(with_query("")).header(AUTHORIZATION, bearer),
        Via::TwoAuthorizations(second) => client
            .get(gateway.url(route.path))
            .header(AUTHORIZATION, bearer)
            .header(AUTHORIZATION, format!("Bearer {second}")),
        Via::TwoQueryParameters(second) => {
            client.get(with_query(&format!("&access_token={second}")))
        }
    }
}

/// Sends a request that must be let through: 200 from the upstream, one
/// `allow` decision, one request upstream.
async fn expect_allowed(
    gateway: &Gateway,
    upstream: &Upstream,
    name: &str,
    route: Route,
    via: &Via,
    token: &str,
    issuer: &str,
) {
    let labels = [
        ("route", route.name),
        ("issuer", issuer),
        ("outcome", "allow"),
    ];
    let before = gateway.metric(DECISIONS, &labels).await;
    let upstream_before = upstream.count();
    let response = request(gateway, route, via, token)
        .send()
        .await
        .expect("request to the gateway");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, 200, "control {name:?}: {body}");
    assert_eq!(
        gateway.metric(DECISIONS, &labels).await - before,
        1.0,
        "control {name:?}: one allow decision {labels:?}"
    );
    assert_eq!(
        upstream.count(),
        upstream_before + 1,
        "control {name:?}: the upstream got it"
    );
    assert!(
        upstream.last().path.starts_with(route.path),
        "control {name:?}: upstream saw {}",
        upstream.last().path
    );
}

/// Sends one hostile case and checks everything about its rejection.
/// Returns what was wrong (empty: all good), so one misbehaving case does
/// not hide the others.
async fn expect_rejected(gateway: &Gateway, upstream: &Upstream, case: &Case) -> Vec<String> {
    let name = case.name;
    let expect = case.expect;
    if let Some(first) = case.accepted_first_on {
        expect_allowed(
            gateway,
            upstream,
            &format!("{name} (accepted first)"),
            first,
            &Via::Bearer,
            &case.token,
            "main",
        )
        .await;
    }
    let labels = deny(case.route.name, expect.issuer, expect.reason);
    let before_text = gateway.metrics().await;
    let (before, before_all) = decisions(&before_text, &labels);
    let upstream_before = upstream.count();

    let response = request(gateway, case.route, &case.via, &case.token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("case {name:?}: request failed: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.expect("body");
    let after_text = gateway.metrics().await;

    let mut problems = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };

    check(
        upstream.count() == upstream_before,
        "the request reached the upstream".into(),
    );
    check(
        status == expect.status,
        format!("status {status}, expected {}", expect.status),
    );
    let (after, after_all) = decisions(&after_text, &labels);
    check(
        (after - before, after_all - before_all) == (1.0, 1.0),
        format!(
            "expected one decision {{issuer={:?}, reason={:?}}}; changed: {}",
            expect.issuer,
            expect.reason,
            changed_decisions(&before_text, &after_text)
        ),
    );

    // The RFC 6750 response.
    let header = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
    };
    // Bearer with the error, then DPoP (RFC 9449 §7.1): the routes take
    // DPoP proofs too, and none of these attacks is about one.
    let challenge = header("www-authenticate");
    let dpop = format!("DPoP realm=\"{REALM}\", algs=\"ES256 EdDSA PS256 RS256\"");
    let expected = [expect.challenge(), dpop];
    check(
        challenge == expected,
        format!("WWW-Authenticate {challenge:?}, expected {expected:?}"),
    );
    check(
        header("cache-control") == ["no-store"],
        "cache-control is not no-store".into(),
    );
    check(
        header("content-type") == ["application/json"],
        "content-type is not application/json".into(),
    );
    check(
        header("x-upstream").is_empty(),
        "the response came from the upstream".into(),
    );
    match serde_json::from_str::<Value>(&body) {
        Ok(Value::Object(json)) => {
            let mut keys: Vec<&str> = json.keys().map(String::as_str).collect();
            keys.sort_unstable();
            check(
                keys == ["error", "error_description", "request_id"],
                format!("body members {keys:?}"),
            );
            let error = expect.error().unwrap_or("unauthorized");
            check(
                json.get("error") == Some(&json!(error)),
                format!("body error {:?}, expected {error:?}", json.get("error")),
            );
            check(
                json.get("error_description") == Some(&json!(expect.description())),
                format!("body error_description {:?}", json.get("error_description")),
            );
            let request_id = json.get("request_id").and_then(Value::as_str);
            check(
                request_id.is_some_and(|id| header("x-request-id") == [id]),
                "body request_id is not the x-request-id header".into(),
            );
        }
        _ => check(false, "the body is not a JSON object".into()),
    }

    // Nothing of the token comes back.
    let echoed: String = headers
        .iter()
        .map(|(n, v)| format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())))
        .chain([body.clone()])
        .collect();
    for token in case.tokens() {
        for needle in leak_needles(token) {
            check(
                !echoed.contains(&needle),
                format!(
                    "the response echoes {:?}",
                    needle.chars().take(40).collect::<String>()
                ),
            );
        }
    }

    if !problems.is_empty() {
        problems.push(format!("response: {status} {headers:?} {body}"));
    }
    problems
        .into_iter()
        .map(|problem| format!("case {name:?}: {problem}"))
        .collect()
}

/// The token and each of its recognisably long segments.
fn leak_needles(token: &str) -> Vec<String> {
    let mut needles = vec![token.to_string()];
    needles.extend(
        token
            .split('.')
            .filter(|s| s.len() >= MIN_SEGMENT)
            .map(str::to_string),
    );
    needles
}

/// The decision series whose value changed between two scrapes.
fn changed_decisions(before: &str, after: &str) -> String {
    after
        .lines()
        .filter(|l| l.starts_with(DECISIONS))
        .filter(|l| !before.lines().any(|b| b == *l))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

#[tokio::test]
async fn hostile_tokens_are_refused_precisely_and_never_reach_the_upstream() {
    let table = hostile_cases();
    let cases = &table.cases;

    // At least 40 distinct hostile tokens, every case with its own name.
    let names: HashSet<&str> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), cases.len(), "case names must be unique");
    let tokens: HashSet<&str> = cases.iter().flat_map(|c| c.tokens()).collect();
    let token_count: usize = cases.iter().map(|c| c.tokens().len()).sum();
    assert_eq!(tokens.len(), token_count, "every hostile token is distinct");
    assert!(
        cases.len() >= 40,
        "only {} hostile cases; the suite promises at least 40",
        cases.len()
    );

    let (upstream, gateway) = start(&config()).await;

    // Controls: the same keys, issuers and routes accept genuine tokens, so
    // each rejection below is down to its attack alone.
    let attacker = Attacker::new();
    // jku, x5u, x5c and jwk are merely ignored: the real key's signature
    // still verifies with them present.
    let ignored_key_headers = json!({
        "alg": "RS256",
        "typ": "JWT",
        "kid": "rsa-1",
        "jku": JKU,
        "x5u": "http://127.0.0.1:1/cert.pem",
        "x5c": ["bm90IGEgY2VydGlmaWNhdGU="],
        "jwk": attacker.jwk,
    })
    .to_string();
    // Every key of the main issuer, each signing valid claims on /api.
    let mut controls: Vec<(&str, Route, Via, String, &str)> = [
        (
            "RS256 from rsa-1",
            RS256_HEADER,
            "control rs256",
            "rsa.pem",
            Jwa::RS256,
        ),
        (
            "RS256 without kid",
            r#"{"alg":"RS256","typ":"JWT"}"#,
            "control no kid",
            "rsa.pem",
            Jwa::RS256,
        ),
        (
            "PS256 from rsa-1",
            r#"{"alg":"PS256","kid":"rsa-1"}"#,
            "control ps256",
            "rsa.pem",
            Jwa::PS256,
        ),
        (
            "ES256 from ec256-1",
            ES256_HEADER,
            "control es256",
            "ec256.pem",
            Jwa::ES256,
        ),
        (
            "ES384 from ec384-1",
            r#"{"alg":"ES384","kid":"ec384-1"}"#,
            "control es384",
            "ec384.pem",
            Jwa::ES384,
        ),
        (
            "EdDSA from ed25519-1",
            EDDSA_HEADER,
            "control eddsa",
            "ed25519.pem",
            Jwa::EdDSA,
        ),
        (
            "RS256 from rsa-rs256-only",
            r#"{"alg":"RS256","kid":"rsa-rs256-only"}"#,
            "control rs256-only",
            "rsa-rs256-only.pem",
            Jwa::RS256,
        ),
        (
            "jku/x5u/x5c/jwk headers ignored, real key",
            &ignored_key_headers,
            "control key headers",
            "rsa.pem",
            Jwa::RS256,
        ),
    ]
    .into_iter()
    .map(|(name, header, jti, key_file, alg)| {
        let token = signed(header, &claims(MAIN_ISS, jti), key_file, alg);
        (name, API, Via::Bearer, token, "main")
    })
    .collect();
    controls.extend([
        (
            "HS256 from the HMAC secret",
            API,
            Via::Bearer,
            signed(
                r#"{"alg":"HS256","typ":"JWT"}"#,
                &claims(HMAC_ISS, "control hs256"),
                "hs256.secret",
                Jwa::HS256,
            ),
            "hmac",
        ),
        (
            "typ at+jwt",
            TYPED,
            Via::Bearer,
            rs256_typ(Some("at+jwt"), &claims(TYPED_ISS, "control at+jwt")),
            "typed",
        ),
        (
            "typ application/AT+JWT",
            TYPED,
            Via::Bearer,
            rs256_typ(
                Some("application/AT+JWT"),
                &claims(TYPED_ISS, "control application/at+jwt"),
            ),
            "typed",
        ),
        (
            "token_use access",
            TYPED,
            Via::Bearer,
            rs256(&claims_with(
                COGNITO_ISS,
                "control token_use",
                json!({"token_use": "access"}),
            )),
            "cognito",
        ),
        (
            "scope orders:read",
            SCOPED,
            Via::Bearer,
            rs256(&claims_with(
                MAIN_ISS,
                "control scope",
                json!({"scope": "orders:write orders:read"}),
            )),
            "main",
        ),
        (
            "query token where token_query is enabled",
            QUERY,
            Via::Query,
            rs256(&claims(MAIN_ISS, "control query")),
            "main",
        ),
    ]);
    for (name, route, via, token, issuer) in &controls {
        expect_allowed(&gateway, &upstream, name, *route, via, token, issuer).await;
    }
    let allowed = upstream.count();
    assert_eq!(allowed, controls.len());

    let mut primed = 0;
    let mut failures = Vec::new();
    for case in cases {
        failures.extend(expect_rejected(&gateway, &upstream, case).await);
        primed += usize::from(case.accepted_first_on.is_some());
    }

    // The upstream saw the controls and the priming requests, and no
    // hostile token in any header or URL.
    let received = upstream.requests();
    assert_eq!(received.len(), allowed + primed);
    let forwarded: HashSet<&str> = controls
        .iter()
        .map(|control| control.3.as_str())
        .chain(
            cases
                .iter()
                .filter(|c| c.accepted_first_on.is_some())
                .map(|c| c.token.as_str()),
        )
        .flat_map(|token| token.split('.'))
        .collect();
    let hostile_needles: Vec<(&str, String)> = cases
        .iter()
        .filter(|c| c.accepted_first_on.is_none())
        .flat_map(|c| {
            c.tokens()
                .into_iter()
                .flat_map(leak_needles)
                .map(move |needle| (c.name, needle))
        })
        // Header segments like `{"alg":"RS256",...}` are shared with the
        // genuine tokens that were forwarded.
        .filter(|(_, needle)| !forwarded.contains(needle.as_str()))
        .collect();
    for request in &received {
        let seen = format!("{} {:?}", request.path, request.headers);
        for (name, needle) in &hostile_needles {
            assert!(
                !seen.contains(needle.as_str()),
                "case {name:?}: the upstream received part of its token"
            );
        }
    }

    // The gateway logged every request (the access log is written after the
    // response), and no token or signature segment.
    let sent = allowed + primed + cases.len();
    let log = gateway
        .wait_for_log(|log| log.matches("jwtgate::access").count() >= sent)
        .await;
    assert!(
        log.matches("jwtgate::access").count() >= sent,
        "expected {sent} access-log lines; log:\n{log}"
    );
    for case in cases {
        for token in case.tokens() {
            assert!(
                !log.contains(token),
                "case {:?}: the gateway log contains the token",
                case.name
            );
            for segment in token.split('.').filter(|s| s.len() >= MIN_SEGMENT) {
                assert!(
                    !log.contains(segment),
                    "case {:?}: the gateway log contains the token segment {:?}",
                    case.name,
                    segment.chars().take(40).collect::<String>()
                );
            }
        }
    }

    for case in cases {
        eprintln!(
            "case {:<64} expects {} {} (issuer {})",
            case.name, case.expect.status, case.expect.reason, case.expect.issuer
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile cases misbehaved:\n{}",
        failures
            .iter()
            .filter(|f| f.contains(": response: "))
            .count(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} hostile cases ({} distinct tokens) refused, {} controls accepted",
        cases.len(),
        tokens.len(),
        controls.len()
    );
}
