//! End-to-end tests of the proxy: the real `jwtgate` binary in front of a
//! recording upstream, on loopback. Each test starts its own upstream and
//! gateway, so they run in parallel without sharing state.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use jwtgate::jose::Algorithm;
use serde_json::{Value, json};

/// One config for every test: three issuers (every asymmetric algorithm,
/// every HMAC algorithm, and an RS256-only one) and routes for each policy.
fn config() -> String {
    Config::new()
        .issuers(MAIN_AND_HMAC)
        .issuer("rs-only", RS_ONLY_ISS)
        .routes(ROUTES)
}

const MAIN_AND_HMAC: &str = r#"
  - name: main
    issuer: https://issuer.test
    algorithms: [RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA]
    audiences: [api]
    leeway: 30s
    jwks_file: "{FIXTURES}/jwks.json"
  - name: hmac
    issuer: https://hmac.test
    algorithms: [HS256, HS384, HS512]
    audiences: [api]
    hmac_secret_file: "{FIXTURES}/hs256.secret"
"#;

const ROUTES: &str = r#"
  - name: api
    match: { path_prefix: /api, methods: [GET, POST] }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth:
      mode: required
      issuers: [main, hmac]
      token_header: X-Token
      token_cookie: at
    forward:
      claims: { sub: X-User-Id, scope: X-User-Scopes, "realm_access.roles": X-User-Roles }
      strip_authorization: true
  - name: rsonly
    match: { path_prefix: /rsonly }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [rs-only] }
    forward: { claims: { sub: X-User-Id } }
  - name: scoped
    match: { path_prefix: /scoped }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main], scopes: { all_of: [read] } }
    forward: { claims: { sub: X-User-Id } }
  - name: anyscope
    match: { path_prefix: /anyscope }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main], scopes: { any_of: [write, admin] } }
    forward: { claims: { sub: X-User-Id } }
  - name: roles
    match: { path_prefix: /roles }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth:
      issuers: [main]
      claims: [{ claim: realm_access.roles, any_of: [admin] }]
    forward: { claims: { sub: X-User-Id } }
  - name: keepauth
    match: { path_prefix: /keepauth }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main] }
    forward:
      claims: { sub: X-User-Id }
      strip_authorization: false
  - name: maybe
    match: { path_prefix: /maybe }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: optional, issuers: [main] }
    forward: { claims: { sub: X-User-Id } }
  - name: public
    match: { path_prefix: /public }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
  - name: admin
    match: { path_prefix: /admin }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: required, issuers: [main] }
    forward: { claims: { sub: X-User-Id } }
"#;

const HMAC_ISS: &str = "https://hmac.test";
const RS_ONLY_ISS: &str = "https://rs-only.test";

fn main_token(sub: &str) -> String {
    rs256(claims(ISS, sub))
}

// ---------------------------------------------------------------------------
// Rejection checks
// ---------------------------------------------------------------------------

/// What a rejection must look like.
#[derive(Clone, Copy)]
struct Rejected<'a> {
    status: u16,
    reason: &'a str,
    /// `issuer` metric label: the issuer's name, or `_none`.
    issuer: &'a str,
    description: &'a str,
    /// `scope="…"` expected in a 403 challenge.
    scope: Option<&'a str>,
}

fn invalid_token<'a>(reason: &'a str, issuer: &'a str) -> Rejected<'a> {
    Rejected {
        status: 401,
        reason,
        issuer,
        description: "invalid token",
        scope: None,
    }
}

/// 401 without an error code: no bearer token was found.
fn missing_token() -> Rejected<'static> {
    Rejected {
        status: 401,
        reason: "missing_token",
        issuer: "_none",
        description: "bearer token required",
        scope: None,
    }
}

/// 403 `insufficient_scope` from the main issuer, naming `scope` if any.
fn forbidden<'a>(reason: &'a str, scope: Option<&'a str>) -> Rejected<'a> {
    Rejected {
        status: 403,
        reason,
        issuer: "main",
        description: "insufficient scope",
        scope,
    }
}

/// The `WWW-Authenticate` value RFC 6750 calls for.
fn challenge(expected: &Rejected<'_>) -> String {
    let error = match (expected.status, expected.reason) {
        (401, "missing_token") => None,
        (401, _) => Some("invalid_token"),
        (403, _) => Some("insufficient_scope"),
        (400, _) => Some("invalid_request"),
        (status, _) => panic!("no challenge for {status}"),
    };
    let mut value = format!("Bearer realm=\"{REALM}\"");
    if let Some(error) = error {
        value.push_str(&format!(
            ", error=\"{error}\", error_description=\"{}\"",
            expected.description
        ));
    }
    if let Some(scope) = expected.scope {
        value.push_str(&format!(", scope=\"{scope}\""));
    }
    value
}

/// Sends `request` and checks everything about the rejection: status,
/// challenge, JSON body, request id, no secret echoed back, exactly one
/// deny decision with the expected labels, and nothing sent upstream.
async fn assert_rejected(
    gateway: &Gateway,
    upstream: &Upstream,
    case: &str,
    route: &str,
    request: reqwest::RequestBuilder,
    secrets: &[&str],
    expected: Rejected<'_>,
) {
    let deny_labels = deny(route, expected.issuer, expected.reason);
    let (before, before_all) = decisions(&gateway.metrics().await, &deny_labels);
    let upstream_before = upstream.count();

    let response = request.send().await.expect("request to the gateway");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.expect("body");
    let context = format!("case {case:?}: {status} {headers:?} {body}");

    assert_eq!(status, expected.status, "{context}");
    assert_json_error(&headers, &body, &context);
    assert_eq!(
        headers.get("cache-control").map(|v| v.to_str().unwrap()),
        Some("no-store"),
        "{context}"
    );
    assert_no_secrets(&body, &headers, secrets, &context);

    let after_text = gateway.metrics().await;
    let (after, after_all) = decisions(&after_text, &deny_labels);
    assert_eq!(
        (after - before, after_all - before_all),
        (1.0, 1.0),
        "{context}: expected exactly one decision {deny_labels:?}; metrics:\n{}",
        relevant_lines(&after_text)
    );
    assert_eq!(
        upstream.count(),
        upstream_before,
        "{context}: a rejected request reached the upstream"
    );

    // The client-facing wording last, so a failure here means everything
    // else about the rejection was right.
    let json: Value = serde_json::from_str(&body).unwrap();
    let error = match (expected.status, expected.reason) {
        (401, "missing_token") => "unauthorized",
        (401, _) => "invalid_token",
        (403, _) => "insufficient_scope",
        (400, _) => "invalid_request",
        (other, _) => panic!("no error code for {other}"),
    };
    assert_eq!(json["error"], error, "{context}");
    let www_authenticate: Vec<_> = headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    // The routes here take DPoP proofs too (RFC 9449 §7.1), and none of
    // these refusals is about one.
    let dpop = format!("DPoP realm=\"{REALM}\", algs=\"ES256 EdDSA PS256 RS256\"");
    assert_eq!(www_authenticate, [challenge(&expected), dpop], "{context}");
    assert_eq!(json["error_description"], expected.description, "{context}");
}

