//! A request that failed on its way through (the upstream refused, reset,
//! timed out or answered garbage; the client went away): which of a closed
//! set of failures it was, for the access log, and the answer, 502 or 504
//! with the body every jwtgate answer has.

use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

use crate::answers;
use crate::answers::request_id::{request_id_in, request_id_text};
use crate::pipeline::cors::CorsPolicy;

/// Why a request could not be proxied: the access log's `error` field. A
/// closed set of stable words, so operators can alert on them; Pingora's
/// own error types are finer-grained and may change between its versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyFailure {
    /// Nothing listens on the upstream address.
    UpstreamRefused,
    /// The TCP (or TLS) handshake did not finish within `connect_timeout`.
    UpstreamConnectTimeout,
    /// Any other failure to connect: no route, socket errors.
    UpstreamConnectFailed,
    /// The TLS handshake with the upstream failed.
    UpstreamTlsFailed,
    /// The upstream closed or reset the connection before answering in full.
    UpstreamReset,
    /// The upstream did not answer (or take the request) within
    /// `read_timeout` (`write_timeout`).
    UpstreamTimeout,
    /// The upstream's answer is not valid HTTP.
    UpstreamBadResponse,
    /// The client closed the connection or stopped reading: there is
    /// nobody to answer.
    ClientDisconnected,
    /// The client stopped sending its request body.
    ClientTimeout,
    /// The client's request could not be read (a malformed body framing,
    /// or a phase refused it with a 4xx).
    ClientBadRequest,
    /// A failure inside jwtgate.
    Internal,
}

impl ProxyFailure {
    pub const ALL: [ProxyFailure; 11] = [
        Self::UpstreamRefused,
        Self::UpstreamConnectTimeout,
        Self::UpstreamConnectFailed,
        Self::UpstreamTlsFailed,
        Self::UpstreamReset,
        Self::UpstreamTimeout,
        Self::UpstreamBadResponse,
        Self::ClientDisconnected,
        Self::ClientTimeout,
        Self::ClientBadRequest,
        Self::Internal,
    ];

    /// Sorts a Pingora error by who failed and how.
    pub fn of(error: &Error) -> Self {
        use ErrorType::*;
        match (error.esource(), error.etype()) {
            (_, HTTPStatus(400..=499)) => Self::ClientBadRequest,
            (_, HTTPStatus(_)) => Self::Internal,
            (ErrorSource::Upstream, etype) => match etype {
                ConnectRefused => Self::UpstreamRefused,
                ConnectTimedout | TLSHandshakeTimedout => Self::UpstreamConnectTimeout,
                TLSWantX509Lookup | TLSHandshakeFailure | InvalidCert | HandshakeError => {
                    Self::UpstreamTlsFailed
                }
                ReadTimedout | WriteTimedout => Self::UpstreamTimeout,
                ReadError | WriteError | ConnectionClosed => Self::UpstreamReset,
                InvalidHTTPHeader | H1Error | H2Error | InvalidH2 | H2Downgrade => {
                    Self::UpstreamBadResponse
                }
                _ => Self::UpstreamConnectFailed,
            },
            (ErrorSource::Downstream, etype) => match etype {
                ReadTimedout => Self::ClientTimeout,
                ReadError | WriteError | WriteTimedout | ConnectionClosed => {
                    Self::ClientDisconnected
                }
                _ => Self::ClientBadRequest,
            },
            (ErrorSource::Internal | ErrorSource::Unset, _) => Self::Internal,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UpstreamRefused => "upstream_refused",
            Self::UpstreamConnectTimeout => "upstream_connect_timeout",
            Self::UpstreamConnectFailed => "upstream_connect_failed",
            Self::UpstreamTlsFailed => "upstream_tls_failed",
            Self::UpstreamReset => "upstream_reset",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamBadResponse => "upstream_bad_response",
            Self::ClientDisconnected => "client_disconnected",
            Self::ClientTimeout => "client_timeout",
            Self::ClientBadRequest => "client_bad_request",
            Self::Internal => "internal_error",
        }
    }

    /// Whether the client caused it. Its access-log line says so (`error`);
    /// an error line besides would let any client write one per request.
    pub fn is_client(self) -> bool {
        matches!(
            self,
            Self::ClientDisconnected | Self::ClientTimeout | Self::ClientBadRequest
        )
    }

    /// The status to answer `error` with; `None` when the client can't be
    /// answered any more.
    pub fn status(self, error: &Error) -> Option<u16> {
        match self {
            Self::UpstreamConnectTimeout | Self::UpstreamTimeout => Some(504),
            Self::UpstreamRefused
            | Self::UpstreamConnectFailed
            | Self::UpstreamTlsFailed
            | Self::UpstreamReset
            | Self::UpstreamBadResponse => Some(502),
            Self::ClientDisconnected => None,
            Self::ClientTimeout => Some(408),
            Self::ClientBadRequest | Self::Internal => match error.etype() {
                ErrorType::HTTPStatus(status @ 400..=599) => Some(*status),
                _ if self == Self::Internal => Some(500),
                _ => Some(400),
            },
        }
    }
}

