//! Audit mode through the real binary: an `audit` route forwards what
//! `required` would refuse, without identity headers and with spoofed ones
//! stripped, logs the reason it was not enforced and counts it as
//! `would_deny`; a `required` route beside it with the same rules still
//! refuses.

mod common;

use common::*;
use serde_json::{Value, json};

const ISS: &str = "https://issuer.audit.test";

const ROUTES: &str = r#"
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

fn config() -> String {
    Config::main(ISS).routes(ROUTES)
}

/// Alice's token with `orders:read`, and `extra` set over it.
fn alice(extra: Value) -> String {
    rs256(merge_claims(
        claims_with(ISS, "alice", json!({ "scope": "orders:read" })),
        extra,
    ))
}

/// Sends `GET path` tagged `request_id` with an optional bearer token and a
/// spoofed identity header; returns the status.
async fn send(gateway: &Gateway, path: &str, request_id: &str, token: Option<&str>) -> u16 {
    let headers = [("x-request-id", request_id), ("x-user-id", "mallory")];
    gateway
        .get_with(path, token, &headers)
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn audit_forwards_what_required_refuses_and_counts_it() {
    let (upstream, gateway) = start(&config()).await;
    let valid = alice(json!({}));
    let expired = alice(json!({ "exp": now() - 600, "iat": now() - 900 }));
    let unscoped = alice(json!({ "scope": "orders:write" }));

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
            .expect_decisions(
                &[
                    ("route", "legacy"),
                    ("outcome", "would_deny"),
                    ("reason", reason),
                ],
                1.0,
            )
            .await;
        gateway
            .expect_access_line(
                id,
                &[
                    &format!("reason=\"{reason}\""),
                    "outcome=\"would_deny\"",
                    "status=200",
                ],
            )
            .await;
    }

    // The unscoped token is genuine: its issuer labels the count.
    gateway
        .expect_decisions(
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
        .expect_decisions(
            &[
                ("route", "legacy"),
                ("outcome", "allow"),
                ("reason", "none"),
            ],
            1.0,
        )
        .await;
    gateway
        .expect_access_line("valid", &["outcome=\"allow\"", "reason=-"])
        .await;

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
    let (upstream, gateway) = start(&config()).await;
    let unscoped = alice(json!({ "scope": "orders:write" }));

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
            .expect_decisions(
                &[
                    ("route", "enforced"),
                    ("outcome", "deny"),
                    ("reason", reason),
                ],
                1.0,
            )
            .await;
    }
    gateway
        .expect_access_line("enf-unscoped", &["outcome=\"deny\"", "status=403"])
        .await;

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

/// Routes to an upstream nothing listens on: `jwtgate` only reads them.
const CLI_ROUTES: &str = r#"
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

fn token_verify(route: &str, token: &str) -> Ran {
    let config = Config::main(ISS).routes(CLI_ROUTES);
    jwtgate_on(
        &config,
        &["token", "verify"],
        &["--route", route, token],
        &[],
    )
}

#[test]
fn verify_on_an_audit_route_says_the_rejection_is_not_enforced() {
    let expired = alice(json!({ "exp": now() - 600, "iat": now() - 900 }));
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

    let out = token_verify("legacy", &alice(json!({})));
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
    let out = token_verify("writes", &alice(json!({ "scope": "orders:write" })));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ACCEPTED"), "{}", out.stdout);
    let out = token_verify("writes", &alice(json!({})));
    assert!(!out.success);
    assert!(
        out.stdout.contains("REJECTED: 403 insufficient_scope"),
        "{}",
        out.stdout
    );

    // A route an earlier one always takes is said to be unreachable.
    let out = token_verify("shadowed", &alice(json!({})));
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
    let out = check(&Config::main(ISS).routes(CLI_ROUTES));
    assert!(out.success, "{}", out.stdout);
    assert!(
        out.stdout
            .contains("auth audit · issuers [main] · scopes all of [orders:read]"),
        "{}",
        out.stdout
    );
}
