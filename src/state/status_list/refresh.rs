//! Fetching, verifying and keeping an issuer's status lists fresh, off the
//! request path: one task per issuer fetches each list when due, and keeps
//! each good Status List Token on disk so a restart while the list server
//! is down still has its lists.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::decode::{DecodeError, StatusBits};
use super::{CurrentList, Slot, StatusLists};
use crate::auth::json::{JsonObject, JsonRef};
use crate::auth::signed::{self, SignedError};
use crate::clock::SharedClock;
use crate::keys::disk::{DiskCache, file_safe};
use crate::keys::fetch::{FetchError, FetchedBytes, Fetcher};
use crate::telemetry::metrics::StatusListMetrics;

/// `Accept` of a list fetch (draft-ietf-oauth-status-list §8.1).
const MEDIA_TYPE: &str = "application/statuslist+jwt";
/// The longest wait after failures.
const MAX_BACKOFF: u64 = 300;

/// Why a list was not installed; each kind has its own `result` label on
/// `jwtgate_status_list_fetch_total`.
#[derive(Debug, thiserror::Error)]
pub enum StatusListError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("not a JWS")]
    InvalidToken,
    #[error("typ is not statuslist+jwt")]
    WrongType,
    #[error("no key of the issuer verifies the signature")]
    BadSignature,
    #[error("no key of the issuer fits the header's kid and alg")]
    NoKey,
    #[error("sub is not the list's URI")]
    WrongSubject,
    #[error("the Status List Token has expired")]
    Expired,
    #[error("status_list: {0}")]
    InvalidList(String),
    #[error("status_list: {0}")]
    InflatedTooLarge(DecodeError),
}

impl StatusListError {
    /// The `result` label: a closed set, in the metric's help.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Fetch(error) => error.label(),
            Self::InvalidToken => "invalid_token",
            Self::WrongType => "wrong_type",
            Self::BadSignature => "bad_signature",
            Self::NoKey => "no_key",
            Self::WrongSubject => "wrong_subject",
            Self::Expired => "expired",
            Self::InvalidList(_) => "invalid_list",
            Self::InflatedTooLarge(_) => "inflated_too_large",
        }
    }
}

/// A verified list and how soon its token asks to be fetched again.
struct Verified {
    list: CurrentList,
    ttl: Option<Duration>,
}

impl StatusLists {
    /// Verifies a Status List Token fetched from `uri` with the issuer's
    /// keys (§5.1: `typ`, `sub` = the URI, `exp`), and decodes its list.
    fn verify(&self, uri: &str, text: &str, now: i64) -> Result<Verified, StatusListError> {
        let max_bytes = self.settings.fetch.max_bytes;
        let parsed = signed::verify(
            text,
            max_bytes,
            "statuslist+jwt",
            self.algorithms,
            &self.keys,
        )
        .map_err(|error| match error {
            SignedError::Malformed => StatusListError::InvalidToken,
            SignedError::WrongType => StatusListError::WrongType,
            SignedError::NoKey => StatusListError::NoKey,
            SignedError::BadSignature => StatusListError::BadSignature,
        })?;
        let claims = &parsed.claims;
        if claims.get("sub").and_then(JsonRef::as_str) != Some(uri) {
            return Err(StatusListError::WrongSubject);
        }
        let exp = seconds(claims, "exp");
        if exp.is_some_and(|exp| exp <= now) {
            return Err(StatusListError::Expired);
        }
        let ttl = seconds(claims, "ttl")
            .filter(|ttl| *ttl > 0)
            .map(|ttl| Duration::from_secs(ttl as u64));
        let list = claims
            .get("status_list")
            .and_then(JsonRef::as_object)
            .ok_or_else(|| StatusListError::InvalidList("missing".into()))?;
        let bits = list.get("bits").and_then(JsonRef::as_f64);
        let lst = list.get("lst").and_then(JsonRef::as_str);
        let (Some(bits), Some(lst)) = (bits, lst) else {
            return Err(StatusListError::InvalidList("no bits or lst".into()));
        };
        let max = self.settings.max_decompressed_bytes;
        let bits = StatusBits::decode(bits as u64, lst, max).map_err(|e| match e {
            DecodeError::TooLarge(_) => StatusListError::InflatedTooLarge(e),
            e => StatusListError::InvalidList(e.to_string()),
        })?;
        Ok(Verified {
            list: CurrentList {
                bits,
                fetched_at: now,
                exp,
                source: Some(text.into()),
            },
            ttl,
        })
    }

