//! Hot reload against the real binary: `POST /-/reload`, SIGHUP and
//! `run --watch` (a rewritten file and a Kubernetes-style `..data` symlink
//! swap); reloads under load that never fail a request; a cached token
//! judged by the new issuer rules at once; broken and restart-only configs
//! refused while the running one keeps serving; remote keys kept across a
//! reload.
//!
//! No assertion is about timing: waits are bounded polling loops.

mod common;
#[path = "common/idp.rs"]
mod idp;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use idp::Idp;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
const RELOADS: &str = "jwtgate_config_reloads_total";
const CACHE_HITS: &str = "jwtgate_token_cache_hits_total";

/// One issuer and two routes; `{SCOPE}`, `{CLAIMS}`, `{ROUTE}` and
/// `{PREFIX}` vary between the two configs.
const ROUTES: &str = r#"
  - name: orders
    match: { path_prefix: /orders }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main], scopes: { all_of: [{SCOPE}] } }
    forward: { claims: {CLAIMS} }
  - name: {ROUTE}
    match: { path_prefix: {PREFIX} }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main] }
    forward: { claims: {CLAIMS} }
"#;

/// Config A: `/orders` needs `read`; `/legacy` exists; `sub` and `role`
/// go to X-User-Id and X-User-Role.
fn config_a() -> String {
    Config::main(ISS)
        .routes(ROUTES)
        .replace("{SCOPE}", "read")
        .replace("{CLAIMS}", "{ sub: X-User-Id, role: X-User-Role }")
        .replace("{ROUTE}", "legacy")
        .replace("{PREFIX}", "/legacy")
}

/// Config B: `/orders` needs `write`; `/reports` instead of `/legacy`;
/// `sub` and `email` go to X-Subject and X-Email.
fn config_b() -> String {
    Config::main(ISS)
        .routes(ROUTES)
        .replace("{SCOPE}", "write")
        .replace("{CLAIMS}", "{ sub: X-Subject, email: X-Email }")
        .replace("{ROUTE}", "reports")
        .replace("{PREFIX}", "/reports")
}

fn token_of(scope: &str, audience: &str) -> String {
    let identity = json!({
        "aud": audience,
        "role": "clerk",
        "email": "user-1@example.test",
        "scope": scope,
        "exp": now() + 3600,
    });
    token(ISS, "user-1", identity)
}

/// Polls until `GET path` answers `wanted`.
async fn wait_for_status(gateway: &Gateway, path: &str, token: Option<&str>, wanted: u16) {
    poll(DEADLINE, POLL, || async {
        let status = gateway.status(path, token).await;
        if status == wanted {
            return Ok(());
        }
        Err(format!(
            "GET {path} is still {status}, not {wanted}, after {DEADLINE:?}; log:\n{}",
            gateway.log()
        ))
    })
    .await
}

// ---------------------------------------------------------------------------
// Under load
// ---------------------------------------------------------------------------

/// Which identity headers the upstream saw for a request.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    A,
    B,
}

/// The identity headers of exactly one config's plan, none of the other's.
fn plan_of(recorded: &Recorded) -> Option<Plan> {
    let a = [("x-user-id", "user-1"), ("x-user-role", "clerk")];
    let b = [("x-subject", "user-1"), ("x-email", "user-1@example.test")];
    let exactly = |mine: &[(&str, &str)], theirs: &[(&str, &str)]| {
        mine.iter()
            .all(|(name, value)| recorded.header_all(name) == [*value])
            && theirs.iter().all(|(name, _)| !recorded.has_header(name))
    };
    if exactly(&a, &b) {
        Some(Plan::A)
    } else if exactly(&b, &a) {
        Some(Plan::B)
    } else {
        None
    }
}

/// The requests each client cycles through, and what each config answers.
struct Probe {
    prefix: &'static str,
    read_only: bool,
    /// Status under config A and config B.
    a: u16,
    b: u16,
}

