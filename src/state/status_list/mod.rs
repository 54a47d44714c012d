//! Token Status Lists (draft-ietf-oauth-status-list): a token carrying
//! `status.status_list: {idx, uri}` is checked against the list its issuer
//! publishes at `uri`. Lists are fetched only from the issuer's allowed
//! URIs, verified with the issuer's own keys, decoded once and swapped in
//! whole; the request path does a table lookup and a bit lookup, never a
//! fetch. A URI is fetched once a verified token names it (or at startup
//! when configured), refreshed by the list's `ttl` and `Cache-Control`
//! within bounds, served stale-if-error up to `max_age`, and kept on disk
//! beside the issuers' key copies.

pub mod decode;
mod refresh;

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use hashbrown::HashMap;

pub use self::decode::StatusBits;
pub use self::refresh::{ListRefresher, StatusListError};
use crate::auth::json::{JsonObject, JsonRef};
use crate::auth::{Reason, Rejection};
use crate::config::schema::StatusListMode;
use crate::jose::AlgorithmSet;
use crate::keys::KeyStore;
use crate::keys::fetch::FetchSettings;
use crate::telemetry::metrics::StatusListMetrics;

/// An issuer's `status_list` settings, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusListSettings {
    /// `Required` or `Optional`; `off` compiles to no lists at all.
    pub mode: StatusListMode,
    pub allowed_uris: Vec<String>,
    pub prefetch: Vec<String>,
    pub max_lists: usize,
    pub max_age: Duration,
    pub min_refresh: Duration,
    pub max_refresh: Duration,
    pub max_decompressed_bytes: usize,
    pub fetch: FetchSettings,
}

impl StatusListSettings {
    /// Whether lists may be fetched from `uri`: it starts with one of the
    /// allowed prefixes. A prefix without a path (`https://idp.example`)
    /// must not admit `https://idp.example.evil`, so such a prefix only
    /// matches at a `/` boundary.
    pub fn allows(&self, uri: &str) -> bool {
        self.allowed_uris.iter().any(|prefix| {
            uri.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/')
            })
        })
    }
}

/// A verified, decoded list and when it was fetched.
#[derive(Debug)]
pub struct CurrentList {
    pub bits: StatusBits,
    /// Unix seconds of the fetch that brought it.
    pub fetched_at: i64,
    /// The Status List Token's `exp`: past it, the list is not used.
    pub exp: Option<i64>,
    /// The Status List Token it was decoded from, to verify again when a
    /// reload gives the issuer a new key store; `None`: installed directly.
    pub source: Option<Arc<str>>,
}

impl CurrentList {
    /// The decoded bits and the token kept to verify them again.
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>() + self.bits.memory_bytes() + self.source.as_ref().map_or(0, |s| s.len())
    }
}

/// One list URI an issuer's tokens named.
#[derive(Debug)]
pub struct Slot {
    pub uri: Box<str>,
    list: ArcSwapOption<CurrentList>,
    /// Unix seconds when it is next fetched; 0: as soon as possible.
    due: AtomicI64,
    /// The wait after the next failure, in seconds.
    backoff: AtomicU64,
}

impl Slot {
    fn new(uri: &str) -> Self {
        Self {
            uri: uri.into(),
            list: ArcSwapOption::empty(),
            due: AtomicI64::new(0),
            backoff: AtomicU64::new(1),
        }
    }

    pub fn current(&self) -> Option<Arc<CurrentList>> {
        self.list.load_full()
    }
}

/// An issuer's status lists: the table requests read, and what refreshing
/// them needs (the issuer's key store among it).
pub struct StatusLists {
    /// The issuer's configured name, for logs, metrics and disk copies.
    pub name: String,
    /// The exact `iss`, written with each disk copy and checked on load.
    pub issuer: String,
    pub algorithms: AlgorithmSet,
    pub keys: Arc<KeyStore>,
    pub settings: StatusListSettings,
    table: ArcSwap<HashMap<Box<str>, Arc<Slot>>>,
    /// Serializes additions to the table (rare: a URI's first token).
    adding: Mutex<()>,
    wake: tokio::sync::Notify,
    metrics: OnceLock<StatusListMetrics>,
}

impl std::fmt::Debug for StatusLists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusLists")
            .field("issuer", &self.name)
            .field("lists", &self.table.load().len())
            .finish()
    }
}

/// What a token's status claim says, before a list is consulted.
enum Claimed<'a> {
    /// No `status.status_list`: nothing to check.
    Nothing,
    Entry {
        idx: u64,
        uri: &'a str,
    },
    Malformed,
}

impl StatusLists {
    pub fn new(
        name: String,
        issuer: String,
        algorithms: AlgorithmSet,
        keys: Arc<KeyStore>,
        settings: StatusListSettings,
    ) -> Self {
        let lists = Self {
            name,
            issuer,
            algorithms,
            keys,
            table: ArcSwap::default(),
            adding: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            metrics: OnceLock::new(),
            settings,
        };
        for uri in lists.settings.prefetch.clone() {
            lists.register(&uri);
        }
        lists
    }

