//! Opaque access tokens, checked at their issuer's OAuth 2.0 Token
//! Introspection endpoint (RFC 7662). An [`Introspector`] is one issuer's:
//! its client (endpoint, client authentication, JWT-secured answers), its
//! cache of answers keyed by the SHA-256 of the token (never the token),
//! and its backoff after a failed call. It outlives reloads that leave its
//! settings alone, so a reload costs no burst of calls.
//!
//! A cached answer is served until the earlier of the token's `exp` and
//! `active_ttl` (`inactive_ttl` for an inactive one), on the injectable
//! clock; concurrent requests with the same uncached token make one call.
//! An answer is judged (`auth::introspected`) under the issuer's rules of
//! the moment: a reload that changes them judges cached answers again,
//! without a call.

mod call;
mod metrics;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::future::Cache;

pub use self::call::{ClientCredential, IntrospectionSettings, Secret};
pub use self::metrics::IntrospectionMetrics;
use crate::auth::json::JsonObject;
use crate::auth::verify::VerifierId;
use crate::auth::{IssuerVerifier, Reason, VerifiedToken, introspected};
use crate::clock::Clock;
use crate::keys::fetch::{FetchError, Fetcher};

/// Why an introspecting issuer did not vouch for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The issuer says the token is not active.
    Inactive,
    /// Active, but it fails the issuer's rules (audience, `sub`, type...).
    Invalid(Reason),
    /// No answer could be had: a failed call, or the backoff after one.
    Unavailable,
}

/// Each failed call doubles the pause before the next, within these.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One issuer's introspection: client, cache and backoff.
pub struct Introspector {
    settings: IntrospectionSettings,
    fetcher: Fetcher,
    /// The endpoint, configured or found by discovery on first use.
    endpoint: tokio::sync::OnceCell<String>,
    cache: Cache<[u8; 32], Entry>,
    backoff: Backoff,
}

#[derive(Clone)]
struct Entry {
    answer: Answer,
    /// Unix seconds, on the pipeline's clock: when the answer stops serving.
    expires_at: i64,
    /// How long moka keeps it, which only frees memory.
    lifetime: Duration,
    weight: u32,
}

#[derive(Clone)]
enum Answer {
    /// Active, and passing the rules of the verifier it names.
    Accepted(Arc<VerifiedToken>),
    /// Active, and failing the rules of `verifier`.
    Refused {
        reason: Reason,
        verifier: VerifierId,
        claims: Arc<JsonObject>,
    },
    Inactive,
}

