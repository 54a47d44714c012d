//! Every response jwtgate writes itself. Rejections in RFC 6750 form: a
//! `WWW-Authenticate: Bearer` challenge and a small JSON body. Failures to
//! proxy (the upstream refused, reset, timed out or answered garbage): a
//! 502 or 504 with the same body. The body says what a client can act on and
//! nothing more; the precise reason goes to logs and metrics.

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};
use serde_json::json;

use crate::auth::{Rejection, RejectionKind};
use crate::pipeline::HTTPS_REQUIRED;
use crate::pipeline::cors::CorsPolicy;
use crate::state::rate_limit::Limited;

/// Seconds a client should wait before retrying when keys are unavailable.
const RETRY_AFTER_SECS: &str = "10";

pub fn rejection(rejection: &Rejection, realm: &str, request_id: &str) -> (ResponseHeader, Bytes) {
    let description = rejection.description();
    let mut challenge = format!("Bearer realm=\"{}\"", quoted(realm));
    if let Some(code) = rejection.error_code()
        && rejection.kind != RejectionKind::Unavailable
    {
        challenge.push_str(&format!(
            ", error=\"{code}\", error_description=\"{description}\""
        ));
    }
    if let RejectionKind::InsufficientScope {
        required: Some(scope),
    } = &rejection.kind
    {
        challenge.push_str(&format!(", scope=\"{}\"", quoted(scope)));
    }
    let error = rejection.error_code().unwrap_or("unauthorized");
    let body = json!({
        "error": error,
        "error_description": description,
        "request_id": request_id,
    });
    let (mut header, body) = json_response(rejection.status(), &body, request_id);
    if rejection.kind == RejectionKind::Unavailable {
        insert(&mut header, "retry-after", RETRY_AFTER_SECS);
    } else {
        insert(&mut header, "www-authenticate", &challenge);
    }
    (header, body)
}

pub fn not_found(request_id: &str) -> (ResponseHeader, Bytes) {
    refused(
        404,
        "not_found",
        "no route matches this request",
        request_id,
    )
}

/// A request target jwtgate won't route: ambiguous, malformed or with two
/// hosts. Which rule refused it goes to the access log only.
pub fn bad_target(request_id: &str) -> (ResponseHeader, Bytes) {
    refused(
        400,
        "bad_request",
        "the request path or host is malformed or ambiguous",
        request_id,
    )
}

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

/// The answer to a request that failed on its way through: `status` with
/// the JSON body every jwtgate response has. The description is as generic
/// as the status; the [`ProxyFailure`] goes to the log only.
pub fn proxy_failure(status: u16, request_id: &str) -> (ResponseHeader, Bytes) {
    let (error, description) = match status {
        502 => ("bad_gateway", "the upstream service failed to answer"),
        504 => (
            "gateway_timeout",
            "the upstream service did not answer in time",
        ),
        408 => ("request_timeout", "the request was not received in time"),
        413 => ("content_too_large", "the request body is too large"),
        414 => ("uri_too_long", "the request target is too long"),
        431 => (
            "request_header_fields_too_large",
            "the request headers are too large",
        ),
        503 => ("service_unavailable", "the service is unavailable"),
        400..500 => ("bad_request", "the request could not be handled"),
        _ => ("internal_error", "the gateway failed to handle the request"),
    };
    // An out-of-range status from a phase would make an invalid response.
    let status = if (400..600).contains(&status) {
        status
    } else {
        500
    };
    refused(status, error, description, request_id)
}

/// An answer jwtgate gives itself, in the body shape every one of them
/// has: `{error, error_description, request_id}`.
pub fn refused(
    status: u16,
    error: &str,
    description: &str,
    request_id: &str,
) -> (ResponseHeader, Bytes) {
    json_response(
        status,
        &json!({
            "error": error,
            "error_description": description,
            "request_id": request_id,
        }),
        request_id,
    )
}

/// A request over a rate limit: 429 with when to retry, in `Retry-After`
/// and in the IETF `RateLimit` / `RateLimit-Policy` fields
/// (draft-ietf-httpapi-ratelimit-headers) naming the limit that refused it.
pub fn rate_limited(limited: &Limited<'_>, request_id: &str) -> (ResponseHeader, Bytes) {
    let (mut header, body) = refused(
        429,
        "rate_limited",
        "too many requests; retry later",
        request_id,
    );
    let mut seconds = itoa::Buffer::new();
    insert(
        &mut header,
        "retry-after",
        seconds.format(limited.retry_after),
    );
    header
        .insert_header("ratelimit-policy", limited.limit.policy.clone())
        .expect("a valid header");
    header
        .insert_header("ratelimit", limited.limit.state_header(limited.retry_after))
        .expect("a valid header");
    (header, body)
}

