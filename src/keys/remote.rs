//! Keeping a remote issuer's keys fresh, off the request path: one task per
//! issuer fetches the JWKS before it goes stale (Cache-Control `max-age`
//! within bounds, jittered), backs off exponentially on failure, keeps
//! serving the last good keys for up to `max_stale` when the identity
//! provider is down, and persists each good copy so a restart during an
//! outage still has keys.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::disk::{CachedJwks, DiskCache};
use super::fetch::{Discovered, FetchError, FetchSettings, Fetcher, Locator, discovery_url};
use super::{KeyError, KeySource, KeyStore, jwks};
use crate::clock::SharedClock;
use crate::jose::AlgorithmSet;
use crate::telemetry::metrics::KeyMetrics;
use crate::telemetry::traces;

/// Used when the JWKS response says nothing about caching.
const DEFAULT_REFRESH: Duration = Duration::from_secs(10 * 60);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshPolicy {
    pub min_refresh: Duration,
    pub max_refresh: Duration,
    pub max_stale: Duration,
}

impl RefreshPolicy {
    /// When to refresh after a success: the JWKS's own `max-age` (10 min
    /// when it gives none), kept within the configured bounds.
    fn refresh_after(&self, max_age: Option<Duration>) -> Duration {
        max_age
            .unwrap_or(DEFAULT_REFRESH)
            .clamp(self.min_refresh, self.max_refresh)
    }

    /// The wait after another failure: doubling, up to 5 min (or
    /// `max_refresh` when that is shorter).
    fn next_backoff(&self, current: Duration) -> Duration {
        (current * 2).min(MAX_BACKOFF.min(self.max_refresh))
    }
}

/// Why a refresh failed, each kind with its own `result` label on
/// `jwtgate_jwks_fetch_total`.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{uri}: not a usable JWK Set: {source}")]
    InvalidJwks { uri: String, source: KeyError },
    #[error("{uri}: the JWKS has no usable key")]
    NoUsableKey { uri: String },
}

/// `result` of a successful fetch on `jwtgate_jwks_fetch_total`.
pub const FETCH_SUCCESS: &str = "success";

impl RefreshError {
    /// The `result` label: a closed set, documented in docs/operations.md.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Fetch(error) => error.label(),
            Self::InvalidJwks { .. } | Self::NoUsableKey { .. } => "invalid_jwks",
        }
    }
}

/// A remote issuer's key source, compiled from config: what the refresher
/// needs of the issuer and nothing more, so keeping keys fresh never depends
/// on how tokens are verified.
#[derive(Debug, Clone)]
pub struct RemoteSource {
    /// The issuer's configured name, for logs, metrics and the disk copy.
    pub name: String,
    /// The exact `iss` value, written with the disk copy and checked when it
    /// is loaded, so one issuer never serves another's keys.
    pub issuer: String,
    /// Which keys of a JWKS are usable, and for what.
    pub algorithms: AlgorithmSet,
    /// The store this source fills; the issuer's verifier reads the same one.
    pub keys: Arc<KeyStore>,
    pub locator: Locator,
    pub fetch: FetchSettings,
    pub refresh: RefreshPolicy,
}

impl RemoteSource {
    /// What decides where and how this issuer's keys are fetched and parsed.
    pub fn identity(&self) -> RemoteIdentity {
        RemoteIdentity {
            name: self.name.clone(),
            issuer: self.issuer.clone(),
            algorithms: self.algorithms,
            locator: self.locator.clone(),
            fetch: self.fetch.clone(),
            refresh: self.refresh.clone(),
            refetch: self.keys.refetch_settings(),
        }
    }
}