const PROBES: [Probe; 4] = [
    Probe {
        prefix: "/orders",
        read_only: true,
        a: 200,
        b: 403,
    },
    Probe {
        prefix: "/orders",
        read_only: false,
        a: 200,
        b: 200,
    },
    Probe {
        prefix: "/legacy",
        read_only: false,
        a: 200,
        b: 404,
    },
    Probe {
        prefix: "/reports",
        read_only: false,
        a: 404,
        b: 200,
    },
];

const CLIENTS: usize = 4;
/// Per client: the load stops with the reloads, or here at the latest.
const MAX_REQUESTS_PER_CLIENT: usize = 20_000;
const RELOAD_COUNT: usize = 100;

#[tokio::test]
async fn reloading_100_times_under_load_fails_no_request() {
    let upstream = Upstream::start();
    let gateway = Arc::new(Gateway::start(&config_a(), &upstream).await);
    let read_only = Arc::new(token_of("read", "api"));
    let read_write = Arc::new(token_of("read write", "api"));
    let reloading = Arc::new(AtomicBool::new(true));

    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (gateway, reloading) = (gateway.clone(), reloading.clone());
            let (read_only, read_write) = (read_only.clone(), read_write.clone());
            tokio::spawn(async move {
                // (path, probe index, status) of every request.
                let mut answers = Vec::new();
                let mut n = 0;
                while reloading.load(Ordering::Relaxed) && n < MAX_REQUESTS_PER_CLIENT {
                    let index = n % PROBES.len();
                    let probe = &PROBES[index];
                    let path = format!("{}/c{client}-r{n}", probe.prefix);
                    let token = if probe.read_only {
                        &read_only
                    } else {
                        &read_write
                    };
                    let response = gateway
                        .client()
                        .get(gateway.url(&path))
                        .bearer_auth(token.as_str())
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("GET {path} failed during reloads: {e}"));
                    answers.push((path, index, response.status().as_u16()));
                    n += 1;
                }
                answers
            })
        })
        .collect();

    for i in 0..RELOAD_COUNT {
        let (template, reports) = if i % 2 == 0 {
            (config_b(), 200)
        } else {
            (config_a(), 404)
        };
        gateway.write_config(&template, &upstream);
        let (status, body) = gateway.reload_json().await;
        assert_eq!(status, 200, "reload {i}: {body}");
        assert_eq!(body["result"], "success", "{body}");
        // Once the answer is in, the new config serves.
        let probe = format!("/reports/probe-{i}");
        assert_eq!(
            gateway.status(&probe, Some(&read_write)).await,
            reports,
            "after reload {i}"
        );
    }
    reloading.store(false, Ordering::Relaxed);

    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.expect("client task"));
    }
    let recorded: HashMap<String, Recorded> = upstream
        .requests()
        .into_iter()
        .map(|r| (r.path.clone(), r))
        .collect();
    let mut by_plan = [0usize; 2];
    for (path, index, status) in &answers {
        let probe = &PROBES[*index];
        assert!(
            *status == probe.a || *status == probe.b,
            "GET {path} answered {status}; config A gives {}, config B {}",
            probe.a,
            probe.b
        );
        if *status != 200 {
            assert!(!recorded.contains_key(path), "{path} reached the upstream");
            continue;
        }
        let seen = recorded
            .get(path)
            .unwrap_or_else(|| panic!("{path} answered 200 but never reached the upstream"));
        let plan = plan_of(seen)
            .unwrap_or_else(|| panic!("{path}: identity headers of neither plan: {seen:?}"));
        // A request allowed by only one config must carry that config's plan.
        if probe.b != 200 {
            assert_eq!(plan, Plan::A, "{path} was allowed by A but forwarded by B");
        }
        if probe.a != 200 {
            assert_eq!(plan, Plan::B, "{path} was allowed by B but forwarded by A");
        }
        by_plan[usize::from(plan == Plan::B)] += 1;
    }
    println!(
        "{} requests from {CLIENTS} clients across {RELOAD_COUNT} reloads, none failed \
         ({} forwarded with plan A, {} with plan B)",
        answers.len(),
        by_plan[0],
        by_plan[1]
    );
    gateway
        .expect_metric(RELOADS, &[("result", "success")], RELOAD_COUNT as f64)
        .await;
    gateway
        .expect_metric(RELOADS, &[("result", "error")], 0.0)
        .await;
    assert!(
        !answers.is_empty(),
        "no request ran during the reloads; log:\n{}",
        gateway.log()
    );
}