    /// Whether `other` checks tokens the same way from the same lists:
    /// a reload that leaves this unchanged keeps the lists already fetched.
    pub fn same_as(&self, other: &StatusLists) -> bool {
        self.name == other.name
            && self.issuer == other.issuer
            && self.algorithms == other.algorithms
            && Arc::ptr_eq(&self.keys, &other.keys)
            && self.settings == other.settings
    }

    /// The token's status, from its list: `Ok` when valid, or when the
    /// claim is absent; the refusal otherwise. Never waits.
    pub fn check(&self, claims: &JsonObject, now: i64) -> Result<(), Rejection> {
        let (idx, uri) = match claimed(claims) {
            Claimed::Nothing => return Ok(()),
            Claimed::Malformed => return Err(Rejection::invalid_token(Reason::Malformed)),
            Claimed::Entry { idx, uri } => (idx, uri),
        };
        if !self.settings.allows(uri) {
            return Err(Rejection::invalid_token(Reason::StatusListNotAllowed));
        }
        // Guards, not clones: no reference count is touched per request.
        let table = self.table.load();
        let Some(slot) = table.get(uri) else {
            drop(table);
            self.register(uri);
            return self.unavailable();
        };
        let list = slot.list.load();
        let Some(list) = list.as_deref().filter(|list| self.usable(list, now)) else {
            return self.unavailable();
        };
        match list.bits.get(idx) {
            Some(0) => Ok(()),
            Some(1) => Err(Rejection::invalid_token(Reason::TokenInvalidated)),
            Some(2) => Err(Rejection::invalid_token(Reason::TokenSuspended)),
            _ => Err(Rejection::invalid_token(Reason::TokenStatusUnknown)),
        }
    }

    /// Adds the list `claims` name to those fetched, when it is allowed
    /// (for `jwtgate token verify`, which fetches before it decides).
    pub fn register_named(&self, claims: &JsonObject) -> bool {
        match claimed(claims) {
            Claimed::Entry { uri, .. } => self.settings.allows(uri) && self.register(uri),
            Claimed::Nothing | Claimed::Malformed => false,
        }
    }

    /// Within `max_age` of its fetch and before its `exp`.
    fn usable(&self, list: &CurrentList, now: i64) -> bool {
        now - list.fetched_at <= self.settings.max_age.as_secs() as i64
            && list.exp.is_none_or(|exp| now < exp)
    }

    fn unavailable(&self) -> Result<(), Rejection> {
        match self.settings.mode {
            StatusListMode::Optional => {
                if let Some(metrics) = self.metrics.get() {
                    metrics.unchecked.with_label_values(&[&self.name]).inc();
                }
                Ok(())
            }
            StatusListMode::Required | StatusListMode::Off => Err(Rejection::status_unavailable()),
        }
    }

    /// Adds `uri` (already allowed) to the lists fetched, unless the table
    /// is full; the refresher is woken to fetch it.
    fn register(&self, uri: &str) -> bool {
        let _adding = self.adding.lock().expect("not poisoned");
        let table = self.table.load();
        if table.contains_key(uri) {
            return true;
        }
        if table.len() >= self.settings.max_lists {
            return false;
        }
        let mut next = HashMap::clone(&table);
        next.insert(uri.into(), Arc::new(Slot::new(uri)));
        self.table.store(Arc::new(next));
        self.wake.notify_one();
        true
    }

    /// Serves `list` for `uri` (an allowed one) as if just fetched; false
    /// when the table is full. Refreshing does this; so do benches.
    pub fn install(&self, uri: &str, list: CurrentList) -> bool {
        if !self.register(uri) {
            return false;
        }
        let table = self.table.load();
        let Some(slot) = table.get(uri) else {
            return false;
        };
        slot.list.store(Some(Arc::new(list)));
        true
    }

    /// Every list URI in the table.
    pub fn slots(&self) -> Vec<Arc<Slot>> {
        self.table.load().values().cloned().collect()
    }

    /// Heap bytes of the lists: decoded bits and the tokens they came from.
    pub fn memory_bytes(&self) -> usize {
        self.table
            .load()
            .values()
            .filter_map(|slot| slot.current())
            .map(|list| list.memory_bytes())
            .sum()
    }
}

/// `status.status_list.{idx, uri}`. A `status` without `status_list`
/// names another mechanism, which is not ours to check.
fn claimed(claims: &JsonObject) -> Claimed<'_> {
    let Some(status) = claims.get("status") else {
        return Claimed::Nothing;
    };
    let Some(status) = status.as_object() else {
        return Claimed::Malformed;
    };
    let Some(entry) = status.get("status_list") else {
        return Claimed::Nothing;
    };
    let Some(entry) = entry.as_object() else {
        return Claimed::Malformed;
    };
    let idx = entry.get("idx").and_then(JsonRef::as_f64);
    let uri = entry.get("uri").and_then(JsonRef::as_str);
    match (idx, uri) {
        (Some(idx), Some(uri)) if idx >= 0.0 && idx.fract() == 0.0 && idx < 2f64.powi(53) => {
            Claimed::Entry {
                idx: idx as u64,
                uri,
            }
        }
        _ => Claimed::Malformed,
    }
}

#[cfg(test)]
mod tests;
