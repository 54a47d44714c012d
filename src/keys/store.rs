use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use tokio::sync::{Notify, watch};

use super::KeySet;

/// Key-set generations come from one counter for the whole process, so a
/// generation names one key set of one store: a result recorded against it
/// can never match another issuer's store, or a store built by a later
/// config, even where issuer indices shift between configs.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// The current keys of one issuer. Readers take a lock-free snapshot; the
/// refresher swaps in a whole new set at once, so a request never sees a
/// half-updated key set and never waits on the network, except for the
/// bounded [`KeyStore::refetch`] on an unknown `kid`.
#[derive(Debug)]
pub struct KeyStore {
    current: ArcSwap<KeySet>,
    /// Replaced (from the process-wide counter) whenever the key set is,
    /// so results derived from an older set (cached verifications) can tell.
    generation: AtomicU64,
    /// Unix seconds of the last refresh attempt that succeeded (0: never).
    last_success: AtomicI64,
    /// Where the current keys came from, a [`KeySource`].
    source: AtomicU8,
    on_demand: Option<OnDemand>,
}

/// Where an issuer's current keys came from, as a trace tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum KeySource {
    /// A file, an inline JWKS or a secret in the config.
    Local,
    /// The identity provider, at the last refresh.
    Fresh,
    /// The identity provider, before refreshes started failing
    /// (stale-if-error).
    Stale,
    /// The on-disk copy, loaded at startup.
    Disk,
}

impl KeySource {
    const ALL: [KeySource; 4] = [Self::Local, Self::Fresh, Self::Stale, Self::Disk];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Fresh => "fresh",
            Self::Stale => "stale",
            Self::Disk => "disk",
        }
    }
}

/// Single-flight, rate-limited refetches requested by the request path.
#[derive(Debug)]
struct OnDemand {
    state: std::sync::Mutex<OnDemandState>,
    /// Wakes the refresher.
    wake: Notify,
    /// Bumped by the refresher after every fetch attempt, success or not.
    attempts: watch::Sender<u64>,
    min_interval: Duration,
    max_wait: Duration,
}

#[derive(Debug, Default)]
struct OnDemandState {
    pending: bool,
    last_trigger: Option<Instant>,
}

impl KeyStore {
    /// Keys that never change (a file, inline JWKS or secret).
    pub fn fixed(keys: KeySet) -> Self {
        Self {
            current: ArcSwap::from_pointee(keys),
            generation: AtomicU64::new(next_generation()),
            last_success: AtomicI64::new(0),
            source: AtomicU8::new(KeySource::Local as u8),
            on_demand: None,
        }
    }

    /// Keys a refresher fills: empty until the first fetch (or disk cache).
    /// A request may trigger a refetch at most once per `min_interval`, and
    /// waits at most `max_wait` for it.
    pub fn remote(min_interval: Duration, max_wait: Duration) -> Self {
        Self {
            current: ArcSwap::from_pointee(KeySet::default()),
            generation: AtomicU64::new(next_generation()),
            last_success: AtomicI64::new(0),
            source: AtomicU8::new(KeySource::Fresh as u8),
            on_demand: Some(OnDemand {
                state: Default::default(),
                wake: Notify::new(),
                attempts: watch::channel(0).0,
                min_interval,
                max_wait,
            }),
        }
    }

    pub fn current(&self) -> Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// Installs a new key set.
    pub fn replace(&self, keys: KeySet) {
        self.current.store(Arc::new(keys));
        self.generation.store(next_generation(), Ordering::Release);
    }

    /// Serves `other`'s current keys, and its last success, until this
    /// store's own refresher replaces them: a store whose fetch settings
    /// changed in a reload starts with the keys of the one it follows, from
    /// the same source, rather than empty.
    pub fn adopt(&self, other: &KeyStore) {
        self.current.store(other.current.load_full());
        self.generation.store(next_generation(), Ordering::Release);
        self.record_success(other.last_success());
        self.mark(other.source());
    }

    /// Says where the current keys came from.
    pub fn mark(&self, source: KeySource) {
        self.source.store(source as u8, Ordering::Relaxed);
    }

    pub fn source(&self) -> KeySource {
        let stored = self.source.load(Ordering::Relaxed);
        KeySource::ALL
            .into_iter()
            .find(|source| *source as u8 == stored)
            .unwrap_or(KeySource::Fresh)
    }