/// [`assert_rejected`] for `GET /{route}/x` with `token` as a bearer token,
/// which must not be echoed back.
async fn assert_bearer_rejected(
    gateway: &Gateway,
    upstream: &Upstream,
    case: &str,
    route: &str,
    token: &str,
    expected: Rejected<'_>,
) {
    let request = gateway
        .client()
        .get(gateway.url(&format!("/{route}/x")))
        .bearer_auth(token);
    assert_rejected(gateway, upstream, case, route, request, &[token], expected).await;
}

/// Every error body is JSON `{error, error_description, request_id}` and
/// its request id is the response's `x-request-id`.
fn assert_json_error(headers: &reqwest::header::HeaderMap, body: &str, context: &str) {
    let json: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{context}: body is not JSON: {e}"));
    let object = json.as_object().expect("body is a JSON object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["error", "error_description", "request_id"],
        "{context}"
    );
    for key in keys {
        assert!(
            object[key].as_str().is_some_and(|s| !s.is_empty()),
            "{context}: {key} is not a non-empty string"
        );
    }
    assert_eq!(
        headers.get("content-type").map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "{context}"
    );
    let request_id = headers
        .get("x-request-id")
        .unwrap_or_else(|| panic!("{context}: no x-request-id"))
        .to_str()
        .unwrap();
    assert_eq!(json["request_id"], request_id, "{context}");
}

