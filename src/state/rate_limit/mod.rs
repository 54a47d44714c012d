//! Request rate limits: each route's limits compiled from `rate_limits`,
//! and the counters that outlive every config snapshot.
//!
//! The algorithm is GCRA (the generic cell rate algorithm): each key keeps
//! one number, its "theoretical arrival time" (TAT). A limit of `count`
//! requests per `period` spaces requests `interval = period / count` apart
//! and lets `burst` of them come at once: a request is allowed when the
//! key's TAT is at most `(burst - 1) × interval` ahead of now, and then
//! moves the TAT on by one interval. That is exact (no window edges to
//! game) and needs 16 bytes per key.
//!
//! Counters live in 64 shards, each a `std` mutex over a `hashbrown`
//! table, held only for the lookup and update (never across an await):
//! there is no global lock, and two requests contend only when their keys
//! hash to the same shard. A key whose TAT has passed is indistinguishable
//! from one never seen, so such entries are dropped whenever a shard is
//! full; only if a shard is full of keys that are all still being limited
//! are half of them forgotten (each then starts again with a full burst),
//! which keeps memory bounded for any number of distinct keys.

pub mod budget_sync;

use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};

use hashbrown::{DefaultHashBuilder, HashTable};
use http::{HeaderName, HeaderValue};
use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, IntGauge};

use crate::auth::claims;
use crate::auth::json::{JsonObject, JsonRef};
use crate::clock::NANOS_PER_SEC;
use crate::config::schema::{AuthMode, RateLimitConfig};
use crate::digest::sha256;
use crate::telemetry::metrics::{counter, counter_vec, gauge, valid_name};

const SHARDS: usize = 64;

/// How many keys all limits together remember at most (before expired
/// ones are dropped): about 20 MiB at 1 048 576.
pub const MAX_KEYS: usize = 1 << 20;

/// Counts larger than this make no practical limit and risk overflow.
const MAX_COUNT: u64 = 1_000_000_000;

/// A route's `rate_limits[index]` that can't be used, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("rate_limits[{index}].{problem}")]
pub struct RateLimitError {
    pub index: usize,
    pub problem: RateLimitProblem,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateLimitProblem {
    #[error("name: {0:?} must be 1-64 letters, digits, '-', '_' or '.'")]
    Name(String),
    #[error("name: {0:?} is used twice on this route")]
    DuplicateName(String),
    #[error(
        "rate: {0:?} is not a rate; write requests per period, like \"100/s\", \"10/m\", \"1000/h\", \"5/10s\" or \"20000/d\" (1 to {MAX_COUNT} requests)"
    )]
    Rate(String),
    #[error("burst: {0} must be at least 1")]
    Burst(u64),
    #[error("burst: {burst} is too large for rate {rate:?}")]
    BurstTooLarge { burst: u64, rate: String },
    #[error(
        "key: {0:?} is not a key; use route, client_address, header:<name> or claim:<dotted path>"
    )]
    Key(String),
    #[error("key: {0:?} names no valid header")]
    HeaderKey(String),
    #[error(
        "key: {0:?} needs a verified token, but this route's auth.mode is off (key it by client_address)"
    )]
    ClaimWithoutAuth(String),
}

/// What a limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// Every request of the route shares one budget.
    Route,
    /// The resolved client address (the peer, or from a trusted proxy the
    /// client its `X-Forwarded-For` names); never a raw header.
    ClientAddress,
    /// A request header's value; requests without it share one budget.
    Header(HeaderName),
    /// A claim of the verified token (dotted path); tokens without it share
    /// one budget. Requests without a verified token are not counted.
    Claim(String),
}

impl RateKey {
    /// Keys known before authentication, which run before the token is
    /// looked at: a flood is refused without verifying a signature.
    pub fn before_auth(&self) -> bool {
        !matches!(self, RateKey::Claim(_))
    }
}

/// One compiled limit.
#[derive(Debug)]
pub struct RateLimit {
    pub name: String,
    /// Names the limit's counters: the route's and the limit's name, so a
    /// reload that keeps both keeps the counters, whatever else changed.
    id: u64,
    pub key: RateKey,
    /// Requests per `period_secs`: the policy's quota and window.
    pub count: u64,
    pub period_secs: u64,
    /// Nanoseconds between requests at the sustained rate.
    interval: u64,
    /// How far ahead of now a key's TAT may be and still be allowed:
    /// `(burst - 1) × interval`.
    tolerance: u64,
    /// `"name";q=count;w=period`: the `RateLimit-Policy` value, built once.
    pub policy: HeaderValue,
}