/// A remote issuer as far as its keys are concerned: a config reload that
/// leaves all of it unchanged keeps the issuer's key store and refresher
/// (no keys dropped, no 503, no `/readyz` flap); any change starts afresh.
/// Audiences, leeway and the like are not part of it: they don't change
/// which keys are fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteIdentity {
    pub name: String,
    pub issuer: String,
    /// Which keys of a JWKS are usable, and for what.
    pub algorithms: AlgorithmSet,
    pub locator: Locator,
    pub fetch: FetchSettings,
    pub refresh: RefreshPolicy,
    /// The store's `(unknown_kid_interval, unknown_kid_wait)`.
    pub refetch: Option<(Duration, Duration)>,
}

impl RemoteIdentity {
    /// Whether `other` fetches the same issuer's keys from the same place
    /// and keeps the same ones, whatever its fetch and refresh settings: its
    /// keys are then good for this identity's store too.
    pub fn same_keys_as(&self, other: &RemoteIdentity) -> bool {
        self.name == other.name
            && self.issuer == other.issuer
            && self.algorithms == other.algorithms
            && self.locator == other.locator
    }
}

/// What one refresh loop remembers between attempts.
#[derive(Default)]
struct RefreshState {
    /// Discovered (or configured) once, forgotten when a fetch from it fails.
    jwks_uri: Option<String>,
    /// The document the served keys were parsed from.
    installed: Option<Value>,
    /// Keys the last parse skipped, so each change is logged once.
    skipped: Vec<jwks::SkippedKey>,
}

pub struct Refresher {
    source: RemoteSource,
    fetcher: Fetcher,
    cache: Option<DiskCache>,
    metrics: KeyMetrics,
    clock: SharedClock,
}

/// What one successful fetch brought.
struct Refreshed {
    ttl: Duration,
    keys: usize,
    /// The JWKS response's HTTP status.
    status: u16,
}

impl Refresher {
    pub fn new(
        source: RemoteSource,
        cache: Option<DiskCache>,
        metrics: KeyMetrics,
        clock: SharedClock,
    ) -> Result<Self, FetchError> {
        let fetcher = Fetcher::new(source.fetch.clone())?;
        Ok(Self {
            source,
            fetcher,
            cache,
            metrics,
            clock,
        })
    }

