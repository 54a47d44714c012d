//! The runtime lifetime: state that outlives any one config. Each remote
//! issuer's key store and the refresher that fills it are kept here, keyed
//! by the issuer's [`RemoteIdentity`], and each route's upstream pool, keyed
//! by its route and settings; a compiled config is handed the stores and
//! pools it can keep (see [`Running`]), and serving it starts refreshers
//! and pools that are new and stops those no longer used. The
//! verified-token cache and the metrics live as long, in the pipeline and
//! the server.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc;

use arc_swap::ArcSwap;

use super::compile::{Compiled, Running};
use crate::auth::IssuerVerifier;
use crate::auth::verify::TokenTypeRule;
use crate::clock::SharedClock;
use crate::introspection::Introspector;
use crate::keys::KeyStore;
use crate::keys::disk::DiskCache;
use crate::keys::fetch::FetchError;
use crate::keys::remote::{Refresher, RemoteIdentity};
use crate::pipeline::Snapshot;
use crate::proxy::Serving;
use crate::state::status_list::{ListRefresher, StatusLists};
use crate::telemetry::metrics::{KeyMetrics, StatusListMetrics};
use crate::upstream::pools::{PoolChanges, UpstreamPools};
use crate::upstream::{PoolIdentity, UpstreamPool};

/// The live things of a running gateway, and the config they serve.
pub struct Runtime {
    pub keys: Arc<KeyRefreshers>,
    pub upstreams: Arc<UpstreamPools>,
    /// The config decisions are made against, for every adapter.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// The same config, with each route's upstream, for the proxy.
    pub serving: Arc<ArcSwap<Serving>>,
}

/// What serving a new config did to the live things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub remote_keys: KeyChanges,
    pub upstreams: PoolChanges,
}

impl Running for Runtime {
    fn key_store(&self, identity: &RemoteIdentity) -> Option<Arc<KeyStore>> {
        self.keys.existing(identity)
    }

    fn upstream_pool(&self, identity: &PoolIdentity) -> Option<Arc<UpstreamPool>> {
        self.upstreams.existing(identity)
    }

    fn status_lists(&self, compiled: &StatusLists) -> Option<Arc<StatusLists>> {
        let running = self.snapshot.load();
        running
            .status_lists
            .iter()
            .flatten()
            .find(|lists| lists.same_as(compiled))
            .cloned()
    }

    fn introspector(&self, compiled: &Introspector) -> Option<Arc<Introspector>> {
        let running = self.snapshot.load();
        running
            .introspectors
            .iter()
            .flatten()
            .find(|introspector| introspector.same_as(compiled))
            .cloned()
    }
}

impl Runtime {
    /// Starts the refreshers and pools of the first config, each key store
    /// with its disk copy installed and each upstream name resolved, before
    /// any listener opens.
    pub fn start(
        compiled: Compiled,
        keys: KeyRefreshers,
        upstreams: UpstreamPools,
    ) -> Result<Self, FetchError> {
        let keys = Arc::new(keys);
        let upstreams = Arc::new(upstreams);
        let (_, nothing_retired) = keys.apply(&compiled.snapshot)?;
        keys.stop(nothing_retired);
        let (_, nothing_retired) = upstreams.apply(&compiled.upstreams);
        upstreams.stop(nothing_retired);
        let (snapshot, serving) = views(compiled);
        // Loading and compiling the first config freed more than it kept.
        crate::memory::release_freed();
        Ok(Self {
            keys,
            upstreams,
            snapshot: Arc::new(ArcSwap::new(snapshot)),
            serving: Arc::new(ArcSwap::new(serving)),
        })
    }

    /// Serves `compiled` in place of the running config: its new key
    /// stores get refreshers and its new pools start, then both views of
    /// the config are swapped, then what only the old config used stops.
    /// Fails before changing anything.
    pub fn serve(&self, compiled: Compiled) -> Result<Applied, FetchError> {
        let mut snapshot = compiled.snapshot;
        self.keep_unchanged_verifiers(&mut snapshot);
        let (remote_keys, retired_keys) = self.keys.apply(&snapshot)?;
        // Unchanged upstreams keep their running pool (endpoints, health);
        // new ones resolve their names before the config serves.
        let (upstreams, retired_pools) = self.upstreams.apply(&compiled.upstreams);
        let (snapshot, serving) = views(Compiled {
            snapshot,
            ..compiled
        });
        self.serving.store(serving);
        self.snapshot.store(snapshot);
        self.keys.stop(retired_keys);
        self.upstreams.stop(retired_pools);
        Ok(Applied {
            remote_keys,
            upstreams,
        })
    }