/// Bookkeeping per entry beyond the answer's claims: the key, the `Arc`,
/// moka's nodes.
const ENTRY_OVERHEAD_BYTES: usize = 192;

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Introspector {
    pub fn new(settings: IntrospectionSettings) -> Result<Self, FetchError> {
        let fetcher = Fetcher::new(settings.fetch.clone())?;
        let endpoint = tokio::sync::OnceCell::new_with(settings.endpoint.clone());
        let min_weight = (settings.max_cache_bytes / settings.max_entries.max(1)).max(1);
        let min_weight = u32::try_from(min_weight).unwrap_or(u32::MAX);
        let cache = Cache::builder()
            .max_capacity(settings.max_cache_bytes)
            .weigher(move |_key: &[u8; 32], entry: &Entry| entry.weight.max(min_weight))
            .expire_after(ExpireAsAnswered)
            .build();
        Ok(Self {
            settings,
            fetcher,
            endpoint,
            cache,
            backoff: Backoff::default(),
        })
    }

    /// Whether `other` (compiled from a new config) would call the same
    /// endpoint the same way and cache alike: then this one, with its
    /// cache, serves in its place.
    pub fn same_as(&self, other: &Introspector) -> bool {
        self.settings == other.settings
    }

    pub fn settings(&self) -> &IntrospectionSettings {
        &self.settings
    }

    /// The issuer at `index`'s verdict on `token`: from the cache, or from
    /// one call shared by every request that asks meanwhile.
    pub async fn check(
        &self,
        token: &str,
        issuers: &[Arc<IssuerVerifier>],
        index: usize,
        clock: &dyn Clock,
        metrics: &IntrospectionMetrics,
    ) -> Result<Arc<VerifiedToken>, Refusal> {
        let key = crate::digest::sha256(token.as_bytes());
        let now = clock.now_unix();
        match self.cache.get(&key).await {
            Some(entry) if entry.expires_at > now => {
                return self.verdict(key, entry, issuers, index, now).await;
            }
            Some(_) => self.cache.invalidate(&key).await,
            None => {}
        }
        // Boxed: a call's future (moka's single-flight, the HTTP client)
        // runs to kilobytes, and unboxed it would make every decision's
        // future that large, JWTs' and cache hits' included, each moved
        // by copying; a miss is a network call, its allocation nothing.
        let asked = Box::pin(
            self.cache
                .try_get_with(key, self.ask(token, issuers, index, clock, metrics)),
        )
        .await;
        match asked {
            Ok(entry) => self.verdict(key, entry, issuers, index, now).await,
            Err(_) => Err(Refusal::Unavailable),
        }
    }

    /// A cached answer's verdict under the issuer's rules of the moment:
    /// judged again (and cached so, until the same time) when they are
    /// not the rules it was judged under.
    async fn verdict(
        &self,
        key: [u8; 32],
        entry: Entry,
        issuers: &[Arc<IssuerVerifier>],
        index: usize,
        now: i64,
    ) -> Result<Arc<VerifiedToken>, Refusal> {
        let current = issuers[index].id;
        let claims = match entry.answer {
            Answer::Inactive => return Err(Refusal::Inactive),
            Answer::Accepted(token) if token.verifier == current && token.issuer == index => {
                return Ok(token);
            }
            Answer::Refused {
                reason, verifier, ..
            } if verifier == current => return Err(Refusal::Invalid(reason)),
            Answer::Accepted(token) => token.claims.clone(),
            Answer::Refused { claims, .. } => JsonObject::clone(&claims),
        };
        let answer = judged(claims, issuers, index, now);
        let verdict = answer.verdict();
        let entry = Entry::new(answer, entry.expires_at, now);
        self.cache.insert(key, entry).await;
        verdict
    }

    /// One introspection call, unless the backoff after a failure is on:
    /// its answer as a cache entry, or why there is none.
    async fn ask(
        &self,
        token: &str,
        issuers: &[Arc<IssuerVerifier>],
        index: usize,
        clock: &dyn Clock,
        metrics: &IntrospectionMetrics,
    ) -> Result<Entry, FetchError> {
        let issuer = &issuers[index];
        if self.backoff.holds(clock.now_nanos()) {
            return Err(FetchError::Client("backing off after a failed call".into()));
        }
        let started = Instant::now();
        let answered = self.call(token, issuer, clock.now_unix()).await;
        let elapsed = started.elapsed();
        let now = clock.now_unix();
        match answered {
            Ok(answer) => {
                self.backoff.reset();
                let answer = judged(answer, issuers, index, now);
                let (result, ttl) = match answer {
                    Answer::Inactive => ("inactive", self.settings.inactive_ttl),
                    _ => ("active", self.settings.active_ttl),
                };
                metrics.observe(&issuer.name, result, elapsed);
                let expires_at = answer.expires_at(now, ttl, issuer.leeway_secs);
                Ok(Entry::new(answer, expires_at, now))
            }
            Err(error) => {
                let label = call::error_label(&error);
                metrics.observe(&issuer.name, label, elapsed);
                let failures = self.backoff.failed(clock.now_nanos());
                // Once per outage at warn; the counter has every failure.
                if failures == 1 {
                    tracing::warn!(issuer = %issuer.name, result = label, "token introspection failed: {error}");
                } else {
                    tracing::debug!(issuer = %issuer.name, result = label, "token introspection failed: {error}");
                }
                Err(error)
            }
        }
    }

    /// The endpoint: configured, or from the discovery document.
    async fn endpoint(&self) -> Result<&str, FetchError> {
        let issuer = &self.settings.issuer;
        self.endpoint
            .get_or_try_init(|| async {
                let (document, _) = self.fetcher.discover(issuer).await?;
                let url = crate::keys::fetch::discovery_member(
                    issuer,
                    &document,
                    "introspection_endpoint",
                )?;
                if crate::keys::fetch::scheme_allowed(&url, self.settings.fetch.allow_http) {
                    Ok(url)
                } else {
                    Err(FetchError::Insecure(url))
                }
            })
            .await
            .map(String::as_str)
    }

    /// Cached answers, for tests and benches.
    pub async fn cached(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }
}

