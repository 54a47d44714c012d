//! Assembling the Pingora server: the proxy (a clear-text listener, a TLS
//! one, or both), the admin listener and, when configured, the built-in
//! echo upstream, plus the key refresh in the background. Signals are jwtgate's,
//! not Pingora's (see [`crate::shutdown`]): on SIGTERM the proxy drains while
//! admin and echo keep serving, and Pingora is told to stop only once the
//! drain is over; SIGINT stops everything at once; SIGHUP reloads the config
//! (see [`crate::assemble::reload`]).
//!
//! State comes in three lifetimes: the [`Bootstrap`] settings are read here
//! once; the [`crate::pipeline::Snapshot`] sits behind an `ArcSwap` a reload
//! replaces; key stores, refreshers, the token cache and the metrics are
//! created here and live as long as the process.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::protocols::ALPN;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{BackgroundService, background_service};
use pingora::services::listening::Service;

use super::reload::{self, Reloader, Trigger, WatchError};
use super::runtime::{KeyRefreshers, Runtime};
use super::{Bootstrap, Compiled};
use crate::admin::Admin;
use crate::auth::token_cache::TokenCache;
use crate::authz::{self, AuthzServer};
use crate::clock::SharedClock;
use crate::echo::Echo;
use crate::introspection::IntrospectionMetrics;
use crate::keys::fetch::FetchError;
use crate::pipeline::{Pipeline, Snapshot};
use crate::proxy::Gateway;
use crate::proxy::client_certs::{SnapshotClientVerifier, Thumbprints};
use crate::proxy::keepalive::KeepAlive;
use crate::proxy::sni::SniResolver;
use crate::proxy::streams::StreamDeadlines;
use crate::shutdown::{Drain, SignalWatch};
use crate::ssf::{self, KnownIssuer, Receiver};
use crate::state::dpop_replay::DpopReplay;
use crate::state::live::LiveConnections;
use crate::state::rate_limit::{self, RateLimits};
use crate::state::redis::Redis;
use crate::state::revocation::{RevocationError, Revocations};
use crate::telemetry::Metrics;
use crate::telemetry::traces::{self, Flush};
use crate::upstream::pools::UpstreamPools;

/// Admin and echo are light; two threads each is plenty and leaves the
/// cores to the proxy.
const SIDE_SERVICE_THREADS: usize = 2;

/// A listener without Pingora's per-connection L4 buffers (64 KiB to read,
/// 1460 bytes to write), which would pin that much to every idle
/// keep-alive connection, the count an edge is sized by. No reader above
/// needs one: the HTTP/1 session reads into its own header buffer, `h2`
/// into its own, and rustls reads at most 4 KiB from its transport at a
/// time whatever lies below it (a 16 KiB record then takes four reads
/// instead of one read and four copies). Writers gather their own: `h2`
/// its frames, HTTP/1 a response's head and body (`DeadlineIo`, only while
/// it answers), and rustls sends each record whole.
fn unbuffered_listener(addr: &str) -> ListenerConfig {
    ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::unbuffered())
}