/// A route's limits, split by when their key is known. A route without
/// limits pays two length checks.
#[derive(Debug, Default)]
pub struct RouteRateLimits {
    pub before_auth: Vec<RateLimit>,
    pub after_auth: Vec<RateLimit>,
}

impl RouteRateLimits {
    pub fn is_empty(&self) -> bool {
        self.before_auth.is_empty() && self.after_auth.is_empty()
    }

    pub fn compile(
        route: &str,
        mode: AuthMode,
        configs: &[RateLimitConfig],
    ) -> Result<Self, RateLimitError> {
        let mut limits = Self::default();
        let mut names: Vec<&str> = Vec::with_capacity(configs.len());
        for (index, config) in configs.iter().enumerate() {
            if names.contains(&config.name.as_str()) {
                return Err(RateLimitError {
                    index,
                    problem: RateLimitProblem::DuplicateName(config.name.clone()),
                });
            }
            names.push(&config.name);
            let limit = RateLimit::compile(route, mode, index, config)?;
            if limit.key.before_auth() {
                limits.before_auth.push(limit);
            } else {
                limits.after_auth.push(limit);
            }
        }
        Ok(limits)
    }
}

impl RateLimit {
    fn compile(
        route: &str,
        mode: AuthMode,
        index: usize,
        config: &RateLimitConfig,
    ) -> Result<Self, RateLimitError> {
        let fail = |problem| RateLimitError { index, problem };
        let name = &config.name;
        if !valid_name(name) {
            return Err(fail(RateLimitProblem::Name(name.clone())));
        }
        let (count, period_secs) = parse_rate(&config.rate)
            .ok_or_else(|| fail(RateLimitProblem::Rate(config.rate.clone())))?;
        let interval = period_secs * NANOS_PER_SEC / count;
        let burst = config.burst.unwrap_or(count);
        if burst == 0 {
            return Err(fail(RateLimitProblem::Burst(burst)));
        }
        let tolerance = (burst - 1)
            .checked_mul(interval)
            .filter(|t| *t < u64::MAX / 4)
            .ok_or_else(|| {
                fail(RateLimitProblem::BurstTooLarge {
                    burst,
                    rate: config.rate.clone(),
                })
            })?;
        let key = parse_key(&config.key).map_err(fail)?;
        if matches!(key, RateKey::Claim(_)) && mode == AuthMode::Off {
            return Err(fail(RateLimitProblem::ClaimWithoutAuth(config.key.clone())));
        }
        let mut identity = Vec::with_capacity(route.len() + name.len() + 1);
        identity.extend_from_slice(route.as_bytes());
        identity.push(0);
        identity.extend_from_slice(name.as_bytes());
        let digest = sha256(&identity);
        let id = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
        let policy = HeaderValue::try_from(format!("\"{name}\";q={count};w={period_secs}"))
            .expect("names are letters, digits and -_.");
        Ok(Self {
            name: name.clone(),
            id,
            key,
            count,
            period_secs,
            interval,
            tolerance,
            policy,
        })
    }

    /// The `RateLimit` value for a refused request: nothing remains, and
    /// the next request is allowed in `retry_after` seconds.
    pub fn state_header(&self, retry_after: u64) -> HeaderValue {
        HeaderValue::try_from(format!("\"{}\";r=0;t={retry_after}", self.name))
            .expect("names are letters, digits and -_.")
    }
}

/// `N/s`, `N/m`, `N/h`, `N/d`, or with a multiple of the unit: `N/10s`.
fn parse_rate(rate: &str) -> Option<(u64, u64)> {
    let (count, period) = rate.trim().split_once('/')?;
    let count: u64 = digits(count.trim())?;
    let period = period.trim();
    let unit_at = period.len().checked_sub(1)?;
    let (multiple, unit) = period.split_at(unit_at);
    let multiple = if multiple.is_empty() {
        1
    } else {
        digits(multiple)?
    };
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    let period_secs = multiple.checked_mul(unit_secs)?;
    let valid = (1..=MAX_COUNT).contains(&count) && (1..=366 * 86_400).contains(&period_secs);
    valid.then_some((count, period_secs))
}

fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_key(key: &str) -> Result<RateKey, RateLimitProblem> {
    match key {
        "route" => Ok(RateKey::Route),
        "client_address" => Ok(RateKey::ClientAddress),
        _ => match key.split_once(':') {
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .map(RateKey::Header)
                .map_err(|_| RateLimitProblem::HeaderKey(key.to_string())),
            Some(("claim", path))
                if !path.is_empty() && !path.starts_with('.') && !path.ends_with('.') =>
            {
                Ok(RateKey::Claim(path.to_string()))
            }
            _ => Err(RateLimitProblem::Key(key.to_string())),
        },
    }
}

/// A request over a limit.
#[derive(Debug, Clone, Copy)]
pub struct Limited<'s> {
    pub limit: &'s RateLimit,
    /// Whole seconds (at least 1) until the key may send again.
    pub retry_after: u64,
}

/// The bytes a claim-keyed limit counts a token by, borrowed when the claim
/// is a string (the common case); `None` when the token lacks the claim.
pub fn claim_key<'a>(claims_of: &'a JsonObject, path: &str) -> Option<ClaimKey<'a>> {
    match claims::lookup(claims_of, path)? {
        JsonRef::String(text) => Some(ClaimKey::Borrowed(text)),
        other => Some(ClaimKey::Owned(
            claims::header_value(other).unwrap_or_default(),
        )),
    }
}

pub enum ClaimKey<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl ClaimKey<'_> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ClaimKey::Borrowed(text) => text.as_bytes(),
            ClaimKey::Owned(text) => text.as_bytes(),
        }
    }
}

/// A key's identity shared with other replicas: 128 bits of SHA-256 over
/// the limit and the key, the same in every process.
pub type Digest = [u8; 16];

/// What one replica allowed since it last settled with Redis: `spent`
/// nanoseconds of the key's budget (one interval per request).
#[derive(Debug, Clone, Copy)]
pub struct Spent {
    pub digest: Digest,
    pub spent: u64,
}

#[derive(Default)]
struct Shard {
    table: HashTable<Slot>,
    /// Only with Redis: what this replica allowed since the last sync.
    spent: Vec<Spent>,
}

#[derive(Clone, Copy)]
struct Slot {
    /// The key's hash is its identity: 64 bits from a per-process random
    /// hasher, so a client can neither predict nor aim for a collision,
    /// and the key's bytes (a subject, an address) are never stored.
    hash: u64,
    tat: u64,
}

/// The counters of every limit, for the life of the process: a reload
/// keeps them (see [`RateLimit`] for what identifies a limit).
pub struct RateLimits {
    hasher: DefaultHashBuilder,
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    /// Keys are digests shared with other replicas, and spending is
    /// recorded for the sync task.
    shared: bool,
    limited: IntCounterVec,
    /// The Redis sync's metrics (registered only with Redis).
    pub sync_errors: IntCounter,
    pub adopted: IntCounter,
    pub connected: IntGauge,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self::new(MAX_KEYS)
    }
}

impl RateLimits {
    /// Counters another replica can share through Redis: each key is
    /// identified by its [`Digest`], and what is allowed is recorded until
    /// [`RateLimits::take_spent`] collects it.
    pub fn shared(max_keys: usize) -> Self {
        Self {
            shared: true,
            ..Self::new(max_keys)
        }
    }

    /// Remembers at most about `max_keys` keys across all limits.
    pub fn new(max_keys: usize) -> Self {
        Self {
            hasher: DefaultHashBuilder::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            shared: false,
            limited: counter_vec(
                "jwtgate_rate_limited_total",
                "Requests refused with 429 by a rate limit, by route and limit.",
                &["route", "limit"],
            ),
            sync_errors: counter(
                "jwtgate_rate_limit_redis_errors_total",
                "Failed rate-limit syncs with Redis; meanwhile each replica enforces its limits on its own.",
            ),
            adopted: counter(
                "jwtgate_rate_limit_redis_adopted_total",
                "Keys whose budget was updated from what other replicas spent.",
            ),
            connected: gauge(
                "jwtgate_rate_limit_redis_connected",
                "1 while the rate-limit counters are in step with Redis, else 0.",
            ),
        }
    }

    /// `jwtgate_rate_limited_total`, for tests.
    pub fn metric(&self) -> IntCounterVec {
        self.limited.clone()
    }

