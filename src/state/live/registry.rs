//! Where armed connections are kept: a list of pending ones, then a table
//! of registered ones with their timers, keyed for revocation and by id
//! for a reload.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::{
    ConnectionKind, Deadline, EndReason, Holder, KillSwitch, Reconsidered, TokenKeys, Verdict,
};
use crate::auth::VerifiedToken;
use crate::clock::SharedClock;
use crate::state::revocation::{Entry, Kind};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{counter_vec, gauge_vec};

/// How long an armed connection stays pending before it gets its timer and
/// its table entries: long enough that a chunked reply of an ordinary
/// request has ended by then, short next to any token's lifetime. While
/// pending, a revocation or a reload still finds it, in the pending list.
pub const REGISTER_AFTER: Duration = Duration::from_millis(250);

type Key = (Kind, Box<str>, Box<str>);

/// The ends a deadline sets, soonest first: how long after arming each is
/// due.
type Due = [Option<(Duration, EndReason)>; 2];

/// Where an armed connection is; kept in its [`KillSwitch`].
#[derive(Default)]
pub(super) enum Stage {
    /// Not armed by the registry (a switch made on its own), or its
    /// connection is over.
    #[default]
    Unarmed,
    /// In the pending list, with what registering it takes.
    Pending(Recipe),
    /// In the table, with its timer.
    Registered(Registration),
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Unarmed => "Unarmed",
            Stage::Pending(_) => "Pending",
            Stage::Registered(_) => "Registered",
        })
    }
}

pub(super) struct Recipe {
    keys: TokenKeys,
    route: Arc<str>,
    kind: ConnectionKind,
    holder: Holder,
    armed_at: Instant,
    due: Due,
}

pub(super) struct Registration {
    id: u64,
    keys: Vec<Key>,
    timer: Option<AbortHandle>,
    open: IntGauge,
}

struct Listed {
    id: u64,
    iat: Option<i64>,
}

