//! An OpenID Shared Signals Framework (SSF 1.0) receiver. Transmitters
//! (identity providers) send Security Event Tokens, pushed (RFC 8935) to
//! the admin listener's `/ssf/events/{name}` or polled (RFC 8936) by a
//! background task; each SET is verified against the transmitter's JWKS
//! ([`set`]), de-duplicated by `jti`, and its events become entries of the
//! revocation list ([`events`]), which shares them through Redis, keeps them
//! in its journal and ends the long-lived connections they match.

pub mod events;
pub mod poll;
pub mod set;
pub mod stream;

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use prometheus::IntCounterVec;

use self::events::{EventType, Ignored};
use self::set::{Expected, SetError, SetErrorCode, VerifiedSet};
use crate::digest::sha256;
use crate::keys::KeyStore;
use crate::keys::fetch::FetchSettings;
use crate::state::revocation::{Change, Entry, Revocations};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::counter_vec;

/// How many SET `jti`s each transmitter's memory holds: a replay older
/// than that many SETs would be applied again, which changes nothing (the
/// cut-off is kept at its latest).
const RECENT_JTIS: usize = 10_000;

/// `shared_signals` compiled. Restart-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalsSettings {
    pub transmitters: Vec<TransmitterSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransmitterSettings {
    pub name: String,
    pub issuer: String,
    pub audience: String,
    pub delivery: DeliverySettings,
    pub fetch: FetchSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliverySettings {
    Push(PushSettings),
    Poll(PollSettings),
}

/// The push bearer secret, as a digest (like the admin tokens).
#[derive(Clone, PartialEq, Eq)]
pub struct PushSettings {
    pub digest: [u8; 32],
    /// Where it was read from, for the reload comparison.
    pub source: String,
}

impl fmt::Debug for PushSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "push (bearer from {})", self.source)
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct PollSettings {
    /// `None`: asked of the transmitter's `configuration_endpoint`.
    pub endpoint: Option<String>,
    /// The bearer token sent to the transmitter.
    pub token: String,
    pub token_source: String,
    pub max_events: u32,
    pub interval: Duration,
}

impl fmt::Debug for PollSettings {
    // Never the token itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollSettings")
            .field("endpoint", &self.endpoint)
            .field("token_source", &self.token_source)
            .field("max_events", &self.max_events)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// `result` of `jwtgate_ssf_events_total`: a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    Ignored,
    Invalid,
}

impl Outcome {
    const ALL: [Outcome; 4] = [Self::Applied, Self::Duplicate, Self::Ignored, Self::Invalid];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
            Self::Invalid => "invalid",
        }
    }
}

/// Why a SET was not taken.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The SET (or its delivery) is wrong: the transmitter is told so.
    #[error(transparent)]
    Set(#[from] SetError),
    /// jwtgate could not store a revocation: the SET should come again.
    #[error("the revocation could not be stored")]
    Storage,
}

/// Whether an issuer is configured, by its exact `iss` (the snapshot
/// changes with reloads; this module sits below it).
pub type KnownIssuer = Arc<dyn Fn(&str) -> bool + Send + Sync>;

pub struct Transmitter {
    pub settings: TransmitterSettings,
    /// Filled by the transmitter's key refresher ([`stream`]).
    pub keys: Arc<KeyStore>,
    seen: Mutex<RecentJtis>,
}

/// The last [`RECENT_JTIS`] SET ids, oldest first out.
#[derive(Default)]
struct RecentJtis {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentJtis {
    fn contains(&self, jti: &str) -> bool {
        self.set.contains(jti)
    }

