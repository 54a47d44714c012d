//! Rate limits through the real binary: the 429 and its `Retry-After` and
//! `RateLimit` headers, a login route with `auth.mode: off` limited by
//! client address (and a spoofed `X-Forwarded-For` that buys nothing), an
//! API limited by `sub`, and two replicas sharing one budget through a
//! real `redis-server`, then each enforcing on its own when it stops.
//! Limits here are per hour, so no request can refill a budget while a
//! test runs; burst and refill timing are unit-tested against a manual
//! clock (src/state/rate_limit.rs).

mod common;
#[path = "common/redis.rs"]
mod redis;

use common::*;
use redis::Redis;
use serde_json::json;

const ISS: &str = "https://issuer.ratelimit.test";

const ROUTES: &str = r#"
  - name: refresh
    match: { path_prefix: /oauth/token }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
    rate_limits: [{ name: per-client, rate: 2/h, key: client_address }]
  - name: api
    match: { path_prefix: /api }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main] }
    rate_limits: [{ name: per-user, rate: 2/h, key: "claim:sub" }]
"#;

fn config(trusted: &str, redis: Option<&str>) -> String {
    let mut yaml = Config::main(ISS)
        .server(&format!("trusted_proxies: {trusted}"))
        .routes(ROUTES);
    if let Some(url) = redis {
        yaml.push_str(&format!(
            "redis: {{ url: \"{url}\" }}\nrate_limit: {{ redis: {{ key_prefix: jwtgate-rl-test, sync_interval: 50ms }} }}\n"
        ));
    }
    yaml
}

/// A token for `sub` that lasts the whole test: these limits are per hour.
fn token_of(sub: &str) -> String {
    token(ISS, sub, json!({ "iat": now() - 10, "exp": now() + 3600 }))
}

/// Polls until `name` reaches at least `at_least`; panics after a generous
/// bound (that it happens is asserted, never how fast).
async fn until_metric(gateway: &Gateway, name: &str, at_least: f64) {
    gateway.expect_metric_at_least(name, &[], at_least).await;
}

#[tokio::test]
async fn a_refresh_endpoint_is_limited_per_client_with_a_429_and_ratelimit_headers() {
    let (upstream, gateway) = start(&config("[]", None)).await;
    let head = |id: &str| {
        format!("POST /oauth/token HTTP/1.1\nHost: gw.test\nX-Request-Id: {id}\nContent-Length: 0")
    };
    for n in 0..2 {
        let response = raw_request(gateway.proxy_addr(), &head(&format!("rl-ok-{n}"))).await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let response = raw_request(gateway.proxy_addr(), &head("rl-refused")).await;
    assert_eq!(response.status, 429, "{}", response.text());
    let retry: u64 = response
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    // Two of two per hour spent at once: the next one is half an hour away.
    assert!((1790..=1800).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        response.header("ratelimit-policy"),
        Some("\"per-client\";q=2;w=3600")
    );
    assert_eq!(
        response.header("ratelimit"),
        Some(format!("\"per-client\";r=0;t={retry}").as_str())
    );
    let body = response.json();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["request_id"], "rl-refused");
    assert_eq!(upstream.count(), 2, "the refused request never reached it");

    gateway
        .expect_metric(
            "jwtgate_rate_limited_total",
            &[("route", "refresh"), ("limit", "per-client")],
            1.0,
        )
        .await;
    gateway
        .expect_access_line("rl-refused", &["status=429", "reason=\"rate_limited\""])
        .await;
    // Not an authentication decision.
    assert_eq!(
        gateway.metric(DECISIONS, &[("route", "refresh")]).await,
        0.0
    );
}

