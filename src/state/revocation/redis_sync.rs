//! Sharing the revocation list through Redis. The request path never
//! talks to Redis: this session keeps the local copy in step and the local
//! copy is what is enforced.
//!
//! Layout under `key_prefix` (`P`):
//! - `P:entry:<kind>:<sha256 of iss and value, hex>`: the entry as JSON;
//!   a `jti` entry's key expires (`EXAT`) when the entry lapses.
//! - `P:changes`: a pub/sub channel; each change is published there after
//!   it is written, tagged with the replica it came from.
//! - `P:seeded`: set once a replica has written its whole list; missing
//!   means Redis lost its data (or is new), and the next replica to connect
//!   writes its list back rather than forget what it enforces.
//!
//! Each connection: subscribe first (nothing published after that is
//! missed), push the changes queued while Redis was away, seed if needed,
//! then reconcile (the whole list, read with `SCAN`, replaces the local
//! copy, but for changes still queued). Then: apply messages as they come,
//! push new local changes, `PING` every second (the sync age), reconcile
//! every `reconcile_interval`. Any failure drops the connection and
//! [`Redis::keep_connected`] tries again with a growing delay; the local
//! copy stays enforced meanwhile.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

use super::{
    Change, Entry, Kind, RevocationSharing, Revocations, SYNC_CONNECT, SYNC_HEARTBEAT,
    SYNC_MESSAGE, SYNC_PUSH, SYNC_RECONCILE,
};
use crate::digest::sha256;
use crate::state::redis::{Link, Redis, RedisFailure, Session, next_message, origin};
use crate::telemetry::traces;

const HEARTBEAT: Duration = Duration::from_secs(1);
const SCAN_BATCH: usize = 1000;

/// What goes over the channel.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    /// The replica that made the change; it skips its own messages.
    origin: u64,
    change: Change,
}

struct Keys {
    prefix: String,
    channel: String,
    seeded: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            channel: format!("{prefix}:changes"),
            seeded: format!("{prefix}:seeded"),
        }
    }

    fn entry(&self, kind: Kind, iss: &str, value: &str) -> String {
        let mut input = Vec::with_capacity(iss.len() + value.len() + 1);
        input.extend_from_slice(iss.as_bytes());
        input.push(0);
        input.extend_from_slice(value.as_bytes());
        let mut key = format!("{}:entry:{}:", self.prefix, kind.as_str());
        for byte in sha256(&input) {
            let _ = write!(key, "{byte:02x}");
        }
        key
    }

    fn pattern(&self) -> String {
        format!("{}:entry:*", self.prefix)
    }
}

/// Keeps `revocations` in step with Redis until the task is aborted.
pub async fn run(revocations: Arc<Revocations>, sharing: RevocationSharing, redis: Arc<Redis>) {
    let sync = Sync {
        keys: Keys::new(&sharing.key_prefix),
        origin: origin(),
        revocations,
        sharing,
    };
    redis.keep_connected(&sync).await;
}

struct Sync {
    keys: Keys,
    origin: u64,
    revocations: Arc<Revocations>,
    sharing: RevocationSharing,
}

impl Session for Sync {
    const NAME: &'static str = "revocation";
    const MEANWHILE: &'static str = "enforcing the local copy";
    const CONNECT: &'static str = SYNC_CONNECT;

    fn channel(&self) -> &str {
        &self.keys.channel
    }

