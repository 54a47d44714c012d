//! The DPoP replay cache (RFC 9449 §11.1): a proof's `jti` is accepted once
//! within the proof's `iat` window, on this replica and, with Redis, on
//! every replica sharing it.
//!
//! **What is kept.** Never the `jti` itself: 16 bytes of SHA-256 over the
//! proof key's thumbprint and the `jti` (two clients may pick the same
//! `jti`; only the same key's may not), and the last second the proof is
//! accepted (`u32` seconds since the epoch). An entry is those 20 bytes in
//! a `hashbrown` table, whose buckets are a power of two at most 7/8
//! full, plus one control byte: between 24 and 48 bytes per entry
//! depending on where the table is between two doublings (measured in the
//! unit tests with the table's own allocation size), so at most about
//! 48 MiB for the default 1 048 576 entries, 12 MiB for 262 144.
//!
//! **When full.** Entries whose window has passed are dropped first. If a
//! shard is still full of proofs within their window, a new proof is
//! refused (`dpop_replay_cache_full`, a 503) rather than an old entry
//! forgotten: forgetting one would let that proof be replayed for the rest
//! of its window without anyone knowing, while refusing is visible, counted
//! and stops once the windows pass. Size `max_entries` for the proof rate
//! times the `iat` window.
//!
//! **Redis.** The local table is always checked first (a replay on the
//! same replica never costs a round trip), then `SET key 1 NX PX ttl` on the
//! shared Redis, one command bounded by `budget`: `nil` means another
//! replica saw the proof. If Redis doesn't answer within the budget or the
//! connection is down, `on_error` decides: `FailClosed` (the default)
//! refuses with `dpop_replay_unavailable` (503), since a replica alone can't
//! tell a proof replayed on another one; `LocalOnly` accepts what the local
//! table accepts. A lost connection is replaced in the background, one
//! attempt at a time, never on the request path. A proof refused that way
//! stays in the local table: sent again, it is `dpop_replayed` (a client
//! makes a new proof for each attempt anyway).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hashbrown::HashTable;
use redis::aio::MultiplexedConnection;

use super::redis::{MAX_BACKOFF, MIN_BACKOFF, Redis, RedisFailure};
use crate::auth::dpop::{DpopFailure, IatWindow, VerifiedProof};
pub use crate::config::schema::OnRedisError;
use crate::digest::{hex, sha256};

const SHARDS: usize = 64;

/// The default bound: about 17 000 proofs a second with a 60 s window.
pub const DEFAULT_MAX_ENTRIES: usize = 1 << 20;

/// How proofs are shared through Redis.
#[derive(Debug, Clone)]
pub struct SharedReplay {
    /// Prefix of the keys; replicas that share proofs use the same one.
    pub key_prefix: String,
    /// How long a request waits for Redis's answer.
    pub budget: Duration,
    pub on_error: OnRedisError,
}

/// The proofs seen within their window.
pub struct DpopReplay {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    shared: Option<Arc<Shared>>,
}

#[derive(Default)]
struct Shard {
    seen: HashTable<Entry>,
    /// No entry expires before this second: a full shard is swept only
    /// once something in it can have expired.
    earliest: u32,
}

#[derive(Clone, Copy)]
struct Entry {
    key: Key,
    /// The last second the proof is accepted.
    until: u32,
}

/// SHA-256 of (jkt, jti), truncated: 128 bits, so two proofs collide with
/// odds far below any other failure.
type Key = [u8; 16];

struct Shared {
    redis: Redis,
    settings: SharedReplay,
    connection: ArcSwapOption<MultiplexedConnection>,
    connecting: AtomicBool,
}