    /// Every metric, for the registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        let mut collectors: Vec<Box<dyn Collector>> = vec![Box::new(self.limited.clone())];
        if self.shared {
            collectors.push(Box::new(self.sync_errors.clone()));
            collectors.push(Box::new(self.adopted.clone()));
            collectors.push(Box::new(self.connected.clone()));
        }
        collectors
    }

    /// Counts one refusal.
    pub fn count_limited(&self, route: &str, limit: &RateLimit) {
        self.limited.with_label_values(&[route, &limit.name]).inc();
    }

    /// Keys remembered, expired or not.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).table.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes one request from `key`'s budget under `limit` at `now`
    /// (nanoseconds since the epoch). `key: None` is the shared budget of
    /// requests that lack what the limit is keyed by.
    pub fn check<'s>(
        &self,
        limit: &'s RateLimit,
        key: Option<&[u8]>,
        now: u64,
    ) -> Result<(), Limited<'s>> {
        if self.shared {
            let digest = digest(limit.id, key);
            let hash = self.hasher.hash_one(digest);
            let mut shard = self.shard(hash);
            shard.take(limit, hash, now, self.per_shard)?;
            if shard.spent.len() < self.per_shard {
                shard.spent.push(Spent {
                    digest,
                    spent: limit.interval,
                });
            }
            return Ok(());
        }
        let hash = self.hasher.hash_one((limit.id, key));
        self.shard(hash).take(limit, hash, now, self.per_shard)
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        // Bits the table's own bucket index and tag don't use.
        lock(&self.shards[(hash >> 32) as usize % SHARDS])
    }

    /// What this replica allowed since the last call, for Redis.
    pub fn take_spent(&self) -> Vec<Spent> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            all.append(&mut lock(shard).spent);
        }
        all
    }

    /// Moves a key's TAT to `tat` (nanoseconds) if that is later: what all
    /// replicas together have spent of its budget.
    pub fn adopt(&self, digest: Digest, tat: u64, now: u64) {
        if tat <= now {
            return;
        }
        let hash = self.hasher.hash_one(digest);
        let mut shard = self.shard(hash);
        if let Some(slot) = shard.table.find_mut(hash, |slot| slot.hash == hash) {
            slot.tat = slot.tat.max(tat);
            return;
        }
        if shard.table.len() >= self.per_shard {
            make_room(&mut shard.table, now, self.per_shard);
        }
        shard
            .table
            .insert_unique(hash, Slot { hash, tat }, |slot| slot.hash);
    }
}

impl Shard {
    fn take<'s>(
        &mut self,
        limit: &'s RateLimit,
        hash: u64,
        now: u64,
        capacity: usize,
    ) -> Result<(), Limited<'s>> {
        if let Some(slot) = self.table.find_mut(hash, |slot| slot.hash == hash) {
            return take(limit, &mut slot.tat, now);
        }
        let mut tat = now;
        take(limit, &mut tat, now)?;
        if self.table.len() >= capacity {
            make_room(&mut self.table, now, capacity);
        }
        self.table
            .insert_unique(hash, Slot { hash, tat }, |slot| slot.hash);
        Ok(())
    }
}

/// The key's identity across replicas.
fn digest(limit: u64, key: Option<&[u8]>) -> Digest {
    let mut input = [0u8; 9 + 64];
    input[..8].copy_from_slice(&limit.to_le_bytes());
    let Some(key) = key else {
        return first_16(&sha256(&input[..8]));
    };
    input[8] = 1;
    if key.len() <= 64 {
        input[9..9 + key.len()].copy_from_slice(key);
        return first_16(&sha256(&input[..9 + key.len()]));
    }
    let mut long = Vec::with_capacity(9 + key.len());
    long.extend_from_slice(&input[..9]);
    long.extend_from_slice(key);
    first_16(&sha256(&long))
}

fn first_16(digest: &[u8; 32]) -> Digest {
    digest[..16].try_into().expect("16 bytes")
}

/// GCRA: allowed when the TAT is at most the tolerance ahead of now.
fn take<'s>(limit: &'s RateLimit, tat: &mut u64, now: u64) -> Result<(), Limited<'s>> {
    let earliest = (*tat).max(now);
    let ahead = earliest - now;
    if ahead > limit.tolerance {
        let wait = ahead - limit.tolerance;
        return Err(Limited {
            limit,
            retry_after: wait.div_ceil(NANOS_PER_SEC).max(1),
        });
    }
    *tat = earliest + limit.interval;
    Ok(())
}