/// A registered connection, as a revocation or a reload finds it.
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
    /// Armed and not registered yet, oldest first; only the sweep removes.
    pending: Mutex<Vec<Weak<KillSwitch>>>,
    /// Whether a sweep task is running (it ends once the list is empty).
    sweeping: AtomicBool,
    next_id: AtomicU64,
    clock: SharedClock,
    ended: IntCounterVec,
    would_end: IntCounterVec,
    open: IntGaugeVec,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
            "Open long-lived connections (those open for more than 250 ms), by route and kind (websocket, stream, upload).",
            &["route", "kind"],
        );
        metrics.register(Box::new(ended.clone()));
        metrics.register(Box::new(would_end.clone()));
        metrics.register(Box::new(open.clone()));
        Arc::new(Self {
            table: Mutex::new(Tables::default()),
            pending: Mutex::new(Vec::new()),
            sweeping: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            clock,
            ended,
            would_end,
            open,
        })
    }

    fn table(&self) -> MutexGuard<'_, Tables> {
        lock(&self.table)
    }

    /// Arms a connection of `route` that has just become long-lived: it
    /// ends at `deadline` (one timer, on the calling tokio runtime), when
    /// one of `keys` is revoked or when a reload makes its route refuse
    /// its token, whichever comes first. Dropping the returned handle
    /// disarms it. Until [`REGISTER_AFTER`] has passed it is only pending,
    /// which costs a request that ends sooner one list entry.
    pub fn arm(
        self: &Arc<Self>,
        deadline: Deadline,
        keys: TokenKeys,
        route: &str,
        kind: ConnectionKind,
        holder: Holder,
    ) -> Armed {
        let due = self.due(deadline);
        let soon = due[0].is_some_and(|(delay, _)| delay < REGISTER_AFTER);
        let route: Arc<str> = route.into();
        let enforce = holder.enforce;
        let recipe = Recipe {
            keys,
            route: route.clone(),
            kind,
            holder,
            armed_at: Instant::now(),
            due,
        };
        let switch = Arc::new(KillSwitch {
            stage: Mutex::new(Stage::Pending(recipe)),
            ..KillSwitch::default()
        });
        if soon {
            self.register(&switch);
        } else {
            self.defer(&switch);
        }
        Armed {
            switch,
            registry: Arc::clone(self),
            route,
            enforce,
        }
    }

    /// How long after now each end `deadline` sets is due, by the
    /// injectable clock, soonest first.
    fn due(&self, deadline: Deadline) -> Due {
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
            (Some(a), Some(b)) if b.0 < a.0 => [Some(b), Some(a)],
            (Some(a), b) => [Some(a), b],
            (None, b) => [b, None],
        }
    }

    /// Puts `switch` in the pending list, and starts the sweep that
    /// registers it unless one is running.
    fn defer(self: &Arc<Self>, switch: &Arc<KillSwitch>) {
        lock(&self.pending).push(Arc::downgrade(switch));
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            let live = Arc::clone(self);
            tokio::spawn(live.sweep());
        }
    }

    /// Every [`REGISTER_AFTER`] while any are pending: registers those
    /// still open. Entries leave the list only once registered, so a
    /// revocation that looks through the list and then the table misses
    /// none.
    async fn sweep(self: Arc<Self>) {
        loop {
            tokio::time::sleep(REGISTER_AFTER).await;
            let batch = lock(&self.pending).clone();
            for switch in batch.iter().filter_map(Weak::upgrade) {
                self.register(&switch);
            }
            let mut pending = lock(&self.pending);
            pending.drain(..batch.len());
            if pending.is_empty() {
                // Under the lock: an entry pushed after this sees the flag
                // down and starts the next sweep.
                self.sweeping.store(false, Ordering::Release);
                return;
            }
        }
    }

    /// Gives a pending connection its table entries and its timer; one
    /// that already ended (or was fired while pending) needs neither.
    fn register(self: &Arc<Self>, switch: &Arc<KillSwitch>) {
        let mut stage = switch.stage();
        let Stage::Pending(recipe) = std::mem::take(&mut *stage) else {
            return;
        };
        if switch.fired().is_some() {
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let keys = listed_keys(&recipe.keys);
        let timer = self.start_timer(switch, &recipe);
        let open = self
            .open
            .with_label_values(&[&*recipe.route, recipe.kind.as_str()]);
        open.inc();
        {
            let mut table = self.table();
            for key in &keys {
                table.by_key.entry(key.clone()).or_default().push(Listed {
                    id,
                    iat: recipe.keys.iat,
                });
            }
            table.by_id.insert(
                id,
                Watched {
                    switch: Arc::downgrade(switch),
                    route: recipe.route,
                    kind: recipe.kind,
                    holder: recipe.holder,
                },
            );
        }
        *stage = Stage::Registered(Registration {
            id,
            keys,
            timer,
            open,
        });
    }

    /// One task that sleeps until each due end, counted from arming.
    fn start_timer(
        self: &Arc<Self>,
        switch: &Arc<KillSwitch>,
        recipe: &Recipe,
    ) -> Option<AbortHandle> {
        recipe.due[0]?;
        let weak = Arc::downgrade(switch);
        let (live, route) = (Arc::clone(self), recipe.route.clone());
        let (due, start, enforce) = (recipe.due, recipe.armed_at, recipe.holder.enforce);
        let task = tokio::spawn(async move {
            for (delay, reason) in due.into_iter().flatten() {
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
        });
        Some(task.abort_handle())
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

    /// Ends a connection for `reason`, or on an `audit` route counts that
    /// it would have; whether this call did either.
    fn end(&self, switch: &KillSwitch, route: &str, enforce: bool, reason: EndReason) -> bool {
        if enforce {
            switch.fire(reason)
        } else {
            self.would_end(switch, route, reason)
        }
    }

    /// Ends every armed connection `entry` revokes: the one token of a
    /// `jti`, the tokens of a `sub` or `sid` issued before its cut-off.
    /// How many were ended (or, on `audit` routes, would have been).
    pub fn revoke(&self, entry: &Entry) -> usize {
        // The pending list first: one registered meanwhile is then in the
        // table.
        let mut count = 0;
        for switch in lock(&self.pending).iter().filter_map(Weak::upgrade) {
            let stage = switch.stage();
            if let Stage::Pending(recipe) = &*stage
                && revokes(entry, &recipe.keys)
                && self.end(
                    &switch,
                    &recipe.route,
                    recipe.holder.enforce,
                    EndReason::Revoked,
                )
            {
                count += 1;
            }
        }
        let key: Key = (
            entry.kind,
            entry.iss.as_str().into(),
            entry.value.as_str().into(),
        );
        let table = self.table();
        let Some(listed) = table.by_key.get(&key) else {
            return count;
        };
        count
            + listed
                .iter()
                .filter(|l| entry.kind == Kind::Jti || l.iat.is_none_or(|iat| iat < entry.at))
                .filter_map(|l| table.by_id.get(&l.id))
                .filter(|w| {
                    w.switch.upgrade().is_some_and(|switch| {
                        self.end(&switch, &w.route, w.holder.enforce, EndReason::Revoked)
                    })
                })
                .count()
    }

    /// Every armed connection, pending or registered, with its route,
    /// kind and holder (each once: the pending ones are looked at first).
    fn armed(&self) -> Vec<(Arc<KillSwitch>, Arc<str>, ConnectionKind, Holder)> {
        let mut armed: Vec<_> = lock(&self.pending)
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|switch| {
                let stage = switch.stage();
                let Stage::Pending(recipe) = &*stage else {
                    return None;
                };
                let found = (recipe.route.clone(), recipe.kind, recipe.holder.clone());
                drop(stage);
                Some((switch, found.0, found.1, found.2))
            })
            .collect();
        // One registered since the list was read is in both.
        let pending: HashSet<*const KillSwitch> = armed
            .iter()
            .map(|(switch, ..)| Arc::as_ptr(switch))
            .collect();
        let table = self.table();
        armed.extend(table.by_id.values().filter_map(|w| {
            let switch = w.switch.upgrade()?;
            (!pending.contains(&Arc::as_ptr(&switch)))
                .then(|| (switch, w.route.clone(), w.kind, w.holder.clone()))
        }));
        armed
    }

    /// After a reload: asks `verdict` (the new config's decision for a
    /// route, a token and its issuer's `iss`) about every armed connection
    /// and ends those it refuses. Called off the request path; the table
    /// is not held while deciding, so requests arming meanwhile don't wait.
    pub fn reconsider(
        &self,
        verdict: impl Fn(&str, Option<&VerifiedToken>, &str) -> Verdict,
    ) -> Reconsidered {
        let mut done = Reconsidered::default();
        for (switch, route, _, holder) in self.armed() {
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
        self.armed()
            .into_iter()
            .map(|(_, route, kind, _)| (route, kind))
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

/// Whether `entry` revokes a token with `keys`, as the table's keys and
/// cut-offs decide for a registered one.
fn revokes(entry: &Entry, keys: &TokenKeys) -> bool {
    let value = match entry.kind {
        Kind::Jti => &keys.jti,
        Kind::Sub => &keys.sub,
        Kind::Sid => &keys.sid,
    };
    keys.iss == entry.iss
        && value.as_deref() == Some(entry.value.as_str())
        && (entry.kind == Kind::Jti || keys.iat.is_none_or(|iat| iat < entry.at))
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
            .field("route", &self.route)
            .field("fired", &self.fired())
            .finish()
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let stage = std::mem::take(&mut *self.switch.stage());
        if let Stage::Registered(registration) = stage {
            if let Some(timer) = &registration.timer {
                timer.abort();
            }
            self.registry.remove(registration.id, &registration.keys);
            registration.open.dec();
        }
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

    /// `live.arm` on route `api`, ended by its token.
    fn arm(
        live: &Arc<LiveConnections>,
        deadline: Deadline,
        keys: TokenKeys,
        kind: ConnectionKind,
    ) -> Armed {
        live.arm(deadline, keys, "api", kind, Holder::enforced(None))
    }

    /// A WebSocket whose token expires 5 s after the clock's 1_000, on a
    /// route with a minute's lifetime.
    fn websocket(live: &Arc<LiveConnections>, route: &str, holder: Holder) -> Armed {
        let deadline = Deadline {
            expires_at: Some(1_005),
            max_lifetime: Some(Duration::from_secs(60)),
        };
        live.arm(deadline, keys(), route, ConnectionKind::WebSocket, holder)
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
        let armed = arm(&live, deadline, keys(), ConnectionKind::Stream);
        let reason = poll_fn(|cx| armed.switch().poll_fired(cx)).await;
        assert_eq!(reason, EndReason::MaxLifetime);
    }

    #[tokio::test]
    async fn revocations_end_the_connections_they_match() {
        let live = LiveConnections::new(&Metrics::new(), ManualClock::at(1_000));
        let none = Deadline::default();
        let a = arm(&live, none, keys(), ConnectionKind::WebSocket);
        let mut other = keys();
        other.jti = Some("t2".into());
        other.iat = Some(2_000);
        let b = arm(&live, none, other, ConnectionKind::Stream);
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

    fn registration(armed: &Armed) -> Option<(u64, Option<AbortHandle>)> {
        match &*armed.switch.stage() {
            Stage::Registered(r) => Some((r.id, r.timer.clone())),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_deadline_sooner_than_the_wait_is_registered_at_once_and_disarming_stops_it() {
        let live = LiveConnections::new(&Metrics::new(), ManualClock::at(1_000));
        let deadline = Deadline {
            expires_at: None,
            max_lifetime: Some(REGISTER_AFTER / 2),
        };
        let armed = arm(&live, deadline, keys(), ConnectionKind::Upload);
        let (_, timer) = registration(&armed).expect("registered at once");
        let timer = timer.expect("a deadline starts a timer");
        assert_eq!(live.table().by_id.len(), 1);
        drop(armed);
        tokio::task::yield_now().await;
        assert!(timer.is_finished());
        assert!(live.table().by_id.is_empty() && live.table().by_key.is_empty());
    }

    /// What most chunked replies are: armed, over before the sweep. They
    /// never get a timer or a table entry, and the sweep stops.
    #[tokio::test(start_paused = true)]
    async fn a_request_over_within_the_wait_is_never_registered() {
        let live = LiveConnections::new(&Metrics::new(), ManualClock::at(1_000));
        let deadline = Deadline {
            expires_at: Some(5_000),
            max_lifetime: None,
        };
        for _ in 0..3 {
            let armed = arm(&live, deadline, keys(), ConnectionKind::Stream);
            assert!(registration(&armed).is_none(), "pending");
            assert_eq!(live.open().len(), 1, "a pending one counts as open");
        }
        assert!(live.sweeping.load(Ordering::Acquire));
        tokio::time::sleep(REGISTER_AFTER * 2).await;
        assert!(live.table().by_id.is_empty());
        assert!(lock(&live.pending).is_empty());
        assert!(
            !live.sweeping.load(Ordering::Acquire),
            "no sweep while none is pending"
        );
    }

    /// One still open after the wait gets its timer, which still counts
    /// from arming; a revocation finds it pending or registered.
    #[tokio::test(start_paused = true)]
    async fn a_connection_still_open_after_the_wait_is_registered() {
        let live = LiveConnections::new(&Metrics::new(), ManualClock::at(1_000));
        let start = tokio::time::Instant::now();
        let lasting = websocket(&live, "api", Holder::enforced(None));
        let mut other = keys();
        other.jti = Some("t2".into());
        let revoked_pending = arm(&live, Deadline::default(), other, ConnectionKind::Stream);
        assert_eq!(live.revoke(&entry(Kind::Jti, "t2", 5_000)), 1);
        assert_eq!(revoked_pending.fired(), Some(EndReason::Revoked));
        tokio::time::sleep(REGISTER_AFTER + Duration::from_millis(1)).await;
        assert!(registration(&lasting).is_some(), "registered by the sweep");
        assert!(
            registration(&revoked_pending).is_none(),
            "one ended while pending needs no entry"
        );
        assert_eq!(live.table().by_id.len(), 1);
        let reason = poll_fn(|cx| lasting.switch().poll_fired(cx)).await;
        assert_eq!(reason, EndReason::Expired);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
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
            keys(),
            "kept",
            ConnectionKind::WebSocket,
            held.clone(),
        );
        let refused = live.arm(none, keys(), "refused", ConnectionKind::Stream, held);
        let watched = live.arm(none, keys(), "watched", ConnectionKind::WebSocket, audit());
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
