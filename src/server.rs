//! Assembling the Pingora server: the proxy, the admin listener and, when
//! configured, the built-in echo upstream, each a service with its own
//! listener, plus the key refresh in the background. Signals are jwtgate's,
//! not Pingora's (see [`crate::shutdown`]): on SIGTERM the proxy drains while
//! admin and echo keep serving, and Pingora is told to stop only once the
//! drain is over; SIGINT stops everything at once; SIGHUP is ignored.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownWatch};
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
use crate::shutdown::Drain;
use crate::telemetry::Metrics;

/// Admin and echo are light; two threads each is plenty and leaves the
/// cores to the proxy.
const SIDE_SERVICE_THREADS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} ({field}): {source}")]
    AddressUnavailable {
        field: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    KeyRefresh(String),
}

/// Pingora retries a busy address forever, logging a warning each second,
/// while the other listeners come up and report healthy. Trying each address
/// first turns that into one clear startup error.
fn check_addresses_free(snapshot: &Snapshot) -> Result<(), ServerError> {
    let listeners = [
        ("listen.http", Some(&snapshot.listen_http)),
        ("admin.addr", Some(&snapshot.admin_addr)),
        ("echo.addr", snapshot.echo_addr.as_ref()),
    ];
    for (field, addr) in listeners {
        let Some(addr) = addr else { continue };
        std::net::TcpListener::bind(addr.as_str()).map_err(|source| {
            ServerError::AddressUnavailable {
                field,
                addr: addr.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Runs until SIGTERM's drain is over or SIGINT; fails only at startup.
pub fn run(snapshot: Snapshot, clock: SharedClock) -> Result<(), ServerError> {
    check_addresses_free(&snapshot)?;
    let conf = ServerConf {
        threads: snapshot
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        // The drain has run before Pingora hears of the stop (see
        // `crate::shutdown`): nothing is left worth waiting for.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        // Pingora's defaults put these in /tmp, shared by every process on
        // the host; jwtgate does not use upgrades, so keep them private.
        pid_file: format!("/tmp/jwtgate-{}.pid", std::process::id()),
        upgrade_sock: format!("/tmp/jwtgate-{}-upgrade.sock", std::process::id()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let metrics = Arc::new(Metrics::new());
    let refreshers = refreshers(&snapshot, &metrics, &clock).map_err(ServerError::KeyRefresh)?;
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
    let drain = Drain::new();
    let signal_watch =
        drain.signal_watch(snapshot.grace_period, snapshot.graceful_shutdown_timeout);
    let shared = Arc::new(ArcSwap::from_pointee(snapshot));

    let proxy_app = pingora::proxy::http_proxy(
        &server.configuration,
        Gateway::new(shared.clone(), metrics.clone(), clock.clone(), token_cache),
    );
    let mut proxy = Service::new(
        "jwtgate proxy".to_string(),
        drain.track_connections(proxy_app),
    );
    proxy.add_tcp(&listen_http);
    server.add_service(drain.own_listener(proxy));

    let mut admin = Service::new(
        "jwtgate admin".to_string(),
        Admin::new(shared, metrics, clock_for_admin, drain),
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
    server.run(RunArgs {
        shutdown_signal: Box::new(signal_watch),
    });
    tracing::info!("jwtgate stopped");
    Ok(())
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
