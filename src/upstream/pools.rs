//! The runtime side of upstream pools: each route's pool is started when a
//! snapshot first uses it (its names resolved before it serves), kept by
//! reloads that leave its upstream settings unchanged, and stopped when no
//! snapshot uses it any more. Each running pool has one background loop:
//! resolve names every `resolve_interval`, run health checks every
//! `health_check.interval`, give back endpoints set aside, and export
//! `jwtgate_upstream_healthy`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc;

use super::{PoolIdentity, RouteUpstream, UpstreamPool};
use crate::clock::SharedClock;
use crate::telemetry::metrics::UpstreamMetrics;

/// How often the loop looks at endpoints set aside, at the longest.
const EJECTION_TICK: Duration = Duration::from_secs(1);

pub struct UpstreamPools {
    /// By route: a route has one pool at a time. Touched only by startup
    /// and by reloads, never on the request path; looked up once per route
    /// of a compiled config, so a config of 10 000 routes must not scan.
    running: Mutex<HashMap<String, Arc<UpstreamPool>>>,
    commands: mpsc::UnboundedSender<Command>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
    metrics: UpstreamMetrics,
    clock: SharedClock,
}

enum Command {
    Start(Arc<UpstreamPool>),
    Stop(Arc<UpstreamPool>),
}

/// What applying a snapshot did to the pools.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolChanges {
    pub kept: usize,
    pub started: usize,
    pub stopped: usize,
}

/// Pools the new snapshot no longer uses, stopped once it serves.
#[must_use = "stop the retired pools once the new snapshot is in place"]
pub struct RetiredPools(Vec<Arc<UpstreamPool>>);

impl UpstreamPools {
    pub fn new(metrics: UpstreamMetrics, clock: SharedClock) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        Self {
            running: Mutex::default(),
            commands,
            receiver: Mutex::new(Some(receiver)),
            metrics,
            clock,
        }
    }

    /// The running pool built from `identity`'s settings, for a config
    /// being compiled to keep.
    pub fn existing(&self, identity: &PoolIdentity) -> Option<Arc<UpstreamPool>> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .get(&identity.route)
            .filter(|pool| pool.identity() == identity)
            .cloned()
    }

    /// Runs the pools of `upstreams` (a compiled config's, by route): those
    /// already running keep running, with their endpoints and health; the
    /// others start, their names resolved first (blocking, bounded by
    /// `dns.timeout` per name: call it off the request path). The pools no
    /// route uses any more are returned, to be stopped once the config
    /// serves.
    pub fn apply(&self, upstreams: &[Option<RouteUpstream>]) -> (PoolChanges, RetiredPools) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut changes = PoolChanges::default();
        let mut next = HashMap::with_capacity(upstreams.len());
        for upstream in upstreams.iter().flatten() {
            let pool = &upstream.pool;
            let route = pool.route();
            if running.get(route).is_some_and(|p| Arc::ptr_eq(p, pool)) {
                next.insert(route.to_string(), Arc::clone(pool));
                running.remove(route);
                changes.kept += 1;
                continue;
            }
            if pool.is_dynamic() {
                pool.count_resolve_failures_in(
                    self.metrics
                        .resolve_failures
                        .with_label_values(&[pool.route()]),
                );
                if let Some(previous) = running.get(route) {
                    pool.adopt_answers(previous);
                }
                resolve_first(pool);
            }
            publish(pool, &self.metrics);
            // Only fails once the service has stopped: the process is ending.
            let _ = self.commands.send(Command::Start(pool.clone()));
            next.insert(route.to_string(), Arc::clone(pool));
            changes.started += 1;
        }
        let retired: Vec<_> = running.drain().map(|(_, pool)| pool).collect();
        changes.stopped = retired.len();
        *running = next;
        (changes, RetiredPools(retired))
    }

    pub fn stop(&self, retired: RetiredPools) {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for pool in retired.0 {
            forget(&pool, &running, &self.metrics);
            let _ = self.commands.send(Command::Stop(pool));
        }
    }

    pub fn service(self: &Arc<Self>) -> UpstreamPoolService {
        UpstreamPoolService(self.clone())
    }
}

