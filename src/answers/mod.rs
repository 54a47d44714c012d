//! Every answer jwtgate writes itself, for every adapter: a [`Decision`]
//! that refuses becomes a status, headers and a body here and nowhere else,
//! so the proxy, the HTTP authorization listener and Envoy's gRPC
//! `ext_authz` answer a request byte for byte alike. Rejections speak RFC
//! 6750 (a `WWW-Authenticate: Bearer` challenge); every body is
//! `{error, error_description, request_id}`, generic: the precise reason
//! goes to logs and metrics, never to the client. Answers are plain `http`
//! responses; an adapter moves them into its own type without copying.

pub mod request_id;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use serde_json::json;

use self::request_id::REQUEST_ID_NAME;
use crate::auth::{Rejection, RejectionKind};
use crate::pipeline::cors::CorsPolicy;
use crate::pipeline::sender::{self, SenderPolicy};
use crate::pipeline::{Decision, HTTPS_REQUIRED, Refusal};
use crate::state::rate_limit::Limited;

/// An answer of jwtgate's own.
pub type Answer = Response<Bytes>;

/// Seconds a client should wait before retrying when keys are unavailable.
const RETRY_AFTER_SECS: &str = "10";

/// The answer to a decision that refuses the request; `None` for one that
/// lets it through (`Forward`, whatever authentication made of it) and for
/// a CORS preflight, whose answer depends on the adapter (see
/// [`preflight`]).
pub fn refusal(decision: &Decision<'_>, realm: &str, request_id: &str) -> Option<Answer> {
    Some(match decision {
        Decision::Forward { .. } | Decision::Preflight { .. } => return None,
        Decision::Deny { failure, route } => {
            rejection(&failure.rejection, realm, Some(&route.sender), request_id)
        }
        Decision::Refuse(Refusal::Limit(exceeded)) => {
            let (error, description) = exceeded.error();
            refused(exceeded.status(), error, description, request_id)
        }
        Decision::Refuse(Refusal::Target(_)) => refused(
            400,
            "bad_request",
            "the request path or host is malformed or ambiguous",
            request_id,
        ),
        Decision::Refuse(Refusal::MethodNotAllowed { allow }) => {
            let mut answer = refused(
                405,
                "method_not_allowed",
                "this route does not accept this method",
                request_id,
            );
            insert(answer.headers_mut(), http::header::ALLOW, allow);
            answer
        }
        Decision::RateLimited { limited, .. } => rate_limited(limited, request_id),
        Decision::NoRoute => refused(
            404,
            "not_found",
            "no route matches this request",
            request_id,
        ),
        Decision::HttpsRequired { location, .. } => https_required(location.as_deref(), request_id),
    })
}

/// A rejection by the route's authentication, with its challenges (or
/// `Retry-After` when keys are unavailable, which is no fault of the
/// client's credentials): `Bearer` and, where the route takes DPoP
/// proofs, `DPoP` with the algorithms it accepts (RFC 9449 §7.1); the
/// error goes in the challenge of what failed.
pub fn rejection(
    rejection: &Rejection,
    realm: &str,
    sender: Option<&SenderPolicy>,
    request_id: &str,
) -> Answer {
    let description = rejection.description();
    let error = rejection.error_code().unwrap_or("unauthorized");
    let mut answer = refused(rejection.status(), error, description, request_id);
    if rejection.kind == RejectionKind::Unavailable {
        insert(
            answer.headers_mut(),
            http::header::RETRY_AFTER,
            RETRY_AFTER_SECS,
        );
        return answer;
    }
    let realm = format!("realm=\"{}\"", quoted(realm));
    let mut error = String::new();
    if let Some(code) = rejection.error_code() {
        error = format!(", error=\"{code}\", error_description=\"{description}\"");
    }
    if let RejectionKind::InsufficientScope {
        required: Some(scope),
    } = &rejection.kind
    {
        error.push_str(&format!(", scope=\"{}\"", quoted(scope)));
    }
    let in_dpop = sender.is_some_and(|policy| sender::error_in_dpop_challenge(rejection, policy));
    let headers = answer.headers_mut();
    if sender.is_none_or(SenderPolicy::accepts_bearer) {
        let bearer_error = if in_dpop { "" } else { &error };
        append(headers, &format!("Bearer {realm}{bearer_error}"));
    }
    if let Some(policy) = sender.filter(|policy| policy.accepts_dpop()) {
        let dpop_error = if in_dpop { error.as_str() } else { "" };
        append(
            headers,
            &format!("DPoP {realm}, {}{dpop_error}", policy.algs),
        );
    }
    if let RejectionKind::UseDpopNonce { nonce } = &rejection.kind {
        insert(headers, HeaderName::from_static("dpop-nonce"), nonce);
    }
    answer
}

