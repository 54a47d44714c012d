//! Revocation: runtime state that outlives every config snapshot. The
//! in-memory [`RevocationList`] the pipeline checks after verification
//! (and after a cache hit), its disk copy ([`journal`]), the queue of
//! changes waiting for Redis, and the sync status Redis reports into.
//!
//! Changes arrive three ways: the admin API (`/revocations` on the admin
//! listener), Redis (another replica's change, or a reconcile: [`redis_sync`]),
//! and the sweeper (lapsed `jti` entries). Each is applied to memory and appended to the journal under
//! one mutex, so the file's order is memory's order. Disk writes block:
//! callers on an async runtime run them on a blocking thread.

pub mod journal;
pub mod list;
pub mod redis_sync;
pub mod tokens;

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec};
use tokio::sync::Notify;

use self::journal::{Journal, JournalError};
pub use self::list::{Change, Entry, Kind, RevocationList};
use self::tokens::AdminToken;
use crate::clock::SharedClock;
use crate::config::schema::AsWritten;
use crate::state::live::LiveConnections;
use crate::state::redis::Redis;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{counter_vec, gauge, gauge_vec};

/// How often lapsed `jti` entries are looked for (a scan happens only when
/// one is due).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// The disk copy is rewritten without swept entries at most this often.
const COMPACT_GAP_SECS: i64 = 10;

/// `operation` label values of `jwtgate_revocation_sync_errors_total`.
pub const SYNC_CONNECT: &str = "connect";
pub const SYNC_PUSH: &str = "push";
pub const SYNC_RECONCILE: &str = "reconcile";
pub const SYNC_HEARTBEAT: &str = "heartbeat";
pub const SYNC_MESSAGE: &str = "message";

/// `revocation` compiled. Restart-only: the list, its files and its Redis
/// session live as long as the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationSettings {
    pub dir: Option<PathBuf>,
    pub admin_tokens: Vec<AdminToken>,
    /// `None`: this replica's own list, shared with nobody.
    pub redis: Option<RevocationSharing>,
}

/// `revocation.redis`: how the list is shared through the gateway's Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationSharing {
    pub key_prefix: String,
    pub reconcile_interval: Duration,
    pub max_staleness: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error(transparent)]
    Journal(#[from] JournalError),
}

struct RevocationMetrics {
    entries: IntGaugeVec,
    sync_age: IntGauge,
    sync_errors: IntCounterVec,
    pending: IntGauge,
}

impl RevocationMetrics {
    fn new(metrics: &Metrics, shared: bool) -> Self {
        let entries = gauge_vec(
            "jwtgate_revocation_entries",
            "Revocation entries in memory, by kind (jti, sub, sid).",
            &["kind"],
        );
        let sync_age = gauge(
            "jwtgate_revocation_sync_age_seconds",
            "Seconds since the revocation list was last known to match Redis (counted from startup until the first sync).",
        );
        let sync_errors = counter_vec(
            "jwtgate_revocation_sync_errors_total",
            "Failed exchanges with Redis, by operation (connect, push, reconcile, heartbeat, message).",
            &["operation"],
        );
        let pending = gauge(
            "jwtgate_revocation_pending",
            "Revocation changes made here and not yet pushed to Redis.",
        );
        metrics.register(Box::new(entries.clone()));
        if shared {
            metrics.register(Box::new(sync_age.clone()));
            metrics.register(Box::new(sync_errors.clone()));
            metrics.register(Box::new(pending.clone()));
            for operation in [
                SYNC_CONNECT,
                SYNC_PUSH,
                SYNC_RECONCILE,
                SYNC_HEARTBEAT,
                SYNC_MESSAGE,
            ] {
                sync_errors.with_label_values(&[operation]);
            }
        }
        Self {
            entries,
            sync_age,
            sync_errors,
            pending,
        }
    }
}