    /// Pushes what waits, seeds an emptied Redis and reconciles, then
    /// follows the channel until the connection fails.
    async fn run(
        &self,
        link: Link<'_>,
        established: &mut bool,
    ) -> Result<Infallible, RedisFailure> {
        let Link {
            redis,
            mut connection,
            mut messages,
        } = link;
        self.push_pending(redis, &mut connection).await?;
        self.seed_if_lost(redis, &mut connection).await?;
        self.reconcile(redis, &mut connection).await?;
        self.revocations.mark_synced();
        self.revocations.refresh_gauges();
        *established = true;
        tracing::info!(
            url = %redis.settings().url,
            "revocation: in step with Redis"
        );

        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut reconcile = tokio::time::interval(self.sharing.reconcile_interval);
        reconcile.tick().await;
        loop {
            tokio::select! {
                message = next_message(&mut messages, SYNC_MESSAGE) => {
                    self.receive(&message?).await?;
                }
                () = self.revocations.changed() => self.push_pending(redis, &mut connection).await?,
                _ = heartbeat.tick() => {
                    let _: String = redis
                        .timed(SYNC_HEARTBEAT, redis::cmd("PING").query_async(&mut connection))
                        .await?;
                    // Changes queued while a push failed mid-way go now.
                    self.push_pending(redis, &mut connection).await?;
                    self.revocations.mark_synced();
                }
                _ = reconcile.tick() => {
                    let reconciled = self.reconcile(redis, &mut connection);
                    traces::traced("revocation reconcile", &[], RedisFailure::operation, |_| None, reconciled)
                        .await?;
                    self.revocations.mark_synced();
                }
            }
        }
    }

    fn failed(&self, failure: &RedisFailure) {
        self.revocations.sync_error(failure.operation());
    }
}

impl Sync {
    async fn receive(&self, message: &redis::Msg) -> Result<(), RedisFailure> {
        let parsed = message
            .get_payload::<String>()
            .ok()
            .and_then(|payload| serde_json::from_str::<Message>(&payload).ok());
        let Some(parsed) = parsed else {
            self.revocations.sync_error(SYNC_MESSAGE);
            tracing::warn!("revocation: ignored a message on the channel that is not a change");
            return Ok(());
        };
        if parsed.origin == self.origin {
            return Ok(());
        }
        self.apply(vec![parsed.change]).await
    }

    async fn apply(&self, changes: Vec<Change>) -> Result<(), RedisFailure> {
        if changes.is_empty() {
            return Ok(());
        }
        let revocations = self.revocations.clone();
        let applied = tokio::task::spawn_blocking(move || revocations.apply_remote(&changes))
            .await
            .expect("apply_remote does not panic")
            .map_err(|error| local(SYNC_RECONCILE, error))?;
        if applied > 0 {
            tracing::debug!(applied, "revocation: changes from Redis applied");
        }
        Ok(())
    }

    fn write(&self, pipe: &mut redis::Pipeline, change: &Change) {
        let (kind, iss, value) = change.target();
        let key = self.keys.entry(kind, iss, value);
        match change {
            Change::Put(entry) => {
                let json = serde_json::to_string(entry).expect("an entry serializes");
                let set = pipe.cmd("SET").arg(&key).arg(json);
                if entry.kind == Kind::Jti {
                    set.arg("EXAT").arg(entry.at.max(1));
                }
            }
            Change::Lift { .. } => {
                pipe.cmd("DEL").arg(&key);
            }
        }
    }

    async fn push_pending(
        &self,
        redis: &Redis,
        connection: &mut MultiplexedConnection,
    ) -> Result<(), RedisFailure> {
        let pending = self.revocations.pending();
        if pending.is_empty() {
            return Ok(());
        }
        let now = self.revocations.now();
        let mut pipe = redis::pipe();
        for change in &pending {
            // A `jti` that lapsed while queued: Redis would keep nothing.
            if let Change::Put(entry) = change
                && entry.kind == Kind::Jti
                && entry.at <= now
            {
                continue;
            }
            self.write(&mut pipe, change);
            let message = Message {
                origin: self.origin,
                change: change.clone(),
            };
            pipe.cmd("PUBLISH")
                .arg(&self.keys.channel)
                .arg(serde_json::to_string(&message).expect("a message serializes"))
                .ignore();
        }
        let _: redis::Value = redis.timed(SYNC_PUSH, pipe.query_async(connection)).await?;
        let revocations = self.revocations.clone();
        let count = pending.len();
        tokio::task::spawn_blocking(move || revocations.pushed(count))
            .await
            .expect("pushed does not panic")
            .map_err(|error| local(SYNC_RECONCILE, error))?;
        tracing::info!(count, "revocation: local changes pushed to Redis");
        Ok(())
    }

