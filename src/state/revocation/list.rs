//! The in-memory revocation list the request path reads: three tables
//! (`jti`, `sub`, `sid`), each keyed by the issuer's exact `iss` and the
//! claim's value, split into shards behind `std` read-write locks.
//!
//! A lookup hashes once, takes one shard's read lock (never held across an
//! await) and probes one table; it allocates nothing. A kind with no entry
//! is not even hashed for, so a gateway that never revoked anything pays
//! three atomic loads per request. Writes (the admin API, Redis, the
//! sweeper) are rare and touch one shard each; an immutable index swapped
//! whole would have to copy a million entries for each revocation.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::{DefaultHashBuilder, HashTable};
use serde::{Deserialize, Serialize};

use crate::auth::VerifiedToken;
use crate::auth::json::JsonRef;

/// What an entry revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One token, by its `jti`, until it expires.
    Jti,
    /// Every token of a subject issued before a cut-off.
    Sub,
    /// Every token of a session issued before a cut-off.
    Sid,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Jti, Kind::Sub, Kind::Sid];

    /// The claim it matches, and its label in metrics, logs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Jti => "jti",
            Kind::Sub => "sub",
            Kind::Sid => "sid",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One revocation, as it is kept, written to disk and shared through Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: Kind,
    /// The issuer's exact `iss`: what tokens carry, the same on every
    /// replica whatever the issuer is called in their configs.
    pub iss: String,
    /// The `jti`, `sub` or `sid`.
    pub value: String,
    /// `jti`: when the entry lapses (the token's `exp` plus the issuer's
    /// leeway; after that the token is refused as expired anyway).
    /// `sub`/`sid`: the cut-off; tokens issued (`iat`) before it are refused.
    pub at: i64,
}

/// A change to the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Change {
    /// Add an entry, or replace the one with the same kind, issuer and value.
    Put(Entry),
    /// Remove an entry.
    Lift {
        kind: Kind,
        iss: String,
        value: String,
    },
}

impl Change {
    /// Revokes `value` as a `jti` of the issuer `https://i` until `at`: the
    /// change the unit tests make most.
    #[cfg(test)]
    pub(crate) fn test_jti(value: &str, at: i64) -> Self {
        Change::Put(Entry {
            kind: Kind::Jti,
            iss: "https://i".into(),
            value: value.into(),
            at,
        })
    }

    pub fn kind(&self) -> Kind {
        match self {
            Change::Put(entry) => entry.kind,
            Change::Lift { kind, .. } => *kind,
        }
    }

    /// The kind, issuer and value the change is about.
    pub fn target(&self) -> (Kind, &str, &str) {
        match self {
            Change::Put(entry) => (entry.kind, &entry.iss, &entry.value),
            Change::Lift { kind, iss, value } => (*kind, iss, value),
        }
    }
}

const SHARDS: usize = 16;

struct Slot {
    /// Shared by every entry of the issuer.
    iss: Arc<str>,
    value: Box<str>,
    at: i64,
}

#[derive(Default)]
struct Shard {
    tables: [HashTable<Slot>; 3],
}

pub struct RevocationList {
    shards: Box<[RwLock<Shard>]>,
    hasher: DefaultHashBuilder,
    counts: [AtomicUsize; 3],
    /// The earliest time a `jti` entry lapses, so the sweeper scans only
    /// when something is due.
    next_expiry: AtomicI64,
    /// One `Arc<str>` per issuer, shared by its entries.
    issuers: Mutex<Vec<Arc<str>>>,
}

impl Default for RevocationList {
    fn default() -> Self {
        Self::new()
    }
}