/// What the journal mutex guards: the disk copy and the changes waiting
/// for Redis, which must move together with memory.
struct Durable {
    journal: Option<Journal>,
    pending: Vec<Change>,
    /// When the log was last rewritten, and whether swept entries wait
    /// for the next rewrite.
    compacted_at: i64,
    swept_since: bool,
}

pub struct Revocations {
    list: Arc<RevocationList>,
    durable: Mutex<Durable>,
    settings: RevocationSettings,
    clock: SharedClock,
    metrics: RevocationMetrics,
    /// Wakes the Redis task when a change waits to be pushed.
    pushed: Notify,
    /// When the list last matched Redis; startup until the first sync.
    synced_at: AtomicI64,
    /// The long-lived connections a revocation ends at once.
    live: OnceLock<Arc<LiveConnections>>,
}

/// What [`Revocations::apply_local`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Whether the list changed (a `Lift` of a missing entry does not).
    pub changed: bool,
}

impl Revocations {
    /// The list as the disk copy left it (loaded before any listener
    /// opens, so before `/readyz` can say ready), with lapsed `jti`
    /// entries dropped and the log compacted.
    pub fn open(
        settings: RevocationSettings,
        metrics: &Metrics,
        clock: SharedClock,
    ) -> Result<Self, RevocationError> {
        let list = Arc::new(RevocationList::new());
        let now = clock.now_unix();
        let mut durable = Durable {
            journal: None,
            pending: Vec::new(),
            compacted_at: now,
            swept_since: false,
        };
        if let Some(dir) = &settings.dir {
            let (mut journal, loaded) = Journal::open(dir)?;
            for change in loaded.changes.iter().chain(&loaded.pending) {
                list.apply(change);
            }
            list.sweep(now);
            if loaded.skipped > 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    skipped = loaded.skipped,
                    "revocation: skipped unreadable lines of the disk copy (a write cut short?)"
                );
            }
            journal.compact(&list.entries())?;
            durable.pending = loaded.pending;
            durable.journal = Some(journal);
            tracing::info!(
                dir = %dir.display(),
                jti = list.len(Kind::Jti),
                sub = list.len(Kind::Sub),
                sid = list.len(Kind::Sid),
                pending = durable.pending.len(),
                "revocation list loaded from disk"
            );
        }
        let metrics = RevocationMetrics::new(metrics, settings.redis.is_some());
        let revocations = Self {
            list,
            durable: Mutex::new(durable),
            settings,
            clock,
            metrics,
            pushed: Notify::new(),
            synced_at: AtomicI64::new(now),
            live: OnceLock::new(),
        };
        revocations.refresh_gauges();
        Ok(revocations)
    }

    /// From now on, every revocation applied (here or from Redis) also ends
    /// the open long-lived connections it matches.
    pub fn end_connections_in(&self, live: Arc<LiveConnections>) {
        let _ = self.live.set(live);
    }

    /// Ends the armed connections `change` revokes. Local and remote
    /// changes both come through here, so a revocation made on another
    /// replica ends this replica's connections too.
    fn end_connections(&self, change: &Change) {
        if let (Change::Put(entry), Some(live)) = (change, self.live.get()) {
            let ended = live.revoke(entry);
            if ended > 0 {
                tracing::info!(
                    kind = entry.kind.as_str(),
                    ended,
                    "revocation: open long-lived connections ended"
                );
            }
        }
    }

    /// What the request path reads.
    pub fn list(&self) -> &Arc<RevocationList> {
        &self.list
    }

    pub fn settings(&self) -> &RevocationSettings {
        &self.settings
    }

    pub fn now(&self) -> i64 {
        self.clock.now_unix()
    }

    fn durable(&self) -> std::sync::MutexGuard<'_, Durable> {
        self.durable.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A change made here (the admin API): in memory, on disk, and queued
    /// for Redis when there is one. Blocks on the disk write.
    pub fn apply_local(&self, change: Change) -> Result<Applied, RevocationError> {
        let mut durable = self.durable();
        let changed = self.list.apply(&change);
        self.end_connections(&change);
        if let Some(journal) = &mut durable.journal {
            journal.append(std::slice::from_ref(&change))?;
        }
        self.compact_if_mostly_dead(&mut durable)?;
        if self.settings.redis.is_some() {
            durable.pending.push(change);
            if let Some(journal) = &durable.journal {
                journal.save_pending(&durable.pending)?;
            }
            self.metrics.pending.set(durable.pending.len() as i64);
            self.pushed.notify_one();
        }
        drop(durable);
        self.refresh_gauges();
        Ok(Applied { changed })
    }

    /// Changes that came from Redis: in memory and on disk, not queued.
    /// A change to an entry that still waits in the queue is skipped: the
    /// local change is newer than what Redis had. Blocks on the disk write.
    pub fn apply_remote(&self, changes: &[Change]) -> Result<usize, RevocationError> {
        let mut durable = self.durable();
        let mut applied = Vec::with_capacity(changes.len());
        for change in changes {
            let target = change.target();
            if durable.pending.iter().any(|p| p.target() == target) {
                continue;
            }
            if self.list.apply(change) {
                applied.push(change.clone());
            }
        }
        if let Some(journal) = &mut durable.journal {
            journal.append(&applied)?;
        }
        self.compact_if_mostly_dead(&mut durable)?;
        drop(durable);
        for change in &applied {
            self.end_connections(change);
        }
        if !applied.is_empty() {
            self.refresh_gauges();
        }
        Ok(applied.len())
    }

    /// Rewrites the log once lifted and replaced entries' lines outnumber
    /// the live ones (and a thousand), so it stays proportional to the list.
    fn compact_if_mostly_dead(&self, durable: &mut Durable) -> Result<(), RevocationError> {
        let live = self.list.total();
        let Some(journal) = &mut durable.journal else {
            return Ok(());
        };
        if journal.lines().saturating_sub(live) > live.max(1024) {
            journal.compact(&self.list.entries())?;
            durable.compacted_at = self.now();
            durable.swept_since = false;
        }
        Ok(())
    }

    /// The changes waiting for Redis, oldest first.
    pub fn pending(&self) -> Vec<Change> {
        self.durable().pending.clone()
    }

    /// The first `count` pending changes reached Redis.
    pub fn pushed(&self, count: usize) -> Result<(), RevocationError> {
        let mut durable = self.durable();
        let count = count.min(durable.pending.len());
        durable.pending.drain(..count);
        if let Some(journal) = &durable.journal {
            journal.save_pending(&durable.pending)?;
        }
        self.metrics.pending.set(durable.pending.len() as i64);
        Ok(())
    }

    /// Waits until a local change is queued for Redis.
    pub async fn changed(&self) {
        self.pushed.notified().await;
    }

    /// Drops lapsed `jti` entries from memory now, and from disk at the
    /// next compaction (at most every few seconds). Redis drops its own
    /// copies by their key TTL. Blocks on the disk write.
    pub fn sweep(&self) -> Result<usize, RevocationError> {
        let now = self.now();
        let mut durable = self.durable();
        let removed = self.list.sweep(now);
        if !removed.is_empty() {
            durable.swept_since = true;
            tracing::debug!(
                count = removed.len(),
                "revocation: lapsed jti entries dropped"
            );
        }
        if durable.swept_since && now - durable.compacted_at >= COMPACT_GAP_SECS {
            if let Some(journal) = &mut durable.journal {
                journal.compact(&self.list.entries())?;
            }
            durable.compacted_at = now;
            durable.swept_since = false;
        }
        drop(durable);
        if !removed.is_empty() {
            self.refresh_gauges();
        }
        Ok(removed.len())
    }

    /// The list matches Redis as of now.
    pub fn mark_synced(&self) {
        self.synced_at.store(self.now(), Ordering::Relaxed);
    }

    pub fn sync_error(&self, operation: &'static str) {
        self.metrics
            .sync_errors
            .with_label_values(&[operation])
            .inc();
    }

    /// Seconds since the list last matched Redis; `None` without Redis.
    pub fn sync_age(&self) -> Option<i64> {
        self.settings
            .redis
            .as_ref()
            .map(|_| (self.now() - self.synced_at.load(Ordering::Relaxed)).max(0))
    }

    /// Why `/readyz` should fail: out of step with Redis for longer than
    /// `max_staleness`.
    pub fn not_ready(&self) -> Option<String> {
        let max = self.settings.redis.as_ref()?.max_staleness?;
        let age = self.sync_age()?;
        (age > max.as_secs() as i64).then(|| {
            format!(
                "revocation list out of step with Redis for {age}s (max_staleness {})",
                AsWritten(max)
            )
        })
    }

    pub fn refresh_gauges(&self) {
        for kind in Kind::ALL {
            self.metrics
                .entries
                .with_label_values(&[kind.as_str()])
                .set(self.list.len(kind) as i64);
        }
        if let Some(age) = self.sync_age() {
            self.metrics.sync_age.set(age);
        }
    }

    /// The sweeper and, when the list is shared, the Redis session, for
    /// as long as the calling task lives.
    pub async fn run(self: Arc<Self>, redis: Option<Arc<Redis>>) {
        let sync = match (self.settings.redis.clone(), redis) {
            (Some(sharing), Some(redis)) => {
                Some(tokio::spawn(redis_sync::run(self.clone(), sharing, redis)))
            }
            _ => None,
        };
        // Aborts the session when this task is aborted or dropped.
        let _sync = sync.map(AbortOnDrop);
        let mut every = tokio::time::interval(SWEEP_EVERY);
        loop {
            every.tick().await;
            let revocations = self.clone();
            let swept = tokio::task::spawn_blocking(move || revocations.sweep()).await;
            if let Ok(Err(error)) = swept {
                tracing::error!("revocation: {error}");
            }
        }
    }
}

