//! Sender-constrained tokens: a token bound to a key (`cnf.jkt`, DPoP,
//! RFC 9449) or to a client certificate (`cnf["x5t#S256"]`, RFC 8705) is
//! accepted only with the proof of it, on every route, so a stolen bound
//! token is useless; a route's `auth.sender_constraint` may also refuse
//! tokens bound neither way. Checked after the token itself, so a bad
//! token is refused for what is wrong with it first.

use http::HeaderMap;

use super::canonical::RequestTarget;
use super::view::{Adapter, RequestView, Scheme};
use crate::auth::dpop::{
    self, DEFAULT_MAX_PROOF_BYTES, DpopFailure, IatWindow, NonceSource, ProofExpectations,
    VerifiedProof,
};
use crate::auth::extract::Credential;
use crate::auth::json::JsonRef;
use crate::auth::{Reason, Rejection, RejectionKind, VerifiedToken};
use crate::config::schema::SenderConstraint;
use crate::jose::AlgorithmSet;

/// `auth.sender_constraint` and `auth.dpop` compiled.
#[derive(Debug)]
pub struct SenderPolicy {
    pub constraint: SenderConstraint,
    /// The algorithms a DPoP proof may be signed with.
    pub algorithms: AlgorithmSet,
    pub window: IatWindow,
    /// Set when proofs must carry a nonce the gateway issued.
    pub nonces: Option<NonceSource>,
    /// `algs="ES256 EdDSA"`, built once for the `DPoP` challenge.
    pub algs: String,
}

impl SenderPolicy {
    /// Whether a plain `Bearer` token can be enough here (then the answer
    /// to a refusal offers the `Bearer` challenge).
    pub fn accepts_bearer(&self) -> bool {
        self.constraint != SenderConstraint::Dpop
    }

    /// Whether DPoP proofs are accepted here (then it offers `DPoP`).
    pub fn accepts_dpop(&self) -> bool {
        self.constraint != SenderConstraint::Mtls
    }

    /// The refusal of a failed DPoP check; a missing or stale nonce comes
    /// with the one to use.
    fn refusal(&self, failure: DpopFailure, now: i64) -> Rejection {
        let nonce = match failure {
            DpopFailure::NonceRequired | DpopFailure::BadNonce => {
                self.nonces.as_ref().map(|nonces| nonces.current(now))
            }
            _ => None,
        };
        Rejection::dpop(failure, nonce)
    }
}

/// What the request proves about its sender, checked against the verified
/// token and the route: `Ok` with the proof to remember (its `jti` must be
/// new), or the refusal.
pub fn check(
    policy: &SenderPolicy,
    view: &RequestView<'_>,
    target: &RequestTarget<'_>,
    presented: Credential<'_>,
    token: &VerifiedToken,
    now: i64,
) -> Result<Option<VerifiedProof>, Rejection> {
    // A plain bearer token where one is enough: nothing more to check.
    if !token.bound && !presented.dpop && policy.constraint == SenderConstraint::None {
        return Ok(None);
    }
    let proof = match presented.dpop {
        true => Some(proof(policy, view, target, presented.token, now)?),
        false => None,
    };
    dpop::check_binding(&token.claims, proof.as_ref()).map_err(|f| policy.refusal(f, now))?;
    let certificate = certificate_binding(token)?;
    if let Some(bound) = certificate {
        let presented = view.client_cert_thumbprint;
        if presented.as_ref().map(|t| t.as_str()) != Some(bound) {
            return Err(Rejection::invalid_token(Reason::CertificateMismatch));
        }
    }
    let constrained = match policy.constraint {
        SenderConstraint::None => true,
        SenderConstraint::Dpop => proof.is_some(),
        SenderConstraint::Mtls => certificate.is_some(),
        SenderConstraint::Any => proof.is_some() || certificate.is_some(),
    };
    if !constrained {
        return Err(Rejection::invalid_token(Reason::SenderConstraintRequired));
    }
    Ok(proof)
}

/// The request's one DPoP proof, verified.
fn proof(
    policy: &SenderPolicy,
    view: &RequestView<'_>,
    target: &RequestTarget<'_>,
    access_token: &str,
    now: i64,
) -> Result<VerifiedProof, Rejection> {
    let mut proofs = view.headers.get_all("dpop").iter();
    let refuse = |failure| policy.refusal(failure, now);
    let proof = proofs
        .next()
        .ok_or_else(|| refuse(DpopFailure::MissingProof))?;
    if proofs.next().is_some() {
        return Err(refuse(DpopFailure::MultipleProofs));
    }
    let proof = proof.to_str().map_err(|_| refuse(DpopFailure::Malformed))?;
    let htu = htu(view, target);
    let expect = ProofExpectations {
        method: view.method.as_str(),
        htu: &htu,
        access_token: Some(access_token),
        algorithms: policy.algorithms,
        iat_window: policy.window,
        nonces: policy.nonces.as_ref(),
        max_bytes: DEFAULT_MAX_PROOF_BYTES,
    };
    dpop::verify_proof(proof, &expect, now).map_err(refuse)
}

