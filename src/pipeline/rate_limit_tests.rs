//! Rate limits in the pipeline, against a manual clock: where each kind of
//! key runs relative to authentication, and what a refusal carries.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};
use serde_json::json;

use super::client::ClientAddress;
use super::support_tests::{MAIN, NOW, compiled, rs256};
use super::*;
use crate::clock::ManualClock;

const CONFIG: &str = r#"
listen: { http: "127.0.0.1:0" }
admin: { addr: "127.0.0.1:1" }
issuers:
  - name: main
    issuer: https://main.pipeline.test
    algorithms: [RS256]
    audiences: [api]
    jwks_file: jwks.json
routes:
  - name: login
    match: { path_prefix: /login }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { mode: off }
    rate_limits: [{ name: per-client, rate: 1/m, burst: 2, key: client_address }]
  - name: api
    match: { path_prefix: /api }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { issuers: [main] }
    rate_limits:
      - { name: per-user, rate: 1/h, burst: 1, key: "claim:sub" }
      - { name: per-client, rate: 3/h, key: client_address }
  - name: audit
    match: { path_prefix: /audit }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { mode: audit, issuers: [main] }
    rate_limits: [{ name: per-key, rate: 1/h, key: "header:x-api-key" }]
"#;

struct Harness {
    snapshot: Snapshot,
    clock: Arc<ManualClock>,
    pipeline: Pipeline,
    runtime: tokio::runtime::Runtime,
}

impl Harness {
    fn new() -> Self {
        let clock = ManualClock::at(NOW);
        Self {
            snapshot: compiled(CONFIG),
            pipeline: Pipeline::new(clock.clone(), None).without_refetch(),
            clock,
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime"),
        }
    }

    /// The decision for `GET path` from `client`, with `headers`.
    fn decide(&self, path: &str, client: &str, headers: &[(&'static str, String)]) -> Decision<'_> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_str(value).expect("a valid value"));
        }
        let ip: IpAddr = client.parse().expect("an address");
        let view = RequestView {
            method: &Method::GET,
            raw_target: path.as_bytes(),
            target: TargetForm::Origin {
                path_and_query: path.as_bytes(),
            },
            headers: &map,
            client: Some(ClientAddress::direct(ip)),
            scheme: Scheme::Https,
            client_cert_thumbprint: None,
            adapter: Adapter::Proxy,
            exemplar: None,
        };
        self.runtime
            .block_on(self.pipeline.decide(&self.snapshot, &view))
    }
}

fn bearer(sub: &str) -> (&'static str, String) {
    let claims = json!({
        "iss": MAIN, "sub": sub, "aud": "api", "iat": NOW, "exp": NOW + 7200,
    });
    ("authorization", format!("Bearer {}", rs256(&claims)))
}

/// The kind of a decision other than a rate limit, so that each step of a
/// scenario fits on one line; panics on a rate limit or anything else.
fn kind(decision: &Decision<'_>) -> &'static str {
    match decision {
        Decision::Forward {
            auth: Forwarded::Identity(_),
            ..
        } => "allow",
        Decision::Forward {
            auth: Forwarded::Anonymous,
            ..
        } => "anonymous",
        Decision::Forward {
            auth: Forwarded::WouldDeny(_),
            ..
        } => "would deny",
        Decision::Deny { .. } => "deny",
        other => panic!("expected a forward or an authentication refusal, got {other:?}"),
    }
}

/// The limit that refused, and its retry delay; panics on anything else.
fn limited<'d>(decision: &'d Decision<'_>) -> (&'d str, u64) {
    match decision {
        Decision::RateLimited { limited, .. } => (limited.limit.name.as_str(), limited.retry_after),
        other => panic!("expected a rate limit, got {other:?}"),
    }
}

#[test]
fn an_open_route_is_limited_per_client_address_and_refills() {
    let h = Harness::new();
    let login = |client: &str| h.decide("/login", client, &[]);
    for _ in 0..2 {
        assert_eq!(kind(&login("192.0.2.1")), "anonymous");
    }
    assert_eq!(limited(&login("192.0.2.1")), ("per-client", 60));
    // Another client, or the same one as an IPv4-mapped IPv6 peer, is not
    // a new budget for the first.
    assert_eq!(kind(&login("192.0.2.2")), "anonymous");
    assert_eq!(limited(&login("::ffff:192.0.2.1")).0, "per-client");
    h.clock.advance(59);
    assert_eq!(limited(&login("192.0.2.1")).1, 1);
    h.clock.advance(1);
    assert_eq!(kind(&login("192.0.2.1")), "anonymous");
    assert_eq!(limited(&login("192.0.2.1")).1, 60);
    assert_eq!(
        h.pipeline
            .rate_limits()
            .metric()
            .with_label_values(&["login", "per-client"])
            .get(),
        4
    );
}

#[test]
fn a_client_limit_runs_before_authentication_and_a_claim_limit_after() {
    let h = Harness::new();
    let api =
        |client: &str, headers: &[(&'static str, String)]| h.decide("/api/x", client, headers);
    let (alice, bob) = ([bearer("alice")], [bearer("bob")]);
    // Three requests without a token use up the client's budget: each is
    // denied by authentication, then the fourth is refused before it.
    for _ in 0..3 {
        assert_eq!(kind(&api("198.51.100.1", &[])), "deny");
    }
    assert_eq!(limited(&api("198.51.100.1", &alice)).0, "per-client");

    // Per subject: alice's second request is refused, from any address;
    // bob has a budget of his own.
    assert_eq!(kind(&api("198.51.100.2", &alice)), "allow");
    assert_eq!(limited(&api("198.51.100.3", &alice)), ("per-user", 3600));
    assert_eq!(kind(&api("198.51.100.3", &bob)), "allow");
    // A request that fails authentication takes nothing from a subject.
    h.clock.advance(3600);
    let forged = [("authorization", "Bearer x.y.z".to_string())];
    assert_eq!(kind(&api("198.51.100.4", &forged)), "deny");
    assert_eq!(kind(&api("198.51.100.4", &alice)), "allow");
}

#[test]
fn audit_mode_still_enforces_limits_and_a_missing_header_is_one_budget() {
    let h = Harness::new();
    let audit = |client: &str, key: &[&str]| {
        let headers: Vec<_> = key.iter().map(|k| ("x-api-key", k.to_string())).collect();
        h.decide("/audit", client, &headers)
    };
    assert_eq!(kind(&audit("203.0.113.1", &["a"])), "would deny");
    assert_eq!(limited(&audit("203.0.113.2", &["a"])).0, "per-key");
    assert_eq!(kind(&audit("203.0.113.1", &["b"])), "would deny");
    // Leaving the header out is no way around the limit.
    assert_eq!(kind(&audit("203.0.113.1", &[])), "would deny");
    assert_eq!(limited(&audit("203.0.113.3", &[])).0, "per-key");
}