/// Neither the token (nor any of its segments) nor key material may be
/// echoed back to the client.
fn assert_no_secrets(
    body: &str,
    headers: &reqwest::header::HeaderMap,
    secrets: &[&str],
    context: &str,
) {
    let header_text: String = headers
        .iter()
        .map(|(n, v)| format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    let hs_secret = String::from_utf8(fixture_bytes("hs256.secret")).unwrap();
    let mut forbidden: Vec<String> = vec![
        "BEGIN".into(),
        "PRIVATE".into(),
        hs_secret.trim().to_string(),
        rsa_modulus().0[..32].to_string(),
    ];
    for secret in secrets {
        forbidden.push(secret.to_string());
        // Each segment long enough to be recognisable on its own.
        forbidden.extend(
            secret
                .split('.')
                .filter(|s| s.len() >= 12)
                .map(str::to_string),
        );
    }
    for needle in &forbidden {
        let short: String = needle.chars().take(40).collect();
        assert!(
            !body.contains(needle.as_str()),
            "{context}: body contains {short:?}"
        );
        assert!(
            !header_text.contains(needle.as_str()),
            "{context}: headers contain {short:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// 1. Every algorithm is accepted
// ---------------------------------------------------------------------------

#[tokio::test]
async fn accepts_every_configured_algorithm() {
    let (upstream, gateway) = start(&config()).await;
    for alg in Algorithm::ALL {
        let (key, kid) = key_for(alg);
        let iss = if key == "hs256.secret" { HMAC_ISS } else { ISS };
        let sub = format!("user-{alg}");
        let token = sign(alg, key, kid, claims(iss, &sub));
        let before = upstream.count();
        let response = gateway.get("/api/items?alg=1", Some(&token)).await;
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "{alg}: {body}");
        assert_eq!(upstream.count(), before + 1, "{alg}: upstream not reached");
        let seen = upstream.last();
        assert_eq!(seen.method, "GET", "{alg}");
        assert_eq!(seen.path, "/api/items?alg=1", "{alg}");
        assert_eq!(seen.header_all("x-user-id"), [sub.as_str()], "{alg}");
    }
    gateway
        .expect_decisions(
            &[
                ("route", "api"),
                ("issuer", "main"),
                ("outcome", "allow"),
                ("reason", "none"),
            ],
            9.0,
        )
        .await;
    gateway
        .expect_decisions(
            &[
                ("route", "api"),
                ("issuer", "hmac"),
                ("outcome", "allow"),
                ("reason", "none"),
            ],
            3.0,
        )
        .await;
    gateway.expect_requests("api", "200", 12.0).await;
}

// ---------------------------------------------------------------------------
// 2. Rejections: signatures and algorithms
// ---------------------------------------------------------------------------

#[tokio::test]
async fn rejects_bad_signatures_and_algorithm_attacks() {
    let (upstream, gateway) = start(&config()).await;

    // A valid token with one claim changed after signing.
    let genuine = main_token("alice");
    let mut parts: Vec<String> = genuine.split('.').map(str::to_string).collect();
    let mut tampered_claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    tampered_claims["sub"] = json!("admin");
    parts[1] = URL_SAFE_NO_PAD.encode(tampered_claims.to_string());
    for (case, token) in [
        // A different RSA key claiming to be rsa-1.
        (
            "impostor key",
            sign(
                Algorithm::RS256,
                "rsa-impostor.pem",
                "rsa-1",
                claims(ISS, "mallory"),
            ),
        ),
        ("tampered claims", parts.join(".")),
    ] {
        assert_bearer_rejected(
            &gateway,
            &upstream,
            case,
            "api",
            &token,
            invalid_token("bad_signature", "main"),
        )
        .await;
    }

    // Key-type confusion: HS256 keyed with the RSA public key, in every form
    // an attacker might try, against an issuer that allows only RS256.
    let header = r#"{"alg":"HS256","typ":"JWT","kid":"rsa-1"}"#;
    let body = claims(RS_ONLY_ISS, "mallory").to_string();
    let public_der = rsa_public_pkcs1_der();
    let confusion_secrets: Vec<(&str, Vec<u8>)> = vec![
        ("jwks.json bytes", fixture_bytes("jwks.json")),
        ("public key DER", public_der.clone()),
        (
            "public key PEM",
            to_pem("RSA PUBLIC KEY", &public_der).into_bytes(),
        ),
        ("modulus text", rsa_modulus().0.into_bytes()),
    ];
    for (form, secret) in &confusion_secrets {
        assert_bearer_rejected(
            &gateway,
            &upstream,
            &format!("HS256 keyed with {form} on an RS256-only issuer"),
            "rsonly",
            &hs256_token(header, &body, secret),
            invalid_token("alg_not_allowed", "rs-only"),
        )
        .await;
    }
    let jwks = fixture_bytes("jwks.json");
    for (case, route, token, expected) in [
        // The same on a route that also trusts an HMAC issuer: the main
        // issuer's allow-list has no HS*, so its keys can never verify an HMAC.
        (
            "HS256 with main's iss",
            "api",
            hs256_token(header, &claims(ISS, "mallory").to_string(), &jwks),
            invalid_token("alg_not_allowed", "main"),
        ),
        // And the HMAC issuer does not take the public key as its secret.
        (
            "HS256 keyed with the JWKS on the HMAC issuer",
            "api",
            hs256_token(header, &claims(HMAC_ISS, "mallory").to_string(), &jwks),
            invalid_token("bad_signature", "hmac"),
        ),
        // A correctly signed ES256 token, but the issuer allows only RS256.
        (
            "ES256 on an RS256-only issuer",
            "rsonly",
            sign(
                Algorithm::ES256,
                "ec256.pem",
                "ec256-1",
                claims(RS_ONLY_ISS, "alice"),
            ),
            invalid_token("alg_not_allowed", "rs-only"),
        ),
        // PS256 is allowed by the issuer, but the key is pinned to RS256.
        (
            "PS256 with an RS256-only key",
            "api",
            sign(
                Algorithm::PS256,
                "rsa-rs256-only.pem",
                "rsa-rs256-only",
                claims(ISS, "alice"),
            ),
            invalid_token("alg_not_allowed", "main"),
        ),
    ] {
        assert_bearer_rejected(&gateway, &upstream, case, route, &token, expected).await;
    }
    // ... while RS256 with that key is fine.
    let rs256_pinned = sign(
        Algorithm::RS256,
        "rsa-rs256-only.pem",
        "rsa-rs256-only",
        claims(ISS, "pinned"),
    );
    let response = gateway.get("/api/x", Some(&rs256_pinned)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.last().header("x-user-id"), Some("pinned"));
    let allowed = upstream.count();

    // alg none: without a signature the token is not even well-formed...
    let none_claims = claims(ISS, "mallory").to_string();
    assert_bearer_rejected(
        &gateway,
        &upstream,
        "alg none, empty signature",
        "api",
        &raw_token(r#"{"alg":"none","typ":"JWT"}"#, &none_claims, b""),
        invalid_token("malformed", "_none"),
    )
    .await;
    // ... and with one, `none` (in any spelling) is no algorithm of ours.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = raw_token(
            &format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"rsa-1"}}"#),
            &none_claims,
            b"signature",
        );
        assert_bearer_rejected(
            &gateway,
            &upstream,
            &format!("alg {alg} with a signature"),
            "api",
            &token,
            invalid_token("unsupported_alg", "main"),
        )
        .await;
    }
    assert_eq!(upstream.count(), allowed);
}

// ---------------------------------------------------------------------------
// 2. Rejections: time claims
// ---------------------------------------------------------------------------

#[tokio::test]
async fn enforces_exp_nbf_and_iat_with_leeway() {
    let (upstream, gateway) = start(&config()).await;
    let now = now();

    for (case, extra, expected) in [
        (
            "expired beyond leeway",
            json!({ "iat": now - 600, "exp": now - 120 }),
            Rejected {
                description: "token expired",
                ..invalid_token("expired", "main")
            },
        ),
        (
            "nbf in the future",
            json!({ "nbf": now + 120, "exp": now + 600 }),
            Rejected {
                description: "token not yet valid",
                ..invalid_token("not_yet_valid", "main")
            },
        ),
        (
            "iat in the future",
            json!({ "iat": now + 120, "exp": now + 600 }),
            invalid_token("issued_in_future", "main"),
        ),
    ] {
        let token = rs256(claims_with(ISS, "alice", extra));
        assert_bearer_rejected(&gateway, &upstream, case, "api", &token, expected).await;
    }

    // Within the 30 s leeway: exp just passed, nbf and iat just ahead.
    let before = upstream.count();
    for (case, extra) in [
        ("exp 10s ago", json!({ "iat": now - 300, "exp": now - 10 })),
        ("nbf in 10s", json!({ "nbf": now + 10 })),
        ("iat in 10s", json!({ "iat": now + 10 })),
    ] {
        let token = rs256(claims_with(ISS, case, extra));
        let response = gateway.get("/api/x", Some(&token)).await;
        assert_eq!(response.status(), 200, "{case}");
        assert_eq!(upstream.last().header("x-user-id"), Some(case));
    }
    assert_eq!(upstream.count(), before + 3);
}

// ---------------------------------------------------------------------------
// 2. Rejections: issuer, audience, key id, structure, size
// ---------------------------------------------------------------------------

