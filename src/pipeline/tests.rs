//! The pipeline in-process: a compiled config, request views built by hand,
//! a manual clock. One case per rejection reason jwtgate can produce, per
//! route mode, and per answer jwtgate gives before authentication.

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::{Value, json};

use super::*;
use crate::auth::Reason;
use crate::auth::RejectionKind;
use crate::auth::token_cache::TokenCache;
use crate::clock::ManualClock;
use crate::jose::Algorithm;
use crate::mint::Signer;
use crate::telemetry::Metrics;

use super::support_tests::{MAIN, NOW};
const TYPED: &str = "https://typed.pipeline.test";
const REMOTE: &str = "https://remote.pipeline.test";

/// `main` and `typed` verify with the fixture JWKS; `remote` has a JWKS URL
/// that is never fetched here, so it has no keys. A route per mode, plus
/// scoped, claim-ruled, host-bound, method-bound and CORS routes.
const CONFIG: &str = r#"
listen: { http: "127.0.0.1:0" }
admin: { addr: "127.0.0.1:1" }
tokens: { max_bytes: 4096 }
limits: { max_uri_bytes: 2048 }
issuers:
  - name: main
    issuer: https://main.pipeline.test
    algorithms: [RS256, ES256]
    audiences: [api]
    max_lifetime: 1h
    jwks_file: jwks.json
  - name: typed
    issuer: https://typed.pipeline.test
    algorithms: [RS256]
    audiences: [api]
    token_type: { typ: [at+jwt] }
    jwks_file: jwks.json
  - name: remote
    issuer: https://remote.pipeline.test
    algorithms: [RS256]
    audiences: [api]
    jwks_uri: https://keys.pipeline.test/jwks.json
    required: false
routes:
  - name: required
    match: { path_prefix: /required }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { issuers: [main, typed, remote], audiences: [api] }
  - name: optional
    match: { path_prefix: /optional }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { mode: optional, issuers: [main] }
  - name: off
    match: { path_prefix: /off }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { mode: off }
  - name: audit
    match: { path_prefix: /audit }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { mode: audit, issuers: [main, remote], scopes: { all_of: [orders:read] } }
  - name: scoped
    match: { path_prefix: /scoped }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { issuers: [main], scopes: { all_of: [orders:read] } }
  - name: claimed
    match: { path_prefix: /claimed }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { issuers: [main], claims: [{ claim: tenant, any_of: [acme] }] }
  - name: hosted
    match: { path_prefix: /, host: api.pipeline.test }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { mode: off }
  - name: reads
    match: { path_prefix: /reads, methods: [GET, HEAD] }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { mode: off }
  - name: query
    match: { path_prefix: /query }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { issuers: [main], token_query: access_token }
  - name: browser
    match: { path_prefix: /browser }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { issuers: [main] }
    cors: { allowed_origins: ["https://app.pipeline.test"] }
"#;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys")
}

fn snapshot() -> Snapshot {
    let path = fixtures().join("pipeline.yaml");
    let config = crate::config::parse(&path, CONFIG, &|_| None).expect("the test config parses");
    crate::assemble::compile(&path, config).expect("the test config compiles")
}

struct Harness {
    snapshot: Snapshot,
    clock: Arc<ManualClock>,
    pipeline: Pipeline,
}

impl Harness {
    fn new() -> Self {
        Self::with_cache(None)
    }

    fn with_cache(cache: Option<TokenCache>) -> Self {
        let clock = ManualClock::at(NOW);
        // No refresher runs here: a refetch could only wait out its bound.
        let pipeline = Pipeline::new(clock.clone(), cache).without_refetch();
        Self {
            snapshot: snapshot(),
            clock,
            pipeline,
        }
    }

    fn decide(&self, request: &Request) -> Decision<'_> {
        let view = request.view();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime.block_on(self.pipeline.decide(&self.snapshot, &view))
    }

    fn issuer(&self, index: usize) -> &str {
        &self.snapshot.issuers[index].name
    }
}

struct Request {
    method: Method,
    target: Vec<u8>,
    headers: HeaderMap,
}

impl Request {
    fn get(target: &str) -> Self {
        Self {
            method: Method::GET,
            target: target.as_bytes().to_vec(),
            headers: HeaderMap::new(),
        }
    }

    fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers
            .append(name, HeaderValue::from_str(value).expect("a valid value"));
        self
    }

    fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    fn view(&self) -> RequestView<'_> {
        let target = match self.target.strip_prefix(b"http://") {
            Some(rest) => {
                let at = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
                TargetForm::Absolute {
                    authority: &rest[..at],
                    path_and_query: &rest[at..],
                }
            }
            None if self.target.starts_with(b"/") => TargetForm::Origin {
                path_and_query: &self.target,
            },
            None => TargetForm::Unsupported,
        };
        RequestView {
            method: &self.method,
            raw_target: &self.target,
            target,
            headers: &self.headers,
            client: None,
            scheme: Scheme::Http,
            client_cert_thumbprint: None,
            adapter: Adapter::Proxy,
            exemplar: None,
        }
    }
}

fn claims(iss: &str, extra: Value) -> serde_json::Map<String, Value> {
    let mut claims = json!({
        "iss": iss, "sub": "alice", "aud": "api", "iat": NOW, "exp": NOW + 300,
        "scope": "orders:read",
    });
    let object = claims.as_object_mut().expect("an object");
    for (name, value) in extra.as_object().expect("an object") {
        if value.is_null() {
            object.remove(name);
        } else {
            object.insert(name.clone(), value.clone());
        }
    }
    object.clone()
}

fn signed(alg: Algorithm, key: &str, kid: &str, typ: &str, iss: &str, extra: Value) -> String {
    Signer::from_file(&fixtures().join(key), alg)
        .expect("a fixture key")
        .sign(&claims(iss, extra), Some(kid), Some(typ))
        .expect("signing works")
}

/// A token from `main`, signed with its RSA key, with claims changed by
/// `extra` (a `null` removes one).
fn token(extra: Value) -> String {
    signed(Algorithm::RS256, "rsa.pem", "rsa-1", "JWT", MAIN, extra)
}

fn b64(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text)
}

/// A token with a hand-written header and valid claims, signed with nothing.
fn unsigned(header: &str) -> String {
    let claims = serde_json::to_string(&claims(MAIN, json!({}))).expect("JSON");
    format!("{}.{}.{}", b64(header), b64(&claims), b64("signature"))
}

/// The denial of a `Deny`, with its route's name; panics on anything else.
fn denied<'d>(decision: &'d Decision<'_>) -> (&'d str, &'d Failure) {
    match decision {
        Decision::Deny { route, failure } => (route.name.as_str(), failure),
        other => panic!("expected a denial, got {other:?}"),
    }
}

/// A token of the `remote` issuer, whose keys nobody fetches here.
fn remote_token() -> String {
    signed(
        Algorithm::RS256,
        "rsa.pem",
        "rsa-1",
        "JWT",
        REMOTE,
        json!({}),
    )
}

/// A request that is refused: (reason, request, the check it fails, the
/// issuer it is attributed to).
type Case = (Reason, Request, &'static str, Option<&'static str>);

