//! The runtime lifetime: state that outlives any one config. Each remote
//! issuer's key store and the refresher that fills it are kept here, keyed
//! by the issuer's [`RemoteIdentity`]; a reload hands the stores it can keep
//! to the new snapshot, starts refreshers for issuers that are new (or
//! whose key source changed) and stops those of issuers that are gone. The
//! verified-token cache and the metrics live as long, in the proxy and the
//! server.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc;

use crate::clock::SharedClock;
use crate::keys::KeyStore;
use crate::keys::disk::DiskCache;
use crate::keys::fetch::FetchError;
use crate::keys::remote::{Refresher, RemoteIdentity};
use crate::pipeline::Snapshot;
use crate::telemetry::Metrics;

/// Every remote issuer's refresher, across reloads.
pub struct KeyRefreshers {
    /// Touched only by startup and by reloads, which are serialized: never
    /// on the request path.
    running: Mutex<Vec<Running>>,
    commands: mpsc::UnboundedSender<Command>,
    /// Taken by the background service when it starts; commands sent
    /// before then wait in the channel.
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
    cache: Option<DiskCache>,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    next_task: std::sync::atomic::AtomicU64,
}

struct Running {
    identity: RemoteIdentity,
    keys: Arc<KeyStore>,
    task: u64,
}

enum Command {
    Start(u64, Arc<Refresher>),
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
    pub fn new(keys_cache_dir: Option<PathBuf>, metrics: Arc<Metrics>, clock: SharedClock) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        Self {
            running: Mutex::default(),
            commands,
            receiver: Mutex::new(Some(receiver)),
            cache: keys_cache_dir.map(DiskCache::new),
            metrics,
            clock,
            next_task: Default::default(),
        }
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
            let task = self
                .next_task
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Only fails once the service has stopped: the process is ending.
            let _ = self.commands.send(Command::Start(task, refresher));
            next.push(Running {
                identity,
                keys,
                task,
            });
            changes.started += 1;
        }
        let retired: Vec<u64> = running.drain(..).map(|r| r.task).collect();
        changes.stopped = retired.len();
        *running = next;
        Ok((changes, Retired(retired)))
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
                    Some(Command::Start(id, refresher)) => {
                        let task = tokio::spawn(async move { refresher.run().await });
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
        compile_reusing(path, config, &|identity| refreshers.existing(identity))
            .unwrap()
            .snapshot
    }

    fn fetches(metrics: &Metrics, issuer: &str) -> u64 {
        metrics
            .jwks_fetches
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
            metrics.clone(),
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