    /// An issuer whose rules and key store are those of a running one keeps
    /// the running verifier, and with it the token cache's entries for it
    /// (they record the verifier's id): a reload that changes only routes
    /// costs no verification. The snapshot's remote key sources need no
    /// change: they name the key store, which `same_verifier` requires to be
    /// the running one already.
    fn keep_unchanged_verifiers(&self, snapshot: &mut Snapshot) {
        let running = self.snapshot.load();
        for verifier in &mut snapshot.issuers {
            if let Some(old) = running
                .issuers
                .iter()
                .find(|old| same_verifier(old, verifier))
            {
                *verifier = old.clone();
            }
        }
    }
}

/// The config as every adapter reads it, and as the proxy does.
fn views(compiled: Compiled) -> (Arc<Snapshot>, Arc<Serving>) {
    let snapshot = Arc::new(compiled.snapshot);
    let serving = Arc::new(Serving {
        snapshot: snapshot.clone(),
        upstreams: compiled.upstreams,
    });
    (snapshot, serving)
}

/// Whether `new` verifies exactly as `old` does: the same key store and
/// every rule equal. Every field is named, so a field added to
/// [`IssuerVerifier`] can't be forgotten here.
fn same_verifier(old: &IssuerVerifier, new: &IssuerVerifier) -> bool {
    let IssuerVerifier {
        id: _,
        name,
        issuer,
        algorithms,
        audiences,
        check_audience,
        leeway_secs,
        require_exp,
        max_lifetime_secs,
        require_sub,
        require_jti,
        token_type:
            TokenTypeRule {
                typ,
                claim,
                claim_values,
            },
        scope_claim,
        keys,
        required,
    } = new;
    Arc::ptr_eq(keys, &old.keys)
        && *name == old.name
        && *issuer == old.issuer
        && *algorithms == old.algorithms
        && *audiences == old.audiences
        && *check_audience == old.check_audience
        && *leeway_secs == old.leeway_secs
        && *require_exp == old.require_exp
        && *max_lifetime_secs == old.max_lifetime_secs
        && *require_sub == old.require_sub
        && *require_jti == old.require_jti
        && *typ == old.token_type.typ
        && *claim == old.token_type.claim
        && *claim_values == old.token_type.claim_values
        && *scope_claim == old.scope_claim
        && *required == old.required
}

/// Every remote issuer's refresher, across reloads.
pub struct KeyRefreshers {
    /// Touched only by startup and by reloads, which are serialized: never
    /// on the request path.
    running: Mutex<Vec<RunningRefresher>>,
    commands: mpsc::UnboundedSender<Command>,
    /// Taken by the background service when it starts; commands sent
    /// before then wait in the channel.
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
    cache: Option<DiskCache>,
    metrics: KeyMetrics,
    clock: SharedClock,
    next_task: std::sync::atomic::AtomicU64,
    /// Each issuer's status lists whose refresher runs, and its task.
    status_lists: Mutex<Vec<(Arc<StatusLists>, u64)>>,
    status_metrics: StatusListMetrics,
}

struct RunningRefresher {
    identity: RemoteIdentity,
    keys: Arc<KeyStore>,
    task: u64,
}

/// A refresh loop, to run until stopped.
type Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

enum Command {
    Start(u64, Task),
    Stop(u64),
}

/// What applying a snapshot did to the refreshers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KeyChanges {
    /// Remote issuers whose keys and refresher were kept.
    pub kept: usize,
    pub started: usize,
    pub stopped: usize,
}

/// Refreshers the new snapshot no longer uses, stopped once it serves.
#[must_use = "stop the retired refreshers once the new snapshot is in place"]
pub struct Retired(Vec<u64>);

