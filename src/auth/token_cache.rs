//! The verified-token cache: a token whose signature and issuer-level claims
//! checked out is remembered, keyed by the SHA-256 of the whole token, so a
//! client reusing it skips the signature check. A hit is never a free pass:
//! the caller re-checks the time claims against the clock and applies the
//! route's rules afresh, so a cached token can't pass a check an uncached
//! one would fail.
//!
//! Only successes are cached. Invalid tokens are not: a flood of distinct
//! garbage would only churn the cache, and most garbage fails in the parser
//! before any signature work.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use moka::sync::Cache;
use prometheus::IntCounter;

use super::VerifiedToken;

/// Per-entry bookkeeping beyond the token itself: the key, the `Arc`, and
/// moka's own entry and queue nodes.
const ENTRY_OVERHEAD_BYTES: usize = 192;

#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub max_entries: u64,
    pub max_bytes: u64,
    /// Upper bound on how long an entry lives (it also expires with the token).
    pub ttl: Duration,
}

#[derive(Clone)]
struct Entry {
    token: Arc<VerifiedToken>,
    weight: u32,
    /// The earlier of the TTL and what is left of the token's `exp`.
    lifetime: Duration,
}

/// A clone shares its entries (moka's cache is a handle), so the proxy and
/// the authorization listener hit the same cache.
#[derive(Clone)]
pub struct TokenCache {
    entries: Cache<[u8; 32], Entry>,
    ttl: Duration,
    hits: IntCounter,
    misses: IntCounter,
}

/// The cache key: SHA-256 of the token, so a key collision would need a
/// SHA-256 collision, and the cache never holds the token itself.
pub type CacheKey = [u8; 32];

impl TokenCache {
    pub fn new(settings: &CacheSettings, hits: IntCounter, misses: IntCounter) -> Self {
        // Capacity is counted in bytes; each entry weighs at least
        // max_bytes / max_entries, which caps the entry count too.
        let min_weight = (settings.max_bytes / settings.max_entries.max(1)).max(1);
        let min_weight = u32::try_from(min_weight).unwrap_or(u32::MAX);
        let entries = Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(move |_key: &CacheKey, entry: &Entry| entry.weight.max(min_weight))
            .expire_after(ExpireWithToken)
            .build();
        Self {
            entries,
            ttl: settings.ttl,
            hits,
            misses,
        }
    }

    pub fn key(token: &str) -> CacheKey {
        let digest = digest::digest(&digest::SHA256, token.as_bytes());
        digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
    }

    /// The cached verification of a token, if there is one that `usable`
    /// still accepts (one that doesn't is dropped and counts as a miss).
    pub fn get(
        &self,
        key: &CacheKey,
        usable: impl FnOnce(&VerifiedToken) -> bool,
    ) -> Option<Arc<VerifiedToken>> {
        let found = self.entries.get(key).map(|entry| entry.token);
        match found {
            Some(token) if usable(&token) => {
                self.hits.inc();
                Some(token)
            }
            Some(_) => {
                self.entries.invalidate(key);
                self.misses.inc();
                None
            }
            None => {
                self.misses.inc();
                None
            }
        }
    }

    /// Remembers `token`, verified at `now` (the caller's clock, which also
    /// decides when the entry outlives the token's `exp`).
    pub fn insert(&self, key: CacheKey, token: Arc<VerifiedToken>, now: i64) {
        let bytes = token.memory_bytes() + ENTRY_OVERHEAD_BYTES;
        let weight = u32::try_from(bytes).unwrap_or(u32::MAX);
        let lifetime = match token.exp {
            Some(exp) => Duration::from_secs(exp.saturating_sub(now).max(0) as u64).min(self.ttl),
            None => self.ttl,
        };
        self.entries.insert(
            key,
            Entry {
                token,
                weight,
                lifetime,
            },
        );
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

/// Entries live for the lifetime worked out when they were inserted.
struct ExpireWithToken;

impl moka::Expiry<CacheKey, Entry> for ExpireWithToken {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        entry: &Entry,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(entry.lifetime)
    }
}
