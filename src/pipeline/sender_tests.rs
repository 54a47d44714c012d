//! Sender-constrained tokens through the whole decision: no downgrade of a
//! bound token to a bearer one on any route, and each route's
//! `auth.sender_constraint`. Proofs themselves are checked in
//! `auth::dpop`'s tests and end to end in tests/dpop.rs.

use http::{HeaderMap, HeaderValue, Method};
use serde_json::{Value, json};

use super::support_tests::{MAIN, NOW, compiled, rs256};
use super::*;
use crate::auth::RejectionKind;
use crate::auth::dpop::DpopFailure;
use crate::client_certs::Thumbprint;
use crate::clock::ManualClock;

const CONFIG: &str = r#"
listen: { http: "127.0.0.1:0" }
admin: { addr: "127.0.0.1:1" }
issuers:
  - name: main
    issuer: https://main.pipeline.test
    algorithms: [RS256]
    audiences: [api]
    jwks_file: jwks.json
routes:
  - name: open
    match: { path_prefix: /open }
    upstream: { addrs: ["127.0.0.1:9"] }
  - name: dpop
    match: { path_prefix: /dpop }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { sender_constraint: dpop }
  - name: mtls
    match: { path_prefix: /mtls }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { sender_constraint: mtls }
  - name: any
    match: { path_prefix: /any }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { sender_constraint: any }
"#;

fn token(cnf: Option<Value>) -> String {
    let mut claims = json!({
        "iss": MAIN, "sub": "alice", "aud": "api", "iat": NOW, "exp": NOW + 300,
    });
    if let Some(cnf) = cnf {
        claims["cnf"] = cnf;
    }
    rs256(&claims)
}

fn certificate() -> Thumbprint {
    Thumbprint::of_der(b"the client's certificate")
}

struct Sent {
    headers: HeaderMap,
    certificate: Option<Thumbprint>,
}

impl Sent {
    fn authorization(value: String) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_str(&value).unwrap());
        Self {
            headers,
            certificate: None,
        }
    }

    fn bearer(token: &str) -> Self {
        Self::authorization(format!("Bearer {token}"))
    }

    fn with_certificate(mut self) -> Self {
        self.certificate = Some(certificate());
        self
    }

    fn proof(mut self, proof: &str) -> Self {
        self.headers
            .append("dpop", HeaderValue::from_str(proof).unwrap());
        self
    }

    /// What the pipeline makes of this request to `path`: `Ok` with the
    /// route it was let through, or the refusal's reason and kind.
    fn to(&self, path: &str) -> Result<String, (String, RejectionKind)> {
        let snapshot = compiled(CONFIG);
        let pipeline = Pipeline::new(ManualClock::at(NOW), None).without_refetch();
        let view = RequestView {
            method: &Method::GET,
            raw_target: path.as_bytes(),
            target: TargetForm::Origin {
                path_and_query: path.as_bytes(),
            },
            headers: &self.headers,
            client: None,
            scheme: Scheme::Https,
            client_cert_thumbprint: self.certificate,
            adapter: Adapter::Proxy,
            exemplar: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        match runtime.block_on(pipeline.decide(&snapshot, &view)) {
            Decision::Forward { route, .. } => Ok(route.name.clone()),
            Decision::Deny { failure, .. } => {
                assert_eq!(failure.check, SENDER_CHECK);
                let rejection = &failure.rejection;
                Err((
                    rejection.reason.as_str().to_string(),
                    rejection.kind.clone(),
                ))
            }
            other => panic!("neither allowed nor denied: {other:?}"),
        }
    }
}

fn reason(outcome: Result<String, (String, RejectionKind)>) -> String {
    outcome.expect_err("refused").0
}

#[test]
fn a_bound_token_without_its_proof_is_refused_on_every_route() {
    let key_bound = token(Some(
        json!({ "jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I" }),
    ));
    let cert_bound = token(Some(json!({ "x5t#S256": certificate().as_str() })));
    for path in ["/open", "/dpop", "/mtls", "/any"] {
        let refused = Sent::bearer(&key_bound).to(path);
        assert_eq!(
            refused,
            Err((
                "dpop_missing_proof".to_string(),
                RejectionKind::InvalidToken
            )),
            "{path}"
        );
        let no_certificate = Sent::bearer(&cert_bound).to(path);
        assert_eq!(reason(no_certificate), "certificate_mismatch", "{path}");
    }
    // Another certificate than the one it is bound to is no better.
    let other = token(Some(
        json!({ "x5t#S256": Thumbprint::of_der(b"another").as_str() }),
    ));
    assert_eq!(
        reason(Sent::bearer(&other).with_certificate().to("/open")),
        "certificate_mismatch"
    );
}

#[test]
fn each_route_requires_the_binding_it_names() {
    let bearer = token(None);
    let cert_bound = token(Some(json!({ "x5t#S256": certificate().as_str() })));
    assert_eq!(Sent::bearer(&bearer).to("/open"), Ok("open".into()));
    for path in ["/dpop", "/mtls", "/any"] {
        assert_eq!(
            reason(Sent::bearer(&bearer).to(path)),
            "sender_constraint_required",
            "{path}"
        );
        // A client certificate alone binds nothing: the token must name it.
        assert_eq!(
            reason(Sent::bearer(&bearer).with_certificate().to(path)),
            "sender_constraint_required"
        );
    }
    let presented = || Sent::bearer(&cert_bound).with_certificate();
    assert_eq!(presented().to("/open"), Ok("open".into()));
    assert_eq!(presented().to("/mtls"), Ok("mtls".into()));
    assert_eq!(presented().to("/any"), Ok("any".into()));
    assert_eq!(
        reason(presented().to("/dpop")),
        "sender_constraint_required"
    );
}

#[test]
fn the_dpop_scheme_needs_exactly_one_proof_and_a_bound_token() {
    let bearer = token(None);
    let dpop = |token: &str| Sent::authorization(format!("DPoP {token}"));
    assert_eq!(reason(dpop(&bearer).to("/open")), "dpop_missing_proof");
    let twice = dpop(&bearer).proof("a.b.c").proof("d.e.f").to("/open");
    assert_eq!(
        twice,
        Err((
            DpopFailure::MultipleProofs.as_str().to_string(),
            RejectionKind::InvalidRequest
        ))
    );
    assert_eq!(
        dpop(&bearer).proof("not a proof").to("/dpop"),
        Err((
            "dpop_malformed".to_string(),
            RejectionKind::InvalidDpopProof
        ))
    );
}