/// A new pool's first resolution, before any request can use it. Runs on a
/// thread of its own with a runtime of its own: the caller may be on a
/// runtime's thread already (a reload), or before any runtime exists.
fn resolve_first(pool: &Arc<UpstreamPool>) {
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => {
                    if let Err(error) = runtime.block_on(pool.update()) {
                        tracing::warn!(
                            route = %pool.route(),
                            "no upstream address resolved yet ({error}); trying again in the background"
                        );
                    }
                }
                Err(error) => tracing::warn!("cannot resolve upstream names now: {error}"),
            }
        });
    });
}

/// Sets `jwtgate_upstream_healthy` for every endpoint of `pool`.
fn publish(pool: &UpstreamPool, metrics: &UpstreamMetrics) {
    let route = pool.route();
    let mut label = String::new();
    for (addr, ready) in pool.states() {
        use std::fmt::Write;
        label.clear();
        let _ = write!(label, "{addr}");
        metrics
            .healthy
            .with_label_values(&[route, label.as_str()])
            .set(i64::from(ready));
    }
}

/// Removes the series of `pool`'s endpoints that the running pool of the
/// same route, if any, doesn't have.
fn forget(
    pool: &UpstreamPool,
    running: &HashMap<String, Arc<UpstreamPool>>,
    metrics: &UpstreamMetrics,
) {
    let route = pool.route();
    let kept = running.get(route).map(|p| addresses(p)).unwrap_or_default();
    for (addr, _) in pool.states() {
        if !kept.contains(&addr) {
            let _ = metrics
                .healthy
                .remove_label_values(&[route, &addr.to_string()]);
        }
    }
}

/// Runs every pool's loop on Pingora's background runtime, starting and
/// stopping them as reloads ask.
pub struct UpstreamPoolService(Arc<UpstreamPools>);

#[async_trait]
impl BackgroundService for UpstreamPoolService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut commands) = self
            .0
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let mut tasks = HashMap::new();
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Start(pool)) => {
                        let id = pool.id;
                        let metrics = self.0.metrics.clone();
                        let clock = self.0.clock.clone();
                        tasks.insert(id, tokio::spawn(run(pool, metrics, clock)));
                    }
                    Some(Command::Stop(pool)) => {
                        if let Some(task) = tasks.remove(&pool.id) {
                            task.abort();
                        }
                    }
                    None => break,
                },
                _ = shutdown.changed() => break,
            }
        }
        for task in tasks.into_values() {
            task.abort();
        }
    }
}

fn addresses(pool: &UpstreamPool) -> Vec<SocketAddr> {
    pool.states().into_iter().map(|(addr, _)| addr).collect()
}

/// One pool's background work, until its task is aborted.
async fn run(pool: Arc<UpstreamPool>, metrics: UpstreamMetrics, clock: SharedClock) {
    let now = Instant::now();
    // A pool whose names did not resolve yet tries again at once.
    let mut resolve_at = if pool.is_empty() {
        now
    } else {
        now + pool.resolve_interval
    };
    let mut check_at = now;
    let mut published = addresses(&pool);
    loop {
        if pool.is_dynamic() && Instant::now() >= resolve_at {
            // Failures are logged and counted by the discovery.
            let _ = pool.update().await;
            resolve_at = Instant::now() + pool.resolve_interval;
        }
        if let Some(interval) = pool.health_interval
            && Instant::now() >= check_at
        {
            pool.run_health_check().await;
            check_at = Instant::now() + interval;
        }
        pool.settle_ejections(clock.now_unix());
        let current = addresses(&pool);
        for gone in published.iter().filter(|addr| !current.contains(addr)) {
            let _ = metrics
                .healthy
                .remove_label_values(&[pool.route(), &gone.to_string()]);
        }
        published = current;
        publish(&pool, &metrics);

        // A pool of fixed addresses with nothing set aside has nothing to
        // do until a connection fails: it sleeps until woken, so that
        // thousands of idle routes cost no timer.
        let wake = [
            pool.has_ejections().then(|| Instant::now() + EJECTION_TICK),
            pool.is_dynamic().then_some(resolve_at),
            pool.health_interval.map(|_| check_at),
        ]
        .into_iter()
        .flatten()
        .min();
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = pool.wake.notified() => {}
        }
    }
}
