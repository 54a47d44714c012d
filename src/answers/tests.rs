use super::*;
use crate::auth::Reason;

fn header_value(answer: &Answer, name: &str) -> Option<String> {
    answer
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

#[test]
fn missing_token_challenge_has_no_error_code() {
    let h = rejection(&Rejection::no_token(), "jwtgate", "rid");
    assert_eq!(h.status().as_u16(), 401);
    assert_eq!(
        header_value(&h, "www-authenticate").as_deref(),
        Some("Bearer realm=\"jwtgate\"")
    );
    let body: serde_json::Value = serde_json::from_slice(h.body()).unwrap();
    assert_eq!(body["request_id"], "rid");
}

#[test]
fn insufficient_scope_names_the_scope() {
    let r = Rejection::forbidden(Reason::InsufficientScope, Some("orders:read".into()));
    let h = rejection(&r, "api", "rid");
    assert_eq!(h.status().as_u16(), 403);
    assert_eq!(
        header_value(&h, "www-authenticate").as_deref(),
        Some(
            "Bearer realm=\"api\", error=\"insufficient_scope\", error_description=\"insufficient scope\", scope=\"orders:read\""
        )
    );
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
        let h = failure(status, "rid-1");
        assert_eq!(h.status().as_u16(), status);
        assert_eq!(header_value(&h, "x-request-id").as_deref(), Some("rid-1"));
        assert_eq!(
            header_value(&h, "cache-control").as_deref(),
            Some("no-store")
        );
        assert_eq!(
            header_value(&h, "content-length"),
            Some(h.body().len().to_string())
        );
        let body: serde_json::Value = serde_json::from_slice(h.body()).unwrap();
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
    let h = failure(200, "rid");
    assert_eq!(h.status().as_u16(), 500);
    let body: serde_json::Value = serde_json::from_slice(h.body()).unwrap();
    assert_eq!(body["error"], "internal_error");
}

#[test]
fn unavailable_asks_to_retry() {
    let h = rejection(&Rejection::unavailable(), "api", "rid");
    assert_eq!(h.status().as_u16(), 503);
    assert_eq!(header_value(&h, "retry-after").as_deref(), Some("10"));
    assert!(header_value(&h, "www-authenticate").is_none());
}
