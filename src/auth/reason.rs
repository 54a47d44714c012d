//! Why a request was refused. `Reason` is the fixed, documented vocabulary of
//! the `reason` metric label and the access log; `RejectionKind` is what the
//! client is told (RFC 6750 §3.1). The precise reason never reaches the client.

use std::fmt;

use super::dpop::DpopFailure;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    MissingToken,
    Malformed,
    UnsupportedAlg,
    AlgNotAllowed,
    UnknownKid,
    BadSignature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    LifetimeTooLong,
    WrongIssuer,
    WrongAudience,
    WrongTokenType,
    MissingClaim,
    ClaimMismatch,
    InsufficientScope,
    Revoked,
    JwksUnavailable,
    TooLarge,
    /// A token was sent in more than one place (or header) at once.
    AmbiguousToken,
    /// A `crit` or `b64: false` header: extensions we do not implement.
    UnsupportedHeader,
    /// A JWE (five segments): encrypted tokens are not supported.
    EncryptedToken,
    /// The token's Token Status List entry says `INVALID` (0x01).
    TokenInvalidated,
    /// The token's Token Status List entry says `SUSPENDED` (0x02).
    TokenSuspended,
    /// The entry holds a status jwtgate does not accept (0x03 and up), or
    /// the token's index is past the end of its list: refused, since no
    /// one said the token is valid.
    TokenStatusUnknown,
    /// The token names a status list outside the issuer's `allowed_uris`.
    StatusListNotAllowed,
    /// The token's status list is not available (503 under `required`).
    StatusListUnavailable,
    /// The issuer's introspection endpoint says the opaque token is not
    /// active (unknown, expired, revoked, or not for this client).
    TokenInactive,
    /// No introspection answer could be had for an opaque token (503):
    /// the endpoint is unreachable, slow, failing or answers nonsense.
    IntrospectionUnavailable,
    /// A DPoP proof, or the token's binding to the proof's key, failed a
    /// check (RFC 9449); its own label says which.
    Dpop(DpopFailure),
    /// A certificate-bound token (`cnf["x5t#S256"]`, RFC 8705) came
    /// without the certificate it is bound to.
    CertificateMismatch,
    /// The route's `auth.sender_constraint` asks for a token bound to a
    /// key or a certificate, and this one is bound to neither the way it
    /// asks.
    SenderConstraintRequired,
}

impl Reason {
    pub const ALL: [Reason; 29] = [
        Reason::MissingToken,
        Reason::Malformed,
        Reason::UnsupportedAlg,
        Reason::AlgNotAllowed,
        Reason::UnknownKid,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::IssuedInFuture,
        Reason::LifetimeTooLong,
        Reason::WrongIssuer,
        Reason::WrongAudience,
        Reason::WrongTokenType,
        Reason::MissingClaim,
        Reason::ClaimMismatch,
        Reason::InsufficientScope,
        Reason::Revoked,
        Reason::JwksUnavailable,
        Reason::TooLarge,
        Reason::AmbiguousToken,
        Reason::UnsupportedHeader,
        Reason::EncryptedToken,
        Reason::TokenInvalidated,
        Reason::TokenSuspended,
        Reason::TokenStatusUnknown,
        Reason::StatusListNotAllowed,
        Reason::StatusListUnavailable,
        Reason::TokenInactive,
        Reason::IntrospectionUnavailable,
    ];

