//! Connections that outlive the request that opened them: a WebSocket after
//! its `101`, a streaming response, a long upload. Each was allowed by one
//! decision at its start; this module ends it when that decision stops
//! holding: at the token's expiry (plus the issuer's leeway), at a route's
//! maximum lifetime, or when its `jti`, `sub` or `sid` is revoked.
//!
//! Only such connections are armed: an ordinary request registers nothing
//! and starts no timer. An armed connection gets one [`KillSwitch`], which
//! the transport (the HTTP/1 stream wrapper, an HTTP/2 stream) polls to end
//! the connection its own way. Many responses look long-lived (chunked,
//! with no length) and end a moment later, so arming is lazy: the switch
//! first waits in a short list of pending ones, and only those still open
//! after [`registry::REGISTER_AFTER`] get one tokio timer for their
//! deadline (no polling: an idle connection is woken once, when it is to
//! end) and one entry per revocable claim in a table keyed like the
//! revocation list (kind, issuer's `iss`, value), so a revocation finds
//! them without a scan. A revocation or a reload also looks through the
//! pending ones; a deadline sooner than that wait is registered at once.
//!
//! A reload decides each armed connection again, with the new config: the
//! table keeps each one's route and verified token for that. On an `audit`
//! route nothing is ended for its token: what would have been is counted
//! as `would_end` and the connection lives on.

mod registry;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;

pub use registry::{Armed, LiveConnections};

use crate::auth::VerifiedToken;

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
    /// Where the connection is in the registry: pending or registered.
    stage: Mutex<registry::Stage>,
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

    fn stage(&self) -> MutexGuard<'_, registry::Stage> {
        self.stage.lock().unwrap_or_else(PoisonError::into_inner)
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
