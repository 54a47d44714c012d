//! Hot reload: read and compile the config file again beside the running
//! one, and swap the new snapshot in whole, or leave the running one
//! serving. Triggered by SIGHUP, `POST /-/reload` on the admin listener and,
//! with `--watch`, by changes in the config file's directory (a Kubernetes
//! ConfigMap update included, which swaps a `..data` symlink rather than
//! writing the file).
//!
//! A reload reads files and resolves upstream names: it runs on a blocking
//! thread, never on a proxy thread, and reloads run one at a time.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::compile::compile_reusing;
use super::runtime::{KeyChanges, Runtime};
use super::sources::System;
use crate::admin::ReloadRefused;
use crate::assemble::Bootstrap;
use crate::certificates::EXPIRY_WARNING_SECS;
use crate::clock::SharedClock;
use crate::config::ConfigError;
use crate::keys::fetch::FetchError;
use crate::pipeline::{Snapshot, reconsider};
use crate::state::live::{LiveConnections, Reconsidered};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{HTTPS_LISTENER, RELOAD_ERROR, RELOAD_SUCCESS};
use crate::upstream::pools::PoolChanges;

/// What asked for a reload, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Hangup,
    Admin,
    Watch,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::Hangup => "SIGHUP",
            Self::Admin => "POST /-/reload",
            Self::Watch => "watched file change",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "{file}: {} needs a restart; nothing was reloaded (restart jwtgate to apply it, or undo the change)",
        changes.join(", ")
    )]
    RestartNeeded { file: PathBuf, changes: Vec<String> },
    #[error("{file}: cannot start fetching keys: {source}")]
    KeyRefresh { file: PathBuf, source: FetchError },
}

impl ReloadError {
    /// Whether the config asks for what a reload can't do (as opposed to
    /// a config that is wrong).
    pub fn needs_restart(&self) -> bool {
        matches!(self, Self::RestartNeeded { .. })
    }
}

/// What a successful reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    pub issuers: usize,
    pub routes: usize,
    pub remote_keys: KeyChanges,
    pub upstreams: PoolChanges,
    /// Long-lived connections whose routes now refuse their tokens.
    pub connections: Reconsidered,
}

impl Reloaded {
    /// The admin endpoint's answer.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "result": RELOAD_SUCCESS,
            "issuers": self.issuers,
            "routes": self.routes,
            "remote_issuers": {
                "kept": self.remote_keys.kept,
                "started": self.remote_keys.started,
                "stopped": self.remote_keys.stopped,
            },
            "upstreams": {
                "kept": self.upstreams.kept,
                "started": self.upstreams.started,
                "stopped": self.upstreams.stopped,
            },
            "connections": {
                "ended": self.connections.ended,
                "would_end": self.connections.would_end,
            },
        })
    }
}

