//! Remote keys against a real OpenID Provider (`tests/idp`, oidc-provider):
//! discovery, JWKS fetching, key rotation, stale-if-error, the disk cache,
//! an unreachable provider, unknown-`kid` floods and a slow provider.
//!
//! Needs Node.js and `npm ci --prefix tests/idp`; without them every test
//! here fails with a message saying so.
//!
//! No assertion is about timing: waits are bounded polling loops with
//! generous deadlines, and the one client timeout (the slow-IdP test) is far
//! from both the bound it checks and the IdP's delay.

mod common;
#[path = "common/idp.rs"]
mod idp;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use idp::{Idp, IdpConfig, genkey, write_keys};
use jwtgate::jose::Algorithm;
use serde_json::{Value, json};

const AUDIENCE: &str = idp::RESOURCE;
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
const FETCHES: &str = "jwtgate_jwks_fetch_total";

/// The gateway config of these tests: one discovery issuer, one route that
/// needs `orders:read` and forwards `sub` and `client_id`. `refresh` and
/// `fetch` are YAML flow mappings.
fn config(issuer: &str, refresh: &str, fetch: &str, keys_cache_dir: Option<&Path>) -> String {
    let mut config = Config::new().default_server();
    if let Some(dir) = keys_cache_dir {
        config = config.section(&format!("keys_cache_dir: \"{}\"", dir.display()));
    }
    let refresh = format!("refresh: {refresh}");
    config
        .issuers(&idp::issuer_yaml(issuer, fetch, AUDIENCE, &[&refresh]))
        .routes(&idp::api_route(
            "orders:read",
            "{ sub: X-User-Id, client_id: X-Client-Id }",
        ))
}

const HTTP: &str = "{ allow_http: true }";

/// The `refresh` of most tests: keys refreshed about every second, an
/// unknown kid refetched at most every 30 s.
const REFRESH: &str = "{ min_refresh: 1s, unknown_kid_interval: 30s }";

/// An upstream and a gateway in front of it, configured by `config(issuer,
/// refresh, fetch, None)`. Does not wait for readiness.
async fn start_gateway(issuer: &str, refresh: &str, fetch: &str) -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&config(issuer, refresh, fetch, None), &upstream).await;
    (upstream, gateway)
}

