//! Configs at platform scale: 10 000 routes and 100 issuers, made by the
//! same generator the benches use (`benches/load/big_config.py`), load
//! through `jwtgate check` and reload under load without a failed request;
//! hostile YAML is refused in jwtgate's words. And the process runs without
//! transparent huge pages, which would hold many idle connections' memory
//! 2 MiB at a time, and without Pingora's coarse timer, whose entries would
//! hold a burst's memory for the upstream timeouts' 30 s after it ended.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Gateway, Upstream, check, claims_with, generated, rs256};
use serde_json::json;

#[test]
fn check_loads_ten_thousand_routes_and_a_hundred_issuers() {
    let yaml = generated(&["--issuers", "100", "--routes", "10000"]);
    let ran = check(&yaml);
    assert!(ran.success, "{}", ran.text());
    assert!(ran.stdout.contains("issuers (100):"), "{}", ran.stdout);
    assert!(ran.stdout.contains("routes (10000):"), "{}", ran.stdout);
    assert!(ran.stdout.contains("route-9999"), "{}", ran.stdout);
}

#[test]
fn check_refuses_an_alias_bomb_naming_the_limit() {
    // Nine levels of nine aliases each (387 420 489 nodes from a dozen
    // lines), in the one field that takes any YAML: an inline JWKS.
    let mut yaml = String::from(
        "issuers:\n  - name: x\n    issuer: https://x\n    algorithms: [RS256]\n    audiences: [api]\n    jwks:\n      a0: &a0 [x, x, x, x, x, x, x, x, x]\n",
    );
    for level in 1..10 {
        let previous = format!("*a{}", level - 1);
        let list = [previous.as_str(); 9].join(", ");
        yaml.push_str(&format!("      a{level}: &a{level} [{list}]\n"));
    }
    yaml.push_str("routes: []\n");
    let ran = check(&yaml);
    assert!(!ran.success);
    assert!(
        ran.stderr.contains(
            "more YAML anchors, aliases or alias expansions than a config needs (an alias bomb?)"
        ),
        "{}",
        ran.stderr
    );
    assert!(!ran.stderr.contains("budget breached"), "{}", ran.stderr);
}

const CLIENTS: usize = 4;
const RELOADS: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_routes_reload_under_load_without_a_failed_request() {
    // Every route forwards to the recording upstream and trusts the fixture
    // keys, so any route can be asked with a token of its own issuer.
    let yaml = generated(&[
        "--issuers",
        "100",
        "--routes",
        "10000",
        "--upstream",
        "{UPSTREAM}",
        "--jwks",
        "{FIXTURES}/jwks.json",
        "--listen",
        "127.0.0.1:{PROXY}",
        "--admin",
        "127.0.0.1:{ADMIN}",
    ]);
    let upstream = Upstream::start();
    let gateway = Arc::new(Gateway::start(&yaml, &upstream).await);
    let loading = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (gateway, loading) = (gateway.clone(), loading.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                let mut n = 0;
                while loading.load(Ordering::Relaxed) {
                    // Route 9 973 - client: late in the table, 100 issuers apart.
                    let route = 9_973 - client - 4 * (n % 100);
                    let issuer = format!("https://idp-{}.example", route % 100);
                    let scope = json!({ "scope": format!("read-{route}") });
                    let token = rs256(claims_with(&issuer, "alice", scope));
                    let host = format!("svc-{}.example", route % 50);
                    let response = gateway
                        .get_with(
                            &format!("/api/v{route}/x"),
                            Some(&token),
                            &[("host", &host)],
                        )
                        .await;
                    statuses.push((route, response.status().as_u16()));
                    n += 1;
                }
                statuses
            })
        })
        .collect();
    for i in 0..RELOADS {
        let (status, body) = gateway.reload_json().await;
        assert_eq!(status, 200, "reload {i}: {body}");
        assert_eq!(body["routes"], 10_000, "{body}");
        assert_eq!(body["upstreams"]["kept"], 10_000, "every pool kept: {body}");
    }
    loading.store(false, Ordering::Relaxed);
    let mut statuses = Vec::new();
    for client in clients {
        statuses.extend(client.await.expect("client task"));
    }
    assert!(statuses.len() > CLIENTS, "the clients sent requests");
    let failed: Vec<_> = statuses.iter().filter(|(_, s)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {}: {failed:?}",
        failed.len(),
        statuses.len()
    );
}

/// The `THP_enabled` line of the process's status: 0 when transparent huge
/// pages are off for it.
fn huge_pages_enabled(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .expect("a kernel that reports THP_enabled")
        .trim()
        .to_owned()
}

/// Huge pages would keep each idle connection's touched buffer pages
/// resident 2 MiB at a time; the operator can still ask for them.
#[tokio::test]
async fn the_gateway_runs_without_transparent_huge_pages_unless_asked() {
    use common::{Config, ISS, OPEN_ROUTE};
    let upstream = Upstream::start();
    let config = Config::main(ISS).routes(OPEN_ROUTE);
    let gateway = Gateway::start(&config, &upstream).await;
    assert_eq!(huge_pages_enabled(gateway.pid()), "0");
    let asked =
        Gateway::start_with_env(&config, &upstream, &[], &[("MIMALLOC_ALLOW_THP", "1")]).await;
    assert_eq!(huge_pages_enabled(asked.pid()), "1");
}

/// The names of the process's threads.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's threads")
        .map(|task| {
            let comm = task.expect("a thread").path().join("comm");
            std::fs::read_to_string(comm)
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .collect()
}

/// Pingora's coarse timer keeps each cancelled timeout until its deadline;
/// a proxied request's upstream read and write timeouts (30 s) are nearly
/// always cancelled, and their entries would pin the allocator's pages
/// after a burst. Its clock thread starts with its first timeout, so a
/// gateway that proxied requests without starting it kept none.
#[tokio::test]
async fn proxied_requests_leave_nothing_in_pingoras_coarse_timer() {
    use common::{Config, ISS, OPEN_ROUTE};
    let upstream = Upstream::start();
    let config = Config::main(ISS).routes(OPEN_ROUTE);
    let gateway = Gateway::start(&config, &upstream).await;
    for _ in 0..3 {
        assert_eq!(gateway.status("/open/x", None).await, 200);
    }
    let threads = thread_names(gateway.pid());
    assert!(
        threads.iter().any(|name| name.starts_with("jwtgate")),
        "{threads:?}"
    );
    assert!(
        !threads.iter().any(|name| name == "Timer thread"),
        "{threads:?}"
    );
}
