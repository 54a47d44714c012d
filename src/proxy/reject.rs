//! Rejection responses in RFC 6750 form: a `WWW-Authenticate: Bearer`
//! challenge and a small JSON body. The body says what a client can act on
//! and nothing more; the precise reason goes to logs and metrics.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use serde_json::json;

use crate::auth::{Rejection, RejectionKind};

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
    json_response(
        404,
        &json!({
            "error": "not_found",
            "error_description": "no route matches this request",
            "request_id": request_id,
        }),
        request_id,
    )
}

/// A request target jwtgate won't route: ambiguous, malformed or with two
/// hosts. Which rule refused it goes to the access log only.
pub fn bad_target(request_id: &str) -> (ResponseHeader, Bytes) {
    json_response(
        400,
        &json!({
            "error": "bad_request",
            "error_description": "the request path or host is malformed or ambiguous",
            "request_id": request_id,
        }),
        request_id,
    )
}

/// A request refused before routing (over a request limit), in the same
/// body shape as every other jwtgate answer.
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

/// The path's route exists, but not for this method; `allow` lists the
/// methods it has.
pub fn method_not_allowed(allow: &str, request_id: &str) -> (ResponseHeader, Bytes) {
    let (mut header, body) = json_response(
        405,
        &json!({
            "error": "method_not_allowed",
            "error_description": "this route does not accept this method",
            "request_id": request_id,
        }),
        request_id,
    );
    insert(&mut header, "allow", allow);
    (header, body)
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
    // Auth failures must not be cached by anything between us and the client.
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
    fn unavailable_asks_to_retry() {
        let (h, _) = rejection(&Rejection::unavailable(), "api", "rid");
        assert_eq!(h.status.as_u16(), 503);
        assert_eq!(header_value(&h, "retry-after").as_deref(), Some("10"));
        assert!(header_value(&h, "www-authenticate").is_none());
    }
}