async fn readyz(gateway: &Gateway) -> u16 {
    gateway
        .client()
        .get(gateway.admin_url("/readyz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("GET /readyz")
        .status()
        .as_u16()
}

/// Polls `/readyz` until it says 200.
async fn wait_ready(gateway: &Gateway) {
    poll(DEADLINE, POLL, || async {
        match readyz(gateway).await {
            200 => Ok(()),
            _ => Err(format!(
                "/readyz did not become 200 within {DEADLINE:?}; log:\n{}",
                gateway.log()
            )),
        }
    })
    .await
}

/// Status of `GET /api/orders` with the token.
async fn status(gateway: &Gateway, token: &str) -> u16 {
    gateway
        .get("/api/orders", Some(token))
        .await
        .status()
        .as_u16()
}

/// Header (0) or claims (1) of a compact JWS.
fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("three-part token");
    let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url JWT part");
    serde_json::from_slice(&bytes).expect("JSON JWT part")
}

fn kid_of(token: &str) -> String {
    jwt_part(token, 0)["kid"]
        .as_str()
        .expect("kid in the header")
        .to_string()
}

/// An RS256 token for `issuer` signed with the fixture key under `kid`:
/// well-formed and within its lifetime, but signed by no key of that issuer.
fn foreign_token(issuer: &str, kid: &str) -> String {
    let extra = json!({
        "aud": AUDIENCE,
        "client_id": "jwtgate-test",
        "scope": "orders:read",
        "exp": now() + 600,
    });
    sign(
        Algorithm::RS256,
        "rsa.pem",
        kid,
        claims_with(issuer, "intruder", extra),
    )
}

/// 1. Discovery end to end: a token from the real IdP goes through, its
///    claims reach the upstream, and the key metrics and IdP counters show
///    discovery and a JWKS fetch.
#[tokio::test]
async fn discovery_end_to_end_with_a_real_idp() {
    let idp = Idp::start().await;
    let (upstream, gateway) = start_gateway(&idp.issuer(), REFRESH, HTTP).await;
    wait_ready(&gateway).await;

    let token = idp.token("orders:read").await;
    let claims = jwt_part(&token, 1);
    assert_eq!(claims["iss"], idp.issuer().as_str());
    let response = gateway.get("/api/orders", Some(&token)).await;
    assert_eq!(
        response.status(),
        200,
        "{}; log:\n{}",
        response.text().await.unwrap_or_default(),
        gateway.log()
    );
    let seen = upstream.last();
    assert_eq!(seen.path, "/api/orders");
    assert_eq!(
        seen.header("x-user-id"),
        claims["sub"].as_str(),
        "X-User-Id is the token's sub"
    );
    assert_eq!(seen.header("x-client-id"), Some(idp::CLIENT_ID));

    assert_eq!(readyz(&gateway).await, 200);
    let success = [("issuer", "idp"), ("result", "success")];
    assert!(
        gateway.metric(FETCHES, &success).await >= 1.0,
        "{FETCHES}{success:?} is below 1"
    );
    assert_eq!(
        gateway
            .metric("jwtgate_jwks_keys", &[("issuer", "idp")])
            .await,
        1.0,
        "the IdP publishes one key"
    );
    let age = gateway
        .metric("jwtgate_jwks_age_seconds", &[("issuer", "idp")])
        .await;
    assert!(
        (0.0..60.0).contains(&age),
        "keys fetched moments ago, age {age}"
    );
    let (discovery, jwks, _) = idp.stats().await;
    assert!(discovery >= 1, "the IdP saw no discovery request");
    assert!(jwks >= 1, "the IdP saw no JWKS request");

    // A real token without the route's scope.
    let writer = idp.token("orders:write").await;
    assert_eq!(jwt_part(&writer, 1)["scope"], "orders:write");
    assert_eq!(status(&gateway, &writer).await, 403);
    gateway
        .expect_decisions(&[("reason", "insufficient_scope")], 1.0)
        .await;
    assert_eq!(upstream.count(), 1, "the 403 never reached the upstream");
}

/// 2. Key rotation (docs/guides/identity-providers.md recipe): the IdP restarts on the same port with a
///    new signing key while the old one stays published, then retires the
///    old one. No token is refused while its key is published.
#[tokio::test]
async fn key_rotation_rejects_no_valid_token() {
    let keys = tempfile::tempdir().expect("tempdir");
    let key_a = genkey("RS256", "key-a");
    // RS256 too: the test IdP (oidc-provider's default client metadata)
    // refuses token requests when its key set has no RS256 key.
    let key_b = genkey("RS256", "key-b");
    let mut idp = Idp::start_with(IdpConfig {
        keys_file: Some(write_keys(keys.path(), std::slice::from_ref(&key_a))),
        ..Default::default()
    })
    .await;
    let port = idp.port();
    let issuer = idp.issuer();
    // A generous unknown_kid_wait keeps a loaded test machine from turning
    // a slow refetch into a 401; the behaviour under test is the refetch.
    let (upstream, gateway) = start_gateway(
        &issuer,
        "{ min_refresh: 1s, unknown_kid_interval: 30s, unknown_kid_wait: 10s }",
        HTTP,
    )
    .await;
    wait_ready(&gateway).await;

    // (phase, kid, status) of every request; all must be 200.
    let mut outcomes: Vec<(&str, String, u16)> = Vec::new();

    // Phase 1: [A].
    let token_a = idp.token("orders:read").await;
    assert_eq!(kid_of(&token_a), "key-a");
    outcomes.push(("[A]", kid_of(&token_a), status(&gateway, &token_a).await));

    // Phase 2: [B, A] on the same port: B signs, A is still published.
    idp.stop();
    idp = Idp::start_with(IdpConfig {
        port,
        keys_file: Some(write_keys(keys.path(), &[key_b.clone(), key_a.clone()])),
        ..Default::default()
    })
    .await;
    assert_eq!(idp.issuer(), issuer, "same port, same issuer");
    let token_b = idp.token("orders:read").await;
    assert_eq!(kid_of(&token_b), "key-b");
    // The gateway only knows A: this unknown kid must trigger the refetch.
    outcomes.push(("[B,A]", kid_of(&token_b), status(&gateway, &token_b).await));
    outcomes.push(("[B,A]", kid_of(&token_a), status(&gateway, &token_a).await));
    let token_b2 = idp.token("orders:read").await;
    outcomes.push((
        "[B,A]",
        kid_of(&token_b2),
        status(&gateway, &token_b2).await,
    ));

    // Phase 3: [B] only, A retired.
    idp.stop();
    idp = Idp::start_with(IdpConfig {
        port,
        keys_file: Some(write_keys(keys.path(), std::slice::from_ref(&key_b))),
        ..Default::default()
    })
    .await;
    for _ in 0..3 {
        let token = idp.token("orders:read").await;
        assert_eq!(kid_of(&token), "key-b");
        outcomes.push(("[B]", kid_of(&token), status(&gateway, &token).await));
    }
    outcomes.push(("[B]", kid_of(&token_b), status(&gateway, &token_b).await));

    let refused: Vec<_> = outcomes.iter().filter(|(_, _, s)| *s != 200).collect();
    assert!(
        refused.is_empty(),
        "tokens refused while their key was published: {refused:?}\nall: {outcomes:?}\nlog:\n{}",
        gateway.log()
    );
    assert_eq!(upstream.count(), outcomes.len());
    assert_eq!(
        gateway.metric(DECISIONS, &[("outcome", "deny")]).await,
        0.0,
        "no deny decision at all"
    );
}

/// 3. The IdP goes away while the gateway runs: refreshes fail, and the last
///    good keys keep being served (stale-if-error).
#[tokio::test]
async fn idp_outage_serves_the_last_good_keys() {
    let mut idp = Idp::start_with(IdpConfig {
        jwks_cache_control: Some("max-age=1".into()),
        ..Default::default()
    })
    .await;
    let (_upstream, gateway) = start_gateway(&idp.issuer(), REFRESH, HTTP).await;
    wait_ready(&gateway).await;

    let tokens = [
        idp.token("orders:read").await,
        idp.token("orders:read").await,
    ];
    assert_eq!(status(&gateway, &tokens[0]).await, 200, "before the outage");

    idp.stop();
    for token in &tokens {
        assert_eq!(
            status(&gateway, token).await,
            200,
            "right after the IdP stopped"
        );
    }
    // The keys are refreshed about every second: the next attempt fails.
    let network_failures = [("issuer", "idp"), ("result", "network")];
    gateway
        .expect_metric_at_least(FETCHES, &network_failures, 1.0)
        .await;
    for token in &tokens {
        assert_eq!(
            status(&gateway, token).await,
            200,
            "after a failed refresh; log:\n{}",
            gateway.log()
        );
    }
    assert_eq!(
        readyz(&gateway).await,
        200,
        "stale keys are still usable keys"
    );
    let log = gateway.log();
    assert!(
        log.contains("stale-if-error"),
        "the log does not mention stale-if-error:\n{log}"
    );
}

/// 4. The gateway restarts while the IdP is down: the keys come from the
///    disk cache written by the previous run.
#[tokio::test]
async fn restart_during_an_outage_uses_the_disk_cache() {
    let cache = tempfile::tempdir().expect("tempdir");
    let cache_dir = cache.path().join("keys");
    let mut idp = Idp::start().await;
    let upstream = Upstream::start();
    let template = config(&idp.issuer(), REFRESH, HTTP, Some(&cache_dir));
    let token = idp.token("orders:read").await;

    let first = Gateway::start(&template, &upstream).await;
    wait_ready(&first).await;
    assert_eq!(status(&first, &token).await, 200, "gateway A");
    let cached = cache_dir.join("idp.jwks.json");
    let deadline = Instant::now() + DEADLINE;
    while !cached.is_file() {
        assert!(
            Instant::now() < deadline,
            "{} was not written; log:\n{}",
            cached.display(),
            first.log()
        );
        tokio::time::sleep(POLL).await;
    }
    drop(first);
    idp.stop();

    let second = Gateway::start(&template, &upstream).await;
    wait_ready(&second).await;
    assert_eq!(
        status(&second, &token).await,
        200,
        "gateway B, IdP down; log:\n{}",
        second.log()
    );
    let log = second.log();
    assert!(
        log.contains("loaded cached keys"),
        "gateway B's log does not say it loaded cached keys:\n{log}"
    );
}

/// 5. An IdP that was never reachable, and no cache: 503 with Retry-After,
///    not ready, and the failure is counted.
#[tokio::test]
async fn unreachable_idp_without_cache_is_unavailable() {
    let issuer = format!("http://127.0.0.1:{}", free_port());
    let (upstream, gateway) = start_gateway(
        &issuer,
        REFRESH,
        "{ allow_http: true, connect_timeout: 1s, timeout: 2s }",
    )
    .await;

    let token = foreign_token(&issuer, "rsa-1");
    let response = gateway.get("/api/orders", Some(&token)).await;
    assert_eq!(response.status(), 503, "log:\n{}", gateway.log());
    assert!(
        response.headers().contains_key("retry-after"),
        "no Retry-After: {:?}",
        response.headers()
    );
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    gateway
        .expect_decisions(&[("issuer", "idp"), ("reason", "jwks_unavailable")], 1.0)
        .await;
    let network_failures = [("issuer", "idp"), ("result", "network")];
    gateway
        .expect_metric_at_least(FETCHES, &network_failures, 1.0)
        .await;
    assert_eq!(readyz(&gateway).await, 503);
    assert_eq!(
        gateway
            .metric("jwtgate_jwks_age_seconds", &[("issuer", "idp")])
            .await,
        -1.0,
        "never fetched"
    );
    assert_eq!(gateway.metric(FETCHES, &[("result", "success")]).await, 0.0);
    assert_eq!(upstream.count(), 0);
}

/// 6. A flood of tokens with random kids costs the IdP at most one JWKS
///    fetch (single flight plus the unknown_kid_interval rate limit).
#[tokio::test]
async fn unknown_kid_flood_is_rate_limited() {
    const FLOOD: usize = 200;
    const AT_ONCE: usize = 20;
    let idp = Idp::start().await;
    let (_upstream, gateway) = start_gateway(&idp.issuer(), REFRESH, HTTP).await;
    wait_ready(&gateway).await;
    let token = idp.token("orders:read").await;
    assert_eq!(status(&gateway, &token).await, 200);
    idp.reset_stats().await;
    const MISSES: &str = "jwtgate_token_cache_misses_total";
    let misses_before = gateway.metric(MISSES, &[]).await;

    let tokens: Vec<String> = (0..FLOOD)
        .map(|_| {
            foreign_token(
                &idp.issuer(),
                &jwtgate::answers::request_id::new_request_id(),
            )
        })
        .collect();
    let mut statuses = Vec::new();
    for chunk in tokens.chunks(AT_ONCE) {
        let requests: Vec<_> = chunk
            .iter()
            .map(|token| {
                let request = gateway
                    .client()
                    .get(gateway.url("/api/orders"))
                    .bearer_auth(token)
                    .timeout(Duration::from_secs(30));
                tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
            })
            .collect();
        for request in requests {
            statuses.push(request.await.expect("task").expect("flood request"));
        }
    }
    assert!(
        statuses.iter().all(|s| *s == 401),
        "every random kid is refused with 401: {statuses:?}"
    );
    gateway
        .expect_decisions(
            &[("issuer", "idp"), ("reason", "unknown_kid")],
            FLOOD as f64,
        )
        .await;
    let (discovery, jwks, _) = idp.stats().await;
    assert!(
        jwks <= 1,
        "{FLOOD} unknown kids caused {jwks} JWKS fetches (at most 1 allowed)"
    );
    // The IdP's keys didn't change, so no request was verified a second
    // time after waiting for the refetch: one cache lookup each.
    assert_eq!(
        gateway.metric(MISSES, &[]).await - misses_before,
        FLOOD as f64,
        "each flood token is looked up once"
    );
    assert!(
        discovery <= 1,
        "{discovery} discovery requests during the flood"
    );
    assert_eq!(
        status(&gateway, &token).await,
        200,
        "the real token still works"
    );
}

/// 7. A slow IdP: a token with a new kid waits for the refetch only up to
///    unknown_kid_wait (1s by default), not until the IdP answers (8s).
#[tokio::test]
async fn slow_idp_bounds_the_unknown_kid_wait() {
    const IDP_DELAY_MS: u64 = 8_000;
    const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
    let idp = Idp::start_with(IdpConfig {
        jwks_delay_ms: Some(IDP_DELAY_MS),
        ..Default::default()
    })
    .await;
    let (_upstream, gateway) =
        start_gateway(&idp.issuer(), REFRESH, "{ allow_http: true, timeout: 60s }").await;
    // The first fetch is slow too.
    wait_ready(&gateway).await;
    let (_, jwks_before, _) = idp.stats().await;

    let token = foreign_token(&idp.issuer(), "rotated-kid");
    let response = gateway
        .client()
        .get(gateway.url("/api/orders"))
        .bearer_auth(&token)
        .timeout(CLIENT_TIMEOUT)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no answer within {CLIENT_TIMEOUT:?} while the IdP takes {IDP_DELAY_MS} ms: {e}; log:\n{}",
                gateway.log()
            )
        });
    assert_eq!(response.status(), 401);
    gateway
        .expect_decisions(&[("issuer", "idp"), ("reason", "unknown_kid")], 1.0)
        .await;
    // The request did ask for a refetch: it was the wait that was bounded.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, jwks, _) = idp.stats().await;
        if jwks > jwks_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unknown kid triggered no JWKS refetch; log:\n{}",
            gateway.log()
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn an_optional_issuer_holds_readiness_back_only_during_the_startup_grace() {
    let idp = Idp::start().await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let template = config(&idp.issuer(), "{ min_refresh: 1s }", HTTP, None)
        .replace(
            "admin: { addr: \"127.0.0.1:{ADMIN}\" }",
            "admin: { addr: \"127.0.0.1:{ADMIN}\", startup_grace: 8s }",
        )
        .replace(
            "routes:",
            &format!(
                "  - name: partner\n    issuer: \"{dead}\"\n    discovery: true\n    fetch: {{ allow_http: true, connect_timeout: 1s }}\n    algorithms: [RS256]\n    audiences: [\"{AUDIENCE}\"]\n    required: false\nroutes:"
            ),
        );
    let upstream = Upstream::start();
    let gateway = Gateway::start(&template, &upstream).await;

    // Within the grace period the optional issuer still counts.
    let response = gateway
        .client()
        .get(gateway.admin_url("/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(response.status(), 503);
    let body = response.text().await.expect("body");
    assert!(body.contains("partner"), "{body}");

    // After it, only required issuers do: ready, though partner has no keys.
    wait_ready(&gateway).await;
    let token = idp.token("orders:read").await;
    assert_eq!(status(&gateway, &token).await, 200);
}