    /// Redis without the seeded marker lost what it had: write the whole
    /// local list back, so no replica forgets an entry by adopting an
    /// empty Redis.
    async fn seed_if_lost(
        &self,
        redis: &Redis,
        connection: &mut MultiplexedConnection,
    ) -> Result<(), RedisFailure> {
        let seeded: Option<String> = redis
            .timed(
                SYNC_RECONCILE,
                redis::cmd("GET")
                    .arg(&self.keys.seeded)
                    .query_async(connection),
            )
            .await?;
        if seeded.is_some() {
            return Ok(());
        }
        let now = self.revocations.now();
        let entries: Vec<Entry> = self
            .revocations
            .list()
            .entries()
            .into_iter()
            .filter(|e| e.kind != Kind::Jti || e.at > now)
            .collect();
        for chunk in entries.chunks(SCAN_BATCH) {
            let mut pipe = redis::pipe();
            for entry in chunk {
                self.write(&mut pipe, &Change::Put(entry.clone()));
            }
            let _: redis::Value = redis
                .timed(SYNC_RECONCILE, pipe.query_async(connection))
                .await?;
        }
        let _: redis::Value = redis
            .timed(
                SYNC_RECONCILE,
                redis::cmd("SET")
                    .arg(&self.keys.seeded)
                    .arg(now)
                    .query_async(connection),
            )
            .await?;
        tracing::warn!(
            entries = entries.len(),
            "revocation: Redis had no revocation data; wrote the local list to it"
        );
        Ok(())
    }

    /// Makes the local list what Redis holds, but for changes still queued.
    async fn reconcile(
        &self,
        redis: &Redis,
        connection: &mut MultiplexedConnection,
    ) -> Result<(), RedisFailure> {
        let mut remote: HashMap<(Kind, String, String), i64> = HashMap::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis
                .timed(
                    SYNC_RECONCILE,
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(self.keys.pattern())
                        .arg("COUNT")
                        .arg(SCAN_BATCH)
                        .query_async(connection),
                )
                .await?;
            if !keys.is_empty() {
                let values: Vec<Option<String>> = redis
                    .timed(
                        SYNC_RECONCILE,
                        redis::cmd("MGET").arg(&keys).query_async(connection),
                    )
                    .await?;
                for value in values.into_iter().flatten() {
                    match serde_json::from_str::<Entry>(&value) {
                        Ok(entry) => {
                            remote.insert((entry.kind, entry.iss, entry.value), entry.at);
                        }
                        Err(_) => self.revocations.sync_error(SYNC_RECONCILE),
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let now = self.revocations.now();
        let mut changes = Vec::new();
        for local in self.revocations.list().entries() {
            match remote.remove(&(local.kind, local.iss.clone(), local.value.clone())) {
                Some(at) if at == local.at => {}
                Some(at) => changes.push(Change::Put(Entry { at, ..local })),
                // A `jti` Redis let lapse a moment before our sweeper did.
                None if local.kind == Kind::Jti && local.at <= now => {}
                None => changes.push(Change::Lift {
                    kind: local.kind,
                    iss: local.iss,
                    value: local.value,
                }),
            }
        }
        changes.extend(remote.into_iter().map(|((kind, iss, value), at)| {
            Change::Put(Entry {
                kind,
                iss,
                value,
                at,
            })
        }));
        self.apply(changes).await
    }
}

/// The local list could not take a change (its disk copy failed).
fn local(operation: &'static str, error: super::RevocationError) -> RedisFailure {
    RedisFailure::Local {
        operation,
        detail: error.to_string(),
    }
}