pub struct Reloader {
    path: PathBuf,
    /// What the process was started with; a reload may not change it.
    bootstrap: Bootstrap,
    runtime: Arc<Runtime>,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    /// Decided again after each reload.
    live: Option<Arc<LiveConnections>>,
    /// Held for a whole reload: two at once could each keep a key store
    /// the other retires.
    serial: Mutex<()>,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        bootstrap: Bootstrap,
        runtime: Arc<Runtime>,
        metrics: Arc<Metrics>,
        clock: SharedClock,
    ) -> Self {
        Self {
            path,
            bootstrap,
            runtime,
            metrics,
            clock,
            live: None,
            serial: Mutex::new(()),
        }
    }

    /// Ends, after each reload, the long-lived connections in `live` that
    /// the new config's routes refuse.
    pub fn with_live_connections(mut self, live: Arc<LiveConnections>) -> Self {
        self.live = Some(live);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The files a change of which is worth a reload: the config, and the
    /// certificate and key files the running config serves, and the CA
    /// bundle client certificates are checked against.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let snapshot = self.runtime.snapshot.load();
        let mut files = vec![self.path.clone()];
        if let Some(https) = &snapshot.https {
            files.extend(https.certificates.files().map(Path::to_path_buf));
            files.extend(https.client_certs.iter().map(|c| c.file().to_path_buf()));
        }
        files
    }

    /// Reloads the config file, blocking (file reads, name resolution): call
    /// it from a blocking thread. On failure the running config keeps
    /// serving; either way the outcome is logged and counted.
    pub fn reload(&self, trigger: Trigger) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = self.swap();
        crate::memory::release_freed();
        match &outcome {
            Ok(reloaded) => {
                self.metrics
                    .config
                    .reloads
                    .with_label_values(&[RELOAD_SUCCESS])
                    .inc();
                self.metrics.config.last_reload.set(self.clock.now_unix());
                tracing::info!(
                    trigger = trigger.as_str(),
                    issuers = reloaded.issuers,
                    routes = reloaded.routes,
                    remote_kept = reloaded.remote_keys.kept,
                    remote_started = reloaded.remote_keys.started,
                    remote_stopped = reloaded.remote_keys.stopped,
                    upstreams_kept = reloaded.upstreams.kept,
                    upstreams_started = reloaded.upstreams.started,
                    upstreams_stopped = reloaded.upstreams.stopped,
                    connections_ended = reloaded.connections.ended,
                    connections_would_end = reloaded.connections.would_end,
                    "config reloaded from {}",
                    self.path.display()
                );
            }
            Err(error) => {
                self.metrics
                    .config
                    .reloads
                    .with_label_values(&[RELOAD_ERROR])
                    .inc();
                tracing::error!(
                    trigger = trigger.as_str(),
                    "config reload failed; still serving the previous config: {error}"
                );
            }
        }
        outcome
    }

    fn swap(&self) -> Result<Reloaded, ReloadError> {
        let config = super::load(&self.path, &System)?;
        let compiled = compile_reusing(&self.path, config, self.runtime.as_ref())?;
        let changes = self.bootstrap.changes(&compiled.bootstrap);
        if !changes.is_empty() {
            return Err(ReloadError::RestartNeeded {
                file: self.path.clone(),
                changes,
            });
        }
        for warning in &compiled.snapshot.warnings {
            tracing::warn!("{warning}");
        }
        warn_expiring_certificates(&compiled.snapshot, self.clock.now_unix());
        let previous = self.runtime.snapshot.load_full();
        let (issuers, routes) = (
            compiled.snapshot.issuers.len(),
            compiled.snapshot.routes.len(),
        );
        let applied = self
            .runtime
            .serve(compiled)
            .map_err(|source| ReloadError::KeyRefresh {
                file: self.path.clone(),
                source,
            })?;
        let current = self.runtime.snapshot.load_full();
        record_certificate_expiry(&self.metrics, &current);
        self.forget_issuer_gauges(&previous);
        // Once the new config serves: a connection opened meanwhile was
        // decided by it already.
        let connections = self
            .live
            .as_ref()
            .map_or_else(Reconsidered::default, |live| {
                live.reconsider(|route, token, iss| {
                    reconsider::on_reload(&current, route, token, iss)
                })
            });
        Ok(Reloaded {
            issuers,
            routes,
            remote_keys: applied.remote_keys,
            upstreams: applied.upstreams,
            connections,
        })
    }

    /// Key gauges of issuers the new config no longer has would otherwise
    /// report their last values forever.
    fn forget_issuer_gauges(&self, previous: &Snapshot) {
        let current = self.runtime.snapshot.load();
        for issuer in &previous.issuers {
            let name = issuer.name.as_str();
            if !current.issuers.iter().any(|i| i.name == name) {
                self.metrics.keys.forget(name);
            }
        }
    }
}

/// `POST /-/reload` on the admin listener.
impl crate::admin::Reload for Reloader {
    fn reload(&self) -> Result<serde_json::Value, ReloadRefused> {
        Reloader::reload(self, Trigger::Admin)
            .map(|reloaded| reloaded.to_json())
            .map_err(|error| ReloadRefused {
                needs_restart: error.needs_restart(),
                message: error.to_string(),
            })
    }
}

/// Logs what `jwtgate check` warns about the certificates: expired, or
/// expiring within 30 days. Expired is only a warning: refusing the reload
/// would not make the certificate any younger, and would hold back the
/// rest of the config.
pub fn warn_expiring_certificates(snapshot: &Snapshot, now: i64) {
    if let Some(https) = &snapshot.https {
        for warning in https.certificates.expiry_warnings(now, EXPIRY_WARNING_SECS) {
            tracing::warn!("{warning}");
        }
    }
}