// ---------------------------------------------------------------------------
// Issuer rules and the verified-token cache
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_cached_token_is_judged_by_the_new_audience_at_once() {
    let with_audience = |audience: &str| {
        config_a().replace("audiences: [api]", &format!("audiences: [{audience}]"))
    };
    let upstream = Upstream::start();
    let gateway = Gateway::start(&with_audience("api"), &upstream).await;
    let for_api = token_of("read", "api");
    let for_other = token_of("read", "other");

    // Verified, then served from the cache.
    assert_eq!(gateway.status("/orders/1", Some(&for_api)).await, 200);
    assert_eq!(gateway.status("/orders/2", Some(&for_api)).await, 200);
    let hits = gateway.metric("jwtgate_token_cache_hits_total", &[]).await;
    assert!(hits >= 1.0, "the second request was not a cache hit");

    gateway.write_config(&with_audience("other"), &upstream);
    assert_eq!(gateway.reload_json().await.0, 200);
    let refused = gateway.get("/orders/3", Some(&for_api)).await;
    assert_eq!(
        refused.status(),
        401,
        "a cached token passed the old audience rule"
    );
    gateway
        .expect_decisions(&[("reason", "wrong_audience")], 1.0)
        .await;
    assert_eq!(gateway.status("/orders/4", Some(&for_other)).await, 200);
    assert_eq!(gateway.status("/orders/5", Some(&for_other)).await, 200);

    // And back.
    gateway.write_config(&with_audience("api"), &upstream);
    assert_eq!(gateway.reload_json().await.0, 200);
    assert_eq!(gateway.status("/orders/6", Some(&for_other)).await, 401);
    gateway
        .expect_decisions(&[("reason", "wrong_audience")], 2.0)
        .await;
    assert_eq!(gateway.status("/orders/7", Some(&for_api)).await, 200);
}

// ---------------------------------------------------------------------------
// Triggers and refusals
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sighup_reloads_and_a_broken_config_leaves_the_running_one_serving() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&config_a(), &upstream).await;
    let token = token_of("read write", "api");
    assert_eq!(gateway.status("/reports/1", Some(&token)).await, 404);
    let before = gateway
        .metric("jwtgate_config_last_reload_timestamp_seconds", &[])
        .await;
    assert!(before > 0.0, "the startup load sets the timestamp");

    gateway.write_config(&config_b(), &upstream);
    gateway.signal("HUP");
    gateway
        .expect_metric_within(RELOADS, &[("result", "success")], 1.0, DEADLINE)
        .await;
    assert_eq!(gateway.status("/reports/2", Some(&token)).await, 200);
    let after = gateway
        .metric("jwtgate_config_last_reload_timestamp_seconds", &[])
        .await;
    assert!(after >= before, "{after} < {before}");

    // A YAML syntax error: the flow mapping on line 3 is never closed.
    let path = gateway.config_path();
    let broken = "routes:\n  - name: x\n    match: { path_prefix: /x\n    upstream: 1\n";
    std::fs::write(&path, broken).expect("write config");
    gateway.signal("HUP");
    gateway
        .expect_metric_within(RELOADS, &[("result", "error")], 1.0, DEADLINE)
        .await;
    let line = gateway.log_line("config reload failed").await;
    let located = format!("{}:4:13:", path.display());
    assert!(line.contains(&located), "no {located} in: {line}");
    assert!(line.contains("still serving the previous config"), "{line}");
    assert_eq!(gateway.status("/reports/3", Some(&token)).await, 200);

    // The same through the admin endpoint: the error is in the answer.
    let (status, body) = gateway.reload_json().await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["result"], "error");
    let error = body["error"].as_str().expect("error message");
    assert!(error.contains(&located), "{error}");
    gateway
        .expect_metric(RELOADS, &[("result", "error")], 2.0)
        .await;
    assert_eq!(gateway.status("/reports/4", Some(&token)).await, 200);
    assert_eq!(gateway.admin_get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn a_restart_only_change_is_refused_whole() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&config_a(), &upstream).await;
    let token = token_of("read write", "api");

    // Config B would also add /reports: nothing of it may apply.
    let moved = config_b().replace("127.0.0.1:{PROXY}", &format!("127.0.0.1:{}", free_port()));
    gateway.write_config(&moved, &upstream);
    let (status, body) = gateway.reload_json().await;
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().expect("error message");
    assert!(error.contains("listen.http"), "{error}");
    assert!(error.contains("needs a restart"), "{error}");
    assert_eq!(gateway.status("/reports/1", Some(&token)).await, 404);
    assert_eq!(gateway.status("/legacy/1", Some(&token)).await, 200);
    gateway
        .expect_metric(RELOADS, &[("result", "error")], 1.0)
        .await;
    let log = gateway
        .wait_for_log(|log| log.contains("needs a restart"))
        .await;
    assert!(log.contains("listen.http"), "{log}");

    // Only POST reloads.
    let get = gateway
        .client()
        .get(gateway.admin_url("/-/reload"))
        .send()
        .await
        .expect("GET /-/reload");
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");
    gateway
        .expect_metric(RELOADS, &[("result", "error")], 1.0)
        .await;
}

