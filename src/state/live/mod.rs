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
//!
//! A reload decides each armed connection again, with the new config: the
//! table keeps each one's route and verified token for that. On an `audit`
//! route nothing is ended for its token: what would have been is counted
//! as `would_end` and the connection lives on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec};

use crate::auth::VerifiedToken;
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
    /// On an `audit` route: 0, else why it would first have been ended.
    would: AtomicU8,
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

    /// Notes that the connection would have ended for `reason`, had its
    /// route not been in `audit` mode; whether it was the first such note.
    fn would_end(&self, reason: EndReason) -> bool {
        self.would
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Why an `audit` route's connection would first have been ended.
    pub fn would_have_ended(&self) -> Option<EndReason> {
        EndReason::from_u8(self.would.load(Ordering::Acquire))
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

/// What a connection is armed with beyond its deadline and keys.
#[derive(Debug, Clone)]
pub struct Holder {
    /// The token that opened it, kept for a reload to decide again; `None`
    /// for an anonymous one.
    pub token: Option<Arc<VerifiedToken>>,
    /// Its issuer's `iss`: a reload may move issuers to other indices.
    pub iss: Box<str>,
    /// `false` on an `audit` route: its token's expiry, revocation or a
    /// reload only counts `would_end` (its maximum lifetime still ends it).
    pub enforce: bool,
}

impl Holder {
    /// A connection whose token's end ends it.
    pub fn enforced(token: Option<Arc<VerifiedToken>>) -> Self {
        Self {
            token,
            iss: Box::default(),
            enforce: true,
        }
    }
}

/// What a reload's new config makes of an armed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    End,
    /// An `audit` route would refuse its token: counted, not ended.
    WouldEnd,
}

/// How many connections a reload ended, and would have on `audit` routes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconsidered {
    pub ended: usize,
    pub would_end: usize,
}

type Key = (Kind, Box<str>, Box<str>);

struct Listed {
    id: u64,
    iat: Option<i64>,
}

/// An armed connection, as a revocation or a reload finds it.
struct Watched {
    switch: Weak<KillSwitch>,
    route: Arc<str>,
    kind: ConnectionKind,
    holder: Holder,
}

#[derive(Default)]
struct Tables {
    /// By what can revoke them.
    by_key: HashMap<Key, Vec<Listed>>,
    by_id: HashMap<u64, Watched>,
}

/// Every armed connection of the process.
pub struct LiveConnections {
    table: Mutex<Tables>,
    next_id: AtomicU64,
    clock: SharedClock,
    ended: IntCounterVec,
    would_end: IntCounterVec,
    open: IntGaugeVec,
}