/// A spawned task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn settings(dir: &std::path::Path) -> RevocationSettings {
        RevocationSettings {
            dir: Some(dir.to_path_buf()),
            admin_tokens: Vec::new(),
            redis: None,
        }
    }

    fn jti(value: &str, at: i64) -> Change {
        Change::test_jti(value, at)
    }

    #[test]
    fn the_disk_copy_survives_a_restart_and_lapsed_entries_leave_it() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(1_000);
        let metrics = Metrics::new();
        let revocations = Revocations::open(settings(dir.path()), &metrics, clock.clone()).unwrap();
        revocations.apply_local(jti("short", 1_005)).unwrap();
        revocations.apply_local(jti("long", 5_000)).unwrap();
        let sub = Change::Put(Entry {
            kind: Kind::Sub,
            iss: "https://i".into(),
            value: "alice".into(),
            at: 990,
        });
        revocations.apply_local(sub).unwrap();
        drop(revocations);

        let metrics = Metrics::new();
        let revocations = Revocations::open(settings(dir.path()), &metrics, clock.clone()).unwrap();
        assert_eq!(revocations.list().len(Kind::Jti), 2);
        assert_eq!(
            revocations.list().get(Kind::Sub, "https://i", "alice"),
            Some(990)
        );

        clock.advance(5);
        assert_eq!(revocations.sweep().unwrap(), 1);
        assert_eq!(
            revocations.list().get(Kind::Jti, "https://i", "short"),
            None
        );
        let log = || std::fs::read_to_string(dir.path().join(journal::LOG_FILE)).unwrap();
        assert!(
            log().contains("short"),
            "rewritten at most every few seconds"
        );
        clock.advance(COMPACT_GAP_SECS);
        revocations.sweep().unwrap();
        assert!(!log().contains("short"), "{}", log());
        assert!(log().contains("long"));
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains("jwtgate_revocation_entries{kind=\"jti\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn the_log_is_rewritten_once_lifted_entries_dominate_it() {
        let dir = tempfile::tempdir().unwrap();
        let revocations = Revocations::open(
            settings(dir.path()),
            &Metrics::new(),
            ManualClock::at(1_000),
        )
        .unwrap();
        for i in 0..600 {
            let value = format!("user-{i}");
            revocations
                .apply_local(Change::Put(Entry {
                    kind: Kind::Sub,
                    iss: "https://i".into(),
                    value: value.clone(),
                    at: 900,
                }))
                .unwrap();
            revocations
                .apply_local(Change::Lift {
                    kind: Kind::Sub,
                    iss: "https://i".into(),
                    value,
                })
                .unwrap();
        }
        let lines = std::fs::read_to_string(dir.path().join(journal::LOG_FILE))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 1025, "{lines} lines for an empty list");
    }

    #[test]
    fn with_redis_local_changes_queue_and_remote_ones_do_not_override_them() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(1_000);
        let metrics = Metrics::new();
        let mut settings = settings(dir.path());
        settings.redis = Some(RevocationSharing {
            key_prefix: "jwtgate:revocation".into(),
            reconcile_interval: Duration::from_secs(30),
            max_staleness: Some(Duration::from_secs(5)),
        });
        let revocations = Revocations::open(settings.clone(), &metrics, clock.clone()).unwrap();
        revocations.apply_local(jti("a", 2_000)).unwrap();
        assert_eq!(revocations.pending(), vec![jti("a", 2_000)]);
        // Redis does not have it yet: a reconcile must not take it away.
        let lift = Change::Lift {
            kind: Kind::Jti,
            iss: "https://i".into(),
            value: "a".into(),
        };
        assert_eq!(
            revocations
                .apply_remote(&[lift.clone(), jti("b", 2_000)])
                .unwrap(),
            1
        );
        assert!(
            revocations
                .list()
                .get(Kind::Jti, "https://i", "a")
                .is_some()
        );

        // The queue outlives a restart with Redis down.
        drop(revocations);
        let revocations = Revocations::open(settings, &Metrics::new(), clock.clone()).unwrap();
        assert_eq!(revocations.pending(), vec![jti("a", 2_000)]);
        revocations.pushed(1).unwrap();
        assert!(revocations.pending().is_empty());
        assert_eq!(revocations.apply_remote(&[lift]).unwrap(), 1);

        // Sync age and readiness follow the clock.
        assert_eq!(revocations.sync_age(), Some(0));
        clock.advance(5);
        assert_eq!(revocations.not_ready(), None);
        clock.advance(1);
        assert!(revocations.not_ready().unwrap().contains("for 6s"));
        revocations.mark_synced();
        assert_eq!(revocations.not_ready(), None);
    }

    #[tokio::test]
    async fn local_and_remote_revocations_end_matching_live_connections() {
        use crate::state::live::{ConnectionKind, Deadline, Holder, LiveConnections, TokenKeys};
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(1_000);
        let metrics = Metrics::new();
        let revocations = Revocations::open(settings(dir.path()), &metrics, clock.clone()).unwrap();
        let live = LiveConnections::new(&metrics, clock);
        revocations.end_connections_in(live.clone());
        let token = |jti: &str| TokenKeys {
            iss: "https://i".into(),
            jti: Some(jti.into()),
            ..TokenKeys::default()
        };
        let here = live.arm(
            Deadline::default(),
            token("a"),
            "ws",
            ConnectionKind::WebSocket,
            Holder::enforced(None),
        );
        let there = live.arm(
            Deadline::default(),
            token("b"),
            "ws",
            ConnectionKind::WebSocket,
            Holder::enforced(None),
        );
        revocations.apply_local(jti("a", 2_000)).unwrap();
        assert!(here.fired().is_some());
        assert!(there.fired().is_none());
        revocations.apply_remote(&[jti("b", 2_000)]).unwrap();
        assert!(there.fired().is_some(), "a change from another replica");
    }
}