#[tokio::test]
async fn watch_follows_a_rewrite_and_a_configmap_symlink_swap() {
    let upstream = Upstream::start();
    let gateway = Gateway::start_with_run_args(&config_a(), &upstream, &["--watch"]).await;
    let token = token_of("read write", "api");
    assert_eq!(gateway.status("/reports/1", Some(&token)).await, 404);

    // An editor's save.
    gateway.write_config(&config_b(), &upstream);
    wait_for_status(&gateway, "/reports/2", Some(&token), 200).await;

    // The layout a ConfigMap volume has: gateway.yaml → ..data/gateway.yaml,
    // ..data → a timestamped directory holding the real files.
    let path = gateway.config_path();
    let dir = path.parent().expect("config dir").to_path_buf();
    let version = |name: &str, template: &str| {
        std::fs::create_dir(dir.join(name)).expect("version directory");
        std::fs::write(
            dir.join(name).join("gateway.yaml"),
            gateway.render(template, &upstream),
        )
        .expect("write config version");
    };
    let swap_link = |link: &str, target: &str| {
        let temporary = dir.join(format!("{link}_tmp"));
        std::os::unix::fs::symlink(target, &temporary).expect("symlink");
        std::fs::rename(&temporary, dir.join(link)).expect("rename symlink");
    };
    version("..2026_01_01_00_00_00.000000001", &config_a());
    swap_link("..data", "..2026_01_01_00_00_00.000000001");
    swap_link("gateway.yaml", "..data/gateway.yaml");
    wait_for_status(&gateway, "/reports/3", Some(&token), 404).await;

    // A ConfigMap update: a new directory, then ..data swapped in one rename.
    version("..2026_01_01_00_01_00.000000002", &config_b());
    swap_link("..data", "..2026_01_01_00_01_00.000000002");
    wait_for_status(&gateway, "/reports/4", Some(&token), 200).await;
    assert_eq!(gateway.status("/legacy/1", Some(&token)).await, 404);
    let log = gateway.log();
    assert!(log.contains("trigger=\"watched file change\""), "{log}");
}

// ---------------------------------------------------------------------------
// Remote keys
// ---------------------------------------------------------------------------

fn remote_config(issuer: &str, scope: &str, audience: &str) -> String {
    Config::new()
        .default_server()
        .issuers(&idp::issuer_yaml(
            issuer,
            "{ allow_http: true }",
            audience,
            &[],
        ))
        .routes(&idp::api_route(scope, "{ sub: X-User-Id }"))
}