/// A request for every reason jwtgate produces.
fn reason_cases() -> Vec<Case> {
    let tampered = {
        let good = token(json!({}));
        let (rest, _) = good.rsplit_once('.').expect("three segments");
        format!("{rest}.{}", b64("not the signature"))
    };
    let too_large = token(json!({ "padding": "x".repeat(5000) }));
    let mut cases = vec![
        (
            Reason::MissingToken,
            Request::get("/required"),
            "token",
            None,
        ),
        (
            Reason::AmbiguousToken,
            Request::get("/required")
                .bearer(&token(json!({})))
                .bearer(&token(json!({}))),
            "token",
            None,
        ),
        (
            Reason::Malformed,
            Request::get("/required").bearer("not.a.jwt"),
            "structure",
            None,
        ),
        (
            Reason::TooLarge,
            Request::get("/required").bearer(&too_large),
            "structure",
            None,
        ),
        (
            Reason::EncryptedToken,
            Request::get("/required").bearer("a.b.c.d.e"),
            "structure",
            None,
        ),
        (
            Reason::UnsupportedHeader,
            Request::get("/required")
                .bearer(&unsigned(r#"{"alg":"RS256","kid":"rsa-1","crit":["exp"]}"#)),
            "structure",
            None,
        ),
        (
            Reason::UnsupportedAlg,
            Request::get("/required").bearer(&unsigned(r#"{"alg":"none"}"#)),
            "algorithm",
            Some("main"),
        ),
        (
            Reason::AlgNotAllowed,
            Request::get("/required").bearer(&signed(
                Algorithm::ES384,
                "ec384.pem",
                "ec384-1",
                "JWT",
                MAIN,
                json!({}),
            )),
            "algorithm",
            Some("main"),
        ),
        (
            Reason::UnknownKid,
            Request::get("/required").bearer(&signed(
                Algorithm::RS256,
                "rsa.pem",
                "rotated-away",
                "JWT",
                MAIN,
                json!({}),
            )),
            "key",
            Some("main"),
        ),
        (
            Reason::BadSignature,
            Request::get("/required").bearer(&tampered),
            "signature",
            Some("main"),
        ),
    ];
    cases.extend(claim_cases());
    cases
}

/// The cases of tokens whose signature verifies but whose header or
/// claims are refused.
fn claim_cases() -> Vec<Case> {
    vec![
        (
            Reason::WrongTokenType,
            Request::get("/required").bearer(&signed(
                Algorithm::RS256,
                "rsa.pem",
                "rsa-1",
                "JWT",
                TYPED,
                json!({}),
            )),
            "token type",
            Some("typed"),
        ),
        (
            Reason::Expired,
            Request::get("/required").bearer(&token(json!({ "exp": NOW - 60 }))),
            "exp",
            Some("main"),
        ),
        (
            Reason::NotYetValid,
            Request::get("/required").bearer(&token(json!({ "nbf": NOW + 600 }))),
            "nbf",
            Some("main"),
        ),
        (
            Reason::IssuedInFuture,
            Request::get("/required").bearer(&token(json!({ "iat": NOW + 600 }))),
            "iat",
            Some("main"),
        ),
        (
            Reason::LifetimeTooLong,
            Request::get("/required").bearer(&token(json!({ "exp": NOW + 7200 }))),
            "lifetime",
            Some("main"),
        ),
        (
            Reason::WrongIssuer,
            Request::get("/required").bearer(&signed(
                Algorithm::RS256,
                "rsa.pem",
                "rsa-1",
                "JWT",
                "https://elsewhere.test",
                json!({}),
            )),
            "issuer",
            None,
        ),
        (
            Reason::WrongAudience,
            Request::get("/required").bearer(&token(json!({ "aud": "billing" }))),
            "aud",
            Some("main"),
        ),
        (
            Reason::MissingClaim,
            Request::get("/required").bearer(&token(json!({ "aud": null }))),
            "aud",
            Some("main"),
        ),
        (
            Reason::InsufficientScope,
            Request::get("/scoped").bearer(&token(json!({ "scope": "orders:write" }))),
            "scopes",
            Some("main"),
        ),
        (
            Reason::ClaimMismatch,
            Request::get("/claimed").bearer(&token(json!({ "tenant": "globex" }))),
            "claim",
            Some("main"),
        ),
        (
            Reason::JwksUnavailable,
            Request::get("/required").bearer(&remote_token()),
            "key",
            Some("remote"),
        ),
    ]
}

#[test]
fn every_reason_jwtgate_produces_is_decided_with_its_check() {
    let harness = Harness::new();
    let mut covered: Vec<Reason> = Vec::new();
    for (reason, request, check, issuer) in &reason_cases() {
        let decision = harness.decide(request);
        let (_, failure) = denied(&decision);
        assert_eq!(failure.rejection.reason, *reason, "{decision:?}");
        assert_eq!(failure.check, *check, "the check failing {reason}");
        assert_eq!(
            failure.issuer.map(|i| harness.issuer(i)),
            *issuer,
            "the issuer of {reason}"
        );
        assert_eq!(decision.outcome(), Some("deny"));
        assert_eq!(decision.reason(), Some(reason.as_str()));
        assert_eq!(decision.refusal(), decision.reason());
        covered.push(*reason);
    }
    // `revoked` is part of the vocabulary, but nothing revokes tokens yet;
    // status list reasons need a list server: tests/status_list.rs.
    let status_list = [
        Reason::TokenInvalidated,
        Reason::TokenSuspended,
        Reason::TokenStatusUnknown,
        Reason::StatusListNotAllowed,
        Reason::StatusListUnavailable,
    ];
    // Introspection reasons need an endpoint: src/introspection/tests.rs.
    let introspection = [Reason::TokenInactive, Reason::IntrospectionUnavailable];
    let uncovered: Vec<Reason> = Reason::ALL
        .into_iter()
        .filter(|reason| {
            !covered.contains(reason)
                && *reason != Reason::Revoked
                && !status_list.contains(reason)
                && !introspection.contains(reason)
        })
        .collect();
    assert!(uncovered.is_empty(), "no case for {uncovered:?}");
}

#[test]
fn rejections_keep_their_rfc6750_kind() {
    let harness = Harness::new();
    let kind = |request: Request| {
        let decision = harness.decide(&request);
        denied(&decision).1.rejection.kind.clone()
    };
    assert_eq!(kind(Request::get("/required")), RejectionKind::NoToken);
    assert_eq!(
        kind(Request::get("/required").bearer("a").bearer("b")),
        RejectionKind::InvalidRequest
    );
    assert_eq!(
        kind(Request::get("/required").bearer("not.a.jwt")),
        RejectionKind::InvalidToken
    );
    assert_eq!(
        kind(Request::get("/scoped").bearer(&token(json!({ "scope": "x" })))),
        RejectionKind::InsufficientScope {
            required: Some("orders:read".into())
        }
    );
}

#[test]
fn required_allows_a_valid_token_with_its_identity() {
    let harness = Harness::new();
    let decision = harness.decide(&Request::get("/required/a").bearer(&token(json!({}))));
    let Decision::Forward {
        route,
        upstream,
        auth: Forwarded::Identity(identity),
    } = &decision
    else {
        panic!("expected allow, got {decision:?}");
    };
    assert_eq!(route.name, "required");
    assert_eq!(identity.subject(), Some("alice"));
    assert_eq!(harness.issuer(identity.issuer), "main");
    assert_eq!(*upstream, UpstreamRewrite::default(), "nothing to rewrite");
    assert_eq!(decision.outcome(), Some("allow"));
    assert_eq!(decision.reason(), None);
}

#[test]
fn optional_lets_a_missing_token_through_and_refuses_a_bad_one() {
    let harness = Harness::new();
    let decision = harness.decide(&Request::get("/optional"));
    assert!(
        matches!(&decision, Decision::Forward { route, auth: Forwarded::Anonymous, .. } if route.name == "optional"),
        "{decision:?}"
    );
    assert_eq!(decision.outcome(), Some("anonymous"));

    let decision = harness.decide(&Request::get("/optional").bearer(&token(json!({}))));
    assert!(
        matches!(
            decision,
            Decision::Forward {
                auth: Forwarded::Identity(_),
                ..
            }
        ),
        "{decision:?}"
    );

    let expired = token(json!({ "exp": NOW - 60 }));
    let decision = harness.decide(&Request::get("/optional").bearer(&expired));
    assert_eq!(denied(&decision).1.rejection.reason, Reason::Expired);
}

#[test]
fn off_reads_no_token_and_counts_no_decision() {
    let harness = Harness::new();
    let decision = harness.decide(&Request::get("/off").bearer("garbage"));
    assert!(
        matches!(&decision, Decision::Forward { route, auth: Forwarded::Anonymous, .. } if route.name == "off"),
        "{decision:?}"
    );
    assert_eq!(decision.outcome(), None, "an off route decides nothing");
    let metrics = Metrics::new();
    decision.record(&harness.snapshot, &metrics.requests);
    assert!(
        !String::from_utf8(metrics.render())
            .unwrap()
            .contains("jwtgate_auth_decisions_total{"),
        "nothing counted"
    );
}

/// The `WouldDeny` of an audit route; panics on anything else.
fn would_deny<'d>(decision: &'d Decision<'_>) -> &'d Failure {
    match decision {
        Decision::Forward {
            route,
            auth: Forwarded::WouldDeny(failure),
            ..
        } => {
            assert_eq!(route.name, "audit");
            failure
        }
        other => panic!("expected would_deny, got {other:?}"),
    }
}

#[test]
fn audit_decides_as_required_and_forwards_either_way() {
    let harness = Harness::new();
    let decision = harness.decide(&Request::get("/audit").bearer(&token(json!({}))));
    assert!(
        matches!(&decision, Decision::Forward { route, auth: Forwarded::Identity(_), .. } if route.name == "audit"),
        "a valid token is allowed with its identity: {decision:?}"
    );

    let missing = harness.decide(&Request::get("/audit"));
    let failure = would_deny(&missing);
    assert_eq!(failure.rejection.reason, Reason::MissingToken);
    assert_eq!(missing.outcome(), Some("would_deny"));
    assert_eq!(missing.reason(), Some("missing_token"));
    // Forwarded: the request counter has no refusal to count.
    assert_eq!(missing.refusal(), None);

    let invalid = harness.decide(&Request::get("/audit").bearer(&token(json!({ "aud": "x" }))));
    let failure = would_deny(&invalid);
    assert_eq!(
        (failure.rejection.reason, failure.check),
        (Reason::WrongAudience, "aud")
    );

    let unscoped = token(json!({ "scope": "orders:write" }));
    let insufficient = harness.decide(&Request::get("/audit").bearer(&unscoped));
    let failure = would_deny(&insufficient);
    assert_eq!(failure.rejection.reason, Reason::InsufficientScope);
    assert_eq!(
        failure
            .refused
            .as_ref()
            .and_then(|identity| identity.subject()),
        Some("alice"),
        "the refused identity is kept for the log, never forwarded"
    );

    let ambiguous = harness.decide(&Request::get("/audit").bearer("a").bearer("b"));
    assert_eq!(
        would_deny(&ambiguous).rejection.reason,
        Reason::AmbiguousToken
    );
}

#[test]
fn audit_never_blocks_on_missing_keys() {
    let harness = Harness::new();
    let remote = remote_token();
    let decision = harness.decide(&Request::get("/audit").bearer(&remote));
    let failure = would_deny(&decision);
    assert_eq!(failure.rejection.reason, Reason::JwksUnavailable);
    assert_eq!(
        failure.rejection.status(),
        503,
        "what required would answer"
    );
}

#[test]
fn would_deny_is_counted_with_the_reason_required_would_give() {
    let harness = Harness::new();
    let metrics = Metrics::new();
    let unscoped = token(json!({ "scope": "orders:write" }));
    harness
        .decide(&Request::get("/audit").bearer(&unscoped))
        .record(&harness.snapshot, &metrics.requests);
    harness
        .decide(&Request::get("/scoped").bearer(&unscoped))
        .record(&harness.snapshot, &metrics.requests);
    harness
        .decide(&Request::get("/audit"))
        .record(&harness.snapshot, &metrics.requests);
    let count = |labels: &[&str]| metrics.requests.decisions(labels);
    assert_eq!(
        count(&["audit", "main", "would_deny", "insufficient_scope"]),
        1
    );
    assert_eq!(count(&["scoped", "main", "deny", "insufficient_scope"]), 1);
    assert_eq!(count(&["audit", "_none", "would_deny", "missing_token"]), 1);
    assert_eq!(count(&["audit", "main", "deny", "insufficient_scope"]), 0);
}

#[test]
fn a_cache_hit_fails_the_same_check_as_a_fresh_verification() {
    let cache = TokenCache::new(
        &crate::auth::token_cache::CacheSettings {
            max_entries: 100,
            max_bytes: 1 << 20,
            ttl: std::time::Duration::from_secs(600),
        },
        prometheus::IntCounter::new("hits", "hits").unwrap(),
        prometheus::IntCounter::new("misses", "misses").unwrap(),
    );
    let harness = Harness::with_cache(Some(cache));
    let request = Request::get("/required").bearer(&token(json!({})));
    assert!(matches!(
        harness.decide(&request),
        Decision::Forward {
            auth: Forwarded::Identity(_),
            ..
        }
    ));
    harness.clock.advance(3600);
    let decision = harness.decide(&request);
    let (_, failure) = denied(&decision);
    assert_eq!(
        (failure.rejection.reason, failure.check),
        (Reason::Expired, "exp")
    );
}

#[test]
fn answers_before_authentication() {
    let harness = Harness::new();

    let long = format!("/required/{}", "a".repeat(2100));
    let decision = harness.decide(&Request::get(&long).bearer("ignored"));
    assert_eq!(decision.reason(), Some("uri_too_long"), "{decision:?}");
    assert_eq!(decision.refusal(), Some("uri_too_long"));
    assert!(matches!(
        decision,
        Decision::Refuse(Refusal::Limit(limits::LimitExceeded::UriTooLong))
    ));

    let decision = harness.decide(&Request::get("/required/a%2Fb"));
    assert!(
        matches!(
            decision,
            Decision::Refuse(Refusal::Target(TargetError::EncodedSlash))
        ),
        "{decision:?}"
    );
    let decision = harness.decide(&Request::get("*"));
    assert!(matches!(
        decision,
        Decision::Refuse(Refusal::Target(TargetError::InvalidTarget))
    ));
    let decision = harness.decide(&Request::get("/off").header("host", "a").header("host", "b"));
    assert_eq!(decision.reason(), Some("duplicate_host"));

    let decision = harness.decide(&Request::get("/reads").method(Method::DELETE));
    assert_eq!(
        decision.reason(),
        Some("method_not_allowed"),
        "{decision:?}"
    );
    assert!(matches!(
        decision,
        Decision::Refuse(Refusal::MethodNotAllowed { allow: "GET, HEAD" })
    ));

    let decision = harness.decide(&Request::get("/nowhere"));
    assert!(matches!(decision, Decision::NoRoute), "{decision:?}");
    assert_eq!((decision.outcome(), decision.reason()), (None, None));

    let preflight = Request::get("/browser/items")
        .method(Method::OPTIONS)
        .header("origin", "https://app.pipeline.test")
        .header("access-control-request-method", "POST");
    let decision = harness.decide(&preflight);
    assert!(
        matches!(&decision, Decision::Preflight { route, .. } if route.name == "browser"),
        "a preflight needs no token: {decision:?}"
    );
    assert_eq!(decision.outcome(), None);
}

#[test]
fn routing_reads_host_and_canonical_path_and_says_what_to_forward() {
    let harness = Harness::new();
    let decision = harness.decide(&Request::get("/x").header("host", "API.pipeline.test:8080"));
    assert!(
        matches!(&decision, Decision::Forward { route, auth: Forwarded::Anonymous, .. } if route.name == "hosted"),
        "{decision:?}"
    );

    let decision = harness.decide(&Request::get("/off/./a//b?q=1"));
    let Decision::Forward {
        upstream,
        auth: Forwarded::Anonymous,
        ..
    } = decision
    else {
        panic!("expected the off route");
    };
    assert_eq!(upstream.target.as_deref(), Some(&b"/off/a/b?q=1"[..]));
    assert_eq!(upstream.host, None);

    let decision = harness.decide(&Request::get("http://api.pipeline.test/y"));
    let Decision::Forward {
        route,
        upstream,
        auth: Forwarded::Anonymous,
    } = decision
    else {
        panic!("expected the hosted route");
    };
    assert_eq!(route.name, "hosted");
    assert_eq!(upstream.target.as_deref(), Some(&b"/y"[..]));
    assert_eq!(upstream.host.as_deref(), Some(&b"api.pipeline.test"[..]));
}

#[test]
fn a_token_is_found_where_the_route_says() {
    let harness = Harness::new();
    let in_query = format!("/query/a?x=1&access_token={}", token(json!({})));
    let decision = harness.decide(&Request::get(&in_query));
    assert!(
        matches!(&decision, Decision::Forward { route, auth: Forwarded::Identity(_), .. } if route.name == "query"),
        "{decision:?}"
    );
    let elsewhere = in_query.replacen("/query", "/required", 1);
    let decision = harness.decide(&Request::get(&elsewhere));
    assert_eq!(
        denied(&decision).1.rejection.reason,
        Reason::MissingToken,
        "the query is no token source unless the route says so"
    );
}

/// The `adapter` label of `jwtgate_requests_total`: every adapter that
/// counts requests has a slot in the route series, the CLI none.
#[test]
fn adapters_that_count_requests_have_their_label() {
    use crate::telemetry::metrics::ADAPTERS;
    let counted = [Adapter::Proxy, Adapter::Authz, Adapter::AuthzGrpc];
    assert_eq!(counted.map(Adapter::as_str), ADAPTERS);
    assert!(!ADAPTERS.contains(&Adapter::Cli.as_str()));
}