    /// Installs the disk copy, if there is a usable one that isn't older
    /// than `max_stale`. Runs at startup, before any request.
    pub fn load_cached(&self) {
        let Some(cache) = &self.cache else { return };
        let name = &self.source.name;
        let cached = match cache.load(name, &self.source.issuer) {
            Ok(Some(cached)) => cached,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(issuer = %name, "key cache not used: {e}");
                return;
            }
        };
        let age = self.clock.now_unix() - cached.fetched_at;
        if age > self.source.refresh.max_stale.as_secs() as i64 {
            tracing::warn!(issuer = %name, age_secs = age, "cached keys are older than max_stale; not used");
            return;
        }
        match jwks::parse(&cached.jwks, self.source.algorithms) {
            Ok(parsed) if !parsed.keys.is_empty() => {
                let count = parsed.keys.len();
                self.source.keys.replace(parsed.keys);
                self.source.keys.record_success(cached.fetched_at);
                self.source.keys.mark(KeySource::Disk);
                tracing::info!(issuer = %name, keys = count, age_secs = age, "loaded cached keys");
            }
            Ok(_) => tracing::warn!(issuer = %name, "cached JWKS has no usable key; not used"),
            Err(e) => tracing::warn!(issuer = %name, "cached JWKS not used: {e}"),
        }
    }

    /// The refresh loop; runs until the process stops.
    pub async fn run(&self) {
        let mut state = RefreshState::default();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let outcome = self.refresh(&mut state).await;
            self.source.keys.attempt_finished();
            let wait = match outcome {
                Ok(refreshed) => {
                    backoff = FIRST_BACKOFF;
                    self.metrics.record_fetch(&self.source.name, FETCH_SUCCESS);
                    tracing::debug!(issuer = %self.source.name, keys = refreshed.keys, "keys refreshed");
                    jittered(refreshed.ttl)
                }
                Err(error) => {
                    self.metrics.record_fetch(&self.source.name, error.label());
                    self.on_failure(&error);
                    let wait = jittered(backoff);
                    backoff = self.source.refresh.next_backoff(backoff);
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.source.keys.wanted() => {}
            }
        }
    }

    /// One attempt, for `jwtgate token verify` and tests.
    pub async fn refresh_once(&self) -> Result<usize, RefreshError> {
        let result = self.refresh(&mut RefreshState::default()).await;
        self.source.keys.attempt_finished();
        if let Err(error) = &result {
            self.on_failure(error);
        }
        result.map(|r| r.keys)
    }

    async fn refresh(&self, state: &mut RefreshState) -> Result<Refreshed, RefreshError> {
        let uri = match (&state.jwks_uri, &self.source.locator) {
            (Some(uri), _) => uri.clone(),
            (None, Locator::JwksUri(uri)) => uri.clone(),
            (None, locator @ Locator::Discovery { issuer }) => {
                let discovered = async { Ok(self.fetcher.jwks_uri(locator).await?) };
                let url = discovery_url(issuer);
                let status = |d: &Discovered| d.status;
                let uri = self
                    .traced("oidc discovery", &url, status, discovered)
                    .await?
                    .jwks_uri;
                state.jwks_uri = Some(uri.clone());
                uri
            }
        };
        let url = uri.clone();
        let status = |refreshed: &Refreshed| Some(refreshed.status);
        self.traced("jwks fetch", &url, status, self.fetch_keys(uri, state))
            .await
    }

    /// Runs `fetch` in a span of a trace of its own, when tracing is on,
    /// with the HTTP status `status_of` finds in what it fetched.
    async fn traced<T>(
        &self,
        name: &'static str,
        url: &str,
        status_of: impl FnOnce(&T) -> Option<u16>,
        fetch: impl Future<Output = Result<T, RefreshError>>,
    ) -> Result<T, RefreshError> {
        let attributes = [
            ("jwtgate.issuer", self.source.name.as_str()),
            ("url.full", url),
        ];
        let status = |result: &Result<T, RefreshError>| match result {
            Ok(fetched) => status_of(fetched),
            Err(RefreshError::Fetch(FetchError::Status { status, .. })) => Some(*status),
            Err(_) => None,
        };
        traces::traced(name, &attributes, RefreshError::label, status, fetch).await
    }

    /// Fetches the key set at `uri` and installs it, unless it is the one
    /// installed already.
    async fn fetch_keys(
        &self,
        uri: String,
        state: &mut RefreshState,
    ) -> Result<Refreshed, RefreshError> {
        let name = &self.source.name;
        let fetched = match self.fetcher.get_json(&uri).await {
            Ok(fetched) => fetched,
            Err(e) => {
                // The provider may have moved its JWKS; discover again next time.
                state.jwks_uri = None;
                return Err(e.into());
            }
        };
        let store = &self.source.keys;
        // The document the served keys came from, fetched again: nothing to
        // parse or install, and verified-token cache entries stay valid.
        let unchanged = state.installed.as_ref() == Some(&fetched.document) && store.is_ready();
        let keys = if unchanged {
            store.current().len()
        } else {
            let parsed =
                jwks::parse(&fetched.document, self.source.algorithms).map_err(|source| {
                    RefreshError::InvalidJwks {
                        uri: uri.clone(),
                        source,
                    }
                })?;
            if parsed.skipped != state.skipped {
                for skipped in &parsed.skipped {
                    tracing::warn!(issuer = %name, kid = skipped.kid.as_deref().unwrap_or("-"), "key skipped: {}", skipped.why);
                }
                state.skipped = parsed.skipped;
            }
            if parsed.keys.is_empty() {
                return Err(RefreshError::NoUsableKey { uri });
            }
            let keys = parsed.keys.len();
            store.replace(parsed.keys);
            state.installed = Some(fetched.document.clone());
            keys
        };
        let now = self.clock.now_unix();
        store.record_success(now);
        store.mark(KeySource::Fresh);
        self.persist(&uri, fetched.document, now);
        let ttl = self.source.refresh.refresh_after(fetched.max_age);
        Ok(Refreshed {
            ttl,
            keys,
            status: fetched.status,
        })
    }

    fn persist(&self, jwks_uri: &str, jwks: Value, now: i64) {
        let Some(cache) = &self.cache else { return };
        let entry = CachedJwks {
            issuer: self.source.issuer.clone(),
            jwks_uri: jwks_uri.to_string(),
            fetched_at: now,
            jwks,
        };
        if let Err(e) = cache.store(&self.source.name, &entry) {
            tracing::warn!(issuer = %self.source.name, "cannot persist keys: {e}");
        }
    }

    /// Stale-if-error: keep the last good keys while they are younger than
    /// `max_stale`, and say so; past that, drop them (requests get 503).
    fn on_failure(&self, error: &RefreshError) {
        let name = &self.source.name;
        let store = &self.source.keys;
        if !store.is_ready() {
            tracing::warn!(issuer = %name, "cannot fetch keys, none to serve: {error}");
            return;
        }
        let age = self.clock.now_unix() - store.last_success();
        if age > self.source.refresh.max_stale.as_secs() as i64 {
            store.clear();
            tracing::error!(issuer = %name, age_secs = age, "cannot refresh keys and the last good keys passed max_stale; dropping them: {error}");
        } else {
            store.mark(KeySource::Stale);
            tracing::warn!(issuer = %name, age_secs = age, "cannot refresh keys; serving the last good keys (stale-if-error): {error}");
        }
    }
}

