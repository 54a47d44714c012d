//! Why a request was refused. `Reason` is the fixed, documented vocabulary of
//! the `reason` metric label and the access log; `RejectionKind` is what the
//! client is told (RFC 6750 §3.1). The precise reason never reaches the client.

use std::fmt;

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
}

impl Reason {
    pub const ALL: [Reason; 22] = [
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
    ];

    /// The labels in the order of the variants (and of [`Self::ALL`]).
    const LABELS: [&'static str; 22] = [
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
    ];

    pub fn as_str(self) -> &'static str {
        Self::LABELS[self as usize]
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
    /// 503: keys cannot be obtained; not the client's fault.
    Unavailable,
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

    pub fn status(&self) -> u16 {
        match self.kind {
            RejectionKind::NoToken | RejectionKind::InvalidToken => 401,
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
            (RejectionKind::InvalidToken, _) => "invalid token",
            (RejectionKind::InsufficientScope { .. }, _) => "insufficient scope",
            (RejectionKind::Unavailable, _) => "token keys temporarily unavailable",
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_has_its_own_label() {
        for (i, reason) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, i, "ALL is in the order of the variants");
        }
        assert_eq!(Reason::MissingToken.as_str(), "missing_token");
        assert_eq!(Reason::Expired.as_str(), "expired");
        assert_eq!(Reason::Revoked.as_str(), "revoked");
        assert_eq!(Reason::EncryptedToken.as_str(), "encrypted_token");
    }

    #[test]
    fn reason_labels_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
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