impl DpopReplay {
    /// A table of this replica's own, remembering at most about
    /// `max_entries` proofs.
    pub fn local(max_entries: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: max_entries.div_ceil(SHARDS).max(1),
            shared: None,
        }
    }

    /// A local table, and proofs shared through `redis`. Call
    /// [`DpopReplay::connect`] before serving.
    pub fn shared(max_entries: usize, redis: Redis, settings: SharedReplay) -> Self {
        Self {
            shared: Some(Arc::new(Shared {
                redis,
                settings,
                connection: ArcSwapOption::empty(),
                connecting: AtomicBool::new(false),
            })),
            ..Self::local(max_entries)
        }
    }

    /// Opens the Redis connection (bounded by the Redis layer's timeout),
    /// so the first proofs don't meet a missing one. True when connected
    /// (or no Redis is configured); on failure, later proofs follow
    /// `on_error` while a connection is tried again in the background.
    pub async fn connect(&self) -> bool {
        let Some(shared) = &self.shared else {
            return true;
        };
        let connected = shared.connect().await.is_ok();
        if !connected {
            shared.reconnect();
        }
        connected
    }

    /// [`DpopReplay::check`] for a verified proof and the route's window.
    pub async fn check_proof(
        &self,
        proof: &VerifiedProof,
        window: IatWindow,
        now: i64,
    ) -> Result<(), DpopFailure> {
        self.check(&proof.jkt, &proof.jti, window.last_accepted(proof.iat), now)
            .await
    }

    /// Accepts a proof of key `jkt` with `jti` the first time it is seen
    /// until `last_accepted` (the proof's `iat` plus the window's past);
    /// `now` in seconds since the epoch.
    pub async fn check(
        &self,
        jkt: &str,
        jti: &str,
        last_accepted: i64,
        now: i64,
    ) -> Result<(), DpopFailure> {
        let key = key_of(jkt, jti);
        self.remember_locally(key, seconds(last_accepted), seconds(now))?;
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        // Remembered a second past the last one accepted, so no clock
        // rounding between replicas reopens the window.
        let ttl_ms = (last_accepted.saturating_sub(now).max(0) as u64 + 1) * 1000;
        match shared.claim(&key, ttl_ms).await {
            Some(true) => Ok(()),
            Some(false) => Err(DpopFailure::Replayed),
            None => match shared.settings.on_error {
                OnRedisError::FailClosed => Err(DpopFailure::ReplayUnavailable),
                OnRedisError::LocalOnly => Ok(()),
            },
        }
    }

    /// How many proofs this replica remembers.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).seen.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remember_locally(&self, key: Key, until: u32, now: u32) -> Result<(), DpopFailure> {
        let hash = hash_of(&key);
        let mut shard = lock(&self.shards[usize::from(key[8]) % SHARDS]);
        if let Some(entry) = shard.seen.find_mut(hash, |entry| entry.key == key) {
            if entry.until >= now {
                return Err(DpopFailure::Replayed);
            }
            // The same proof after its window: `iat` refuses it anyway.
            entry.until = until;
            return Ok(());
        }
        if shard.seen.len() >= self.per_shard {
            shard.sweep(now);
            if shard.seen.len() >= self.per_shard {
                return Err(DpopFailure::ReplayCacheFull);
            }
        }
        shard.earliest = if shard.seen.is_empty() {
            until
        } else {
            shard.earliest.min(until)
        };
        shard
            .seen
            .insert_unique(hash, Entry { key, until }, |entry| hash_of(&entry.key));
        Ok(())
    }
}

impl Shard {
    /// Drops the entries whose window has passed, if any can have.
    fn sweep(&mut self, now: u32) {
        if now <= self.earliest {
            return;
        }
        self.seen.retain(|entry| entry.until >= now);
        self.earliest = self.seen.iter().map(|e| e.until).min().unwrap_or(0);
    }
}

impl Shared {
    async fn connect(&self) -> Result<(), RedisFailure> {
        let connection = self.redis.connect("dpop replay connect").await?;
        self.connection.store(Some(Arc::new(connection)));
        Ok(())
    }

    /// `SET key 1 NX PX ttl` within the budget: `Some(true)` when the key
    /// was new, `Some(false)` when another replica set it, `None` when
    /// Redis didn't answer in time or is away.
    async fn claim(self: &Arc<Self>, key: &Key, ttl_ms: u64) -> Option<bool> {
        let Some(connection) = self.connection.load_full() else {
            self.reconnect();
            return None;
        };
        let mut connection = (*connection).clone();
        let name = format!("{}:{}", self.settings.key_prefix, hex(key));
        let mut command = redis::cmd("SET");
        command.arg(name).arg(1).arg("NX").arg("PX").arg(ttl_ms);
        let set = command.query_async::<Option<String>>(&mut connection);
        match tokio::time::timeout(self.settings.budget, set).await {
            Ok(Ok(answer)) => Some(answer.is_some()),
            Ok(Err(_)) => {
                // The connection failed, not just slow: replace it.
                self.connection.store(None);
                self.reconnect();
                None
            }
            Err(_) => None,
        }
    }

    /// Opens a new connection in the background: one task at a time,
    /// pausing from a quarter second doubling up to five between attempts,
    /// one warning per outage; it gives up once the cache is dropped.
    fn reconnect(self: &Arc<Self>) {
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = MIN_BACKOFF;
            let mut warned = false;
            while let Some(this) = shared.upgrade() {
                match this.connect().await {
                    Ok(()) => {
                        if warned {
                            tracing::info!("DPoP replay cache: Redis reachable again");
                        }
                        this.connecting.store(false, Ordering::Release);
                        return;
                    }
                    Err(failure) if !warned => {
                        tracing::warn!(
                            "DPoP replay cache: Redis unreachable ({failure}); {}, retrying",
                            match this.settings.on_error {
                                OnRedisError::FailClosed => "refusing proofs (fail_closed)",
                                OnRedisError::LocalOnly => "checking proofs locally (local_only)",
                            }
                        );
                        warned = true;
                    }
                    Err(_) => {}
                }
                drop(this);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }
}

fn key_of(jkt: &str, jti: &str) -> Key {
    let mut input = Vec::with_capacity(jkt.len() + 1 + jti.len());
    input.extend_from_slice(jkt.as_bytes());
    // A thumbprint is base64url, so no NUL: (jkt, jti) pairs can't run into
    // each other.
    input.push(0);
    input.extend_from_slice(jti.as_bytes());
    sha256(&input)[..16].try_into().expect("16 bytes")
}

fn hash_of(key: &Key) -> u64 {
    // The key is already a digest: its bytes are the hash.
    u64::from_le_bytes(key[..8].try_into().expect("8 bytes"))
}

fn seconds(unix: i64) -> u32 {
    u32::try_from(unix.max(0)).unwrap_or(u32::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic mid-insert leaves at worst one proof unremembered or kept.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