/// Exports each served certificate's notAfter, per configured host.
pub fn record_certificate_expiry(metrics: &Metrics, snapshot: &Snapshot) {
    let hosts = snapshot.https.iter().flat_map(|https| {
        https.certificates.entries().iter().flat_map(|entry| {
            entry
                .hosts
                .iter()
                .map(|host| (host.as_str(), entry.not_after))
        })
    });
    metrics
        .config
        .record_certificate_expiry(HTTPS_LISTENER, hosts);
}

/// How long the directory must stay quiet before a burst of events (an
/// editor's save, a ConfigMap swap) becomes one reload.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// A burst that never goes quiet still reloads this long after it began.
const MAX_DEBOUNCE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {} for changes: {source}", dir.display())]
pub struct WatchError {
    dir: PathBuf,
    source: notify::Error,
}

/// What the watcher watches: the directory of each file and the names that
/// matter in them.
#[derive(Default)]
struct Watched {
    dirs: HashSet<PathBuf>,
    names: HashSet<OsString>,
}

impl Watched {
    /// Starts watching the directories of `files` not yet watched. The
    /// directory, not the file: a ConfigMap or Secret update replaces the
    /// `..data` symlink the file resolves through, and editors and
    /// certificate renewers often replace a file by a rename; a watch on
    /// the file itself would lose track either way.
    fn add(
        &mut self,
        watcher: &mut impl notify::Watcher,
        files: &[PathBuf],
    ) -> Result<(), WatchError> {
        for file in files {
            let dir = match file.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if let Some(name) = file.file_name() {
                self.names.insert(name.to_os_string());
            }
            if !self.dirs.contains(&dir) {
                watcher
                    .watch(&dir, notify::RecursiveMode::NonRecursive)
                    .map_err(|source| WatchError {
                        dir: dir.clone(),
                        source,
                    })?;
                tracing::info!("watching {} for changes", dir.display());
                self.dirs.insert(dir);
            }
        }
        Ok(())
    }

    /// Whether an event changes a watched file. Names are compared, not
    /// whole paths: another file of the same name in another watched
    /// directory costs at most one reload that changes nothing.
    fn concerns(&self, event: &notify::Event) -> bool {
        // Reading a file (ours included) is no change.
        !matches!(event.kind, notify::EventKind::Access(_))
            && event.paths.iter().any(|changed| {
                changed
                    .file_name()
                    .is_some_and(|name| name == "..data" || self.names.contains(name))
            })
    }
}

/// Watches the config file and the certificate and key files it names, and
/// reloads when one changes. After each reload the watch takes in the
/// directories of certificates the new config added.
pub fn watch(reloader: Arc<Reloader>) -> Result<(), WatchError> {
    let (events, received) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(events).map_err(|source| WatchError {
        dir: reloader.path().to_path_buf(),
        source,
    })?;
    let mut watched = Watched::default();
    watched.add(&mut watcher, &reloader.watched_files())?;
    let config = reloader.path().to_path_buf();
    std::thread::Builder::new()
        .name("jwtgate config watch".into())
        .spawn(move || {
            loop {
                match received.recv() {
                    Ok(Ok(event)) if watched.concerns(&event) => {}
                    Ok(Ok(_)) => continue,
                    Ok(Err(error)) => {
                        tracing::warn!("config watch: {error}");
                        continue;
                    }
                    Err(_) => return,
                }
                // Let the burst end (a write in several steps, a swap in
                // several renames, a certificate and its key written one
                // after the other); other files in the directory, such as a
                // log written next to the config, neither extend nor end it.
                let started = Instant::now();
                let mut quiet_at = started + DEBOUNCE;
                loop {
                    let now = Instant::now();
                    if now >= quiet_at {
                        break;
                    }
                    match received.recv_timeout(quiet_at - now) {
                        Ok(Ok(event)) if watched.concerns(&event) => {
                            quiet_at = (Instant::now() + DEBOUNCE).min(started + MAX_DEBOUNCE);
                        }
                        Ok(_) => {}
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                // The outcome is logged and counted by reload itself.
                if reloader.reload(Trigger::Watch).is_ok()
                    && let Err(error) = watched.add(&mut watcher, &reloader.watched_files())
                {
                    tracing::warn!("config watch: {error}");
                }
            }
        })
        .map_err(|e| WatchError {
            dir: config,
            source: notify::Error::io(e),
        })?;
    Ok(())
}