/// The token's `cnf["x5t#S256"]`, if it is bound to a certificate.
fn certificate_binding(token: &VerifiedToken) -> Result<Option<&str>, Rejection> {
    let bound = token
        .claims
        .get("cnf")
        .and_then(JsonRef::as_object)
        .and_then(|cnf| cnf.get("x5t#S256"));
    match bound {
        None => Ok(None),
        Some(JsonRef::String(thumbprint)) => Ok(Some(thumbprint)),
        // A binding jwtgate can't read binds to nothing it could check.
        Some(_) => Err(Rejection::invalid_token(Reason::CertificateMismatch)),
    }
}

/// The URI the client sent the request to, as a proof's `htu` names it:
/// scheme and host as the client used them (from a trusted proxy's
/// `X-Forwarded-Proto`/`-Host` when it came through one), and the path.
fn htu(view: &RequestView<'_>, target: &RequestTarget<'_>) -> String {
    let forwarded = |name: &str| {
        let trusted = view.adapter == Adapter::Proxy && view.client.is_some_and(|c| c.peer_trusted);
        trusted.then(|| single(view.headers, name)).flatten()
    };
    let scheme = forwarded("x-forwarded-proto").unwrap_or(match view.scheme {
        Scheme::Https => "https",
        Scheme::Http => "http",
    });
    let host = forwarded("x-forwarded-host")
        .or_else(|| target.authority.and_then(|a| std::str::from_utf8(a).ok()))
        .or_else(|| single(view.headers, "host"))
        .unwrap_or_default();
    format!("{scheme}://{host}{}", target.path)
}

/// A header's one value as text; `None` when absent, repeated or not text.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    values
        .next()
        .is_none()
        .then(|| value.to_str().ok())
        .flatten()
}

/// What a refusal tells the client about proofs of possession: the error
/// of a failed proof goes in the `DPoP` challenge.
pub fn error_in_dpop_challenge(rejection: &Rejection, policy: &SenderPolicy) -> bool {
    rejection.is_about_the_proof()
        || !policy.accepts_bearer()
        || matches!(rejection.kind, RejectionKind::UseDpopNonce { .. })
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use http::Method;

    use super::*;
    use crate::pipeline::canonical::PathRules;
    use crate::pipeline::client::ClientAddress;
    use crate::pipeline::view::TargetForm;

    /// The `htu` of `GET /orders/../api?x=1` with `headers`, from a peer
    /// that is a trusted proxy or not, over `scheme`.
    fn htu_of(headers: &[(&str, &str)], trusted: bool, scheme: Scheme) -> String {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let path = b"/orders/../api?x=1";
        let view = RequestView {
            method: &Method::GET,
            raw_target: path,
            target: TargetForm::Origin {
                path_and_query: path,
            },
            headers: &map,
            client: Some(ClientAddress {
                peer,
                peer_trusted: trusted,
                client: peer,
            }),
            scheme,
            client_cert_thumbprint: None,
            adapter: Adapter::Proxy,
            exemplar: None,
        };
        let hosts = map.get_all("host").iter().map(|v| v.as_bytes());
        let target = RequestTarget::new(None, path, hosts, &PathRules::default()).unwrap();
        htu(&view, &target)
    }

    #[test]
    fn the_htu_is_what_the_client_used_and_forwarding_headers_count_from_trusted_proxies() {
        let forwarded = [
            ("host", "gateway.internal:8080"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example.com"),
        ];
        assert_eq!(
            htu_of(&forwarded, true, Scheme::Http),
            "https://api.example.com/api"
        );
        // From anyone else the headers are the client's own words.
        assert_eq!(
            htu_of(&forwarded, false, Scheme::Http),
            "http://gateway.internal:8080/api"
        );
        assert_eq!(
            htu_of(&[("host", "api.example.com")], false, Scheme::Https),
            "https://api.example.com/api"
        );
        // Two values: which one the client used is unknown, so neither.
        let twice = [
            ("host", "api.example.com"),
            ("x-forwarded-host", "a.example"),
            ("x-forwarded-host", "b.example"),
        ];
        assert_eq!(
            htu_of(&twice, true, Scheme::Https),
            "https://api.example.com/api"
        );
    }
}