#[tokio::test]
async fn a_spoofed_x_forwarded_for_buys_no_new_budget() {
    let (upstream, gateway) = start(&config("[]", None)).await;
    let spoofed = |n: u32| {
        format!(
            "POST /oauth/token HTTP/1.1\nHost: gw.test\nX-Forwarded-For: 198.51.100.{n}\nX-Real-IP: 198.51.100.{n}\nContent-Length: 0"
        )
    };
    assert_eq!(
        raw_request(gateway.proxy_addr(), &spoofed(1)).await.status,
        200
    );
    assert_eq!(
        raw_request(gateway.proxy_addr(), &spoofed(2)).await.status,
        200
    );
    // A third "client" is still the same untrusted peer.
    assert_eq!(
        raw_request(gateway.proxy_addr(), &spoofed(3)).await.status,
        429
    );
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let (_upstream, gateway) = start(&config("[127.0.0.0/8]", None)).await;
    // The client is the right-most untrusted hop; what it claims left of
    // that is not believed either.
    let from = |chain: &str| {
        format!(
            "POST /oauth/token HTTP/1.1\nHost: gw.test\nX-Forwarded-For: {chain}\nContent-Length: 0"
        )
    };
    for chain in ["203.0.113.7", "10.1.1.1, 203.0.113.7"] {
        assert_eq!(
            raw_request(gateway.proxy_addr(), &from(chain)).await.status,
            200
        );
    }
    assert_eq!(
        raw_request(gateway.proxy_addr(), &from("10.2.2.2, 203.0.113.7"))
            .await
            .status,
        429
    );
    assert_eq!(
        raw_request(gateway.proxy_addr(), &from("203.0.113.8"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn an_api_is_limited_per_subject() {
    let (upstream, gateway) = start(&config("[]", None)).await;
    let (alice, bob) = (token_of("alice"), token_of("bob"));
    assert_eq!(gateway.status("/api/a", Some(&alice)).await, 200);
    assert_eq!(gateway.status("/api/b", Some(&alice)).await, 200);
    let refused = gateway.get("/api/c", Some(&alice)).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused.headers()["ratelimit-policy"],
        "\"per-user\";q=2;w=3600"
    );
    // A new token for the same subject is the same budget; another subject
    // has its own; no token is refused by authentication, not the limit.
    assert_eq!(
        gateway.status("/api/d", Some(&token_of("alice"))).await,
        429
    );
    assert_eq!(gateway.status("/api/e", Some(&bob)).await, 200);
    assert_eq!(gateway.status("/api/f", None).await, 401);
    assert_eq!(upstream.count(), 3);
    gateway
        .expect_metric(
            "jwtgate_rate_limited_total",
            &[("route", "api"), ("limit", "per-user")],
            2.0,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_a_budget_through_redis_enforce_alone_while_it_is_away_and_share_again()
{
    let mut redis = Redis::start().await;
    let upstream = Upstream::start();
    let yaml = config("[]", Some(&redis.url()));
    let a = Gateway::start(&yaml, &upstream).await;
    let b = Gateway::start(&yaml, &upstream).await;
    // What a replica allows before its first connection stays its own.
    until_metric(&a, "jwtgate_rate_limit_redis_connected", 1.0).await;
    until_metric(&b, "jwtgate_rate_limit_redis_connected", 1.0).await;

    // Each step waits for the one sync message the step before caused,
    // so the test asserts sharing, never how fast it is.
    let alice = token_of("alice");
    assert_eq!(a.status("/api/x", Some(&alice)).await, 200);
    until_metric(&b, "jwtgate_rate_limit_redis_adopted_total", 1.0).await;
    // B knows A spent half of alice's budget: one request is left.
    assert_eq!(b.status("/api/x", Some(&alice)).await, 200);
    until_metric(&a, "jwtgate_rate_limit_redis_adopted_total", 1.0).await;
    assert_eq!(a.status("/api/x", Some(&alice)).await, 429);
    assert_eq!(b.status("/api/x", Some(&alice)).await, 429);
    let keys = redis.cli(&["--scan", "--pattern", "jwtgate-rl-test:tat:*"]);
    assert_eq!(keys.lines().count(), 1, "one shared key for alice: {keys}");
    let ttl: i64 = redis
        .cli(&["PTTL", keys.trim()])
        .trim()
        .parse()
        .expect("a TTL");
    assert!(ttl > 0, "the key expires when its budget is back: {ttl}");

    redis.stop();
    until_metric(&a, "jwtgate_rate_limit_redis_errors_total", 1.0).await;
    a.expect_metric("jwtgate_rate_limit_redis_connected", &[], 0.0)
        .await;
    // Without Redis, A enforces each limit on its own: nobody is refused
    // for Redis being away, and a fresh subject still gets no more than
    // its budget.
    let carol = token_of("carol");
    assert_eq!(a.status("/api/x", Some(&carol)).await, 200);
    assert_eq!(a.status("/api/x", Some(&carol)).await, 200);
    assert_eq!(a.status("/api/x", Some(&carol)).await, 429);
    assert_eq!(a.status("/api/x", Some(&alice)).await, 429);

    // Redis returns (empty): both replicas reconnect and share again.
    redis.restart().await;
    a.expect_metric("jwtgate_rate_limit_redis_connected", &[], 1.0)
        .await;
    b.expect_metric("jwtgate_rate_limit_redis_connected", &[], 1.0)
        .await;
    let dave = token_of("dave");
    assert_eq!(a.status("/api/x", Some(&dave)).await, 200);
    until_metric(&b, "jwtgate_rate_limit_redis_adopted_total", 2.0).await;
    assert_eq!(b.status("/api/x", Some(&dave)).await, 200);
    until_metric(&a, "jwtgate_rate_limit_redis_adopted_total", 2.0).await;
    assert_eq!(a.status("/api/x", Some(&dave)).await, 429);
    assert_eq!(
        upstream.count(),
        6,
        "alice 2 and dave 2 across both replicas, carol 2"
    );
}

#[tokio::test]
async fn a_reload_keeps_the_counters_and_a_changed_rate_limit_block_needs_a_restart() {
    let (upstream, gateway) = start(&config("[]", None)).await;
    let alice = token_of("alice");
    assert_eq!(gateway.status("/api/x", Some(&alice)).await, 200);
    assert_eq!(gateway.status("/api/x", Some(&alice)).await, 200);
    assert_eq!(gateway.status("/api/x", Some(&alice)).await, 429);

    // Same route and limit names, a larger burst and one more route: the
    // budget alice spent is still spent, and the new burst applies to it.
    let grown = config("[]", None)
        .replace(
            "{ name: per-user, rate: 2/h, key: \"claim:sub\" }",
            "{ name: per-user, rate: 2/h, burst: 3, key: \"claim:sub\" }",
        )
        .replace(
            "routes:\n",
            "routes:\n  - name: extra\n    match: { path_prefix: /extra }\n    upstream: { addrs: [\"{UPSTREAM}\"] }\n    auth: { mode: off }\n",
        );
    std::fs::write(gateway.config_path(), gateway.render(&grown, &upstream)).expect("write");
    let (code, body) = gateway.reload().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        gateway.status("/extra", None).await,
        200,
        "the new config is served"
    );
    assert_eq!(gateway.status("/api/x", Some(&alice)).await, 200);
    assert_eq!(gateway.status("/api/x", Some(&alice)).await, 429);

    let restart_only = format!("{grown}rate_limit: {{ max_keys: 4096 }}\n");
    std::fs::write(
        gateway.config_path(),
        gateway.render(&restart_only, &upstream),
    )
    .expect("write");
    let (code, body) = gateway.reload().await;
    assert_ne!(code, 200, "{body}");
    assert!(body.contains("rate_limit: max_keys 1048576"), "{body}");
    assert!(body.contains("needs a restart"), "{body}");
}
