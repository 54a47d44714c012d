//! What each event type means for the revocation list. CAEP
//! `session-revoked` cuts a session off (`sid`); CAEP `credential-change`
//! and RISC `account-disabled` / `account-purged` cut a subject off
//! (`sub`). Only subjects that name their issuer can be mapped, since the
//! list is keyed by (iss, value): `iss_sub` (alone, or as a `complex`
//! subject's `user`, or among `aliases`), with a session as a `complex`
//! subject's `session` (`id`, `sid` or `session_id`) or a `sid` /
//! `session_id` member beside `iss`. `email`, `phone_number`, `opaque`
//! alone and the other formats are ignored, and counted.

use serde_json::Value;

use crate::state::revocation::Kind;

pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
pub const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
pub const ACCOUNT_DISABLED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
pub const ACCOUNT_PURGED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-purged";

/// The `event_type` label of `jwtgate_ssf_events_total`: a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    SessionRevoked,
    CredentialChange,
    AccountDisabled,
    AccountPurged,
    /// Any other event type: acknowledged, counted, not applied.
    Other,
    /// A SET that failed verification: its events can't be trusted to
    /// say which they are.
    Unverified,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        Self::SessionRevoked,
        Self::CredentialChange,
        Self::AccountDisabled,
        Self::AccountPurged,
        Self::Other,
        Self::Unverified,
    ];

    pub fn of(uri: &str) -> Self {
        match uri {
            SESSION_REVOKED => Self::SessionRevoked,
            CREDENTIAL_CHANGE => Self::CredentialChange,
            ACCOUNT_DISABLED => Self::AccountDisabled,
            ACCOUNT_PURGED => Self::AccountPurged,
            _ => Self::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionRevoked => "session_revoked",
            Self::CredentialChange => "credential_change",
            Self::AccountDisabled => "account_disabled",
            Self::AccountPurged => "account_purged",
            Self::Other => "other",
            Self::Unverified => "unverified",
        }
    }

    /// Which kind of entry the event makes; `None`: nothing to apply.
    fn kind(self) -> Option<Kind> {
        match self {
            Self::SessionRevoked => Some(Kind::Sid),
            Self::CredentialChange | Self::AccountDisabled | Self::AccountPurged => Some(Kind::Sub),
            Self::Other | Self::Unverified => None,
        }
    }
}

/// A revocation an event asks for: tokens of `iss` whose `sub` or `sid`
/// is `value`, issued before `at`, are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub iss: String,
    pub value: String,
    pub at: i64,
}

/// Why an event of a known type maps to nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// An event type jwtgate does not act on.
    Type,
    /// A subject whose format names no issuer (or no session).
    Subject(&'static str),
}

/// The revocation `payload` (an event of type `uri` in a SET issued at
/// `iat`, whose `sub_id` is `sub_id`) asks for. The cut-off is the event's
/// `event_timestamp` (else `iat`) plus one second, since `iat` has whole
/// seconds: a token issued in the same second as the change is covered.
pub fn target(
    uri: &str,
    payload: &Value,
    sub_id: Option<&Value>,
    iat: i64,
) -> Result<Target, Ignored> {
    let kind = EventType::of(uri).kind().ok_or(Ignored::Type)?;
    // CAEP drafts before SSF 1.0 put the subject in the event.
    let subject = payload
        .get("subject")
        .or(sub_id)
        .ok_or(Ignored::Subject("no subject"))?;
    let (iss, value) = match kind {
        Kind::Sid => session(subject)?,
        _ => user(subject)?,
    };
    let when = payload
        .get("event_timestamp")
        .and_then(Value::as_i64)
        .unwrap_or(iat);
    Ok(Target {
        kind,
        iss,
        value,
        at: when.saturating_add(1),
    })
}

/// `(iss, sub)` of an `iss_sub` subject, found alone, as a complex
/// subject's `user`, or among `aliases`.
fn user(subject: &Value) -> Result<(String, String), Ignored> {
    match format(subject) {
        "iss_sub" => pair(subject, &["sub"]).ok_or(Ignored::Subject("iss_sub without iss and sub")),
        "complex" => subject
            .get("user")
            .ok_or(Ignored::Subject("complex subject without user"))
            .and_then(user),
        "aliases" => subject
            .get("identifiers")
            .and_then(Value::as_array)
            .and_then(|ids| ids.iter().find_map(|id| user(id).ok()))
            .ok_or(Ignored::Subject("no iss_sub among the aliases")),
        _ => Err(Ignored::Subject(unmapped(subject))),
    }
}

