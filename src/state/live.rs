//! Connections that outlive the request that opened them: a WebSocket after
//! its `101`, a streaming response, a long upload. Each was allowed by one
//! decision at its start; this module ends it when that decision stops
//! holding: at the token's expiry (plus the issuer's leeway), at a route's
//! maximum lifetime, or when its `jti`, `sub` or `sid` is revoked.
//!
//! Only such connections are armed: an ordinary request registers nothing
//! and starts no timer. An armed connection gets one [`KillSwitch`], one
//! tokio timer for its deadline (no polling: an idle connection is woken
//! once, when it is to end) and one entry per revocable claim in a table
//! keyed like the revocation list (kind, issuer's `iss`, value), so a
//! revocation finds its connections without a scan. The transport (the
//! HTTP/1 stream wrapper, an HTTP/2 stream) polls the switch and ends the
//! connection its own way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec};

use crate::clock::SharedClock;
use crate::state::revocation::{Entry, Kind};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{counter_vec, gauge_vec};

/// Why a long-lived connection was ended; the `reason` label of
/// `jwtgate_connections_ended_total` and the access log's `ended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EndReason {
    /// The token's `exp` plus the issuer's leeway passed.
    Expired = 1,
    /// Its `jti`, `sub` or `sid` was revoked.
    Revoked = 2,
    /// A reload made its route refuse the token.
    Reload = 3,
    /// The route's maximum lifetime came before the token's expiry.
    MaxLifetime = 4,
}

impl EndReason {
    pub const ALL: [EndReason; 4] = [
        EndReason::Expired,
        EndReason::Revoked,
        EndReason::Reload,
        EndReason::MaxLifetime,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Expired => "expired",
            EndReason::Revoked => "revoked",
            EndReason::Reload => "reload",
            EndReason::MaxLifetime => "max_lifetime",
        }
    }

    /// What a client is told (a WebSocket close reason, a gRPC message).
    pub fn message(self) -> &'static str {
        match self {
            EndReason::Expired => "token expired",
            EndReason::Revoked => "token revoked",
            EndReason::Reload => "token no longer accepted",
            EndReason::MaxLifetime => "connection lifetime reached",
        }
    }

    fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u8 == value)
    }
}

/// Fired once, from any thread, with the first reason; the connection's
/// task polls it next to its IO.
#[derive(Debug, Default)]
pub struct KillSwitch {
    /// 0 while live, else an [`EndReason`].
    reason: AtomicU8,
    waker: AtomicWaker,
}

impl KillSwitch {
    /// Ends the connection for `reason`, unless it was already ended for
    /// another; whether this call was the one that fired it.
    pub fn fire(&self, reason: EndReason) -> bool {
        let fired = self
            .reason
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if fired {
            self.waker.wake();
        }
        fired
    }

    pub fn fired(&self) -> Option<EndReason> {
        EndReason::from_u8(self.reason.load(Ordering::Acquire))
    }

    /// Ready once fired; otherwise the task in `cx` is woken when it is.
    pub fn poll_fired(&self, cx: &mut Context<'_>) -> Poll<EndReason> {
        if let Some(reason) = self.fired() {
            return Poll::Ready(reason);
        }
        self.waker.register(cx.waker());
        // Fired between the first look and the registration: the wake went
        // to the previous waker, so look once more.
        match self.fired() {
            Some(reason) => Poll::Ready(reason),
            None => Poll::Pending,
        }
    }
}

/// What kind of long-lived connection; the `kind` label of
/// `jwtgate_long_lived_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionKind {
    /// A WebSocket (any `101` upgrade).
    WebSocket,
    /// A response streamed with no known end (SSE, a long download).
    Stream,
    /// A request body streamed with no known end, or a large one.
    Upload,
}

impl ConnectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::WebSocket => "websocket",
            ConnectionKind::Stream => "stream",
            ConnectionKind::Upload => "upload",
        }
    }
}

/// The claims a revocation could match, as the token carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenKeys {
    /// The issuer's exact `iss`.
    pub iss: String,
    pub jti: Option<String>,
    pub sub: Option<String>,
    pub sid: Option<String>,
    /// A `sub`/`sid` revocation applies to tokens issued before its
    /// cut-off; a token without `iat` can't show it was issued after.
    pub iat: Option<i64>,
}

/// When an armed connection ends on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadline {
    /// The token's `exp` plus the issuer's leeway, in Unix seconds.
    pub expires_at: Option<i64>,
    /// The route's maximum lifetime, counted from arming.
    pub max_lifetime: Option<Duration>,
}

type Key = (Kind, Box<str>, Box<str>);

struct Listed {
    id: u64,
    switch: Weak<KillSwitch>,
    iat: Option<i64>,
    route: Arc<str>,
    kind: ConnectionKind,
}

/// Every armed connection of the process, by what can revoke it.
pub struct LiveConnections {
    table: Mutex<HashMap<Key, Vec<Listed>>>,
    next_id: AtomicU64,
    clock: SharedClock,
    ended: IntCounterVec,
    open: IntGaugeVec,
}