impl KeyRefreshers {
    pub fn new(keys_cache_dir: Option<PathBuf>, metrics: KeyMetrics, clock: SharedClock) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        Self {
            running: Mutex::default(),
            commands,
            receiver: Mutex::new(Some(receiver)),
            cache: keys_cache_dir.map(DiskCache::new),
            metrics,
            clock,
            next_task: Default::default(),
            status_lists: Mutex::default(),
            status_metrics: crate::telemetry::Metrics::new().status_lists,
        }
    }

    /// Where status list refreshers count (the process's registry).
    pub fn with_status_list_metrics(mut self, metrics: StatusListMetrics) -> Self {
        self.status_metrics = metrics;
        self
    }

    /// The key store already filled for `identity`, for
    /// [`crate::assemble::compile_reusing`].
    pub fn existing(&self, identity: &RemoteIdentity) -> Option<Arc<KeyStore>> {
        let running = self.running.lock().expect("not poisoned");
        running
            .iter()
            .find(|r| r.identity == *identity)
            .map(|r| r.keys.clone())
    }

    /// Makes the refreshers match `snapshot`: stores it reused keep their
    /// refresher; every other remote issuer gets a new one, started now so
    /// its keys come as soon as possible, with the keys it can have at once
    /// installed (those of the store it replaces when only fetch or refresh
    /// settings changed, else its disk copy).
    /// Fails before changing anything. The refreshers the snapshot no longer
    /// needs are returned, to be stopped once it has replaced the old one.
    pub fn apply(&self, snapshot: &Snapshot) -> Result<(KeyChanges, Retired), FetchError> {
        let mut running = self.running.lock().expect("not poisoned");
        let mut changes = KeyChanges::default();
        let mut fresh = Vec::new();
        let mut next = Vec::with_capacity(snapshot.remote.len());
        for source in &snapshot.remote {
            let keys = &source.keys;
            if let Some(index) = running.iter().position(|r| Arc::ptr_eq(&r.keys, keys)) {
                next.push(running.swap_remove(index));
                changes.kept += 1;
                continue;
            }
            let refresher = Refresher::new(
                source.clone(),
                self.cache.clone(),
                self.metrics.clone(),
                self.clock.clone(),
            );
            let refresher = match refresher {
                Ok(refresher) => refresher,
                Err(error) => {
                    // Put back what was taken: nothing has changed.
                    running.append(&mut next);
                    return Err(error);
                }
            };
            fresh.push((source.identity(), keys.clone(), Arc::new(refresher)));
        }
        for (identity, keys, refresher) in fresh {
            // Only fetch or refresh settings changed: no reason to go without
            // keys until the first fetch.
            if let Some(previous) = running.iter().find(|r| r.identity.same_keys_as(&identity)) {
                keys.adopt(&previous.keys);
            }
            refresher.load_cached();
            let task = self.start(Box::pin(async move { refresher.run().await }));
            next.push(RunningRefresher {
                identity,
                keys,
                task,
            });
            changes.started += 1;
        }
        let mut retired: Vec<u64> = running.drain(..).map(|r| r.task).collect();
        changes.stopped = retired.len();
        *running = next;
        retired.extend(self.apply_status_lists(snapshot));
        Ok((changes, Retired(retired)))
    }

    /// Starts a refresher for each issuer's lists the snapshot has anew,
    /// after their disk copies (checked with keys installed just before);
    /// returns the tasks of lists it no longer has.
    fn apply_status_lists(&self, snapshot: &Snapshot) -> Vec<u64> {
        let mut running = self.status_lists.lock().expect("not poisoned");
        let mut next = Vec::new();
        for lists in snapshot.status_lists.iter().flatten() {
            if let Some(index) = running.iter().position(|(r, _)| Arc::ptr_eq(r, lists)) {
                next.push(running.swap_remove(index));
                continue;
            }
            let refresher = ListRefresher::new(
                lists.clone(),
                self.cache.clone(),
                self.status_metrics.clone(),
                self.clock.clone(),
            );
            let refresher = match refresher {
                Ok(refresher) => Arc::new(refresher),
                Err(error) => {
                    tracing::error!(issuer = %lists.name, "status lists not refreshed: {error}");
                    continue;
                }
            };
            // The same issuer's lists before a reload gave it new keys.
            let previous = running
                .iter()
                .find(|(r, _)| r.name == lists.name && r.issuer == lists.issuer);
            if let Some((previous, _)) = previous {
                lists.adopt(previous, self.clock.now_unix());
            }
            refresher.load_cached();
            let task = self.start(Box::pin(async move { refresher.run().await }));
            next.push((lists.clone(), task));
        }
        let mut retired = Vec::new();
        for (lists, task) in running.drain(..) {
            // An issuer the config no longer checks lists for would
            // otherwise report its last values forever.
            if !next.iter().any(|(kept, _)| kept.name == lists.name) {
                let _ = self
                    .status_metrics
                    .lists
                    .remove_label_values(&[&lists.name]);
                let _ = self
                    .status_metrics
                    .bytes
                    .remove_label_values(&[&lists.name]);
            }
            retired.push(task);
        }
        *running = next;
        retired
    }

    /// Hands `run` to the background service; returns its task id.
    fn start(&self, run: Task) -> u64 {
        let task = self
            .next_task
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Only fails once the service has stopped: the process is ending.
        let _ = self.commands.send(Command::Start(task, run));
        task
    }

    pub fn stop(&self, retired: Retired) {
        for task in retired.0 {
            let _ = self.commands.send(Command::Stop(task));
        }
    }

    /// The background service that runs the refresh loops.
    pub fn service(self: &Arc<Self>) -> KeyRefreshService {
        KeyRefreshService(self.clone())
    }
}