    fn insert(&mut self, jti: String) {
        if self.set.insert(jti.clone()) {
            self.order.push_back(jti);
            if self.order.len() > RECENT_JTIS
                && let Some(oldest) = self.order.pop_front()
            {
                self.set.remove(&oldest);
            }
        }
    }
}

pub struct Receiver {
    transmitters: Vec<Arc<Transmitter>>,
    revocations: Arc<Revocations>,
    known_issuer: KnownIssuer,
    events: IntCounterVec,
    poll_errors: IntCounterVec,
}

impl Receiver {
    pub fn new(
        settings: &SignalsSettings,
        revocations: Arc<Revocations>,
        known_issuer: KnownIssuer,
        metrics: &Metrics,
    ) -> Self {
        let events = counter_vec(
            "jwtgate_ssf_events_total",
            "Shared Signals events received, by transmitter, event_type (session_revoked, credential_change, account_disabled, account_purged, other, unverified) and result (applied, duplicate, ignored, invalid).",
            &["transmitter", "event_type", "result"],
        );
        let poll_errors = counter_vec(
            "jwtgate_ssf_poll_errors_total",
            "Failed polls of a transmitter, by error (network, http_status, invalid_response).",
            &["transmitter", "error"],
        );
        metrics.register(Box::new(events.clone()));
        metrics.register(Box::new(poll_errors.clone()));
        let transmitters = settings
            .transmitters
            .iter()
            .map(|settings| {
                for event_type in EventType::ALL {
                    for outcome in Outcome::ALL {
                        events.with_label_values(&[
                            settings.name.as_str(),
                            event_type.as_str(),
                            outcome.as_str(),
                        ]);
                    }
                }
                if let DeliverySettings::Poll(_) = settings.delivery {
                    for error in poll::ERRORS {
                        poll_errors.with_label_values(&[settings.name.as_str(), error]);
                    }
                }
                Arc::new(Transmitter {
                    settings: settings.clone(),
                    keys: Arc::new(KeyStore::remote(
                        Duration::from_secs(30),
                        Duration::from_secs(2),
                    )),
                    seen: Mutex::default(),
                })
            })
            .collect();
        Self {
            transmitters,
            revocations,
            known_issuer,
            events,
            poll_errors,
        }
    }

    pub fn transmitters(&self) -> &[Arc<Transmitter>] {
        &self.transmitters
    }

    pub fn transmitter(&self, name: &str) -> Option<&Arc<Transmitter>> {
        self.transmitters.iter().find(|t| t.settings.name == name)
    }