/// The path's route exists, but not for this method; `allow` lists the
/// methods it has.
pub fn method_not_allowed(allow: &str, request_id: &str) -> (ResponseHeader, Bytes) {
    let (mut header, body) = refused(
        405,
        "method_not_allowed",
        "this route does not accept this method",
        request_id,
    );
    insert(&mut header, "allow", allow);
    (header, body)
}

/// A clear-text request where only HTTPS is served: 308 (the method and
/// body are kept, unlike 301) to the same path and query over HTTPS.
pub fn https_redirect(location: &[u8], request_id: &str) -> (ResponseHeader, Bytes) {
    let (mut header, body) = refused(
        308,
        HTTPS_REQUIRED,
        "this resource is served over HTTPS only",
        request_id,
    );
    header
        .insert_header("location", location)
        .expect("built from a request target and host that parsed");
    (header, body)
}

/// A clear-text request to a route that forbids it.
pub fn https_forbidden(request_id: &str) -> (ResponseHeader, Bytes) {
    refused(
        403,
        HTTPS_REQUIRED,
        "this resource is served over HTTPS only",
        request_id,
    )
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
        *request_id = super::headers::request_id(session.req_header());
    }
    let request_id = super::headers::request_id_text(request_id);
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
    let (mut header, body) = proxy_failure(status, request_id);
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

fn json_response(
    status: u16,
    body: &serde_json::Value,
    request_id: &str,
) -> (ResponseHeader, Bytes) {
    let body = Bytes::from(body.to_string());
    let mut header = ResponseHeader::build(status, Some(5)).expect("valid status");
    insert(&mut header, "content-type", "application/json");
    insert(&mut header, "content-length", &body.len().to_string());
    // Rejections and failures must not be cached by anything between us
    // and the client.
    insert(&mut header, "cache-control", "no-store");
    insert(&mut header, "x-request-id", request_id);
    (header, body)
}

fn insert(header: &mut ResponseHeader, name: &'static str, value: &str) {
    header
        .insert_header(name, value)
        .expect("header values built here are valid");
}

/// Realm and scope names come from config; keep them inside the quotes.
fn quoted(value: &str) -> String {
    value.replace(['"', '\\'], "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Reason;

    fn header_value(h: &ResponseHeader, name: &str) -> Option<String> {
        h.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn missing_token_challenge_has_no_error_code() {
        let (h, body) = rejection(&Rejection::no_token(), "jwtgate", "rid");
        assert_eq!(h.status.as_u16(), 401);
        assert_eq!(
            header_value(&h, "www-authenticate").as_deref(),
            Some("Bearer realm=\"jwtgate\"")
        );
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["request_id"], "rid");
    }

    #[test]
    fn insufficient_scope_names_the_scope() {
        let r = Rejection::forbidden(Reason::InsufficientScope, Some("orders:read".into()));
        let (h, _) = rejection(&r, "api", "rid");
        assert_eq!(h.status.as_u16(), 403);
        assert_eq!(
            header_value(&h, "www-authenticate").as_deref(),
            Some(
                "Bearer realm=\"api\", error=\"insufficient_scope\", error_description=\"insufficient scope\", scope=\"orders:read\""
            )
        );
    }

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

    #[test]
    fn failure_bodies_are_generic_json_with_the_request_id() {
        for (status, error) in [
            (502, "bad_gateway"),
            (504, "gateway_timeout"),
            (400, "bad_request"),
            (408, "request_timeout"),
            (413, "content_too_large"),
            (414, "uri_too_long"),
            (431, "request_header_fields_too_large"),
            (500, "internal_error"),
            (503, "service_unavailable"),
            (418, "bad_request"),
            (599, "internal_error"),
        ] {
            let (h, body) = proxy_failure(status, "rid-1");
            assert_eq!(h.status.as_u16(), status);
            assert_eq!(header_value(&h, "x-request-id").as_deref(), Some("rid-1"));
            assert_eq!(
                header_value(&h, "cache-control").as_deref(),
                Some("no-store")
            );
            assert_eq!(
                header_value(&h, "content-length"),
                Some(body.len().to_string())
            );
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"], error, "{status}");
            assert_eq!(body["request_id"], "rid-1");
            assert!(
                body["error_description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty())
            );
        }
    }

    #[test]
    fn a_status_that_is_not_an_error_answers_500() {
        let (h, body) = proxy_failure(200, "rid");
        assert_eq!(h.status.as_u16(), 500);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "internal_error");
    }

    #[test]
    fn unavailable_asks_to_retry() {
        let (h, _) = rejection(&Rejection::unavailable(), "api", "rid");
        assert_eq!(h.status.as_u16(), 503);
        assert_eq!(header_value(&h, "retry-after").as_deref(), Some("10"));
        assert!(header_value(&h, "www-authenticate").is_none());
    }
}