impl LiveConnections {
    pub fn new(metrics: &Metrics, clock: SharedClock) -> Arc<Self> {
        let ended = counter_vec(
            "jwtgate_connections_ended_total",
            "Long-lived connections (WebSocket, stream, upload) jwtgate ended, by route and reason (expired, revoked, reload, max_lifetime).",
            &["route", "reason"],
        );
        let would_end = counter_vec(
            "jwtgate_connections_would_end_total",
            "Long-lived connections of audit routes jwtgate would have ended (and left open), by route and the first reason (expired, revoked, reload).",
            &["route", "reason"],
        );
        let open = gauge_vec(
            "jwtgate_long_lived_connections",
            "Open long-lived connections, by route and kind (websocket, stream, upload).",
            &["route", "kind"],
        );
        metrics.register(Box::new(ended.clone()));
        metrics.register(Box::new(would_end.clone()));
        metrics.register(Box::new(open.clone()));
        Arc::new(Self {
            table: Mutex::new(Tables::default()),
            next_id: AtomicU64::new(1),
            clock,
            ended,
            would_end,
            open,
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Arms a connection of `route` that has just become long-lived: it
    /// ends at `deadline` (one timer, on the calling tokio runtime), when
    /// one of `keys` is revoked or when a reload makes its route refuse
    /// its token, whichever comes first. Dropping the returned handle
    /// disarms it.
    pub fn arm(
        self: &Arc<Self>,
        deadline: Deadline,
        keys: &TokenKeys,
        route: &str,
        kind: ConnectionKind,
        holder: Holder,
    ) -> Armed {
        let switch = Arc::new(KillSwitch::default());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let route: Arc<str> = route.into();
        let listed_keys = listed_keys(keys);
        let enforce = holder.enforce;
        {
            let mut table = self.table();
            for key in &listed_keys {
                table
                    .by_key
                    .entry(key.clone())
                    .or_default()
                    .push(Listed { id, iat: keys.iat });
            }
            table.by_id.insert(
                id,
                Watched {
                    switch: Arc::downgrade(&switch),
                    route: route.clone(),
                    kind,
                    holder,
                },
            );
        }
        let due = self.due(deadline);
        let timer = (!due.is_empty()).then(|| {
            let weak = Arc::downgrade(&switch);
            let (live, route) = (Arc::clone(self), route.clone());
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                for (delay, reason) in due {
                    tokio::time::sleep_until(start + delay).await;
                    let Some(switch) = weak.upgrade() else { return };
                    // An audit route's lifetime still ends it; its token
                    // only counts.
                    if enforce || reason == EndReason::MaxLifetime {
                        switch.fire(reason);
                        return;
                    }
                    live.would_end(&switch, &route, reason);
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
            enforce,
        }
    }

    /// How long until each end `deadline` sets, by the injectable clock,
    /// soonest first.
    fn due(&self, deadline: Deadline) -> Vec<(Duration, EndReason)> {
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
        let mut due: Vec<_> = expiry.into_iter().chain(lifetime).collect();
        due.sort_by_key(|(delay, _)| *delay);
        due
    }

    /// Counts, once per connection, that an `audit` route's connection
    /// would have ended for `reason`.
    fn would_end(&self, switch: &KillSwitch, route: &str, reason: EndReason) -> bool {
        let first = switch.would_end(reason);
        if first {
            self.would_end
                .with_label_values(&[route, reason.as_str()])
                .inc();
        }
        first
    }

    /// Ends `watched` for `reason`, or on an `audit` route counts that it
    /// would have; whether this call did either.
    fn end(&self, watched: &Watched, reason: EndReason) -> bool {
        let Some(switch) = watched.switch.upgrade() else {
            return false;
        };
        if watched.holder.enforce {
            switch.fire(reason)
        } else {
            self.would_end(&switch, &watched.route, reason)
        }
    }

    /// Ends every armed connection `entry` revokes: the one token of a
    /// `jti`, the tokens of a `sub` or `sid` issued before its cut-off.
    /// How many were ended (or, on `audit` routes, would have been).
    pub fn revoke(&self, entry: &Entry) -> usize {
        let key: Key = (
            entry.kind,
            entry.iss.as_str().into(),
            entry.value.as_str().into(),
        );
        let table = self.table();
        let Some(listed) = table.by_key.get(&key) else {
            return 0;
        };
        listed
            .iter()
            .filter(|l| entry.kind == Kind::Jti || l.iat.is_none_or(|iat| iat < entry.at))
            .filter_map(|l| table.by_id.get(&l.id))
            .filter(|watched| self.end(watched, EndReason::Revoked))
            .count()
    }

    /// After a reload: asks `verdict` (the new config's decision for a
    /// route, a token and its issuer's `iss`) about every armed connection
    /// and ends those it refuses. Called off the request path; the table
    /// is not held while deciding, so requests arming meanwhile don't wait.
    pub fn reconsider(
        &self,
        verdict: impl Fn(&str, Option<&VerifiedToken>, &str) -> Verdict,
    ) -> Reconsidered {
        let armed: Vec<(Arc<KillSwitch>, Arc<str>, Holder)> = {
            let table = self.table();
            table
                .by_id
                .values()
                .filter_map(|w| Some((w.switch.upgrade()?, w.route.clone(), w.holder.clone())))
                .collect()
        };
        let mut done = Reconsidered::default();
        for (switch, route, holder) in armed {
            let verdict = verdict(&route, holder.token.as_deref(), &holder.iss);
            let one = self.apply(&switch, &route, holder.enforce, verdict);
            done.ended += one.ended;
            done.would_end += one.would_end;
        }
        done
    }

    /// Ends a connection a reload's `verdict` refuses, or on an `audit`
    /// route counts it.
    fn apply(
        &self,
        switch: &KillSwitch,
        route: &str,
        enforce: bool,
        verdict: Verdict,
    ) -> Reconsidered {
        let (ended, would_end) = match verdict {
            Verdict::Keep => (false, false),
            Verdict::End if enforce => (switch.fire(EndReason::Reload), false),
            Verdict::End | Verdict::WouldEnd => {
                (false, self.would_end(switch, route, EndReason::Reload))
            }
        };
        Reconsidered {
            ended: usize::from(ended),
            would_end: usize::from(would_end),
        }
    }

    /// The open armed connections, by route and kind (for tests and the
    /// admin side).
    pub fn open(&self) -> Vec<(Arc<str>, ConnectionKind)> {
        let table = self.table();
        table
            .by_id
            .values()
            .map(|w| (w.route.clone(), w.kind))
            .collect()
    }

    fn remove(&self, id: u64, keys: &[Key]) {
        let mut table = self.table();
        table.by_id.remove(&id);
        for key in keys {
            if let Some(listed) = table.by_key.get_mut(key) {
                listed.retain(|l| l.id != id);
                if listed.is_empty() {
                    table.by_key.remove(key);
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
    enforce: bool,
}

impl Armed {
    pub fn switch(&self) -> &Arc<KillSwitch> {
        &self.switch
    }

    pub fn fired(&self) -> Option<EndReason> {
        self.switch.fired()
    }

    pub fn would_have_ended(&self) -> Option<EndReason> {
        self.switch.would_have_ended()
    }

    /// Applies the verdict of a reload whose walk of the table may have
    /// come before this connection was in it (see
    /// [`LiveConnections::reconsider`]).
    pub fn reconsider(&self, verdict: Verdict) -> Reconsidered {
        self.registry
            .apply(&self.switch, &self.route, self.enforce, verdict)
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

    /// A WebSocket whose token expires 5 s after the clock's 1_000, on a
    /// route with a minute's lifetime.
    fn websocket(live: &Arc<LiveConnections>, route: &str, holder: Holder) -> Armed {
        let deadline = Deadline {
            expires_at: Some(1_005),
            max_lifetime: Some(Duration::from_secs(60)),
        };
        live.arm(deadline, &keys(), route, ConnectionKind::WebSocket, holder)
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
        let armed = websocket(&live, "api", Holder::enforced(None));
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
        let armed = live.arm(
            deadline,
            &keys(),
            "api",
            ConnectionKind::Stream,
            Holder::enforced(None),
        );
        let reason = poll_fn(|cx| armed.switch().poll_fired(cx)).await;
        assert_eq!(reason, EndReason::MaxLifetime);
    }

    #[tokio::test]
    async fn revocations_end_the_connections_they_match() {
        let live = LiveConnections::new(&Metrics::new(), ManualClock::at(1_000));
        let none = Deadline::default();
        let a = live.arm(
            none,
            &keys(),
            "api",
            ConnectionKind::WebSocket,
            Holder::enforced(None),
        );
        let mut other = keys();
        other.jti = Some("t2".into());
        other.iat = Some(2_000);
        let b = live.arm(
            none,
            &other,
            "api",
            ConnectionKind::Stream,
            Holder::enforced(None),
        );
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
        let table = live.table();
        assert!(
            table.by_key.is_empty() && table.by_id.is_empty(),
            "disarming empties the table"
        );
    }

    #[tokio::test]
    async fn disarming_stops_the_timer() {
        let live = LiveConnections::new(&Metrics::new(), ManualClock::at(1_000));
        let deadline = Deadline {
            expires_at: Some(1_000_000),
            max_lifetime: None,
        };
        let armed = live.arm(
            deadline,
            &keys(),
            "api",
            ConnectionKind::Upload,
            Holder::enforced(None),
        );
        let timer = armed.timer.clone().expect("a deadline starts a timer");
        drop(armed);
        tokio::task::yield_now().await;
        assert!(timer.is_finished());
    }
    fn audit() -> Holder {
        Holder {
            enforce: false,
            ..Holder::enforced(None)
        }
    }

    #[tokio::test]
    async fn a_reload_ends_what_its_verdict_refuses_and_counts_what_audit_keeps() {
        let metrics = Metrics::new();
        let live = LiveConnections::new(&metrics, ManualClock::at(1_000));
        let none = Deadline::default();
        let mut held = Holder::enforced(None);
        held.iss = "https://i".into();
        let kept = live.arm(
            none,
            &keys(),
            "kept",
            ConnectionKind::WebSocket,
            held.clone(),
        );
        let refused = live.arm(none, &keys(), "refused", ConnectionKind::Stream, held);
        let watched = live.arm(none, &keys(), "watched", ConnectionKind::WebSocket, audit());
        let verdict = |route: &str, _: Option<&VerifiedToken>, _: &str| match route {
            "kept" => Verdict::Keep,
            "refused" => Verdict::End,
            _ => Verdict::WouldEnd,
        };
        let done = live.reconsider(verdict);
        assert_eq!(
            done,
            Reconsidered {
                ended: 1,
                would_end: 1
            }
        );
        assert_eq!(kept.fired(), None);
        assert_eq!(refused.fired(), Some(EndReason::Reload));
        assert_eq!(watched.fired(), None, "an audit route ends nothing");
        assert_eq!(watched.would_have_ended(), Some(EndReason::Reload));
        // Counted once per connection, however many reloads would end it.
        let again = live.reconsider(verdict);
        assert_eq!(
            again,
            Reconsidered {
                ended: 0,
                would_end: 0
            }
        );
        // One armed after a reload's walk is decided on its own.
        assert_eq!(kept.reconsider(Verdict::Keep), Reconsidered::default());
        assert_eq!(kept.fired(), None);
        assert_eq!(kept.reconsider(Verdict::End).ended, 1);
        assert_eq!(kept.fired(), Some(EndReason::Reload));
        drop((kept, refused, watched));
        let text = String::from_utf8(metrics.render()).unwrap();
        for series in [
            "jwtgate_connections_ended_total{reason=\"reload\",route=\"refused\"} 1",
            "jwtgate_connections_ended_total{reason=\"reload\",route=\"kept\"} 1",
            "jwtgate_connections_would_end_total{reason=\"reload\",route=\"watched\"} 1",
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
        assert!(
            !text.contains("ended_total{reason=\"reload\",route=\"watched\"}"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_audit_route_counts_expiry_and_revocation_and_ends_at_its_lifetime() {
        let metrics = Metrics::new();
        let live = LiveConnections::new(&metrics, ManualClock::at(1_000));
        let armed = websocket(&live, "audit", audit());
        let start = tokio::time::Instant::now();
        assert_eq!(live.revoke(&entry(Kind::Jti, "t1", 5_000)), 1);
        assert_eq!(armed.fired(), None);
        assert_eq!(armed.would_have_ended(), Some(EndReason::Revoked));
        let reason = poll_fn(|cx| armed.switch().poll_fired(cx)).await;
        assert_eq!(reason, EndReason::MaxLifetime, "past its token's expiry");
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains(
                "jwtgate_connections_would_end_total{reason=\"revoked\",route=\"audit\"} 1"
            ),
            "the first reason only: {text}"
        );
        assert!(!text.contains("reason=\"expired\""), "{text}");
    }
}