    /// A pushed SET (RFC 8935): the bearer token, the media type, then the
    /// SET itself.
    pub async fn push(
        &self,
        transmitter: &Transmitter,
        bearer: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(), Refused> {
        let DeliverySettings::Push(push) = &transmitter.settings.delivery else {
            return Err(SetError::new(
                SetErrorCode::AccessDenied,
                "this transmitter delivers by poll, not push",
            )
            .into());
        };
        let presented = bearer.map(|token| sha256(token.as_bytes()));
        let matches =
            presented.is_some_and(|digest| verify_slices_are_equal(&digest, &push.digest).is_ok());
        if !matches {
            self.count(transmitter, EventType::Unverified, Outcome::Invalid);
            return Err(SetError::new(
                SetErrorCode::AuthenticationFailed,
                "send the configured push secret as a bearer token",
            )
            .into());
        }
        let media_type = content_type
            .and_then(|value| value.split(';').next())
            .map(|value| value.trim().to_ascii_lowercase());
        if media_type.as_deref() != Some("application/secevent+jwt") {
            self.count(transmitter, EventType::Unverified, Outcome::Invalid);
            return Err(SetError::new(
                SetErrorCode::InvalidRequest,
                "the body must be one SET as application/secevent+jwt",
            )
            .into());
        }
        let set = std::str::from_utf8(body)
            .map_err(|_| SetError::new(SetErrorCode::InvalidRequest, "the SET is not text"))?;
        self.receive(transmitter, set).await
    }

    /// Verifies one SET and applies its events, once per `jti`.
    pub async fn receive(&self, transmitter: &Transmitter, set: &str) -> Result<(), Refused> {
        let settings = &transmitter.settings;
        let expected = Expected {
            issuer: &settings.issuer,
            audience: &settings.audience,
            keys: &transmitter.keys,
        };
        let verified = match set::verify(set, &expected).await {
            Ok(verified) => verified,
            Err(error) => {
                self.count(transmitter, EventType::Unverified, Outcome::Invalid);
                tracing::warn!(transmitter = %settings.name, "shared signals: SET refused: {error}");
                return Err(error.into());
            }
        };
        if transmitter.seen().contains(&verified.jti) {
            for uri in verified.events.keys() {
                self.count(transmitter, EventType::of(uri), Outcome::Duplicate);
            }
            return Ok(());
        }
        self.apply(transmitter, &verified).await?;
        transmitter.seen().insert(verified.jti);
        Ok(())
    }

    async fn apply(&self, transmitter: &Transmitter, set: &VerifiedSet) -> Result<(), Refused> {
        let name = transmitter.settings.name.as_str();
        for (uri, payload) in &set.events {
            let event_type = EventType::of(uri);
            let target =
                events::target(uri, payload, set.sub_id.as_ref(), set.iat).and_then(|target| {
                    if (self.known_issuer)(&target.iss) {
                        Ok(target)
                    } else {
                        Err(Ignored::Subject(
                            "the subject's iss is not a configured issuer",
                        ))
                    }
                });
            let mut target = match target {
                Ok(target) => target,
                Err(why) => {
                    self.count(transmitter, event_type, Outcome::Ignored);
                    let why = match why {
                        Ignored::Type => "an event type jwtgate does not act on",
                        Ignored::Subject(why) => why,
                    };
                    tracing::info!(transmitter = name, event_type = event_type.as_str(), jti = %set.jti, "shared signals: event ignored: {why}");
                    continue;
                }
            };
            // A cut-off in the future would refuse fresh logins; an older
            // event never lowers a later cut-off.
            let now = self.revocations.now();
            target.at = target.at.min(now + 1);
            let current = self
                .revocations
                .list()
                .get(target.kind, &target.iss, &target.value);
            if current.is_none_or(|at| at < target.at) {
                self.store(&target).await?;
            }
            self.count(transmitter, event_type, Outcome::Applied);
            tracing::info!(
                target: "jwtgate::revocation",
                transmitter = name,
                event_type = event_type.as_str(),
                jti = %set.jti,
                kind = target.kind.as_str(),
                iss = %target.iss,
                value = ?target.value,
                at = target.at,
                "revocation added from a shared signal"
            );
        }
        Ok(())
    }

    async fn store(&self, target: &events::Target) -> Result<(), Refused> {
        let change = Change::Put(Entry {
            kind: target.kind,
            iss: target.iss.clone(),
            value: target.value.clone(),
            at: target.at,
        });
        let revocations = self.revocations.clone();
        match tokio::task::spawn_blocking(move || revocations.apply_local(change)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => {
                tracing::error!("shared signals: revocation: {error}");
                Err(Refused::Storage)
            }
            Err(_) => Err(Refused::Storage),
        }
    }

    pub(crate) fn poll_error(&self, transmitter: &Transmitter, error: &str) {
        self.poll_errors
            .with_label_values(&[transmitter.settings.name.as_str(), error])
            .inc();
    }

    fn count(&self, transmitter: &Transmitter, event_type: EventType, outcome: Outcome) {
        self.events
            .with_label_values(&[
                transmitter.settings.name.as_str(),
                event_type.as_str(),
                outcome.as_str(),
            ])
            .inc();
    }
}

impl Transmitter {
    fn seen(&self) -> std::sync::MutexGuard<'_, RecentJtis> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jti_memory_is_bounded_and_forgets_the_oldest() {
        let mut recent = RecentJtis::default();
        for i in 0..=RECENT_JTIS {
            recent.insert(i.to_string());
        }
        assert!(!recent.contains("0"));
        assert!(recent.contains("1"));
        assert!(recent.contains(&RECENT_JTIS.to_string()));
        assert_eq!(recent.set.len(), RECENT_JTIS);
    }
}