    /// Which key set is current; read it before [`KeyStore::current`] so a
    /// concurrent replacement can only make a result look older, not newer.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn clear(&self) {
        self.replace(KeySet::default());
    }

    pub fn record_success(&self, at: i64) {
        self.last_success.store(at, Ordering::Relaxed);
    }

    pub fn last_success(&self) -> i64 {
        self.last_success.load(Ordering::Relaxed)
    }

    /// `(unknown_kid_interval, unknown_kid_wait)` of a remote store.
    pub fn refetch_settings(&self) -> Option<(Duration, Duration)> {
        self.on_demand
            .as_ref()
            .map(|on_demand| (on_demand.min_interval, on_demand.max_wait))
    }

    pub fn is_remote(&self) -> bool {
        self.on_demand.is_some()
    }

    /// Usable keys are present (what `/readyz` asks of an issuer).
    pub fn is_ready(&self) -> bool {
        !self.current.load().is_empty()
    }

    /// Asks the refresher for a fetch now, because a token named a `kid` we
    /// don't have (or there are no keys yet), and waits boundedly for it.
    /// Concurrent callers share one fetch; after a fetch, further requests
    /// within `min_interval` get no new fetch, so a flood of random kids is
    /// not a flood of requests to the identity provider. Returns whether a
    /// fetch attempt completed while waiting (then verifying again is worth
    /// it).
    pub async fn refetch(&self) -> bool {
        let Some(on_demand) = &self.on_demand else {
            return false;
        };
        let mut attempts = on_demand.attempts.subscribe();
        attempts.borrow_and_update();
        {
            let mut state = on_demand.state.lock().expect("not poisoned");
            if !state.pending {
                let recently = state
                    .last_trigger
                    .is_some_and(|t| t.elapsed() < on_demand.min_interval);
                if recently {
                    return false;
                }
                state.pending = true;
                state.last_trigger = Some(Instant::now());
                on_demand.wake.notify_one();
            }
        }
        tokio::time::timeout(on_demand.max_wait, attempts.changed())
            .await
            .is_ok_and(|changed| changed.is_ok())
    }

    /// For the refresher: wait for a wake-up from [`KeyStore::refetch`].
    pub async fn wanted(&self) {
        match &self.on_demand {
            Some(on_demand) => on_demand.wake.notified().await,
            None => std::future::pending().await,
        }
    }

    /// For the refresher: a fetch attempt finished; release the waiters.
    pub fn attempt_finished(&self) {
        if let Some(on_demand) = &self.on_demand {
            on_demand.state.lock().expect("not poisoned").pending = false;
            on_demand.attempts.send_modify(|n| *n += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refetches_are_single_flight_and_rate_limited() {
        let store = Arc::new(KeyStore::remote(
            Duration::from_secs(30),
            Duration::from_secs(5),
        ));
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let refresher = {
            let (store, fetches) = (store.clone(), fetches.clone());
            tokio::spawn(async move {
                loop {
                    store.wanted().await;
                    fetches.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    store.attempt_finished();
                }
            })
        };
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.refetch().await })
            })
            .collect();
        let mut completed = 0;
        for waiter in waiters {
            completed += usize::from(waiter.await.unwrap());
        }
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "one fetch for 50 requests"
        );
        assert!(completed >= 1);
        // Within the interval: no new fetch, no waiting.
        assert!(!store.refetch().await);
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        refresher.abort();
    }

    #[tokio::test]
    async fn waiting_is_bounded() {
        let store = KeyStore::remote(Duration::from_secs(30), Duration::from_millis(20));
        // Nobody refreshes: the request gives up after max_wait.
        assert!(!store.refetch().await);
    }

    #[test]
    fn generations_are_unique_across_stores_and_replacements() {
        let first = KeyStore::fixed(KeySet::default());
        let second = KeyStore::remote(Duration::from_secs(1), Duration::from_secs(1));
        let mut seen = vec![first.generation(), second.generation()];
        first.replace(KeySet::default());
        seen.push(first.generation());
        second.clear();
        seen.push(second.generation());
        let count = seen.len();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(
            seen.len(),
            count,
            "every store and key set has its own generation"
        );
    }

    #[tokio::test]
    async fn fixed_stores_never_refetch() {
        assert!(!KeyStore::fixed(KeySet::default()).refetch().await);
    }
}