/// ±10 %, so replicas started together don't refresh in lockstep.
fn jittered(base: Duration) -> Duration {
    let mut random = [0u8; 2];
    // A failed random source only costs the jitter.
    let _ = aws_lc_rs::rand::fill(&mut random);
    let fraction = f64::from(u16::from_le_bytes(random)) / f64::from(u16::MAX); // 0..=1
    base.mul_f64(0.9 + 0.2 * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::jose::Algorithm;
    use crate::keys::fetch;

    const NOW: i64 = 1_800_000_000;
    const HOUR: i64 = 3600;

    fn fixture_jwks() -> Value {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/keys/jwks.json"
        ))
        .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// A refresher whose identity provider is unreachable (a closed port).
    fn unreachable(cache: Option<DiskCache>) -> Refresher {
        refresher("http://127.0.0.1:1/jwks", cache)
    }

    fn refresher(jwks_uri: &str, cache: Option<DiskCache>) -> Refresher {
        let algorithms: AlgorithmSet = [Algorithm::RS256].into_iter().collect();
        let source = RemoteSource {
            name: "idp".into(),
            issuer: "https://idp.test".into(),
            algorithms,
            keys: Arc::new(KeyStore::remote(
                Duration::from_secs(30),
                Duration::from_secs(1),
            )),
            locator: Locator::JwksUri(jwks_uri.into()),
            fetch: FetchSettings {
                connect_timeout: Duration::from_secs(1),
                timeout: Duration::from_secs(2),
                max_bytes: 1 << 16,
                allow_http: true,
            },
            refresh: RefreshPolicy {
                min_refresh: Duration::from_secs(60),
                max_refresh: Duration::from_secs(HOUR as u64),
                max_stale: Duration::from_secs(24 * HOUR as u64),
            },
        };
        Refresher::new(
            source,
            cache,
            crate::telemetry::Metrics::new().keys.clone(),
            ManualClock::at(NOW),
        )
        .unwrap()
    }

    fn install(refresher: &Refresher, fetched_at: i64) {
        let allowed = refresher.source.algorithms;
        let keys = jwks::parse(&fixture_jwks(), allowed).unwrap().keys;
        refresher.source.keys.replace(keys);
        refresher.source.keys.record_success(fetched_at);
    }

    #[tokio::test]
    async fn an_unchanged_jwks_is_not_installed_again() {
        let body = fixture_jwks().to_string();
        let uri = format!(
            "{}/jwks",
            fetch::tests::serve(fetch::tests::ok(&body, "")).await
        );
        let refresher = refresher(&uri, None);
        let mut state = RefreshState::default();
        let keys = refresher.refresh(&mut state).await.unwrap().keys;
        assert!(keys > 0);
        let generation = refresher.source.keys.generation();
        let again = refresher.refresh(&mut state).await.unwrap();
        assert_eq!(again.keys, keys);
        assert_eq!(
            refresher.source.keys.generation(),
            generation,
            "the same document must leave the key set (and the token cache) alone"
        );
    }

    #[tokio::test]
    async fn each_kind_of_failure_has_its_own_label() {
        let closed = unreachable(None).refresh_once().await.unwrap_err();
        assert_eq!(closed.label(), "network", "{closed}");
        let not_found = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let cases = [
            (not_found.to_string(), "http_status"),
            (fetch::tests::ok("<html>", ""), "invalid_json"),
            (fetch::tests::ok(r#"{"no":"keys"}"#, ""), "invalid_jwks"),
            (fetch::tests::ok(r#"{"keys":[]}"#, ""), "invalid_jwks"),
        ];
        for (response, label) in cases {
            let uri = format!("{}/jwks", fetch::tests::serve(response).await);
            let error = refresher(&uri, None).refresh_once().await.unwrap_err();
            assert_eq!(error.label(), label, "{error}");
        }
    }

    #[tokio::test]
    async fn failed_refreshes_keep_keys_until_max_stale() {
        let fresh = unreachable(None);
        install(&fresh, NOW - HOUR);
        assert!(fresh.refresh_once().await.is_err());
        assert!(fresh.source.keys.is_ready(), "an hour old: still served");

        let stale = unreachable(None);
        install(&stale, NOW - 25 * HOUR);
        assert!(stale.refresh_once().await.is_err());
        assert!(!stale.source.keys.is_ready(), "past max_stale: dropped");
    }

    #[test]
    fn the_disk_copy_is_used_only_while_younger_than_max_stale() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path().to_path_buf());
        let store = |fetched_at| {
            let entry = CachedJwks {
                issuer: "https://idp.test".into(),
                jwks_uri: "http://127.0.0.1:1/jwks".into(),
                fetched_at,
                jwks: fixture_jwks(),
            };
            cache.store("idp", &entry).unwrap();
        };
        store(NOW - 2 * HOUR);
        let recent = unreachable(Some(cache.clone()));
        recent.load_cached();
        assert!(recent.source.keys.is_ready());
        assert_eq!(recent.source.keys.last_success(), NOW - 2 * HOUR);

        store(NOW - 25 * HOUR);
        let old = unreachable(Some(cache.clone()));
        old.load_cached();
        assert!(!old.source.keys.is_ready());
    }

    #[test]
    fn refresh_follows_max_age_within_bounds_and_backs_off_exponentially() {
        let policy = RefreshPolicy {
            min_refresh: Duration::from_secs(60),
            max_refresh: Duration::from_secs(3600),
            max_stale: Duration::from_secs(86_400),
        };
        let secs = Duration::from_secs;
        assert_eq!(policy.refresh_after(Some(secs(300))), secs(300));
        assert_eq!(policy.refresh_after(Some(secs(5))), secs(60));
        assert_eq!(policy.refresh_after(Some(secs(86_400))), secs(3600));
        assert_eq!(policy.refresh_after(None), DEFAULT_REFRESH);

        let mut backoff = FIRST_BACKOFF;
        let mut waits = Vec::new();
        for _ in 0..12 {
            waits.push(backoff.as_secs());
            backoff = policy.next_backoff(backoff);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        let short = RefreshPolicy {
            max_refresh: secs(10),
            ..policy
        };
        assert_eq!(short.next_backoff(secs(8)), secs(10));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(100));
            assert!(
                d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
                "{d:?}"
            );
        }
    }
}