    /// When to fetch again after a success: the token's `ttl` or the
    /// response's `max-age`, whichever is sooner, within the bounds, and
    /// never after the token's `exp`.
    fn refresh_after(&self, verified: &Verified, max_age: Option<Duration>, now: i64) -> i64 {
        let settings = &self.settings;
        let wanted = [verified.ttl, max_age].into_iter().flatten().min();
        let mut wait = wanted
            .unwrap_or(settings.max_refresh)
            .clamp(settings.min_refresh, settings.max_refresh)
            .as_secs() as i64;
        if let Some(exp) = verified.list.exp {
            wait = wait.min((exp - now).max(settings.min_refresh.as_secs() as i64));
        }
        wait
    }

    /// Installs the disk copies of this issuer's lists that still verify,
    /// before any request. A copy older than `max_age` is not used.
    pub fn load_cached(&self, cache: &DiskCache, now: i64) {
        let prefix = format!("{}.status-", file_safe(&self.name));
        let Ok(entries) = std::fs::read_dir(cache.dir()) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if !file_name.starts_with(&prefix) || !file_name.ends_with(".json") {
                continue;
            }
            if let Err(e) = self.load_copy(&entry.path(), now) {
                tracing::warn!(issuer = %self.name, file = %file_name, "status list copy not used: {e}");
            }
        }
    }

    fn load_copy(&self, path: &std::path::Path, now: i64) -> Result<(), String> {
        let text = std::fs::read(path).map_err(|e| e.to_string())?;
        let copy: CachedList = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
        if copy.issuer != self.issuer {
            return Err(format!("belongs to issuer {:?}", copy.issuer));
        }
        if now - copy.fetched_at > self.settings.max_age.as_secs() as i64 {
            return Err("older than max_age".into());
        }
        if !self.settings.allows(&copy.uri) {
            return Err("its URI is no longer allowed".into());
        }
        let newer = self
            .table
            .load()
            .get(copy.uri.as_str())
            .and_then(|slot| slot.current());
        if newer.is_some_and(|list| list.fetched_at >= copy.fetched_at) {
            return Ok(());
        }
        self.install_verified(&copy.uri, &copy.token, copy.fetched_at, now)
            .map_err(|e| e.to_string())?;
        tracing::info!(issuer = %self.name, age_secs = now - copy.fetched_at, "loaded a cached status list");
        Ok(())
    }

    /// Verifies `token` (fetched from `uri` at `fetched_at`) against the
    /// keys we have now, and serves it.
    fn install_verified(
        &self,
        uri: &str,
        token: &str,
        fetched_at: i64,
        now: i64,
    ) -> Result<(), StatusListError> {
        let mut verified = self.verify(uri, token, now)?;
        verified.list.fetched_at = fetched_at;
        if !self.install(uri, verified.list) {
            return Err(StatusListError::InvalidList(
                "status_list.max_lists reached".into(),
            ));
        }
        Ok(())
    }

    /// Takes over the lists of `previous`, the same issuer's before a
    /// reload gave it a new key store: each is verified again with the new
    /// keys, so a reload costs no fetch and no 503.
    pub fn adopt(&self, previous: &StatusLists, now: i64) {
        for slot in previous.slots() {
            let Some(list) = slot.current() else { continue };
            let Some(token) = &list.source else { continue };
            if !self.settings.allows(&slot.uri) || !self.usable(&list, now) {
                continue;
            }
            if let Err(e) = self.install_verified(&slot.uri, token, list.fetched_at, now) {
                tracing::warn!(issuer = %self.name, uri = %slot.uri, "status list not kept across the reload: {e}");
            }
        }
    }

    fn persist(&self, cache: &DiskCache, uri: &str, token: &str, now: i64) {
        let copy = CachedList {
            issuer: self.issuer.clone(),
            uri: uri.to_string(),
            fetched_at: now,
            token: token.to_string(),
        };
        let name = format!(
            "{}.status-{}.json",
            file_safe(&self.name),
            &crate::digest::hex(&crate::digest::sha256(uri.as_bytes()))[..16]
        );
        let bytes = serde_json::to_vec_pretty(&copy).expect("strings serialize");
        if let Err(e) = cache.write(&cache.dir().join(name), &bytes) {
            tracing::warn!(issuer = %self.name, "cannot persist a status list: {e}");
        }
    }
}

/// A Status List Token as fetched, on disk.
#[derive(Serialize, Deserialize)]
struct CachedList {
    issuer: String,
    uri: String,
    fetched_at: i64,
    token: String,
}

fn seconds(claims: &JsonObject, name: &str) -> Option<i64> {
    claims
        .get(name)
        .and_then(JsonRef::as_f64)
        .filter(|v| v.fract() == 0.0 && v.abs() < 1e15)
        .map(|v| v as i64)
}