/// Runs every remote issuer's refresh loop on Pingora's background runtime,
/// starting and stopping them as reloads ask.
pub struct KeyRefreshService(Arc<KeyRefreshers>);

#[async_trait]
impl BackgroundService for KeyRefreshService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut commands) = self.0.receiver.lock().expect("not poisoned").take() else {
            return;
        };
        let mut tasks = HashMap::new();
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Start(id, run)) => {
                        let task = tokio::spawn(run);
                        tasks.insert(id, task);
                    }
                    Some(Command::Stop(id)) => {
                        if let Some(task) = tasks.remove(&id) {
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Weak;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::assemble::compile_reusing;
    use crate::telemetry::Metrics;

    /// The refreshers' stores, for a config compiled beside them.
    struct Lookup<'a>(&'a KeyRefreshers);

    impl Running for Lookup<'_> {
        fn key_store(&self, identity: &RemoteIdentity) -> Option<Arc<KeyStore>> {
            self.0.existing(identity)
        }

        fn upstream_pool(&self, _: &PoolIdentity) -> Option<Arc<UpstreamPool>> {
            None
        }
    }
    use crate::config::parse;

    /// A config whose remote issuers (named in `issuers`) fetch from a
    /// closed port, so every attempt fails fast and is counted.
    fn snapshot(refreshers: &KeyRefreshers, issuers: &[&str]) -> Snapshot {
        let mut yaml = String::from("issuers:\n");
        for name in issuers {
            yaml.push_str(&format!(
                "  - {{ name: {name}, issuer: \"https://{name}.test\", jwks_uri: \"http://127.0.0.1:1/jwks\", fetch: {{ allow_http: true }}, algorithms: [RS256], audiences: [api] }}\n"
            ));
        }
        yaml.push_str("routes:\n  - name: r\n    upstream: { addrs: [\"127.0.0.1:1\"] }\n");
        let path = Path::new("gateway.yaml");
        let config = parse(path, &yaml, &|_| None).unwrap();
        compile_reusing(path, config, &Lookup(refreshers))
            .unwrap()
            .snapshot
    }

    fn fetches(metrics: &Metrics, issuer: &str) -> u64 {
        metrics
            .keys
            .fetches
            .with_label_values(&[issuer, "network"])
            .get()
    }

    async fn eventually(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn reloads_keep_start_and_stop_refreshers() {
        let metrics = Arc::new(Metrics::new());
        let refreshers = Arc::new(KeyRefreshers::new(
            None,
            metrics.keys.clone(),
            crate::clock::system(),
        ));
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let service = refreshers.service();
        let running = tokio::spawn(async move { service.start(shutdown).await });

        let first = snapshot(&refreshers, &["kept", "removed"]);
        let (changes, retired) = refreshers.apply(&first).unwrap();
        refreshers.stop(retired);
        assert_eq!((changes.kept, changes.started, changes.stopped), (0, 2, 0));
        eventually("both refreshers fetch", || {
            fetches(&metrics, "kept") > 0 && fetches(&metrics, "removed") > 0
        })
        .await;
        let removed_store: Weak<KeyStore> = Arc::downgrade(&first.issuers[1].keys);

        let second = snapshot(&refreshers, &["kept", "added"]);
        assert!(
            Arc::ptr_eq(&first.issuers[0].keys, &second.issuers[0].keys),
            "an unchanged issuer keeps its store"
        );
        let (changes, retired) = refreshers.apply(&second).unwrap();
        assert_eq!((changes.kept, changes.started, changes.stopped), (1, 1, 1));
        drop(first);
        refreshers.stop(retired);
        eventually("the added issuer's refresher fetches", || {
            fetches(&metrics, "added") > 0
        })
        .await;
        // Only the stopped task still held the removed issuer's store.
        eventually("the removed issuer's refresher stops", || {
            removed_store.upgrade().is_none()
        })
        .await;

        stop.send_replace(true);
        running.await.unwrap();
    }
}
