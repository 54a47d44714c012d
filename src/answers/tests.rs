use super::*;
use crate::auth::Reason;
use crate::auth::dpop::{DpopFailure, IatWindow, NonceSource};
use crate::config::schema::SenderConstraint;
use crate::jose::Algorithm;

fn header_value(answer: &Answer, name: &str) -> Option<String> {
    answer
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

#[test]
fn missing_token_challenge_has_no_error_code() {
    let h = rejection(&Rejection::no_token(), "jwtgate", None, "rid");
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
    let h = rejection(&r, "api", None, "rid");
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
    let h = rejection(&Rejection::unavailable(), "api", None, "rid");
    assert_eq!(h.status().as_u16(), 503);
    assert_eq!(header_value(&h, "retry-after").as_deref(), Some("10"));
    assert!(header_value(&h, "www-authenticate").is_none());
}

fn challenges(answer: &Answer) -> Vec<String> {
    answer
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn sender(constraint: SenderConstraint, nonces: Option<NonceSource>) -> SenderPolicy {
    SenderPolicy {
        constraint,
        algorithms: [Algorithm::ES256, Algorithm::EdDSA].into_iter().collect(),
        window: IatWindow {
            past_secs: 60,
            future_secs: 10,
        },
        nonces,
        algs: "algs=\"ES256 EdDSA\"".into(),
    }
}

/// RFC 9449 §7.1: where both are accepted, both challenges; the error of
/// a failed proof in the `DPoP` one, a bad token's in the `Bearer` one.
#[test]
fn dpop_routes_challenge_with_dpop_and_its_algorithms() {
    let both = sender(SenderConstraint::None, None);
    let expired = Rejection::invalid_token(Reason::Expired);
    assert_eq!(
        challenges(&rejection(&expired, "api", Some(&both), "rid")),
        [
            "Bearer realm=\"api\", error=\"invalid_token\", error_description=\"token expired\"",
            "DPoP realm=\"api\", algs=\"ES256 EdDSA\"",
        ]
    );
    let replayed = Rejection::dpop(DpopFailure::Replayed, None);
    let answer = rejection(&replayed, "api", Some(&both), "rid");
    assert_eq!(answer.status().as_u16(), 401);
    assert_eq!(
        challenges(&answer),
        [
            "Bearer realm=\"api\"",
            "DPoP realm=\"api\", algs=\"ES256 EdDSA\", error=\"invalid_dpop_proof\", error_description=\"invalid DPoP proof\"",
        ]
    );
    let only_dpop = sender(SenderConstraint::Dpop, None);
    let bearer = Rejection::invalid_token(Reason::SenderConstraintRequired);
    assert_eq!(
        challenges(&rejection(&bearer, "api", Some(&only_dpop), "rid")),
        [
            "DPoP realm=\"api\", algs=\"ES256 EdDSA\", error=\"invalid_token\", error_description=\"sender-constrained token required\""
        ]
    );
    let only_mtls = sender(SenderConstraint::Mtls, None);
    assert_eq!(
        challenges(&rejection(
            &Rejection::no_token(),
            "api",
            Some(&only_mtls),
            "rid"
        )),
        ["Bearer realm=\"api\""]
    );
}

#[test]
fn a_missing_nonce_is_answered_with_the_nonce_to_use() {
    let nonces = NonceSource::new(std::time::Duration::from_secs(60));
    let nonce = nonces.current(1_000);
    let policy = sender(SenderConstraint::Dpop, Some(nonces));
    let refusal = Rejection::dpop(DpopFailure::NonceRequired, Some(nonce.clone()));
    let answer = rejection(&refusal, "api", Some(&policy), "rid");
    assert_eq!(answer.status().as_u16(), 401);
    assert_eq!(header_value(&answer, "dpop-nonce"), Some(nonce));
    assert!(
        challenges(&answer)[0].contains("error=\"use_dpop_nonce\""),
        "{:?}",
        challenges(&answer)
    );
    let unavailable = Rejection::dpop(DpopFailure::ReplayUnavailable, None);
    let answer = rejection(&unavailable, "api", Some(&policy), "rid");
    assert_eq!(answer.status().as_u16(), 503);
    assert!(header_value(&answer, "retry-after").is_some());
}
