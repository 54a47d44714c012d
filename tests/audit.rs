//! Audit mode through the real binary: an `audit` route forwards what
//! `required` would refuse, without identity headers and with spoofed ones
//! stripped, logs the reason it was not enforced and counts it as
//! `would_deny`; a `required` route beside it with the same rules still
//! refuses.

mod common;

use common::*;
use jwtgate::jose::Algorithm;
use serde_json::json;

const CONFIG: &str = r#"
server: { threads: 2 }
listen: { http: "127.0.0.1:{PROXY}" }
admin: { addr: "127.0.0.1:{ADMIN}" }
issuers:
  - name: main
    issuer: https://issuer.audit.test
    algorithms: [RS256]
    audiences: [api]
    jwks_file: "{FIXTURES}/jwks.json"
routes:
  - name: legacy
    match: { path_prefix: /legacy }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: audit, issuers: [main], scopes: { all_of: [orders:read] } }
    forward: { claims: { sub: X-User-Id } }
  - name: enforced
    match: { path_prefix: /enforced }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main], scopes: { all_of: [orders:read] } }
    forward: { claims: { sub: X-User-Id } }
"#;

const ISS: &str = "https://issuer.audit.test";

fn token(extra: serde_json::Value) -> String {
    let now = now();
    let claims = merge_claims(
        json!({ "iss": ISS, "sub": "alice", "aud": "api", "scope": "orders:read",
                "iat": now, "exp": now + 300 }),
        extra,
    );
    sign(Algorithm::RS256, "rsa.pem", "rsa-1", claims)
}

const DECISIONS: &str = "jwtgate_auth_decisions_total";

/// Sends `GET path` tagged `request_id` with an optional bearer token and a
/// spoofed identity header; returns the status.
async fn send(gateway: &Gateway, path: &str, request_id: &str, token: Option<&str>) -> u16 {
    let mut request = gateway
        .client()
        .get(gateway.url(path))
        .header("x-request-id", request_id)
        .header("x-user-id", "mallory");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request").status().as_u16()
}

#[tokio::test]
async fn audit_forwards_what_required_refuses_and_counts_it() {
    let (upstream, gateway) = start(CONFIG).await;
    let valid = token(json!({}));
    let expired = token(json!({ "exp": now() - 600, "iat": now() - 900 }));
    let unscoped = token(json!({ "scope": "orders:write" }));

    // (request id, token, the reason required would refuse with)
    let refused: [(&str, Option<&str>, &str); 4] = [
        ("missing", None, "missing_token"),
        ("garbage", Some("not-a-token"), "malformed"),
        ("expired", Some(&expired), "expired"),
        ("unscoped", Some(&unscoped), "insufficient_scope"),
    ];
    for (id, token, reason) in refused {
        let forwarded_before = upstream.count();
        let status = send(&gateway, "/legacy/orders", id, token).await;
        assert_eq!(status, 200, "audit forwards the {reason} request");
        assert_eq!(upstream.count(), forwarded_before + 1, "{reason}: reached");
        let seen = upstream.last();
        assert_eq!(seen.path, "/legacy/orders");
        assert!(
            !seen.has_header("x-user-id"),
            "{reason}: no identity header, and the client's spoofed one is gone: {:?}",
            seen.headers
        );
        gateway
            .expect_metric(
                DECISIONS,
                &[
                    ("route", "legacy"),
                    ("outcome", "would_deny"),
                    ("reason", reason),
                ],
                1.0,
            )
            .await;
        let line = gateway.access_line(id).await;
        assert!(line.contains(&format!("reason=\"{reason}\"")), "{line}");
        assert!(line.contains("outcome=\"would_deny\""), "{line}");
        assert!(line.contains("status=200"), "{line}");
    }

    // The unscoped token is genuine: its issuer labels the count.
    gateway
        .expect_metric(
            DECISIONS,
            &[
                ("route", "legacy"),
                ("issuer", "main"),
                ("outcome", "would_deny"),
                ("reason", "insufficient_scope"),
            ],
            1.0,
        )
        .await;

    // A valid token: forwarded with its identity, counted as allow.
    assert_eq!(
        send(&gateway, "/legacy/orders", "valid", Some(&valid)).await,
        200
    );
    assert_eq!(upstream.last().header("x-user-id"), Some("alice"));
    gateway
        .expect_metric(
            DECISIONS,
            &[
                ("route", "legacy"),
                ("outcome", "allow"),
                ("reason", "none"),
            ],
            1.0,
        )
        .await;
    let line = gateway.access_line("valid").await;
    assert!(line.contains("outcome=\"allow\""), "{line}");
    assert!(line.contains("reason=-"), "{line}");

    // Nothing on the audit route was counted as a real denial.
    assert_eq!(
        gateway
            .metric(DECISIONS, &[("route", "legacy"), ("outcome", "deny")])
            .await,
        0.0
    );
}