/// An issuer's refresh loop and what it needs.
pub struct ListRefresher {
    lists: Arc<StatusLists>,
    fetcher: Fetcher,
    cache: Option<DiskCache>,
    metrics: StatusListMetrics,
    clock: SharedClock,
}

impl ListRefresher {
    pub fn new(
        lists: Arc<StatusLists>,
        cache: Option<DiskCache>,
        metrics: StatusListMetrics,
        clock: SharedClock,
    ) -> Result<Self, FetchError> {
        let fetcher = Fetcher::new(lists.settings.fetch.clone())?;
        let _ = lists.metrics.set(metrics.clone());
        Ok(Self {
            lists,
            fetcher,
            cache,
            metrics,
            clock,
        })
    }

    /// The disk copies, installed at once (before any request).
    pub fn load_cached(&self) {
        if let Some(cache) = &self.cache {
            self.lists.load_cached(cache, self.clock.now_unix());
        }
        self.report();
    }

    /// Fetches every list when due; runs until the process stops (or a
    /// reload retires this issuer's lists).
    pub async fn run(&self) {
        loop {
            let now = self.clock.now_unix();
            let mut next = now + self.lists.settings.max_refresh.as_secs() as i64;
            for slot in self.lists.slots() {
                if slot.due.load(std::sync::atomic::Ordering::Relaxed) <= now {
                    // Counted and logged by `refresh`; retried when due.
                    let _ = self.refresh(&slot).await;
                }
                next = next.min(slot.due.load(std::sync::atomic::Ordering::Relaxed));
            }
            self.report();
            let wait = (next - self.clock.now_unix()).max(1) as u64;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
                _ = self.lists.wake.notified() => {}
            }
        }
    }

    /// One fetch of one list; the slot's next due time is set either way.
    pub async fn refresh(&self, slot: &Slot) -> Result<(), StatusListError> {
        use std::sync::atomic::Ordering::Relaxed;
        let lists = &self.lists;
        let fetched = self.fetcher.get(&slot.uri, MEDIA_TYPE).await;
        let now = self.clock.now_unix();
        let verify = |body: &FetchedBytes| {
            let text = std::str::from_utf8(&body.bytes)
                .map_err(|_| StatusListError::InvalidToken)?
                .trim();
            let verified = lists.verify(&slot.uri, text, now)?;
            Ok((verified, body.max_age, text.to_string()))
        };
        let mut outcome = fetched.map_err(StatusListError::from).map(|body| {
            let outcome = verify(&body);
            (body, outcome)
        });
        // Signed by a key the issuer's set doesn't have yet (a rotation):
        // ask its refresher for the keys, as a token's unknown kid does.
        if let Ok((body, Err(StatusListError::NoKey))) = &outcome
            && lists.keys.refetch().await
        {
            let again = verify(body);
            outcome = outcome.map(|(body, _)| (body, again));
        }
        let outcome = outcome.and_then(|(_, outcome)| outcome);
        match outcome {
            Ok((verified, max_age, text)) => {
                let wait = lists.refresh_after(&verified, max_age, now);
                slot.list.store(Some(Arc::new(verified.list)));
                slot.due.store(now + wait, Relaxed);
                slot.backoff.store(1, Relaxed);
                if let Some(cache) = &self.cache {
                    lists.persist(cache, &slot.uri, &text, now);
                }
                self.metrics
                    .fetches
                    .with_label_values(&[&lists.name, "success"])
                    .inc();
                Ok(())
            }
            Err(error) => {
                let backoff = slot.backoff.load(Relaxed);
                let cap = MAX_BACKOFF.min(lists.settings.max_refresh.as_secs()).max(1);
                slot.backoff.store((backoff * 2).min(cap), Relaxed);
                slot.due.store(now + backoff as i64, Relaxed);
                self.metrics
                    .fetches
                    .with_label_values(&[&lists.name, error.label()])
                    .inc();
                // The URI came from a token, but only an allowed one is
                // ever fetched: it is the operator's, safe to log.
                let kept = slot.current().is_some_and(|list| lists.usable(&list, now));
                tracing::warn!(issuer = %lists.name, uri = %slot.uri, kept_previous = kept, "cannot refresh a status list: {error}");
                Err(error)
            }
        }
    }

    fn report(&self) {
        let name = [self.lists.name.as_str()];
        let count = self.lists.table.load().len();
        self.metrics
            .lists
            .with_label_values(&name)
            .set(count as i64);
        self.metrics
            .bytes
            .with_label_values(&name)
            .set(self.lists.memory_bytes() as i64);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::{Value, json};

    use super::*;
    use crate::config::schema::StatusListMode;
    use crate::jose::Algorithm;
    use crate::keys::fetch::FetchSettings;
    use crate::keys::{KeyStore, jwks};
    use crate::state::status_list::StatusListSettings;

    const NOW: i64 = 1_800_000_000;
    const URI: &str = "https://idp.example/statuslists/1";
    // One bit per entry, entries 0..16 as in the draft's example.
    const LST: &str = "eNrbuRgAAhcBXQ";

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/keys")
            .join(name)
    }

    fn lists() -> StatusLists {
        let algorithms: crate::jose::AlgorithmSet = [Algorithm::RS256].into_iter().collect();
        let text = std::fs::read_to_string(fixture("jwks.json")).unwrap();
        let document: Value = serde_json::from_str(&text).unwrap();
        let keys = jwks::parse(&document, algorithms).unwrap();
        StatusLists::new(
            "idp".into(),
            "https://idp.example".into(),
            algorithms,
            Arc::new(KeyStore::fixed(keys.keys)),
            StatusListSettings {
                mode: StatusListMode::Required,
                allowed_uris: vec!["https://idp.example/statuslists/".into()],
                prefetch: Vec::new(),
                max_lists: 4,
                max_age: Duration::from_secs(86_400),
                min_refresh: Duration::from_secs(60),
                max_refresh: Duration::from_secs(3600),
                max_decompressed_bytes: 1024,
                fetch: FetchSettings {
                    connect_timeout: Duration::from_secs(1),
                    timeout: Duration::from_secs(1),
                    max_bytes: 8192,
                    allow_http: false,
                },
            },
        )
    }

    fn signed(typ: &str, claims: Value) -> String {
        let signer = crate::mint::Signer::from_file(&fixture("rsa.pem"), Algorithm::RS256).unwrap();
        let claims = claims.as_object().unwrap().clone();
        signer.sign(&claims, Some("rsa-1"), Some(typ)).unwrap()
    }

    fn claims(extra: Value) -> Value {
        let mut claims = json!({
            "sub": URI, "iat": NOW, "exp": NOW + 600,
            "status_list": { "bits": 1, "lst": LST },
        });
        for (name, value) in extra.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    }

    fn verify(token: &str) -> Result<Verified, StatusListError> {
        lists().verify(URI, token, NOW)
    }

    #[test]
    fn a_status_list_token_is_checked_before_its_list_is_read() {
        let good = verify(&signed("statuslist+jwt", claims(json!({})))).unwrap();
        assert_eq!(good.list.bits.get(0), Some(1));
        assert_eq!(good.list.exp, Some(NOW + 600));
        let cases = [
            (signed("JWT", claims(json!({}))), "wrong_type"),
            (
                signed(
                    "statuslist+jwt",
                    claims(json!({ "sub": "https://idp.example/x" })),
                ),
                "wrong_subject",
            ),
            (
                signed("statuslist+jwt", claims(json!({ "exp": NOW }))),
                "expired",
            ),
            (
                signed(
                    "statuslist+jwt",
                    claims(json!({ "status_list": { "bits": 3, "lst": LST } })),
                ),
                "invalid_list",
            ),
            (
                signed("statuslist+jwt", claims(json!({ "status_list": "x" }))),
                "invalid_list",
            ),
            ("not a token".to_string(), "invalid_token"),
        ];
        for (token, label) in cases {
            let error = verify(&token)
                .err()
                .unwrap_or_else(|| panic!("{label}: accepted"));
            assert_eq!(error.label(), label, "{error}");
        }
        let mut tampered = signed("statuslist+jwt", claims(json!({})));
        tampered.push('A');
        assert!(verify(&tampered).is_err());
    }

    #[test]
    fn refresh_follows_ttl_and_max_age_within_bounds_and_never_past_exp() {
        let lists = lists();
        let verified = |ttl: Option<u64>, exp: Option<i64>| Verified {
            list: CurrentList {
                bits: StatusBits::decode(1, LST, 1024).unwrap(),
                fetched_at: NOW,
                exp,
                source: None,
            },
            ttl: ttl.map(Duration::from_secs),
        };
        let secs = |s: u64| Some(Duration::from_secs(s));
        let after = |v: &Verified, max_age| lists.refresh_after(v, max_age, NOW);
        assert_eq!(after(&verified(Some(300), None), None), 300);
        assert_eq!(
            after(&verified(Some(300), None), secs(120)),
            120,
            "the sooner"
        );
        assert_eq!(after(&verified(Some(5), None), None), 60, "min_refresh");
        assert_eq!(after(&verified(None, None), None), 3600, "max_refresh");
        assert_eq!(after(&verified(None, Some(NOW + 600)), None), 600, "exp");
        assert_eq!(
            after(&verified(None, Some(NOW + 10)), None),
            60,
            "not below min_refresh"
        );
    }
}