#[tokio::test]
async fn a_remote_issuer_keeps_its_keys_across_reloads() {
    let mut idp = Idp::start().await;
    let upstream = Upstream::start();
    let issuer = idp.issuer();
    let config = |scope: &str| remote_config(&issuer, scope, idp::RESOURCE);
    let gateway = Gateway::start(&config("orders:read"), &upstream).await;
    let token = idp.token("orders:read orders:write").await;
    wait_for_status(&gateway, "/api/orders", Some(&token), 200).await;

    // With the provider gone, only kept keys can verify anything. The
    // issuer's rules don't change either: its cached verification stays.
    idp.stop();
    let mut hits = gateway.metric(CACHE_HITS, &[]).await;
    for (i, scope) in ["orders:write", "orders:read", "orders:write"]
        .into_iter()
        .enumerate()
    {
        gateway.write_config(&config(scope), &upstream);
        let (status, body) = gateway.reload_json().await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["remote_issuers"],
            json!({ "kept": 1, "started": 0, "stopped": 0 }),
            "{body}"
        );
        assert_eq!(
            gateway.admin_get("/readyz").await.status(),
            200,
            "reload {i}"
        );
        assert_eq!(
            gateway
                .status(&format!("/api/orders/{i}"), Some(&token))
                .await,
            200,
            "reload {i}; log:\n{}",
            gateway.log()
        );
        let now = gateway.metric(CACHE_HITS, &[]).await;
        assert_eq!(now, hits + 1.0, "reload {i} retired the cached token");
        hits = now;
    }
    gateway
        .expect_decisions(&[("reason", "jwks_unavailable")], 0.0)
        .await;

    // The key store is the same, the issuer's rules are not: the token,
    // verified and cached under the old audience, is refused at once, then
    // accepted again under the first rules.
    let elsewhere = remote_config(&issuer, "orders:read", "urn:jwtgate:elsewhere");
    gateway.write_config(&elsewhere, &upstream);
    assert_eq!(gateway.reload_json().await.0, 200);
    assert_eq!(gateway.status("/api/orders/x", Some(&token)).await, 401);
    gateway
        .expect_decisions(&[("reason", "wrong_audience")], 1.0)
        .await;
    gateway.write_config(&config("orders:read"), &upstream);
    assert_eq!(gateway.reload_json().await.0, 200);
    for path in ["/api/orders/y", "/api/orders/z"] {
        assert_eq!(gateway.status(path, Some(&token)).await, 200);
    }
    let hits = gateway.metric("jwtgate_token_cache_hits_total", &[]).await;
    assert!(hits >= 1.0, "the token was never served from the cache");

    // Changed fetch settings make a new store and refresher (the old one
    // stopped), which starts with the keys of the store it replaces: the
    // source is the same.
    let moved = config("orders:read").replace(
        "fetch: { allow_http: true }",
        "fetch: { allow_http: true, timeout: 3s }",
    );
    gateway.write_config(&moved, &upstream);
    let (status, body) = gateway.reload_json().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["remote_issuers"],
        json!({ "kept": 0, "started": 1, "stopped": 1 }),
        "{body}"
    );
    assert_eq!(gateway.admin_get("/readyz").await.status(), 200);
    assert_eq!(gateway.status("/api/orders/moved", Some(&token)).await, 200);

    // Another key location is another source: nothing to carry over, and
    // with the provider down there is nothing to fetch.
    let elsewhere = config("orders:read").replace(
        &format!("issuer: \"{issuer}\"\n    discovery: true"),
        &format!("issuer: \"{issuer}\"\n    jwks_uri: \"{issuer}/elsewhere/jwks\""),
    );
    assert_ne!(elsewhere, config("orders:read"));
    gateway.write_config(&elsewhere, &upstream);
    let (status, body) = gateway.reload_json().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        gateway.status("/api/orders/elsewhere", Some(&token)).await,
        503
    );
}