#[tokio::test]
async fn required_beside_audit_still_refuses() {
    let (upstream, gateway) = start(CONFIG).await;
    let unscoped = token(json!({ "scope": "orders:write" }));

    assert_eq!(
        send(&gateway, "/enforced/a", "enf-missing", None).await,
        401
    );
    assert_eq!(
        send(&gateway, "/enforced/a", "enf-unscoped", Some(&unscoped)).await,
        403
    );
    assert_eq!(upstream.count(), 0, "nothing reached the upstream");
    for reason in ["missing_token", "insufficient_scope"] {
        gateway
            .expect_metric(
                DECISIONS,
                &[
                    ("route", "enforced"),
                    ("outcome", "deny"),
                    ("reason", reason),
                ],
                1.0,
            )
            .await;
    }
    let line = gateway.access_line("enf-unscoped").await;
    assert!(line.contains("outcome=\"deny\""), "{line}");
    assert!(line.contains("status=403"), "{line}");

    // The same token on the audit route is let through.
    assert_eq!(
        send(&gateway, "/legacy/a", "audit-unscoped", Some(&unscoped)).await,
        200
    );
    assert_eq!(upstream.count(), 1);
}

// ---------------------------------------------------------------------------
// `jwtgate token verify` runs the same pipeline and honours the route's mode
// ---------------------------------------------------------------------------

const CLI_CONFIG: &str = r#"
issuers:
  - name: main
    issuer: https://issuer.audit.test
    algorithms: [RS256]
    audiences: [api]
    jwks_file: "{FIXTURES}/jwks.json"
routes:
  - name: legacy
    match: { path_prefix: /legacy }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { mode: audit, issuers: [main], scopes: { all_of: [orders:read] } }
  - name: public
    match: { path_prefix: /public }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { mode: off }
  - name: writes
    match: { path_prefix: /orders, host: api.audit.test, methods: [POST] }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { issuers: [main], scopes: { all_of: [orders:write] } }
  - name: reads
    match: { path_prefix: /orders, host: api.audit.test }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { mode: off }
  - name: shadowed
    match: { path_prefix: /orders, host: api.audit.test }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { issuers: [main] }
"#;

struct Verified {
    success: bool,
    stdout: String,
    stderr: String,
}

fn token_verify(route: &str, token: &str) -> Verified {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.yaml");
    let yaml = CLI_CONFIG.replace("{FIXTURES}", &fixtures().display().to_string());
    std::fs::write(&config, yaml).expect("write config");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .args(["token", "verify", "-c"])
        .arg(&config)
        .args(["--route", route, token])
        .output()
        .expect("run jwtgate token verify");
    Verified {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn verify_on_an_audit_route_says_the_rejection_is_not_enforced() {
    let expired = token(json!({ "exp": now() - 600, "iat": now() - 900 }));
    let out = token_verify("legacy", &expired);
    assert!(!out.success, "the token fails: {}", out.stdout);
    assert!(
        out.stdout.contains("route \"legacy\" (auth audit)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("FAIL exp"),
        "the check is explained: {}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("REJECTED (not enforced): 401 invalid_token (reason: expired)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("audit mode"), "{}", out.stdout);

    let out = token_verify("legacy", &token(json!({})));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ACCEPTED"), "{}", out.stdout);
}

#[test]
fn verify_on_an_off_route_checks_nothing() {
    let out = token_verify("public", "not-a-token");
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("NOT CHECKED"), "{}", out.stdout);
    assert!(!out.stdout.contains("FAIL"), "{}", out.stdout);
}

#[test]
fn verify_asks_with_the_routes_host_and_first_method() {
    // Only a POST to api.audit.test reaches `writes`; its scope rule applies.
    let out = token_verify("writes", &token(json!({ "scope": "orders:write" })));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ACCEPTED"), "{}", out.stdout);
    let out = token_verify("writes", &token(json!({})));
    assert!(!out.success);
    assert!(
        out.stdout.contains("REJECTED: 403 insufficient_scope"),
        "{}",
        out.stdout
    );

    // A route an earlier one always takes is said to be unreachable.
    let out = token_verify("shadowed", &token(json!({})));
    assert!(!out.success);
    assert!(
        out.stderr
            .contains("GET /orders (host api.audit.test) is routed to \"reads\", not \"shadowed\""),
        "{}",
        out.stderr
    );
}

#[test]
fn check_shows_an_audit_route_with_its_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.yaml");
    let yaml = CLI_CONFIG.replace("{FIXTURES}", &fixtures().display().to_string());
    std::fs::write(&config, yaml).expect("write config");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .expect("run jwtgate check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("auth audit · issuers [main] · scopes all of [orders:read]"),
        "{stdout}"
    );
}