#[tokio::test]
async fn rejects_wrong_issuer_audience_kid_and_malformed_tokens() {
    let (upstream, gateway) = start(&config()).await;

    for (case, token, expected) in [
        (
            "wrong aud",
            rs256(claims_with(ISS, "alice", json!({ "aud": "other-api" }))),
            invalid_token("wrong_audience", "main"),
        ),
        (
            "wrong aud list",
            rs256(claims_with(
                ISS,
                "alice",
                json!({ "aud": ["other-api", "api-2"] }),
            )),
            invalid_token("wrong_audience", "main"),
        ),
        (
            "unknown iss",
            rs256(claims("https://evil.test", "alice")),
            invalid_token("wrong_issuer", "_none"),
        ),
        // A configured issuer the route does not trust is just as unknown here.
        (
            "issuer not on the route",
            rs256(claims(RS_ONLY_ISS, "alice")),
            invalid_token("wrong_issuer", "_none"),
        ),
        (
            "unknown kid",
            sign(
                Algorithm::RS256,
                "rsa.pem",
                "no-such-kid",
                claims(ISS, "alice"),
            ),
            invalid_token("unknown_kid", "main"),
        ),
    ] {
        assert_bearer_rejected(&gateway, &upstream, case, "api", &token, expected).await;
    }

    for garbage in [
        "garbage",
        "not.a.jwt",
        "a.b.c.d",
        "eyJhbGciOiJSUzI1NiJ9.e30",
        "%%%.%%%.%%%",
    ] {
        assert_bearer_rejected(
            &gateway,
            &upstream,
            &format!("garbage {garbage:?}"),
            "api",
            garbage,
            invalid_token("malformed", "_none"),
        )
        .await;
    }

    // Over 8 KiB: refused by size before any decoding.
    let huge = rs256(claims_with(
        ISS,
        "alice",
        json!({ "padding": "x".repeat(9 * 1024) }),
    ));
    assert!(huge.len() > 8 * 1024);
    for (case, token, reason) in [
        // Padded base64 and JSON that is not an object are malformed too.
        (
            "padded",
            main_token("alice").replacen('.', "=.", 1),
            "malformed",
        ),
        (
            "array claims",
            raw_token(r#"{"alg":"RS256","kid":"rsa-1"}"#, "[1,2,3]", b"sig"),
            "malformed",
        ),
        ("token over 8 KiB", huge, "too_large"),
        // The size cap applies to a garbage token of that size as well.
        ("garbage over 8 KiB", "A".repeat(8 * 1024 + 1), "too_large"),
    ] {
        assert_bearer_rejected(
            &gateway,
            &upstream,
            case,
            "api",
            &token,
            invalid_token(reason, "_none"),
        )
        .await;
    }

    assert_eq!(upstream.count(), 0);
}

/// A token without `exp` (or `aud`, or `iss`) is an invalid token: 401
/// `invalid_token`, and like every `invalid_token` its description must be
/// the generic "invalid token", not a 403's "insufficient scope".
#[tokio::test]
async fn missing_registered_claims_are_invalid_tokens() {
    let (upstream, gateway) = start(&config()).await;
    for (case, claim, issuer) in [
        ("missing exp", "exp", "main"),
        ("missing aud", "aud", "main"),
        ("missing iss", "iss", "_none"),
    ] {
        let token = rs256(claims_with(ISS, "alice", json!({ claim: null })));
        assert_bearer_rejected(
            &gateway,
            &upstream,
            case,
            "api",
            &token,
            invalid_token("missing_claim", issuer),
        )
        .await;
    }
}

// ---------------------------------------------------------------------------
// 3. Header formats
// ---------------------------------------------------------------------------

#[tokio::test]
async fn rejection_responses_follow_rfc6750() {
    let (upstream, gateway) = start(&config()).await;
    let client = gateway.client();
    let api = gateway.url("/api/x");
    let token = main_token("alice");

    // No token: a bare challenge, no error code.
    assert_rejected(
        &gateway,
        &upstream,
        "no token",
        "api",
        client.get(&api),
        &[],
        missing_token(),
    )
    .await;
    // Another scheme is not a bearer token.
    assert_rejected(
        &gateway,
        &upstream,
        "basic auth",
        "api",
        client
            .get(&api)
            .header("authorization", "Basic YWxpY2U6c2VjcmV0"),
        &["YWxpY2U6c2VjcmV0"],
        missing_token(),
    )
    .await;

    // invalid_token.
    assert_rejected(
        &gateway,
        &upstream,
        "garbage token",
        "api",
        client.get(&api).bearer_auth("garbage"),
        &[],
        invalid_token("malformed", "_none"),
    )
    .await;

    // insufficient_scope names the scope the route needs.
    let no_read = rs256(claims_with(ISS, "alice", json!({ "scope": "write" })));
    assert_bearer_rejected(
        &gateway,
        &upstream,
        "insufficient scope",
        "scoped",
        &no_read,
        forbidden("insufficient_scope", Some("read")),
    )
    .await;

    // A token sent two ways is a bad request.
    let ambiguous = Rejected {
        status: 400,
        reason: "ambiguous_token",
        issuer: "_none",
        description: "token sent more than once",
        scope: None,
    };
    assert_rejected(
        &gateway,
        &upstream,
        "Authorization and X-Token",
        "api",
        client
            .get(&api)
            .bearer_auth(&token)
            .header("x-token", &token),
        &[&token],
        ambiguous,
    )
    .await;
    assert_rejected(
        &gateway,
        &upstream,
        "two Authorization headers",
        "api",
        client
            .get(&api)
            .header("authorization", format!("Bearer {token}"))
            .header("authorization", format!("Bearer {token}")),
        &[&token],
        ambiguous,
    )
    .await;
    assert_rejected(
        &gateway,
        &upstream,
        "Authorization and cookie",
        "api",
        client
            .get(&api)
            .bearer_auth(&token)
            .header("cookie", format!("theme=dark; at={token}")),
        &[&token],
        ambiguous,
    )
    .await;

    // No route: a JSON 404. (A method the route lacks is a 405: tests/paths.rs.)
    for (method, path) in [
        (reqwest::Method::GET, "/nowhere"),
        (reqwest::Method::GET, "/apix"),
    ] {
        let response = client
            .request(method.clone(), gateway.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap();
        let context = format!("{method} {path}: {body}");
        assert_eq!(status, 404, "{context}");
        assert_json_error(&headers, &body, &context);
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"], "not_found", "{context}");
        assert_no_secrets(&body, &headers, &[&token], &context);
    }
    gateway.expect_requests("_none", "404", 2.0).await;
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn gateway_log_never_contains_tokens() {
    let (upstream, gateway) = start(&config()).await;
    let good = main_token("alice");
    let expired = rs256(claims_with(
        ISS,
        "alice",
        json!({ "exp": now() - 3600, "iat": now() - 7200 }),
    ));
    let bad = sign(
        Algorithm::RS256,
        "rsa-impostor.pem",
        "rsa-1",
        claims(ISS, "m"),
    );
    let tokens = [good.as_str(), &expired, &bad, "garbage-token-text"];
    for (i, token) in tokens.iter().enumerate() {
        gateway
            .get_with(
                "/api/x",
                Some(token),
                &[("x-request-id", format!("log-test-{i}").as_str())],
            )
            .await;
    }
    assert_eq!(upstream.count(), 1);
    // The access log is written after the response: wait for all four
    // lines, which also shows the log is being captured at all.
    let all_logged = |log: &str| (0..tokens.len()).all(|i| log.contains(&format!("log-test-{i}")));
    let log = gateway.wait_for_log(all_logged).await;
    assert!(all_logged(&log), "access log lines missing:\n{log}");
    for token in tokens {
        for segment in token.split('.').filter(|s| s.len() >= 12) {
            assert!(
                !log.contains(segment),
                "the gateway log contains a token segment:\n{log}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 4. Forwarding
// ---------------------------------------------------------------------------

#[tokio::test]
async fn forwards_claims_and_replaces_spoofed_identity_headers() {
    let (upstream, gateway) = start(&config()).await;
    let token = rs256(claims_with(
        ISS,
        "alice",
        json!({
            "scope": "read write",
            "realm_access": { "roles": ["admin", "ops"] },
        }),
    ));
    // Raw request so header-name case reaches the gateway as written.
    let response = raw_request(
        gateway.proxy_addr(),
        &format!(
            "GET /api/orders?id=7 HTTP/1.1\r\n\
             Host: gateway.test\r\n\
             Authorization: Bearer {token}\r\n\
             X-USER-ID: mallory\r\n\
             x-user-id: mallory2\r\n\
             X-User-Roles: superuser\r\n\
             X-JWT-Claims: forged\r\n\
             x-jwt-sub: forged\r\n\
             X-Jwt-Anything: forged\r\n\
             X_User_Id: underscore-spoof\r\n\
             X_JWT_Extra: underscore-spoof\r\n\
             X-Other: kept"
        ),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-upstream"), Some("recording"));
    assert_eq!(upstream.count(), 1);
    let seen = upstream.last();
    assert_eq!(seen.path, "/api/orders?id=7");
    assert_eq!(seen.header_all("x-user-id"), ["alice"]);
    assert_eq!(seen.header_all("x-user-scopes"), ["read write"]);
    // An array claim is joined with a space.
    assert_eq!(seen.header_all("x-user-roles"), ["admin ops"]);
    let reserved: Vec<&String> = seen
        .headers
        .keys()
        .filter(|n| n.starts_with("x-jwt-"))
        .collect();
    assert!(
        reserved.is_empty(),
        "reserved headers reached the upstream: {reserved:?}"
    );
    // CGI/WSGI backends read `X_User_Id` as `X-User-Id`: stripped too.
    assert!(
        !seen
            .headers
            .values()
            .flatten()
            .any(|v| v == "underscore-spoof"),
        "underscore spellings reached the upstream: {:?}",
        seen.headers
    );
    assert_eq!(seen.header("x-other"), Some("kept"));
    // strip_authorization: true removes the token.
    assert!(!seen.has_header("authorization"), "{:?}", seen.headers);
    assert!(!seen.headers.values().flatten().any(|v| v.contains(&token)));

    // A token without the claims: the spoofed headers are removed, not kept.
    let plain = main_token("bob");
    let response = gateway
        .get_with(
            "/api/x",
            Some(&plain),
            &[("X-User-Scopes", "admin"), ("X-User-Roles", "admin")],
        )
        .await;
    assert_eq!(response.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.header_all("x-user-id"), ["bob"]);
    assert!(!seen.has_header("x-user-scopes"), "{:?}", seen.headers);
    assert!(!seen.has_header("x-user-roles"), "{:?}", seen.headers);
}

#[tokio::test]
async fn claims_that_would_inject_headers_are_not_forwarded() {
    let (upstream, gateway) = start(&config()).await;
    let token = rs256(claims(ISS, "alice\r\nX-Admin: true"));
    let response = gateway.get("/api/x", Some(&token)).await;
    assert_eq!(response.status(), 200);
    let seen = upstream.last();
    assert!(!seen.has_header("x-user-id"), "{:?}", seen.headers);
    assert!(!seen.has_header("x-admin"), "{:?}", seen.headers);
}

#[tokio::test]
async fn authorization_is_stripped_or_kept_as_configured() {
    let (upstream, gateway) = start(&config()).await;
    let token = main_token("alice");

    // strip_authorization: true, token in the configured header: removed too.
    let response = gateway
        .get_with("/api/x", None, &[("x-token", token.as_str())])
        .await;
    assert_eq!(response.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.header("x-user-id"), Some("alice"));
    assert!(!seen.has_header("x-token"), "{:?}", seen.headers);
    assert!(!seen.has_header("authorization"), "{:?}", seen.headers);

    // Token in the configured cookie.
    let response = gateway
        .get_with(
            "/api/x",
            None,
            &[("cookie", format!("theme=dark; at={token}").as_str())],
        )
        .await;
    assert_eq!(response.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.header("x-user-id"), Some("alice"));
    // The token cookie is stripped; the others stay.
    assert_eq!(seen.header_all("cookie"), ["theme=dark"]);

    // The scheme is case-insensitive.
    let response = gateway
        .get_with(
            "/api/x",
            None,
            &[("authorization", format!("bearer {token}").as_str())],
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.last().header("x-user-id"), Some("alice"));

    // strip_authorization: false: the upstream sees the header as sent.
    let response = gateway.get("/keepauth/x", Some(&token)).await;
    assert_eq!(response.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.header("x-user-id"), Some("alice"));
    assert_eq!(
        seen.header_all("authorization"),
        [format!("Bearer {token}").as_str()]
    );
    assert_eq!(upstream.count(), 4);
}

#[tokio::test]
async fn request_id_and_forwarded_for() {
    let (upstream, gateway) = start(&config()).await;
    let token = main_token("alice");

    // A client's request id is kept end to end.
    let response = gateway
        .get_with(
            "/api/x",
            Some(&token),
            &[
                ("x-request-id", "trace-abc-123"),
                ("x-forwarded-for", "203.0.113.9"),
            ],
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("x-request-id").unwrap(),
        "trace-abc-123"
    );
    let seen = upstream.last();
    assert_eq!(seen.header_all("x-request-id"), ["trace-abc-123"]);
    // No trusted proxies are configured: the client's own X-Forwarded-For
    // is replaced by the peer address (tests/forwarded.rs has the rest).
    assert_eq!(seen.header_all("x-forwarded-for"), ["127.0.0.1"]);

    // Without one, the gateway makes one and tells both sides the same id.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let response = gateway.get("/api/x", Some(&token)).await;
        assert_eq!(response.status(), 200);
        let id = response
            .headers()
            .get("x-request-id")
            .expect("x-request-id on the response")
            .to_str()
            .unwrap()
            .to_string();
        let seen = upstream.last();
        assert!(!id.is_empty());
        assert_eq!(seen.header_all("x-request-id"), [id.as_str()]);
        let forwarded = seen.header_all("x-forwarded-for").join(", ");
        assert!(forwarded.contains("127.0.0.1"), "{forwarded}");
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "generated request ids must differ");

    // A rejection carries the client's request id too.
    let response = gateway
        .get_with("/api/x", None, &[("x-request-id", "trace-rejected-1")])
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers().get("x-request-id").unwrap(),
        "trace-rejected-1"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["request_id"], "trace-rejected-1");

    // On a public route as well.
    let response = gateway
        .get_with("/public/x", None, &[("x-request-id", "trace-public-1")])
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("x-request-id").unwrap(),
        "trace-public-1"
    );
    assert_eq!(
        upstream.last().header_all("x-request-id"),
        ["trace-public-1"]
    );

    // A client id that does not look like an id is replaced, on both sides.
    for bad in ["has spaces in it", &"x".repeat(200)] {
        let response = gateway
            .get_with("/api/x", Some(&token), &[("x-request-id", bad)])
            .await;
        assert_eq!(response.status(), 200);
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(!id.is_empty() && id != bad, "{bad:?} was kept");
        assert_eq!(upstream.last().header_all("x-request-id"), [id.as_str()]);
    }
    assert_eq!(upstream.count(), 6);
}

#[tokio::test]
async fn scope_and_claim_rules() {
    let (upstream, gateway) = start(&config()).await;
    let token = |extra: Value| rs256(claims_with(ISS, "alice", extra));

    // all_of [read]
    for (case, extra) in [
        ("scope string", json!({ "scope": "write read" })),
        ("scp array", json!({ "scp": ["read"] })),
    ] {
        let response = gateway.get("/scoped/x", Some(&token(extra))).await;
        assert_eq!(response.status(), 200, "{case}");
    }
    // any_of [write, admin]
    for scope in ["admin", "write", "read write"] {
        let response = gateway
            .get("/anyscope/x", Some(&token(json!({ "scope": scope }))))
            .await;
        assert_eq!(response.status(), 200, "scope {scope:?}");
    }
    // realm_access.roles any_of [admin]
    let response = gateway
        .get(
            "/roles/x",
            Some(&token(
                json!({ "realm_access": { "roles": ["ops", "admin"] } }),
            )),
        )
        .await;
    assert_eq!(response.status(), 200);

    for (case, route, extra, expected) in [
        (
            "no scope at all",
            "scoped",
            json!({}),
            forbidden("insufficient_scope", Some("read")),
        ),
        (
            "scope prefix is not the scope",
            "scoped",
            json!({ "scope": "reader read:all" }),
            forbidden("insufficient_scope", Some("read")),
        ),
        (
            "none of any_of",
            "anyscope",
            json!({ "scope": "read" }),
            forbidden("insufficient_scope", Some("write admin")),
        ),
        (
            "role missing",
            "roles",
            json!({ "realm_access": { "roles": ["ops"] } }),
            forbidden("claim_mismatch", None),
        ),
        // A top-level "roles" is not realm_access.roles.
        (
            "claim absent",
            "roles",
            json!({ "roles": ["admin"] }),
            forbidden("missing_claim", None),
        ),
    ] {
        assert_bearer_rejected(&gateway, &upstream, case, route, &token(extra), expected).await;
    }

    assert_eq!(upstream.count(), 2 + 3 + 1);
    gateway
        .expect_metric(REQUESTS, &[("status", "403")], 5.0)
        .await;
}

// ---------------------------------------------------------------------------
// 5. Modes
// ---------------------------------------------------------------------------

#[tokio::test]
async fn optional_mode() {
    let (upstream, gateway) = start(&config()).await;
    let client = gateway.client();

    // No token: through, anonymously, and a spoofed identity is removed.
    let response = gateway
        .get_with(
            "/maybe/x",
            None,
            &[("X-User-Id", "mallory"), ("x-jwt-sub", "mallory")],
        )
        .await;
    assert_eq!(response.status(), 200);
    let seen = upstream.last();
    assert!(!seen.has_header("x-user-id"), "{:?}", seen.headers);
    assert!(!seen.has_header("x-jwt-sub"), "{:?}", seen.headers);
    gateway
        .expect_decisions(
            &[
                ("route", "maybe"),
                ("issuer", "_none"),
                ("outcome", "anonymous"),
            ],
            1.0,
        )
        .await;

    // Another route's identity header is removed here as well.
    let response = gateway
        .get_with("/maybe/x", None, &[("X-User-Roles", "admin")])
        .await;
    assert_eq!(response.status(), 200);
    assert!(!upstream.last().has_header("x-user-roles"));

    // Valid token: identity forwarded, replacing the spoofed value.
    let token = main_token("alice");
    let response = gateway
        .get_with("/maybe/x", Some(&token), &[("X-User-Id", "mallory")])
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.last().header_all("x-user-id"), ["alice"]);

    // Invalid token: rejected, not downgraded to anonymous.
    let expired = rs256(claims_with(
        ISS,
        "alice",
        json!({ "exp": now() - 3600, "iat": now() - 7200 }),
    ));
    assert_rejected(
        &gateway,
        &upstream,
        "optional route, expired token",
        "maybe",
        client
            .get(gateway.url("/maybe/x"))
            .bearer_auth(&expired)
            .header("X-User-Id", "mallory"),
        &[&expired],
        Rejected {
            description: "token expired",
            ..invalid_token("expired", "main")
        },
    )
    .await;
    assert_rejected(
        &gateway,
        &upstream,
        "optional route, garbage token",
        "maybe",
        client.get(gateway.url("/maybe/x")).bearer_auth("garbage"),
        &[],
        invalid_token("malformed", "_none"),
    )
    .await;
    assert_eq!(upstream.count(), 3);
}

#[tokio::test]
async fn off_mode() {
    let (upstream, gateway) = start(&config()).await;
    let response = gateway
        .get_with(
            "/public/page?q=1",
            None,
            &[
                ("X-User-Id", "mallory"),
                ("X-User-Scopes", "admin"),
                ("X-JWT-Sub", "mallory"),
            ],
        )
        .await;
    assert_eq!(response.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.path, "/public/page?q=1");
    for header in ["x-user-id", "x-user-scopes", "x-jwt-sub"] {
        assert!(!seen.has_header(header), "{header} reached the upstream");
    }
    // Nothing is verified on a public route, whatever is sent.
    let response = gateway.get("/public/x", Some("garbage")).await;
    assert_eq!(response.status(), 200);
    assert!(!upstream.last().has_header("x-user-id"));
    assert_eq!(upstream.count(), 2);
    assert_eq!(
        gateway.metric(DECISIONS, &[("route", "public")]).await,
        0.0,
        "a public route makes no auth decisions"
    );
}

// ---------------------------------------------------------------------------
// 6. Path normalization
// ---------------------------------------------------------------------------

#[tokio::test]
async fn dot_segments_and_double_slashes_cannot_bypass_auth() {
    let (upstream, gateway) = start(&config()).await;
    let targets = [
        "/public/../admin",
        "/public/../admin/secret",
        "//admin",
        "//admin/secret",
        "/public/./../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public//../../admin",
    ];
    for target in targets {
        let response = raw_request(
            gateway.proxy_addr(),
            &format!("GET {target} HTTP/1.1\r\nHost: gateway.test\r\nX-User-Id: mallory"),
        )
        .await;
        assert_eq!(
            response.status,
            401,
            "{target} was not routed to the admin route: {}",
            response.text()
        );
        assert_eq!(
            response.header("www-authenticate"),
            Some("Bearer realm=\"jwtgate\""),
            "{target}"
        );
        assert_eq!(upstream.count(), 0, "{target} reached the upstream");
    }
    gateway
        .expect_decisions(
            &[
                ("route", "admin"),
                ("outcome", "deny"),
                ("reason", "missing_token"),
            ],
            targets.len() as f64,
        )
        .await;
    assert_eq!(gateway.metric(DECISIONS, &[("route", "public")]).await, 0.0);

    // With a token, the upstream sees the normalized path, not the trick.
    let token = main_token("alice");
    let response = raw_request(
        gateway.proxy_addr(),
        &format!(
            "GET /public/../admin/x?y=1 HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: Bearer {token}"
        ),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = upstream.last();
    assert_eq!(seen.path, "/admin/x?y=1");
    assert_eq!(seen.header("x-user-id"), Some("alice"));

    // The public route itself still works.
    let response = raw_request(
        gateway.proxy_addr(),
        "GET /public/x HTTP/1.1\r\nHost: gateway.test",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(upstream.last().path, "/public/x");
    assert_eq!(upstream.count(), 2);
}

// ---------------------------------------------------------------------------
// 7. Metrics and admin endpoints
// ---------------------------------------------------------------------------

#[tokio::test]
async fn metrics_count_every_decision_and_status() {
    let (upstream, gateway) = start(&config()).await;
    let now = now();
    let expired = |sub: &str| {
        rs256(claims_with(
            ISS,
            sub,
            json!({ "iat": now - 7200, "exp": now - 3600 }),
        ))
    };
    let bad_signature = sign(
        Algorithm::RS256,
        "rsa-impostor.pem",
        "rsa-1",
        claims(ISS, "mallory"),
    );
    let hmac = sign(
        Algorithm::HS256,
        "hs256.secret",
        "hmac",
        claims(HMAC_ISS, "svc"),
    );
    let no_scope = rs256(claims(ISS, "alice"));

    let traffic: Vec<(&str, Option<String>, u16)> = vec![
        ("/api/a", Some(expired("e1")), 401),
        ("/api/b", Some(expired("e2")), 401),
        ("/api/c", Some(bad_signature), 401),
        ("/api/d", Some(main_token("alice")), 200),
        ("/api/e", Some(main_token("bob")), 200),
        ("/api/f", Some(hmac), 200),
        ("/api/g", None, 401),
        ("/scoped/h", Some(no_scope), 403),
        ("/public/i", None, 200),
        ("/maybe/j", None, 200),
        ("/nowhere", None, 404),
    ];
    for (path, token, status) in &traffic {
        let response = gateway.get(path, token.as_deref()).await;
        assert_eq!(response.status(), *status, "{path}");
    }
    assert_eq!(upstream.count(), 5);

    // Per-status request counts (the logging phase may trail the response).
    for (route, status, count) in [
        ("api", "401", 4.0),
        ("api", "200", 3.0),
        ("scoped", "403", 1.0),
        ("public", "200", 1.0),
        ("maybe", "200", 1.0),
        ("_none", "404", 1.0),
    ] {
        gateway.expect_requests(route, status, count).await;
    }
    let text = gateway.metrics().await;
    assert_eq!(metric_value(&text, REQUESTS, &[]), traffic.len() as f64);

    // Every decision, with its exact labels and count.
    let decisions = [
        (("api", "main", "deny", "expired"), 2.0),
        (("api", "main", "deny", "bad_signature"), 1.0),
        (("api", "_none", "deny", "missing_token"), 1.0),
        (("api", "main", "allow", "none"), 2.0),
        (("api", "hmac", "allow", "none"), 1.0),
        (("scoped", "main", "deny", "insufficient_scope"), 1.0),
        (("maybe", "_none", "anonymous", "none"), 1.0),
    ];
    let mut total = 0.0;
    for ((route, issuer, outcome, reason), count) in decisions {
        let labels = [
            ("route", route),
            ("issuer", issuer),
            ("outcome", outcome),
            ("reason", reason),
        ];
        assert_eq!(
            metric_value(&text, DECISIONS, &labels),
            count,
            "{labels:?}\n{}",
            relevant_lines(&text)
        );
        total += count;
    }
    assert_eq!(
        metric_value(&text, DECISIONS, &[]),
        total,
        "unexpected extra decisions:\n{}",
        relevant_lines(&text)
    );
    // Seven distinct tokens were verified; the histogram has microsecond buckets.
    assert_eq!(
        metric_value(&text, "jwtgate_verify_duration_seconds_count", &[]),
        7.0
    );
    assert!(
        text.contains("jwtgate_verify_duration_seconds_bucket{le=\"0.00001\"}"),
        "no 10 µs bucket:\n{}",
        relevant_lines(&text)
    );
    // Upstream time is recorded per route for requests that reached one.
    for (route, count) in [("api", 3.0), ("public", 1.0), ("maybe", 1.0)] {
        gateway
            .expect_metric(
                "jwtgate_upstream_duration_seconds_count",
                &[("route", route)],
                count,
            )
            .await;
    }
    // Labels never carry client-controlled text.
    for line in text.lines().filter(|l| l.starts_with("jwtgate_")) {
        assert!(!line.contains("/api/"), "a path became a label: {line}");
        assert!(!line.contains("alice"), "a claim became a label: {line}");
    }

    // Admin endpoints.
    for (path, status) in [("/healthz", 200), ("/readyz", 200), ("/nope", 404)] {
        assert_eq!(gateway.admin_get(path).await.status(), status, "{path}");
    }
    // The admin endpoints are not served on the proxy listener.
    let proxied = gateway.get("/metrics", None).await;
    assert_eq!(proxied.status(), 404);
}

// ---------------------------------------------------------------------------
// Upstream pools

/// Two pools: the recording upstream and `{SECOND}`, and one whose first
/// address, `{DEAD}`, refuses connections.
const POOLS: &str = r#"
  - name: pool
    match: { path_prefix: /pool }
    upstream: { addrs: ["{UPSTREAM}", "{SECOND}"] }
    auth: { mode: off }
  - name: flaky
    match: { path_prefix: /flaky }
    upstream: { addrs: ["{DEAD}", "{UPSTREAM}"], connect_timeout: 1s }
    auth: { mode: off }
"#;

#[tokio::test]
async fn upstreams_are_used_round_robin_and_a_dead_one_is_skipped() {
    let first = Upstream::start();
    let second = Upstream::start();
    let dead = format!("127.0.0.1:{}", free_port());
    let template = Config::new().default_server().routes(
        &POOLS
            .replace("{SECOND}", &second.addr().to_string())
            .replace("{DEAD}", &dead),
    );
    let gateway = Gateway::start(&template, &first).await;

    for _ in 0..6 {
        assert_eq!(gateway.get("/pool/x", None).await.status(), 200);
    }
    assert_eq!((first.count(), second.count()), (3, 3), "round robin");

    // Connect failures move on to the next address: every request succeeds.
    for _ in 0..4 {
        assert_eq!(gateway.get("/flaky/x", None).await.status(), 200);
    }
    assert_eq!(first.count(), 3 + 4);
}

#[tokio::test]
async fn a_query_token_stays_out_of_error_logs() {
    let upstream = Upstream::start();
    let dead = format!("127.0.0.1:{}", free_port());
    let template = Config::main(ISS).default_server().routes(&format!(
        "  - name: down\n    match: {{ path_prefix: /down }}\n    upstream: {{ addrs: [\"{dead}\"], connect_timeout: 1s }}\n    auth: {{ token_query: access_token }}"
    ));
    let gateway = Gateway::start(&template, &upstream).await;
    let token = main_token("alice");
    let response = gateway
        .get_with(&format!("/down/x?access_token={token}&page=2"), None, &[])
        .await;
    assert_eq!(response.status(), 502, "the upstream is down");

    // Pingora logs the failed request; it must not carry the query.
    let log = gateway.wait_for_log(|log| log.contains("route=down")).await;
    assert!(log.contains("GET /down/x route=down"), "{log}");
    let signature = token.rsplit('.').next().unwrap();
    assert!(
        !log.contains(signature),
        "the token reached the log:\n{log}"
    );
}