/// One more `WWW-Authenticate` challenge.
fn append(headers: &mut http::HeaderMap, challenge: &str) {
    if let Ok(value) = http::HeaderValue::from_str(challenge) {
        headers.append(http::header::WWW_AUTHENTICATE, value);
    }
}

/// A request over a rate limit: 429 with when to retry, in `Retry-After`
/// and in the IETF `RateLimit` / `RateLimit-Policy` fields
/// (draft-ietf-httpapi-ratelimit-headers) naming the limit that refused it.
fn rate_limited(limited: &Limited<'_>, request_id: &str) -> Answer {
    static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
    static STATE: HeaderName = HeaderName::from_static("ratelimit");
    let mut answer = refused(
        429,
        "rate_limited",
        "too many requests; retry later",
        request_id,
    );
    let mut seconds = itoa::Buffer::new();
    let headers = answer.headers_mut();
    insert(
        headers,
        http::header::RETRY_AFTER,
        seconds.format(limited.retry_after),
    );
    headers.insert(POLICY.clone(), limited.limit.policy.clone());
    headers.insert(
        STATE.clone(),
        limited.limit.state_header(limited.retry_after),
    );
    answer
}

/// A clear-text request where only HTTPS is served: 308 (the method and
/// body are kept, unlike 301) to the same path and query over HTTPS, or
/// 403 when there is nowhere to redirect to.
fn https_required(location: Option<&[u8]>, request_id: &str) -> Answer {
    let description = "this resource is served over HTTPS only";
    let Some(location) = location else {
        return refused(403, HTTPS_REQUIRED, description, request_id);
    };
    let mut answer = refused(308, HTTPS_REQUIRED, description, request_id);
    answer.headers_mut().insert(
        http::header::LOCATION,
        HeaderValue::from_bytes(location)
            .expect("built from a request target and host that parsed"),
    );
    answer
}

/// The answer to a CORS preflight the route's policy decides: `204` with
/// the CORS headers, or `403` with a JSON body and none of them.
pub fn preflight(policy: &CorsPolicy, request: &HeaderMap, request_id: &str) -> Answer {
    let mut headers = HeaderMap::with_capacity(8);
    match policy.preflight(request, &mut headers) {
        Ok(()) => {
            insert(&mut headers, REQUEST_ID_NAME.clone(), request_id);
            let mut answer = Response::new(Bytes::new());
            *answer.status_mut() = StatusCode::NO_CONTENT;
            *answer.headers_mut() = headers;
            answer
        }
        Err(refusal) => refused(
            403,
            "cors_preflight_refused",
            refusal.description(),
            request_id,
        ),
    }
}

/// What a failed request's answer says, by status.
const FAILURES: [(u16, &str, &str); 7] = [
    (502, "bad_gateway", "the upstream service failed to answer"),
    (
        504,
        "gateway_timeout",
        "the upstream service did not answer in time",
    ),
    (
        408,
        "request_timeout",
        "the request was not received in time",
    ),
    (413, "content_too_large", "the request body is too large"),
    (414, "uri_too_long", "the request target is too long"),
    (
        431,
        "request_header_fields_too_large",
        "the request headers are too large",
    ),
    (503, "service_unavailable", "the service is unavailable"),
];

/// The answer to a request that failed on its way through: `status` with
/// the JSON body every jwtgate response has. The description is as generic
/// as the status; why it failed goes to the log only.
pub fn failure(status: u16, request_id: &str) -> Answer {
    let (error, description) = match FAILURES.iter().find(|(code, ..)| *code == status) {
        Some((_, error, description)) => (*error, *description),
        None if (400..500).contains(&status) => ("bad_request", "the request could not be handled"),
        None => ("internal_error", "the gateway failed to handle the request"),
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
/// has: `{error, error_description, request_id}`. Never cached by anything
/// between jwtgate and the client.
pub fn refused(status: u16, error: &str, description: &str, request_id: &str) -> Answer {
    let body = json!({
        "error": error,
        "error_description": description,
        "request_id": request_id,
    });
    let body = Bytes::from(body.to_string());
    let mut headers = HeaderMap::with_capacity(6);
    insert(&mut headers, CONTENT_TYPE, "application/json");
    let mut length = itoa::Buffer::new();
    insert(&mut headers, CONTENT_LENGTH, length.format(body.len()));
    insert(&mut headers, CACHE_CONTROL, "no-store");
    insert(&mut headers, REQUEST_ID_NAME.clone(), request_id);
    let mut answer = Response::new(body);
    *answer.status_mut() = StatusCode::from_u16(status).expect("a status jwtgate chose");
    *answer.headers_mut() = headers;
    answer
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    headers.insert(
        name,
        HeaderValue::from_str(value).expect("header values built here are valid"),
    );
}

/// Realm and scope names come from config; keep them inside the quotes.
fn quoted(value: &str) -> String {
    value.replace(['"', '\\'], "")
}

#[cfg(test)]
mod tests;