/// The TLS listener: TLS 1.2 and 1.3 (Pingora's rustls acceptor offers
/// nothing else), certificates chosen per handshake by [`SniResolver`],
/// client certificates asked for and checked as the snapshot says by
/// [`SnapshotClientVerifier`] and hashed once per connection by
/// [`Thumbprints`], ALPN `h2` then `http/1.1` unless HTTP/2 is turned off.
fn tls_listener(addr: &str, h2: bool, snapshot: Arc<ArcSwap<Snapshot>>) -> ListenerConfig {
    // With a resolver set, Pingora reads no certificate files itself.
    let mut settings = TlsSettings::with_callbacks(Box::new(Thumbprints)).expect("plain settings");
    settings.set_cert_resolver(Arc::new(SniResolver::new(snapshot.clone())));
    settings.set_client_cert_verifier(Arc::new(SnapshotClientVerifier::new(snapshot)));
    settings.set_alpn(if h2 { ALPN::H2H1 } else { ALPN::H1 });
    unbuffered_listener(addr).tls(settings)
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} ({field}): {source}")]
    AddressUnavailable {
        field: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start fetching keys: {0}")]
    KeyRefresh(#[from] FetchError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    Revocation(#[from] RevocationError),
    #[error("cannot use redis.url: {0}")]
    Redis(redis::RedisError),
}

/// How the server was asked to run.
pub struct RunOptions {
    /// The config file, read again on each reload.
    pub config_path: PathBuf,
    /// Reload when the config file or a certificate or key file changes
    /// (`--watch`).
    pub watch: bool,
}

/// Pingora retries a busy address forever, logging a warning each second,
/// while the other listeners come up and report healthy. Trying each address
/// first turns that into one clear startup error.
fn check_addresses_free(bootstrap: &Bootstrap) -> Result<(), ServerError> {
    let grpc_addr = bootstrap
        .authz
        .as_ref()
        .and_then(|a| a.grpc_addr)
        .map(|a| a.to_string());
    let listeners = [
        ("listen.http", bootstrap.listen_http.as_ref()),
        ("listen.https.addr", bootstrap.listen_https.as_ref()),
        ("admin.addr", Some(&bootstrap.admin_addr)),
        ("echo.addr", bootstrap.echo_addr.as_ref()),
        (
            "listen.authz.addr",
            bootstrap.authz.as_ref().map(|a| &a.addr),
        ),
        ("listen.authz.grpc_addr", grpc_addr.as_ref()),
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

/// A task of jwtgate's own run as a Pingora background service: started
/// with the server, aborted when it stops.
struct Task<F>(F);

#[async_trait]
impl<F, T> BackgroundService for Task<F>
where
    F: Fn() -> T + Send + Sync,
    T: Future<Output = ()> + Send + 'static,
{
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let task = tokio::spawn((self.0)());
        let _ = shutdown.changed().await;
        task.abort();
    }
}

fn add_task<F, T>(server: &mut Server, name: &str, task: F)
where
    F: Fn() -> T + Send + Sync + 'static,
    T: Future<Output = ()> + Send + 'static,
{
    server.add_service(background_service(name, Task(task)));
}

/// The state shared across replicas: the Redis connection when there is
/// one, the revocation list with its disk copy loaded (before any listener
/// opens, so before `/readyz` can say ready) and the rate-limit counters,
/// with their sweeper and Redis sessions as background tasks; the
/// table of long-lived connections revocations end; and the Shared
/// Signals receiver that feeds the revocation list.
fn shared_state(
    server: &mut Server,
    bootstrap: &Bootstrap,
    runtime: &Runtime,
    metrics: &Metrics,
    clock: &SharedClock,
) -> Result<SharedState, ServerError> {
    let redis = bootstrap
        .redis
        .clone()
        .map(|settings| Redis::new(settings).map(Arc::new))
        .transpose()
        .map_err(ServerError::Redis)?;
    let revocations = match &bootstrap.revocation {
        None => None,
        Some(settings) => {
            let revocations =
                Arc::new(Revocations::open(settings.clone(), metrics, clock.clone())?);
            let (list, redis) = (revocations.clone(), redis.clone());
            add_task(server, "jwtgate revocation", move || {
                list.clone().run(redis.clone())
            });
            Some(revocations)
        }
    };
    let settings = &bootstrap.rate_limit;
    let limits = Arc::new(settings.counters());
    for collector in limits.collectors() {
        metrics.register(collector);
    }
    if let (Some(shared), Some(redis)) = (&settings.redis, &redis) {
        let (limits, shared, redis, clock) =
            (limits.clone(), shared.clone(), redis.clone(), clock.clone());
        add_task(server, "jwtgate rate-limit sync", move || {
            rate_limit::budget_sync::run(
                limits.clone(),
                shared.clone(),
                redis.clone(),
                clock.clone(),
            )
        });
    }
    // Connections that outlive their request, ended by their token's expiry
    // or by a revocation from any source.
    let live = LiveConnections::new(metrics, clock.clone());
    if let Some(revocations) = &revocations {
        revocations.end_connections_in(live.clone());
    }
    let settings = &bootstrap.dpop_replay;
    let replay = match (&settings.shared, &bootstrap.redis) {
        (Some(shared), Some(redis)) => {
            // A connection of its own: a proof's check must not queue behind
            // the revocation and rate-limit sessions' traffic.
            let redis = Redis::new(redis.clone()).map_err(ServerError::Redis)?;
            let replay = Arc::new(DpopReplay::shared(
                settings.max_entries,
                redis,
                shared.clone(),
            ));
            // Connected before the first proofs, when Redis is there; when
            // it is not, proofs follow `on_error` while it is tried again.
            let connecting = replay.clone();
            add_task(server, "jwtgate dpop replay", move || {
                let replay = connecting.clone();
                async move {
                    replay.connect().await;
                }
            });
            replay
        }
        _ => Arc::new(DpopReplay::local(settings.max_entries)),
    };
    let signals = shared_signals(server, bootstrap, runtime, metrics, clock, &revocations);
    Ok((revocations, limits, live, replay, signals))
}

/// The Shared Signals receiver, with a background task per transmitter
/// (its configuration, keys and, when polled, its poll loop). Compiling
/// made sure there is a revocation list.
fn shared_signals(
    server: &mut Server,
    bootstrap: &Bootstrap,
    runtime: &Runtime,
    metrics: &Metrics,
    clock: &SharedClock,
    revocations: &Option<Arc<Revocations>>,
) -> Option<Arc<Receiver>> {
    let (settings, revocations) = (bootstrap.shared_signals.as_ref()?, revocations.as_ref()?);
    // The subject's issuer is checked against the config being served.
    let snapshot = runtime.snapshot.clone();
    let known_issuer: KnownIssuer =
        Arc::new(move |iss: &str| snapshot.load().issuers.iter().any(|i| i.issuer == iss));
    let receiver = Arc::new(Receiver::new(
        settings,
        revocations.clone(),
        known_issuer,
        metrics,
    ));
    for transmitter in receiver.transmitters() {
        let (receiver, transmitter) = (receiver.clone(), transmitter.clone());
        let (keys, clock) = (metrics.keys.clone(), clock.clone());
        add_task(server, "jwtgate shared signals", move || {
            ssf::stream::run(
                receiver.clone(),
                transmitter.clone(),
                keys.clone(),
                clock.clone(),
            )
        });
    }
    Some(receiver)
}

type SharedState = (
    Option<Arc<Revocations>>,
    Arc<RateLimits>,
    Arc<LiveConnections>,
    Arc<DpopReplay>,
    Option<Arc<Receiver>>,
);

/// Runs until SIGTERM's drain is over or SIGINT; fails only at startup.
pub fn run(compiled: Compiled, options: RunOptions, clock: SharedClock) -> Result<(), ServerError> {
    let bootstrap = compiled.bootstrap.clone();
    crate::tls_provider::install();
    check_addresses_free(&bootstrap)?;
    let mut server = pingora_server(&bootstrap);
    let metrics = Arc::new(Metrics::new());
    let flush_traces = start_tracing(&mut server, &bootstrap, &metrics);
    metrics.config.last_reload.set(clock.now_unix());
    reload::record_certificate_expiry(&metrics, &compiled.snapshot);
    reload::warn_expiring_certificates(&compiled.snapshot, clock.now_unix());
    // Every remote issuer's refresher starts, with its disk copy installed,
    // and every route's upstream names are resolved, before the listeners
    // open; the refresh and pool loops run in the background (the refresh
    // service is there even with no remote issuer yet: a reload may add one).
    let runtime = Arc::new(Runtime::start(
        compiled,
        KeyRefreshers::new(
            bootstrap.keys_cache_dir.clone(),
            metrics.keys.clone(),
            clock.clone(),
        )
        .with_status_list_metrics(metrics.status_lists.clone()),
        UpstreamPools::new(metrics.upstreams.clone(), clock.clone()),
    )?);
    server.add_service(background_service(
        "jwtgate key refresh",
        runtime.keys.service(),
    ));
    server.add_service(background_service(
        "jwtgate upstreams",
        runtime.upstreams.service(),
    ));
    let (revocations, rate_limits, live, dpop_replay, receiver) =
        shared_state(&mut server, &bootstrap, &runtime, &metrics, &clock)?;
    // One decision pipeline for every adapter: one token cache, one
    // revocation list, one budget per client whoever decides.
    let cache = &metrics.token_cache;
    let token_cache = bootstrap
        .token_cache
        .as_ref()
        .map(|settings| TokenCache::new(settings, cache.hits.clone(), cache.misses.clone()));
    let pipeline = Arc::new(
        Pipeline::new(clock.clone(), token_cache)
            .timed(metrics.requests.verify_duration.clone())
            .with_introspection_metrics(IntrospectionMetrics::registered(&metrics))
            .with_revocations(revocations.as_ref().map(|r| r.list().clone()))
            .with_rate_limits(rate_limits)
            .with_dpop_replay(dpop_replay),
    );
    let drain = Drain::new();
    let reloader = Arc::new(
        Reloader::new(
            options.config_path,
            bootstrap.clone(),
            runtime.clone(),
            metrics.clone(),
            clock.clone(),
        )
        .with_live_connections(live.clone()),
    );
    let signal_watch = signals(&drain, &bootstrap, &reloader, options.watch, flush_traces)?;
    if let Some(settings) = &bootstrap.authz {
        let authz = || {
            let snapshot = runtime.snapshot.clone();
            AuthzServer::new(
                settings.clone(),
                snapshot,
                metrics.requests.clone(),
                pipeline.clone(),
            )
        };
        server.add_service(authz::service(authz()));
        if let Some(addr) = settings.grpc_addr {
            // Each call is a decision like the proxy's: the proxy's threads.
            let mut grpc =
                background_service("jwtgate authz grpc", authz::grpc::service(addr, authz()));
            grpc.threads = Some(server.configuration.threads);
            server.add_service(grpc);
        }
    }
    add_proxy(
        &mut server,
        &bootstrap,
        &runtime,
        &metrics,
        pipeline,
        live,
        &drain,
    );
    let admin = Admin::new(runtime.snapshot.clone(), metrics, clock, drain, reloader)
        .with_revocations(revocations)
        .with_signals(receiver);
    add_side_services(&mut server, &bootstrap, admin);
    log_listening(&bootstrap);
    server.run(RunArgs {
        shutdown_signal: Box::new(signal_watch),
    });
    tracing::info!("jwtgate stopped");
    Ok(())
}

/// Installs the tracer, before any request or key fetch can open a span,
/// and runs its export loop in the background; what flushes it at the stop.
fn start_tracing(server: &mut Server, bootstrap: &Bootstrap, metrics: &Metrics) -> Option<Flush> {
    let exporting = bootstrap.tracing.as_ref().and_then(traces::install)?;
    let flush = exporting.flush();
    for collector in exporting.metrics().collectors() {
        metrics.register(collector);
    }
    // The loop owns the queue's receiving end: it is started once.
    let exporting = std::sync::Mutex::new(Some(exporting));
    add_task(server, "jwtgate traces", move || {
        let exporting = exporting.lock().ok().and_then(|mut slot| slot.take());
        async move {
            if let Some(exporting) = exporting {
                exporting.run().await;
            }
        }
    });
    Some(flush)
}

/// Where each listener is, once they are all set up.
fn log_listening(bootstrap: &Bootstrap) {
    tracing::info!(
        proxy = bootstrap.listen_http.as_deref().unwrap_or("-"),
        https = bootstrap.listen_https.as_deref().unwrap_or("-"),
        admin = %bootstrap.admin_addr,
        echo = bootstrap.echo_addr.as_deref().unwrap_or("-"),
        authz = bootstrap.authz.as_ref().map_or("-", |a| a.addr.as_str()),
        authz_grpc = bootstrap
            .authz
            .as_ref()
            .and_then(|a| a.grpc_addr)
            .map(tracing::field::display),
        "jwtgate listening"
    );
}

/// jwtgate's own signal handling: SIGTERM drains (then has the last spans
/// sent), SIGHUP (and, with `--watch`, a changed file) reloads.
fn signals(
    drain: &Drain,
    bootstrap: &Bootstrap,
    reloader: &Arc<Reloader>,
    watch: bool,
    flush_traces: Option<Flush>,
) -> Result<SignalWatch, ServerError> {
    if watch {
        reload::watch(reloader.clone())?;
    }
    let reloader = reloader.clone();
    let on_hangup = move || {
        let reloader = reloader.clone();
        // The outcome is logged and counted by reload itself.
        tokio::task::spawn_blocking(move || reloader.reload(Trigger::Hangup));
    };
    let signal_watch = drain
        .signal_watch(bootstrap.grace_period, bootstrap.graceful_shutdown_timeout)
        .on_hangup(on_hangup);
    Ok(match flush_traces {
        // The exporter's runtime stops with the other services.
        Some(flush) => signal_watch.before_stop(move || {
            let flush = flush.clone();
            async move {
                flush.run().await;
            }
        }),
        None => signal_watch,
    })
}

/// The admin listener and, when configured, the echo upstream: light work,
/// on threads of their own so they answer while the proxy is busy.
fn add_side_services(server: &mut Server, bootstrap: &Bootstrap, admin: Admin) {
    let mut admin = Service::new("jwtgate admin".to_string(), admin);
    admin.threads = Some(SIDE_SERVICE_THREADS);
    admin.add_tcp(&bootstrap.admin_addr);
    server.add_service(admin);
    if let Some(addr) = &bootstrap.echo_addr {
        let mut echo = Service::new("jwtgate echo upstream".to_string(), Echo);
        echo.threads = Some(SIDE_SERVICE_THREADS);
        echo.add_tcp(addr);
        server.add_service(echo);
    }
}

/// Pingora's server, its signal handling and drain left to jwtgate.
fn pingora_server(bootstrap: &Bootstrap) -> Server {
    let conf = ServerConf {
        threads: bootstrap
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        // The drain has run before Pingora hears of the stop (see
        // `crate::shutdown`): nothing is left worth waiting for.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        // Pingora writes a pid file only when it daemonizes and uses the
        // upgrade socket only for a SIGQUIT hand-over of listeners; jwtgate
        // does neither (its own signal watch never asks for an upgrade),
        // so no path is named: the process writes nothing but
        // `keys_cache_dir`, and runs on a read-only root filesystem.
        pid_file: String::new(),
        upgrade_sock: String::new(),
        // Pingora's coarse timer keeps a cancelled timeout's entry until its
        // deadline. A proxied request's upstream read and write timeouts
        // (30 s by default) are nearly always cancelled by the response, and
        // their entries would pin the allocator's pages for those 30 s after a
        // burst has ended; tokio's timer drops an entry with its request.
        fast_timeout_to_tokio_threshold_seconds: Some(0),
        upstream_keepalive_pool_size: bootstrap.upstream_keepalive,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    server
}

/// The proxy on its clear-text and TLS listeners, with jwtgate's own
/// keep-alive handling and drain.
fn add_proxy(
    server: &mut Server,
    bootstrap: &Bootstrap,
    runtime: &Runtime,
    metrics: &Arc<Metrics>,
    pipeline: Arc<Pipeline>,
    live: Arc<LiveConnections>,
    drain: &Drain,
) {
    let gateway = Gateway::new(runtime.serving.clone(), metrics.requests.clone(), pipeline)
        .with_live_connections(live);
    let mut proxy_app = pingora::proxy::http_proxy(&server.configuration, gateway);
    if bootstrap.h2c {
        // `KeepAlive` looks for the HTTP/2 preface on clear-text
        // connections; on TLS, ALPN decides.
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        proxy_app.server_options = Some(options);
    }
    let mut proxy = Service::new("jwtgate proxy".to_string(), {
        // HTTP/2 streams run inside StreamDeadlines; HTTP/1 requests
        // go to the proxy directly, without its per-request future.
        let proxy_app = Arc::new(proxy_app);
        let streams = Arc::new(StreamDeadlines::new(Arc::clone(&proxy_app)));
        KeepAlive::with_h2(proxy_app, streams, drain.clone())
            .idle_timeout(bootstrap.keepalive_timeout)
    });
    if let Some(addr) = &bootstrap.listen_http {
        proxy.add_listener(unbuffered_listener(addr));
    }
    if let Some(addr) = &bootstrap.listen_https {
        proxy.add_listener(tls_listener(
            addr,
            bootstrap.https_h2,
            runtime.snapshot.clone(),
        ));
    }
    server.add_service(drain.own_listener(proxy));
}
