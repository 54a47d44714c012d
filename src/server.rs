//! Assembling the Pingora server: the proxy, the admin listener and, when
//! configured, the built-in echo upstream, each a service with its own
//! listener. Pingora owns signals: SIGTERM drains gracefully (keep serving
//! for `grace_period`, then give in-flight requests up to
//! `graceful_shutdown_timeout`), SIGINT stops at once.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{BackgroundService, background_service};
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::auth::cache::TokenCache;
use crate::clock::SharedClock;
use crate::config::Snapshot;
use crate::echo::Echo;
use crate::keys::cache::DiskCache;
use crate::keys::remote::Refresher;
use crate::proxy::Gateway;
use crate::telemetry::Metrics;

/// Admin and echo are light; two threads each is plenty and leaves the
/// cores to the proxy.
const SIDE_SERVICE_THREADS: usize = 2;

/// Pingora retries a busy address forever, logging a warning each second,
/// while the other listeners come up and report healthy. Trying each address
/// first turns that into one clear startup error.
fn check_addresses_free(snapshot: &Snapshot) -> Result<(), String> {
    let listeners = [
        ("listen.http", Some(&snapshot.listen_http)),
        ("admin.addr", Some(&snapshot.admin_addr)),
        ("echo.addr", snapshot.echo_addr.as_ref()),
    ];
    for (field, addr) in listeners {
        let Some(addr) = addr else { continue };
        std::net::TcpListener::bind(addr.as_str())
            .map_err(|e| format!("cannot listen on {addr} ({field}): {e}"))?;
    }
    Ok(())
}

/// Runs until a shutdown signal; returns only if startup fails.
pub fn run(snapshot: Snapshot, clock: SharedClock) -> Result<std::convert::Infallible, String> {
    check_addresses_free(&snapshot)?;
    let conf = ServerConf {
        threads: snapshot
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        grace_period_seconds: Some(snapshot.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(snapshot.graceful_shutdown_timeout.as_secs()),
        // Pingora's defaults put these in /tmp, shared by every process on
        // the host; jwtgate does not use upgrades, so keep them private.
        pid_file: format!("/tmp/jwtgate-{}.pid", std::process::id()),
        upgrade_sock: format!("/tmp/jwtgate-{}-upgrade.sock", std::process::id()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let metrics = Arc::new(Metrics::new());
    let refreshers = refreshers(&snapshot, &metrics, &clock)?;
    if !refreshers.is_empty() {
        server.add_service(background_service(
            "jwtgate key refresh",
            KeyRefresh(refreshers),
        ));
    }

    let token_cache = snapshot.token_cache.as_ref().map(|settings| {
        TokenCache::new(
            settings,
            metrics.token_cache_hits.clone(),
            metrics.token_cache_misses.clone(),
        )
    });
    let clock_for_admin = clock.clone();
    let listen_http = snapshot.listen_http.clone();
    let admin_addr = snapshot.admin_addr.clone();
    let echo_addr = snapshot.echo_addr.clone();
    let shared = Arc::new(ArcSwap::from_pointee(snapshot));

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway::new(shared.clone(), metrics.clone(), clock.clone(), token_cache),
        "jwtgate proxy",
    );
    proxy.add_tcp(&listen_http);
    server.add_service(proxy);

    let mut admin = Service::new(
        "jwtgate admin".to_string(),
        Admin::new(shared, metrics, clock_for_admin),
    );
    admin.threads = Some(SIDE_SERVICE_THREADS);
    admin.add_tcp(&admin_addr);
    server.add_service(admin);

    if let Some(addr) = &echo_addr {
        let mut echo = Service::new("jwtgate echo upstream".to_string(), Echo);
        echo.threads = Some(SIDE_SERVICE_THREADS);
        echo.add_tcp(addr);
        server.add_service(echo);
    }

    tracing::info!(
        proxy = %listen_http,
        admin = %admin_addr,
        echo = echo_addr.as_deref().unwrap_or("-"),
        "jwtgate listening"
    );
    server.run_forever()
}

/// One refresher per remote issuer, with its disk copy already installed so
/// the first requests after a restart have keys even if the provider is down.
fn refreshers(
    snapshot: &Snapshot,
    metrics: &Arc<Metrics>,
    clock: &SharedClock,
) -> Result<Vec<Arc<Refresher>>, String> {
    let cache = snapshot.keys_cache_dir.clone().map(DiskCache::new);
    snapshot
        .remote
        .iter()
        .map(|source| {
            let refresher = Refresher::new(
                source.clone(),
                cache.clone(),
                metrics.clone(),
                clock.clone(),
            )?;
            refresher.load_cached();
            Ok(Arc::new(refresher))
        })
        .collect()
}

/// Runs every issuer's refresh loop on Pingora's background runtime.
struct KeyRefresh(Vec<Arc<Refresher>>);

#[async_trait]
impl BackgroundService for KeyRefresh {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let tasks: Vec<_> = self
            .0
            .iter()
            .map(|refresher| {
                let refresher = refresher.clone();
                tokio::spawn(async move { refresher.run().await })
            })
            .collect();
        let _ = shutdown.changed().await;
        for task in tasks {
            task.abort();
        }
    }
}