/// Answers a request that failed on its way through (Pingora's
/// `fail_to_proxy`) and returns the status written, 0 when nothing could
/// be. `request_id` is filled in when the failure came before
/// `request_filter` set it.
pub async fn answer_failure(
    session: &mut Session,
    error: &Error,
    request_id: &mut HeaderValue,
    cors: Option<&CorsPolicy>,
) -> u16 {
    if request_id.is_empty() {
        *request_id = request_id_in(&session.req_header().headers);
    }
    let request_id = request_id_text(request_id);
    let failure = ProxyFailure::of(error);
    // A 100 Continue is not an answer yet; anything else is.
    if let Some(response) = session
        .response_written()
        .filter(|r| !r.status.is_informational() || r.status == 101)
    {
        // The status line is gone: the only signal left is to cut the
        // response short, which Pingora does by closing the connection.
        tracing::warn!(
            request_id = %request_id,
            status = response.status.as_u16(),
            error = failure.as_str(),
            "the request failed after its response had started; closing the client connection"
        );
        return 0;
    }
    let Some(status) = failure.status(error) else {
        return 0;
    };
    let (parts, body) = answers::failure(status, request_id).into_parts();
    let mut header = ResponseHeader::from(parts);
    // A browser must be able to read why a cross-origin request failed.
    if let Some(policy) = cors {
        policy.decorate(&session.req_header().headers, &mut header);
    }
    match session
        .as_downstream_mut()
        .write_error_response(header, body)
        .await
    {
        Ok(()) => status,
        Err(write_error) => {
            tracing::debug!(
                request_id = %request_id,
                error = %write_error,
                "could not answer a failed request"
            );
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_sort_into_kinds_and_statuses() {
        use ErrorType::*;
        let cases = [
            (ConnectRefused, "upstream_refused", 502),
            (ConnectTimedout, "upstream_connect_timeout", 504),
            (TLSHandshakeTimedout, "upstream_connect_timeout", 504),
            (ConnectNoRoute, "upstream_connect_failed", 502),
            (SocketError, "upstream_connect_failed", 502),
            (TLSHandshakeFailure, "upstream_tls_failed", 502),
            (InvalidCert, "upstream_tls_failed", 502),
            (ReadError, "upstream_reset", 502),
            (WriteError, "upstream_reset", 502),
            (ConnectionClosed, "upstream_reset", 502),
            (ReadTimedout, "upstream_timeout", 504),
            (WriteTimedout, "upstream_timeout", 504),
            (InvalidHTTPHeader, "upstream_bad_response", 502),
            (H1Error, "upstream_bad_response", 502),
            (InvalidH2, "upstream_bad_response", 502),
        ];
        for (etype, kind, status) in cases {
            let error = Error::new_up(etype.clone());
            let failure = ProxyFailure::of(&error);
            assert_eq!(failure.as_str(), kind, "{etype:?}");
            assert_eq!(failure.status(&error), Some(status), "{etype:?}");
        }
    }

    #[test]
    fn client_and_internal_errors_keep_their_own_statuses() {
        use ErrorType::*;
        let cases = [
            (Error::new_down(ReadError), "client_disconnected", None),
            (
                Error::new_down(ConnectionClosed),
                "client_disconnected",
                None,
            ),
            (Error::new_down(WriteTimedout), "client_disconnected", None),
            (Error::new_down(ReadTimedout), "client_timeout", Some(408)),
            (
                Error::new_down(InvalidHTTPHeader),
                "client_bad_request",
                Some(400),
            ),
            (Error::new_down(H1Error), "client_bad_request", Some(400)),
            (Error::new(HTTPStatus(413)), "client_bad_request", Some(413)),
            (
                Error::new_up(HTTPStatus(431)),
                "client_bad_request",
                Some(431),
            ),
            (Error::new(HTTPStatus(503)), "internal_error", Some(503)),
            (Error::new(HTTPStatus(302)), "internal_error", Some(500)),
            (Error::new_in(InternalError), "internal_error", Some(500)),
            (Error::new(InvalidHTTPHeader), "internal_error", Some(500)),
        ];
        for (error, kind, status) in cases {
            let failure = ProxyFailure::of(&error);
            assert_eq!(failure.as_str(), kind, "{error}");
            assert_eq!(failure.status(&error), status, "{error}");
        }
    }

    /// The `error` label of `jwtgate_requests_total`: a closed set of
    /// snake_case words, upstream failures told apart by their prefix (what
    /// the dashboard and the alert select them by).
    #[test]
    fn failure_labels_are_unique_snake_case_and_prefixed_by_who_failed() {
        let labels: Vec<&str> = ProxyFailure::ALL.map(ProxyFailure::as_str).into();
        let unique: std::collections::BTreeSet<_> = labels.iter().collect();
        assert_eq!(unique.len(), labels.len(), "{labels:?}");
        for failure in ProxyFailure::ALL {
            let label = failure.as_str();
            assert!(crate::telemetry::metrics::is_snake_case(label), "{label}");
            let upstream = !failure.is_client() && failure != ProxyFailure::Internal;
            assert_eq!(label.starts_with("upstream_"), upstream, "{label}");
            assert_eq!(label.starts_with("client_"), failure.is_client(), "{label}");
        }
    }

    /// The `reason` label of `jwtgate_requests_total`, from every adapter:
    /// the pipeline's refusals and the authorization listener's own, each
    /// a distinct snake_case word, none mistakable for an `error`.
    #[test]
    fn request_reasons_are_one_closed_set() {
        use crate::authz::{ORIGINAL_MISSING, SECRET_MISSING};
        use crate::telemetry::metrics::{NO_REASON, is_snake_case};
        let reasons: Vec<&str> = crate::pipeline::refusal_reasons()
            .chain([SECRET_MISSING, ORIGINAL_MISSING])
            .collect();
        let unique: std::collections::BTreeSet<_> = reasons.iter().collect();
        assert_eq!(unique.len(), reasons.len(), "{reasons:?}");
        for reason in &reasons {
            assert!(is_snake_case(reason), "{reason}");
            assert_ne!(*reason, NO_REASON);
            assert!(
                !reason.starts_with("upstream_") && !reason.starts_with("client_"),
                "{reason}"
            );
        }
        for expected in [
            "method_not_allowed",
            "encoded_slash",
            "uri_too_long",
            "https_required",
        ] {
            assert!(reasons.contains(&expected), "{expected}");
        }
    }
}