/// Drops keys whose TAT has passed (they would start afresh anyway); if
/// the shard is still over half full of live keys, forgets every other
/// one, so a flood of distinct keys costs a sweep per half a shard's worth
/// of inserts, not one per request.
fn make_room(table: &mut HashTable<Slot>, now: u64, capacity: usize) {
    table.retain(|slot| slot.tat > now);
    if table.len() > capacity / 2 {
        let mut keep = false;
        table.retain(|_| {
            keep = !keep;
            keep
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic mid-update leaves at worst one stale TAT.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn limit(rate: &str, burst: Option<u64>, key: &str) -> RateLimit {
        let config = RateLimitConfig {
            name: "test".into(),
            rate: rate.into(),
            burst,
            key: key.into(),
        };
        RateLimit::compile("route", AuthMode::Required, 0, &config).unwrap()
    }

    fn allowed(limits: &RateLimits, limit: &RateLimit, key: &[u8], clock: &ManualClock) -> bool {
        limits.check(limit, Some(key), clock.now_nanos()).is_ok()
    }

    #[test]
    fn a_burst_is_allowed_at_once_then_the_rate_refills_it() {
        let clock = ManualClock::at(1_700_000_000);
        let limits = RateLimits::default();
        let limit = limit("10/s", Some(3), "route");
        for n in 0..3 {
            assert!(allowed(&limits, &limit, b"k", &clock), "request {n}");
        }
        let refused = limits
            .check(&limit, Some(b"k"), clock.now_nanos())
            .unwrap_err();
        assert_eq!(refused.retry_after, 1, "100 ms rounds up to a second");
        // One interval (100 ms) later exactly one more is allowed.
        clock.advance_millis(99);
        assert!(!allowed(&limits, &limit, b"k", &clock));
        clock.advance_millis(1);
        assert!(allowed(&limits, &limit, b"k", &clock));
        assert!(!allowed(&limits, &limit, b"k", &clock));
        // Idle for long enough, the whole burst is back, and no more.
        clock.advance(10);
        for _ in 0..3 {
            assert!(allowed(&limits, &limit, b"k", &clock));
        }
        assert!(!allowed(&limits, &limit, b"k", &clock));
    }

    #[test]
    fn the_sustained_rate_is_exact_over_a_long_run() {
        let clock = ManualClock::at(1_700_000_000);
        let limits = RateLimits::default();
        let limit = limit("10/m", Some(1), "route");
        let mut passed = 0;
        // A request every second for ten minutes: one per 6 s gets through.
        for _ in 0..600 {
            if allowed(&limits, &limit, b"k", &clock) {
                passed += 1;
            }
            clock.advance(1);
        }
        assert_eq!(passed, 100);
    }

    #[test]
    fn retry_after_says_when_the_next_request_is_allowed() {
        let clock = ManualClock::at(1_700_000_000);
        let limits = RateLimits::default();
        let limit = limit("2/m", Some(2), "route");
        assert!(allowed(&limits, &limit, b"k", &clock));
        assert!(allowed(&limits, &limit, b"k", &clock));
        clock.advance(5);
        let refused = limits
            .check(&limit, Some(b"k"), clock.now_nanos())
            .unwrap_err();
        assert_eq!(refused.retry_after, 25);
        clock.advance(24);
        assert!(!allowed(&limits, &limit, b"k", &clock));
        clock.advance(1);
        assert!(allowed(&limits, &limit, b"k", &clock));
    }

    #[test]
    fn keys_and_limits_have_budgets_of_their_own() {
        let clock = ManualClock::at(1_700_000_000);
        let limits = RateLimits::default();
        let first = limit("1/h", Some(1), "route");
        let second = RateLimit::compile(
            "route",
            AuthMode::Required,
            0,
            &RateLimitConfig {
                name: "other".into(),
                rate: "1/h".into(),
                burst: None,
                key: "route".into(),
            },
        )
        .unwrap();
        assert!(allowed(&limits, &first, b"alice", &clock));
        assert!(!allowed(&limits, &first, b"alice", &clock));
        assert!(allowed(&limits, &first, b"bob", &clock));
        assert!(allowed(&limits, &second, b"alice", &clock));
        // A missing key is a budget of its own, not the empty string's.
        assert!(limits.check(&first, None, clock.now_nanos()).is_ok());
        assert!(allowed(&limits, &first, b"", &clock));
        assert!(limits.check(&first, None, clock.now_nanos()).is_err());
    }

    #[test]
    fn memory_stays_bounded_for_any_number_of_keys() {
        let clock = ManualClock::at(1_700_000_000);
        let limits = RateLimits::new(64 * 100);
        let limit = limit("1/h", Some(1), "route");
        for n in 0u32..100_000 {
            assert!(allowed(&limits, &limit, &n.to_le_bytes(), &clock));
        }
        assert!(limits.len() <= 64 * 100, "{} keys kept", limits.len());
        // Keys whose budget is back are dropped first, before live ones.
        clock.advance(3600);
        for n in 100_000u32..100_100 {
            assert!(allowed(&limits, &limit, &n.to_le_bytes(), &clock));
        }
        assert!(limits.len() <= 64 * 100);
    }

    #[test]
    fn rates_parse_in_every_unit() {
        assert_eq!(parse_rate("100/s"), Some((100, 1)));
        assert_eq!(parse_rate("10/m"), Some((10, 60)));
        assert_eq!(parse_rate("1000/h"), Some((1000, 3600)));
        assert_eq!(parse_rate("5/10s"), Some((5, 10)));
        assert_eq!(parse_rate("20000/d"), Some((20000, 86_400)));
        for bad in [
            "", "100", "0/s", "-1/s", "+1/s", "1/x", "1/0s", "1/s/s", "a/s",
        ] {
            assert_eq!(parse_rate(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_policy_header_names_quota_and_window() {
        let limit = limit("100/m", Some(5), "client_address");
        assert_eq!(limit.policy, "\"test\";q=100;w=60");
        assert_eq!(limit.state_header(7), "\"test\";r=0;t=7");
        assert_eq!(limit.key, RateKey::ClientAddress);
    }

    #[test]
    fn bad_limits_are_refused_naming_field_and_value() {
        // (name, rate, burst, key, the route's mode, the error)
        type Case<'a> = (&'a str, &'a str, Option<u64>, &'a str, AuthMode, &'a str);
        let cases: &[Case] = &[
            (
                "a b",
                "1/s",
                None,
                "route",
                AuthMode::Required,
                "rate_limits[0].name: \"a b\"",
            ),
            (
                "l",
                "fast",
                None,
                "route",
                AuthMode::Required,
                "rate_limits[0].rate: \"fast\" is not a rate",
            ),
            (
                "l",
                "1/s",
                Some(0),
                "route",
                AuthMode::Required,
                "rate_limits[0].burst: 0 must be at least 1",
            ),
            (
                "l",
                "1/d",
                Some(u64::MAX),
                "route",
                AuthMode::Required,
                "is too large for rate \"1/d\"",
            ),
            (
                "l",
                "1/s",
                None,
                "ip",
                AuthMode::Required,
                "rate_limits[0].key: \"ip\" is not a key",
            ),
            (
                "l",
                "1/s",
                None,
                "header:bad header",
                AuthMode::Required,
                "names no valid header",
            ),
            (
                "l",
                "1/s",
                None,
                "claim:",
                AuthMode::Required,
                "rate_limits[0].key: \"claim:\" is not a key",
            ),
            (
                "l",
                "1/s",
                None,
                "claim:sub",
                AuthMode::Off,
                "auth.mode is off",
            ),
        ];
        for (name, rate, burst, key, mode, expected) in cases {
            let config = RateLimitConfig {
                name: (*name).into(),
                rate: (*rate).into(),
                burst: *burst,
                key: (*key).into(),
            };
            let error = RouteRateLimits::compile("r", *mode, &[config])
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{error}");
        }
        let twice = |name: &str| RateLimitConfig {
            name: name.into(),
            rate: "1/s".into(),
            burst: None,
            key: "route".into(),
        };
        let error = RouteRateLimits::compile("r", AuthMode::Off, &[twice("a"), twice("a")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("rate_limits[1].name: \"a\" is used twice"),
            "{error}"
        );
    }

    #[test]
    fn claim_keys_split_before_and_after_auth() {
        let config = |key: &str| RateLimitConfig {
            name: key.replace(':', "-"),
            rate: "1/s".into(),
            burst: None,
            key: key.into(),
        };
        let limits = RouteRateLimits::compile(
            "r",
            AuthMode::Required,
            &[
                config("claim:sub"),
                config("client_address"),
                config("header:x-api-key"),
            ],
        )
        .unwrap();
        assert_eq!(limits.before_auth.len(), 2);
        assert_eq!(limits.after_auth[0].key, RateKey::Claim("sub".into()));
    }
}