impl LiveConnections {
    pub fn new(metrics: &Metrics, clock: SharedClock) -> Arc<Self> {
        let ended = counter_vec(
            "jwtgate_connections_ended_total",
            "Long-lived connections (WebSocket, stream, upload) jwtgate ended, by route and reason (expired, revoked, reload, max_lifetime).",
            &["route", "reason"],
        );
        let open = gauge_vec(
            "jwtgate_long_lived_connections",
            "Open long-lived connections, by route and kind (websocket, stream, upload).",
            &["route", "kind"],
        );
        metrics.register(Box::new(ended.clone()));
        metrics.register(Box::new(open.clone()));
        Arc::new(Self {
            table: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            clock,
            ended,
            open,
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Listed>>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Arms a connection of `route` that has just become long-lived: it
    /// ends at `deadline` (one timer, on the calling tokio runtime) or when
    /// one of `keys` is revoked, whichever comes first. Dropping the
    /// returned handle disarms it.
    pub fn arm(
        self: &Arc<Self>,
        deadline: Deadline,
        keys: &TokenKeys,
        route: &str,
        kind: ConnectionKind,
    ) -> Armed {
        let switch = Arc::new(KillSwitch::default());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let route: Arc<str> = route.into();
        let listed_keys = listed_keys(keys);
        {
            let mut table = self.table();
            for key in &listed_keys {
                table.entry(key.clone()).or_default().push(Listed {
                    id,
                    switch: Arc::downgrade(&switch),
                    iat: keys.iat,
                    route: route.clone(),
                    kind,
                });
            }
        }
        let timer = self.due_in(deadline).map(|(delay, reason)| {
            let weak = Arc::downgrade(&switch);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Some(switch) = weak.upgrade() {
                    switch.fire(reason);
                }
            })
            .abort_handle()
        });
        let open = self.open.with_label_values(&[&*route, kind.as_str()]);
        open.inc();
        Armed {
            switch,
            registry: Arc::clone(self),
            id,
            keys: listed_keys,
            timer,
            open,
            route,
        }
    }

    /// How long until `deadline`, by the injectable clock, and what it is.
    fn due_in(&self, deadline: Deadline) -> Option<(Duration, EndReason)> {
        let now = self.clock.now_nanos();
        let expiry = deadline.expires_at.map(|at| {
            let at = u64::try_from(at).unwrap_or(0).saturating_mul(1_000_000_000);
            (
                Duration::from_nanos(at.saturating_sub(now)),
                EndReason::Expired,
            )
        });
        let lifetime = deadline
            .max_lifetime
            .map(|max| (max, EndReason::MaxLifetime));
        match (expiry, lifetime) {
            (Some(e), Some(l)) => Some(if l.0 < e.0 { l } else { e }),
            (e, l) => e.or(l),
        }
    }

    /// Ends every armed connection `entry` revokes: the one token of a
    /// `jti`, the tokens of a `sub` or `sid` issued before its cut-off.
    /// How many were ended.
    pub fn revoke(&self, entry: &Entry) -> usize {
        let key: Key = (
            entry.kind,
            entry.iss.as_str().into(),
            entry.value.as_str().into(),
        );
        let table = self.table();
        let Some(listed) = table.get(&key) else {
            return 0;
        };
        listed
            .iter()
            .filter(|l| entry.kind == Kind::Jti || l.iat.is_none_or(|iat| iat < entry.at))
            .filter_map(|l| l.switch.upgrade())
            .filter(|switch| switch.fire(EndReason::Revoked))
            .count()
    }

    /// The open armed connections, by route and kind (for tests and the
    /// admin side).
    pub fn open(&self) -> Vec<(Arc<str>, ConnectionKind)> {
        let table = self.table();
        let mut seen = HashMap::new();
        for l in table.values().flatten() {
            seen.entry(l.id).or_insert((l.route.clone(), l.kind));
        }
        seen.into_values().collect()
    }

    fn remove(&self, id: u64, keys: &[Key]) {
        let mut table = self.table();
        for key in keys {
            if let Some(listed) = table.get_mut(key) {
                listed.retain(|l| l.id != id);
                if listed.is_empty() {
                    table.remove(key);
                }
            }
        }
    }
}

fn listed_keys(keys: &TokenKeys) -> Vec<Key> {
    [
        (Kind::Jti, &keys.jti),
        (Kind::Sub, &keys.sub),
        (Kind::Sid, &keys.sid),
    ]
    .into_iter()
    .filter_map(|(kind, value)| {
        value
            .as_deref()
            .map(|value| (kind, keys.iss.as_str().into(), value.into()))
    })
    .collect()
}

/// An armed connection. Dropping it (the request's end) stops its timer,
/// takes it out of the table and counts how it ended.
pub struct Armed {
    switch: Arc<KillSwitch>,
    registry: Arc<LiveConnections>,
    id: u64,
    keys: Vec<Key>,
    timer: Option<tokio::task::AbortHandle>,
    open: IntGauge,
    route: Arc<str>,
}

impl Armed {
    pub fn switch(&self) -> &Arc<KillSwitch> {
        &self.switch
    }