    /// The labels in the order of the variants (and of [`Self::ALL`]).
    const LABELS: [&'static str; 29] = [
        "missing_token",
        "malformed",
        "unsupported_alg",
        "alg_not_allowed",
        "unknown_kid",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "issued_in_future",
        "lifetime_too_long",
        "wrong_issuer",
        "wrong_audience",
        "wrong_token_type",
        "missing_claim",
        "claim_mismatch",
        "insufficient_scope",
        "revoked",
        "jwks_unavailable",
        "too_large",
        "ambiguous_token",
        "unsupported_header",
        "encrypted_token",
        "token_invalidated",
        "token_suspended",
        "token_status_unknown",
        "status_list_not_allowed",
        "status_list_unavailable",
        "token_inactive",
        "introspection_unavailable",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Dpop(failure) => failure.as_str(),
            Reason::CertificateMismatch => "certificate_mismatch",
            Reason::SenderConstraintRequired => "sender_constraint_required",
            token => Self::LABELS[token.token_index()],
        }
    }

    /// The place of a reason about the token itself in [`Self::ALL`].
    fn token_index(self) -> usize {
        match self {
            Reason::MissingToken => 0,
            Reason::Malformed => 1,
            Reason::UnsupportedAlg => 2,
            Reason::AlgNotAllowed => 3,
            Reason::UnknownKid => 4,
            Reason::BadSignature => 5,
            Reason::Expired => 6,
            Reason::NotYetValid => 7,
            Reason::IssuedInFuture => 8,
            Reason::LifetimeTooLong => 9,
            Reason::WrongIssuer => 10,
            Reason::WrongAudience => 11,
            Reason::WrongTokenType => 12,
            Reason::MissingClaim => 13,
            Reason::ClaimMismatch => 14,
            Reason::InsufficientScope => 15,
            Reason::Revoked => 16,
            Reason::JwksUnavailable => 17,
            Reason::TooLarge => 18,
            Reason::AmbiguousToken => 19,
            Reason::UnsupportedHeader => 20,
            Reason::EncryptedToken => 21,
            Reason::TokenInvalidated => 22,
            Reason::TokenSuspended => 23,
            Reason::TokenStatusUnknown => 24,
            Reason::StatusListNotAllowed => 25,
            Reason::StatusListUnavailable => 26,
            Reason::TokenInactive => 27,
            Reason::IntrospectionUnavailable => 28,
            Reason::Dpop(_) | Reason::CertificateMismatch | Reason::SenderConstraintRequired => {
                unreachable!("not a reason about the token itself")
            }
        }
    }

    /// Every reason about how the token was sent rather than the token
    /// itself: DPoP proofs, certificate binding, the route's sender
    /// constraint.
    pub fn sender_reasons() -> impl Iterator<Item = Reason> {
        DpopFailure::ALL.into_iter().map(Reason::Dpop).chain([
            Reason::CertificateMismatch,
            Reason::SenderConstraintRequired,
        ])
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the client is told, per DESIGN's table of RFC 6750 responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectionKind {
    /// 401 without an error code: no credentials were sent.
    NoToken,
    /// 400 `invalid_request`.
    InvalidRequest,
    /// 401 `invalid_token`.
    InvalidToken,
    /// 403 `insufficient_scope`, with the scopes the route needs.
    InsufficientScope { required: Option<String> },
    /// 503: keys cannot be obtained, or a DPoP proof can't be checked
    /// against the replay cache; not the client's fault.
    Unavailable,
    /// 401 `invalid_dpop_proof` (RFC 9449 §7.1).
    InvalidDpopProof,
    /// 401 `use_dpop_nonce` (RFC 9449 §8): retry with `nonce`, sent in
    /// the `DPoP-Nonce` header.
    UseDpopNonce { nonce: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub kind: RejectionKind,
}

impl Rejection {
    pub fn no_token() -> Self {
        Self {
            reason: Reason::MissingToken,
            kind: RejectionKind::NoToken,
        }
    }

    pub fn invalid_request(reason: Reason) -> Self {
        Self {
            reason,
            kind: RejectionKind::InvalidRequest,
        }
    }

    pub fn invalid_token(reason: Reason) -> Self {
        Self {
            reason,
            kind: RejectionKind::InvalidToken,
        }
    }

    pub fn forbidden(reason: Reason, required: Option<String>) -> Self {
        Self {
            reason,
            kind: RejectionKind::InsufficientScope { required },
        }
    }

    pub fn unavailable() -> Self {
        Self {
            reason: Reason::JwksUnavailable,
            kind: RejectionKind::Unavailable,
        }
    }

    /// 503: the token's status list can't be consulted.
    pub fn status_unavailable() -> Self {
        Self {
            reason: Reason::StatusListUnavailable,
            kind: RejectionKind::Unavailable,
        }
    }

    /// 503: no introspection answer for an opaque token.
    pub fn introspection_unavailable() -> Self {
        Self {
            reason: Reason::IntrospectionUnavailable,
            kind: RejectionKind::Unavailable,
        }
    }

    /// How a failed DPoP check is answered (RFC 9449 §7.1, §8); `nonce`:
    /// the one to retry with, where the failure asks for one.
    pub fn dpop(failure: DpopFailure, nonce: Option<String>) -> Self {
        let kind = match (failure.error_code(), nonce) {
            (Some("use_dpop_nonce"), Some(nonce)) => RejectionKind::UseDpopNonce { nonce },
            (code, _) => Self::dpop_kind(code),
        };
        Self {
            reason: Reason::Dpop(failure),
            kind,
        }
    }

    fn dpop_kind(code: Option<&str>) -> RejectionKind {
        match code {
            Some("invalid_request") => RejectionKind::InvalidRequest,
            Some("invalid_token") => RejectionKind::InvalidToken,
            Some(_) => RejectionKind::InvalidDpopProof,
            None => RejectionKind::Unavailable,
        }
    }

    /// Whether the client's DPoP proof is what the answer is about: its
    /// error goes in the `DPoP` challenge rather than the `Bearer` one.
    pub fn is_about_the_proof(&self) -> bool {
        matches!(
            self.kind,
            RejectionKind::InvalidDpopProof | RejectionKind::UseDpopNonce { .. }
        ) || matches!(self.reason, Reason::Dpop(_))
    }

    pub fn status(&self) -> u16 {
        match self.kind {
            RejectionKind::NoToken
            | RejectionKind::InvalidToken
            | RejectionKind::InvalidDpopProof
            | RejectionKind::UseDpopNonce { .. } => 401,
            RejectionKind::InvalidRequest => 400,
            RejectionKind::InsufficientScope { .. } => 403,
            RejectionKind::Unavailable => 503,
        }
    }

    /// The short, generic text the client sees: enough to fix an honest
    /// mistake (send a token, refresh an expired one), too little to probe
    /// the verifier. Chosen by what the client is told, so one reason (a
    /// missing claim) reads right whether it made the token invalid or the
    /// route's policy refuse it.
    pub fn description(&self) -> &'static str {
        match (&self.kind, self.reason) {
            (RejectionKind::NoToken, _) => "bearer token required",
            (RejectionKind::InvalidRequest, Reason::AmbiguousToken) => "token sent more than once",
            (RejectionKind::InvalidRequest, _) => "malformed request",
            (RejectionKind::InvalidToken, Reason::Expired) => "token expired",
            (RejectionKind::InvalidToken, Reason::NotYetValid) => "token not yet valid",
            (RejectionKind::InvalidToken, Reason::Dpop(DpopFailure::MissingProof)) => {
                "proof of possession required"
            }
            (RejectionKind::InvalidToken, Reason::Dpop(_) | Reason::CertificateMismatch) => {
                "token bound to another key"
            }
            (RejectionKind::InvalidToken, Reason::SenderConstraintRequired) => {
                "sender-constrained token required"
            }
            (RejectionKind::InvalidToken, _) => "invalid token",
            (RejectionKind::InsufficientScope { .. }, _) => "insufficient scope",
            (RejectionKind::Unavailable, Reason::Dpop(_)) => {
                "proof replay check temporarily unavailable"
            }
            (RejectionKind::Unavailable, Reason::StatusListUnavailable) => {
                "token status temporarily unavailable"
            }
            (RejectionKind::Unavailable, Reason::IntrospectionUnavailable) => {
                "token introspection temporarily unavailable"
            }
            (RejectionKind::Unavailable, _) => "token keys temporarily unavailable",
            (RejectionKind::InvalidDpopProof, _) => "invalid DPoP proof",
            (RejectionKind::UseDpopNonce { .. }, _) => "DPoP nonce required",
        }
    }

    /// The RFC 6750 `error` code, if the response carries one.
    pub fn error_code(&self) -> Option<&'static str> {
        match self.kind {
            RejectionKind::NoToken => None,
            RejectionKind::InvalidRequest => Some("invalid_request"),
            RejectionKind::InvalidToken => Some("invalid_token"),
            RejectionKind::InsufficientScope { .. } => Some("insufficient_scope"),
            RejectionKind::Unavailable => Some("temporarily_unavailable"),
            RejectionKind::InvalidDpopProof => Some("invalid_dpop_proof"),
            RejectionKind::UseDpopNonce { .. } => Some("use_dpop_nonce"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_has_its_own_label() {
        for (i, reason) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(
                reason.token_index(),
                i,
                "ALL is in the order of the variants"
            );
        }
        assert_eq!(
            Reason::Dpop(DpopFailure::Replayed).as_str(),
            "dpop_replayed"
        );
        assert_eq!(Reason::MissingToken.as_str(), "missing_token");
        assert_eq!(Reason::Expired.as_str(), "expired");
        assert_eq!(Reason::Revoked.as_str(), "revoked");
        assert_eq!(Reason::EncryptedToken.as_str(), "encrypted_token");
    }

    #[test]
    fn reason_labels_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL.into_iter().chain(Reason::sender_reasons()) {
            let label = reason.as_str();
            assert!(seen.insert(label), "duplicate label {label}");
            assert!(label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }

    #[test]
    fn statuses_follow_rfc6750() {
        assert_eq!(Rejection::no_token().status(), 401);
        assert_eq!(Rejection::no_token().error_code(), None);
        let invalid = Rejection::invalid_token(Reason::Expired);
        assert_eq!(
            (invalid.status(), invalid.error_code()),
            (401, Some("invalid_token"))
        );
        let forbidden = Rejection::forbidden(Reason::InsufficientScope, Some("a".into()));
        assert_eq!(forbidden.status(), 403);
        assert_eq!(
            Rejection::invalid_request(Reason::AmbiguousToken).status(),
            400
        );
        assert_eq!(Rejection::unavailable().status(), 503);
    }

    #[test]
    fn descriptions_follow_the_kind_not_only_the_reason() {
        assert_eq!(
            Rejection::invalid_token(Reason::MissingClaim).description(),
            "invalid token"
        );
        assert_eq!(
            Rejection::forbidden(Reason::MissingClaim, None).description(),
            "insufficient scope"
        );
        assert_eq!(
            Rejection::invalid_token(Reason::Expired).description(),
            "token expired"
        );
    }
}