impl RevocationList {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: DefaultHashBuilder::default(),
            counts: Default::default(),
            next_expiry: AtomicI64::new(i64::MAX),
            issuers: Mutex::default(),
        }
    }

    fn hash(&self, iss: &str, value: &str) -> u64 {
        self.hasher.hash_one((iss, value))
    }

    /// The table's own bucket index uses the low bits and its tag the top
    /// seven: the shard takes bits from neither.
    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        &self.shards[(hash >> 40) as usize % SHARDS]
    }

    fn read(&self, hash: u64) -> RwLockReadGuard<'_, Shard> {
        // A panic while writing leaves a table that is still valid.
        self.shard(hash)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, hash: u64) -> RwLockWriteGuard<'_, Shard> {
        self.shard(hash)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry's `at`, if there is one.
    pub fn get(&self, kind: Kind, iss: &str, value: &str) -> Option<i64> {
        if self.counts[kind.index()].load(Ordering::Relaxed) == 0 {
            return None;
        }
        let hash = self.hash(iss, value);
        let shard = self.read(hash);
        shard.tables[kind.index()]
            .find(hash, |slot| *slot.value == *value && *slot.iss == *iss)
            .map(|slot| slot.at)
    }

    pub fn len(&self, kind: Kind) -> usize {
        self.counts[kind.index()].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> usize {
        Kind::ALL.iter().map(|kind| self.len(*kind)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// Applies `change`; whether it changed anything.
    pub fn apply(&self, change: &Change) -> bool {
        match change {
            Change::Put(entry) => self.insert(entry),
            Change::Lift { kind, iss, value } => self.remove(*kind, iss, value).is_some(),
        }
    }

    /// Adds or replaces; whether the list changed.
    pub fn insert(&self, entry: &Entry) -> bool {
        let hash = self.hash(&entry.iss, &entry.value);
        let iss = self.intern(&entry.iss);
        let index = entry.kind.index();
        let mut shard = self.write(hash);
        let table = &mut shard.tables[index];
        let found = table.find_mut(hash, |slot| {
            *slot.value == *entry.value && *slot.iss == *entry.iss
        });
        let changed = match found {
            Some(slot) if slot.at == entry.at => false,
            Some(slot) => {
                slot.at = entry.at;
                true
            }
            None => {
                table.insert_unique(
                    hash,
                    Slot {
                        iss,
                        value: entry.value.as_str().into(),
                        at: entry.at,
                    },
                    |slot| self.hash(&slot.iss, &slot.value),
                );
                self.counts[index].fetch_add(1, Ordering::Relaxed);
                true
            }
        };
        drop(shard);
        if entry.kind == Kind::Jti {
            self.next_expiry.fetch_min(entry.at, Ordering::Relaxed);
        }
        changed
    }

    /// Removes the entry; its `at` if there was one.
    pub fn remove(&self, kind: Kind, iss: &str, value: &str) -> Option<i64> {
        let hash = self.hash(iss, value);
        let mut shard = self.write(hash);
        let found = shard.tables[kind.index()]
            .find_entry(hash, |slot| *slot.value == *value && *slot.iss == *iss)
            .ok()?;
        let (slot, _) = found.remove();
        self.counts[kind.index()].fetch_sub(1, Ordering::Relaxed);
        Some(slot.at)
    }

    fn intern(&self, iss: &str) -> Arc<str> {
        let mut issuers = self.issuers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = issuers.iter().find(|known| ***known == *iss) {
            return known.clone();
        }
        let new: Arc<str> = iss.into();
        issuers.push(new.clone());
        new
    }

    /// Every entry, sorted (kind, issuer, value): for the disk copy and
    /// the comparison with Redis.
    pub fn entries(&self) -> Vec<Entry> {
        let mut entries = Vec::with_capacity(self.total());
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            for kind in Kind::ALL {
                entries.extend(shard.tables[kind.index()].iter().map(|slot| Entry {
                    kind,
                    iss: slot.iss.to_string(),
                    value: slot.value.to_string(),
                    at: slot.at,
                }));
            }
        }
        entries.sort_by(|a, b| (a.kind, &a.iss, &a.value).cmp(&(b.kind, &b.iss, &b.value)));
        entries
    }

    /// Removes the `jti` entries that lapsed at or before `now` and returns
    /// them. Scans only when one is due; each shard is read first and
    /// write-locked only if it holds one.
    pub fn sweep(&self, now: i64) -> Vec<Entry> {
        let mut removed = Vec::new();
        if self.next_expiry.load(Ordering::Relaxed) > now {
            return removed;
        }
        // Entries added while this runs lower it again with `fetch_min`.
        self.next_expiry.store(i64::MAX, Ordering::Relaxed);
        let index = Kind::Jti.index();
        let mut next = i64::MAX;
        for shard in self.shards.iter() {
            let (due, remaining) = {
                let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
                let table = &shard.tables[index];
                (
                    table.iter().any(|slot| slot.at <= now),
                    table
                        .iter()
                        .map(|slot| slot.at)
                        .filter(|at| *at > now)
                        .min(),
                )
            };
            next = remaining.map_or(next, |at| next.min(at));
            if !due {
                continue;
            }
            let mut shard = shard.write().unwrap_or_else(PoisonError::into_inner);
            shard.tables[index].retain(|slot| {
                if slot.at > now {
                    return true;
                }
                removed.push(Entry {
                    kind: Kind::Jti,
                    iss: slot.iss.to_string(),
                    value: slot.value.to_string(),
                    at: slot.at,
                });
                false
            });
        }
        self.counts[index].fetch_sub(removed.len(), Ordering::Relaxed);
        self.next_expiry.fetch_min(next, Ordering::Relaxed);
        removed
    }

    /// Which entry refuses `token` of the issuer whose `iss` is `iss`, if
    /// any: its `jti`, or a `sub` or `sid` cut-off after its `iat`. A token
    /// without `iat` can't show it was issued after a cut-off, so one
    /// applies to it whatever its age.
    pub fn check(&self, iss: &str, token: &VerifiedToken) -> Option<Kind> {
        let claim = |name: &str| token.claims.get(name).and_then(JsonRef::as_str);
        if self.len(Kind::Jti) > 0
            && let Some(jti) = claim("jti")
            && self.get(Kind::Jti, iss, jti).is_some()
        {
            return Some(Kind::Jti);
        }
        for kind in [Kind::Sub, Kind::Sid] {
            if self.len(kind) > 0
                && let Some(value) = claim(kind.as_str())
                && let Some(cut_off) = self.get(kind, iss, value)
                && token.iat.is_none_or(|iat| iat < cut_off)
            {
                return Some(kind);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind, iss: &str, value: &str, at: i64) -> Entry {
        Entry {
            kind,
            iss: iss.into(),
            value: value.into(),
            at,
        }
    }

    #[test]
    fn insert_get_replace_remove() {
        let list = RevocationList::new();
        assert!(list.insert(&entry(Kind::Jti, "https://a", "t1", 100)));
        assert!(!list.insert(&entry(Kind::Jti, "https://a", "t1", 100)));
        assert_eq!(list.get(Kind::Jti, "https://a", "t1"), Some(100));
        // Another issuer, another kind: other entries.
        assert_eq!(list.get(Kind::Jti, "https://b", "t1"), None);
        assert_eq!(list.get(Kind::Sub, "https://a", "t1"), None);
        assert!(list.insert(&entry(Kind::Jti, "https://a", "t1", 200)));
        assert_eq!(list.get(Kind::Jti, "https://a", "t1"), Some(200));
        assert_eq!(list.len(Kind::Jti), 1);
        assert_eq!(list.remove(Kind::Jti, "https://a", "t1"), Some(200));
        assert_eq!(list.remove(Kind::Jti, "https://a", "t1"), None);
        assert!(list.is_empty());
    }

    #[test]
    fn many_entries_are_all_found_and_listed() {
        let list = RevocationList::new();
        for i in 0..10_000 {
            list.insert(&entry(Kind::Sid, "https://a", &format!("s{i}"), i));
        }
        assert_eq!(list.len(Kind::Sid), 10_000);
        for i in (0..10_000).step_by(97) {
            assert_eq!(list.get(Kind::Sid, "https://a", &format!("s{i}")), Some(i));
        }
        let entries = list.entries();
        assert_eq!(entries.len(), 10_000);
        assert!(entries.windows(2).all(|w| w[0].value < w[1].value));
    }

    #[test]
    fn sweep_removes_only_lapsed_jti_entries() {
        let list = RevocationList::new();
        list.insert(&entry(Kind::Jti, "i", "old", 10));
        list.insert(&entry(Kind::Jti, "i", "new", 30));
        list.insert(&entry(Kind::Sub, "i", "alice", 5));
        assert!(list.sweep(9).is_empty());
        let removed = list.sweep(10);
        assert_eq!(removed, vec![entry(Kind::Jti, "i", "old", 10)]);
        assert_eq!(list.len(Kind::Jti), 1);
        assert_eq!(list.len(Kind::Sub), 1, "cut-offs never lapse by themselves");
        assert!(list.sweep(29).is_empty());
        assert_eq!(list.sweep(40).len(), 1);
        assert_eq!(list.len(Kind::Jti), 0);
    }

    fn token(claims: &str, iat: Option<i64>) -> VerifiedToken {
        VerifiedToken {
            issuer: 0,
            algorithm: Some(crate::jose::Algorithm::HS256),
            claims: crate::auth::json::JsonObject::parse(claims.as_bytes()).unwrap(),
            exp: None,
            nbf: None,
            iat,
            key_generation: 0,
            verifier: crate::auth::verify::VerifierId::fresh(),
            bound: false,
        }
    }

    #[test]
    fn check_applies_jti_and_cut_offs() {
        let list = RevocationList::new();
        let t = token(r#"{"jti":"j1","sub":"alice","sid":"s1"}"#, Some(100));
        assert_eq!(list.check("i", &t), None);

        list.insert(&entry(Kind::Jti, "i", "j1", 1000));
        assert_eq!(list.check("i", &t), Some(Kind::Jti));
        assert_eq!(list.check("other", &t), None, "entries are per issuer");
        list.remove(Kind::Jti, "i", "j1");

        // Issued at 100: a cut-off at 100 lets it through, at 101 not.
        list.insert(&entry(Kind::Sub, "i", "alice", 100));
        assert_eq!(list.check("i", &t), None);
        list.insert(&entry(Kind::Sub, "i", "alice", 101));
        assert_eq!(list.check("i", &t), Some(Kind::Sub));
        list.remove(Kind::Sub, "i", "alice");

        list.insert(&entry(Kind::Sid, "i", "s1", 101));
        assert_eq!(list.check("i", &t), Some(Kind::Sid));
        let other_session = token(r#"{"sub":"alice","sid":"s2"}"#, Some(100));
        assert_eq!(list.check("i", &other_session), None);

        // Without iat a token can't show it is newer than the cut-off.
        let no_iat = token(r#"{"sid":"s1"}"#, None);
        assert_eq!(list.check("i", &no_iat), Some(Kind::Sid));
    }
}