/// An answer judged by the issuer at `index`.
fn judged(claims: JsonObject, issuers: &[Arc<IssuerVerifier>], index: usize, now: i64) -> Answer {
    match introspected::judge(claims, issuers, index, now, &mut ()) {
        Ok(token) => Answer::Accepted(Arc::new(token)),
        Err((Reason::TokenInactive, _)) => Answer::Inactive,
        Err((reason, claims)) => Answer::Refused {
            reason,
            verifier: issuers[index].id,
            claims: Arc::new(claims),
        },
    }
}

impl Answer {
    fn verdict(&self) -> Result<Arc<VerifiedToken>, Refusal> {
        match self {
            Answer::Accepted(token) => Ok(token.clone()),
            Answer::Refused { reason, .. } => Err(Refusal::Invalid(*reason)),
            Answer::Inactive => Err(Refusal::Inactive),
        }
    }

    /// An active answer serves until the earlier of its `exp` (give or
    /// take the issuer's leeway, as every check of `exp` does) and `ttl`
    /// from now; any other for `ttl`.
    fn expires_at(&self, now: i64, ttl: Duration, leeway: i64) -> i64 {
        let until = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        match self {
            Answer::Accepted(token) => token
                .exp
                .map_or(until, |exp| exp.saturating_add(leeway).min(until)),
            _ => until,
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Answer::Accepted(token) => token.memory_bytes(),
            Answer::Refused { claims, .. } => claims.heap_bytes() + size_of::<JsonObject>(),
            Answer::Inactive => 0,
        }
    }
}

impl Entry {
    fn new(answer: Answer, expires_at: i64, now: i64) -> Self {
        let seconds = u64::try_from(expires_at.saturating_sub(now)).unwrap_or(0);
        let weight = u32::try_from(answer.heap_bytes() + ENTRY_OVERHEAD_BYTES).unwrap_or(u32::MAX);
        Self {
            answer,
            expires_at,
            lifetime: Duration::from_secs(seconds),
            weight,
        }
    }
}

/// moka frees an entry once its answer no longer serves.
struct ExpireAsAnswered;

impl moka::Expiry<[u8; 32], Entry> for ExpireAsAnswered {
    fn expire_after_create(&self, _: &[u8; 32], entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.lifetime)
    }

    fn expire_after_update(
        &self,
        _: &[u8; 32],
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.lifetime)
    }
}

/// After a failed call, none is made until the pause is over: an
/// identity provider in trouble gets no flood, and requests get their 503
/// at once.
#[derive(Default)]
struct Backoff {
    /// Nanoseconds on the pipeline's clock; 0: no pause.
    until: AtomicU64,
    failures: AtomicU32,
}

impl Backoff {
    fn holds(&self, now: u64) -> bool {
        now < self.until.load(Ordering::Relaxed)
    }

    /// Counts a failure and starts its pause; returns the failures in a row.
    fn failed(&self, now: u64) -> u32 {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let pause = FIRST_BACKOFF
            .saturating_mul(1 << (failures - 1).min(16))
            .min(MAX_BACKOFF);
        let pause = u64::try_from(pause.as_nanos()).unwrap_or(u64::MAX);
        self.until
            .store(now.saturating_add(pause), Ordering::Relaxed);
        failures
    }

    fn reset(&self) {
        if self.failures.swap(0, Ordering::Relaxed) != 0 {
            self.until.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests;
