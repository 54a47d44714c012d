//! What the request itself says before any decision: its target's form
//! and whether it came over TLS.

use pingora::http::authority::{RawTargetAuthority, raw_target_authority};
use pingora::proxy::Session;

use crate::pipeline::{Scheme, TargetForm};

/// Origin form (`/path?query`) or absolute form (`http://host/path?query`,
/// split by Pingora's own classifier, the one that already checked the
/// authority against `Host`); anything else is for the pipeline to refuse.
pub(super) fn target_form(raw: &[u8]) -> TargetForm<'_> {
    match raw_target_authority(raw) {
        RawTargetAuthority::None if raw.first() == Some(&b'/') => TargetForm::Origin {
            path_and_query: raw,
        },
        RawTargetAuthority::Absolute {
            scheme,
            authority,
            path_and_query,
        } if scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https") => {
            TargetForm::Absolute {
                authority,
                path_and_query,
            }
        }
        _ => TargetForm::Unsupported,
    }
}

/// HTTPS when the connection (HTTP/1 or HTTP/2) came through the TLS
/// listener: its digest has the handshake's details.
pub(super) fn scheme(session: &Session) -> Scheme {
    let over_tls = session
        .digest()
        .is_some_and(|digest| digest.ssl_digest.is_some());
    if over_tls {
        Scheme::Https
    } else {
        Scheme::Http
    }
}