/// `(iss, sid)` of a session: a complex subject's `session` (its issuer
/// from the session, else from the `user`), or a subject with `iss` and
/// `sid` / `session_id` members.
fn session(subject: &Value) -> Result<(String, String), Ignored> {
    const SID: [&str; 3] = ["sid", "session_id", "id"];
    if let Some(found) = pair(subject, &SID[..2]) {
        return Ok(found);
    }
    if format(subject) != "complex" {
        return Err(Ignored::Subject(
            "a session-revoked subject without iss and sid",
        ));
    }
    let session = subject
        .get("session")
        .ok_or(Ignored::Subject("complex subject without session"))?;
    let sid = SID
        .iter()
        .find_map(|name| session.get(name).and_then(Value::as_str))
        .ok_or(Ignored::Subject("session without an id"))?;
    let iss = session
        .get("iss")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            subject
                .get("user")
                .and_then(|u| user(u).ok())
                .map(|(iss, _)| iss)
        })
        .ok_or(Ignored::Subject("session without an issuer"))?;
    Ok((iss, sid.to_string()))
}

fn format(subject: &Value) -> &str {
    subject
        .get("format")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `iss` and the first of `names` present, both non-empty strings.
fn pair(subject: &Value, names: &[&str]) -> Option<(String, String)> {
    let iss = subject.get("iss").and_then(Value::as_str)?;
    let value = names
        .iter()
        .find_map(|name| subject.get(name).and_then(Value::as_str))?;
    (!iss.is_empty() && !value.is_empty()).then(|| (iss.to_string(), value.to_string()))
}

fn unmapped(subject: &Value) -> &'static str {
    match format(subject) {
        "email" => "email subjects name no issuer",
        "phone_number" => "phone_number subjects name no issuer",
        "opaque" => "opaque subjects name no issuer",
        _ => "a subject format that names no issuer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn session_revoked_maps_complex_and_flat_sessions() {
        let complex = json!({"format": "complex",
            "user": {"format": "iss_sub", "iss": "https://idp", "sub": "alice"},
            "session": {"format": "opaque", "id": "s-1"}});
        let got = target(
            SESSION_REVOKED,
            &json!({"event_timestamp": 100}),
            Some(&complex),
            90,
        )
        .unwrap();
        assert_eq!(
            got,
            Target {
                kind: Kind::Sid,
                iss: "https://idp".into(),
                value: "s-1".into(),
                at: 101
            }
        );
        let flat = json!({"subject": {"format": "iss_sub", "iss": "https://idp", "sub": "a", "sid": "s-2"}});
        let got = target(SESSION_REVOKED, &flat, None, 90).unwrap();
        assert_eq!((got.value.as_str(), got.at), ("s-2", 91));
    }

    #[test]
    fn subject_events_need_an_issuer() {
        let iss_sub = json!({"format": "iss_sub", "iss": "https://idp", "sub": "bob"});
        for uri in [CREDENTIAL_CHANGE, ACCOUNT_DISABLED, ACCOUNT_PURGED] {
            let got = target(uri, &json!({}), Some(&iss_sub), 5).unwrap();
            assert_eq!((got.kind, got.value.as_str()), (Kind::Sub, "bob"));
        }
        let aliases = json!({"format": "aliases", "identifiers": [
            {"format": "email", "email": "b@x"}, iss_sub]});
        assert!(target(ACCOUNT_DISABLED, &json!({}), Some(&aliases), 5).is_ok());
        let email = json!({"format": "email", "email": "bob@example.com"});
        assert_eq!(
            target(ACCOUNT_DISABLED, &json!({}), Some(&email), 5),
            Err(Ignored::Subject("email subjects name no issuer"))
        );
        assert_eq!(
            target("https://other", &json!({}), Some(&iss_sub), 5),
            Err(Ignored::Type)
        );
        assert!(target(SESSION_REVOKED, &json!({}), Some(&iss_sub), 5).is_err());
    }
}