    pub fn fired(&self) -> Option<EndReason> {
        self.switch.fired()
    }
}

impl std::fmt::Debug for Armed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Armed")
            .field("id", &self.id)
            .field("route", &self.route)
            .field("fired", &self.fired())
            .finish()
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        if let Some(timer) = &self.timer {
            timer.abort();
        }
        self.registry.remove(self.id, &self.keys);
        self.open.dec();
        if let Some(reason) = self.switch.fired() {
            self.registry
                .ended
                .with_label_values(&[&*self.route, reason.as_str()])
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::future::poll_fn;

    fn keys() -> TokenKeys {
        TokenKeys {
            iss: "https://i".into(),
            jti: Some("t1".into()),
            sub: Some("alice".into()),
            sid: None,
            iat: Some(1_000),
        }
    }

    fn entry(kind: Kind, value: &str, at: i64) -> Entry {
        Entry {
            kind,
            iss: "https://i".into(),
            value: value.into(),
            at,
        }
    }

    #[test]
    fn a_switch_fires_once_with_its_first_reason() {
        let switch = KillSwitch::default();
        assert_eq!(switch.fired(), None);
        assert!(switch.fire(EndReason::Revoked));
        assert!(!switch.fire(EndReason::Expired));
        assert_eq!(switch.fired(), Some(EndReason::Revoked));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_ends_at_the_token_expiry_by_the_injected_clock() {
        let metrics = Metrics::new();
        let clock = ManualClock::at(1_000);
        let live = LiveConnections::new(&metrics, clock.clone());
        let deadline = Deadline {
            expires_at: Some(1_005),
            max_lifetime: Some(Duration::from_secs(60)),
        };
        let armed = live.arm(deadline, &keys(), "api", ConnectionKind::WebSocket);
        let start = tokio::time::Instant::now();
        let reason = poll_fn(|cx| armed.switch().poll_fired(cx)).await;
        assert_eq!(reason, EndReason::Expired);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains("jwtgate_long_lived_connections{kind=\"websocket\",route=\"api\"} 1"),
            "{text}"
        );
        drop(armed);
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains("jwtgate_connections_ended_total{reason=\"expired\",route=\"api\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("jwtgate_long_lived_connections{kind=\"websocket\",route=\"api\"} 0"),
            "{text}"
        );
        assert!(live.open().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_route_lifetime_wins_over_the_expiry() {
        let live = LiveConnections::new(&Metrics::new(), ManualClock::at(1_000));
        let deadline = Deadline {
            expires_at: Some(2_000),
            max_lifetime: Some(Duration::from_secs(3)),
        };
        let armed = live.arm(deadline, &keys(), "api", ConnectionKind::Stream);
        let reason = poll_fn(|cx| armed.switch().poll_fired(cx)).await;
        assert_eq!(reason, EndReason::MaxLifetime);
    }

    #[tokio::test]
    async fn revocations_end_the_connections_they_match() {
        let live = LiveConnections::new(&Metrics::new(), ManualClock::at(1_000));
        let none = Deadline::default();
        let a = live.arm(none, &keys(), "api", ConnectionKind::WebSocket);
        let mut other = keys();
        other.jti = Some("t2".into());
        other.iat = Some(2_000);
        let b = live.arm(none, &other, "api", ConnectionKind::Stream);
        assert_eq!(live.open().len(), 2);

        // Another issuer's jti of the same value matches nothing.
        let mut foreign = entry(Kind::Jti, "t1", 5_000);
        foreign.iss = "https://other".into();
        assert_eq!(live.revoke(&foreign), 0);
        // A sub cut-off ends the tokens issued before it only.
        assert_eq!(live.revoke(&entry(Kind::Sub, "alice", 1_500)), 1);
        assert_eq!(a.fired(), Some(EndReason::Revoked));
        assert_eq!(b.fired(), None);
        assert_eq!(live.revoke(&entry(Kind::Jti, "t2", 5_000)), 1);
        assert_eq!(b.fired(), Some(EndReason::Revoked));

        drop(a);
        drop(b);
        assert!(live.open().is_empty());
        assert!(live.table().is_empty(), "disarming empties the table");
    }

    #[tokio::test]
    async fn disarming_stops_the_timer() {
        let live = LiveConnections::new(&Metrics::new(), ManualClock::at(1_000));
        let deadline = Deadline {
            expires_at: Some(1_000_000),
            max_lifetime: None,
        };
        let armed = live.arm(deadline, &keys(), "api", ConnectionKind::Upload);
        let timer = armed.timer.clone().expect("a deadline starts a timer");
        drop(armed);
        tokio::task::yield_now().await;
        assert!(timer.is_finished());
    }
}
