//! The authorization adapter: jwtgate as the auth server of a front proxy
//! that stays in place (NGINX `auth_request`, Traefik and Caddy forward
//! auth, Envoy's HTTP `ext_authz`). It reads the original request from the
//! headers the front proxy sends, asks the same [`Pipeline`] the proxy
//! asks, and answers in the words front proxies understand: `200` with the
//! identity headers to copy upstream, or the proxy's own rejection (RFC 6750
//! status, challenge and JSON body, built by [`crate::proxy::reject`]) for
//! the front proxy to pass to the client.
//!
//! The headers describing the original request are believed here, and only
//! here: this listener serves the front proxy, never clients, which is why
//! it has an address of its own (see docs/SECURITY.md).

pub mod envoy;
pub mod grpc;
pub mod settings;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use aws_lc_rs::constant_time::verify_slices_are_equal;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response};
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;

use self::settings::{AuthzSettings, SharedSecret};
use crate::auth::claims;
use crate::auth::token_cache::TokenCache;
use crate::clock::SharedClock;
use crate::config::schema::AuthzConvention;
use crate::pipeline::client::ClientAddress;
use crate::pipeline::{ClaimHeader, Snapshot};
use crate::pipeline::{Decision, Pipeline, Refusal, RequestView, Scheme, TargetForm};
use crate::proxy::headers::{REQUEST_ID, request_id, request_id_text};
use crate::proxy::reject;
use crate::state::rate_limit::RateLimits;
use crate::state::revocation::RevocationList;
use crate::state::revocation::settings::sha256;
use crate::telemetry::Metrics;
use crate::telemetry::logging::{ACCESS_TARGET, Truncated};
use crate::telemetry::metrics::NO_ROUTE;

/// The access log's `adapter` for decision requests.
pub const ADAPTER: &str = "authz";

/// The access log's `adapter` for Envoy's gRPC `Authorization/Check`.
pub const ADAPTER_GRPC: &str = "authz_grpc";

/// The access log's `reason` for a decision request without the shared
/// secret: it never reached the pipeline.
pub const SECRET_MISSING: &str = "authz_secret_mismatch";

/// The access log's `reason` for a decision request that does not say
/// which request it asks about.
pub const ORIGINAL_MISSING: &str = "authz_original_request_missing";

pub struct AuthzServer {
    settings: AuthzSettings,
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    pipeline: Pipeline,
    /// What the access log names this listener.
    adapter: &'static str,
}

impl AuthzServer {
    /// Shares the proxy's token cache, so a token verified through either
    /// listener is a hit on the other.
    pub fn new(
        settings: AuthzSettings,
        snapshot: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        clock: SharedClock,
        cache: Option<TokenCache>,
    ) -> Self {
        let pipeline = Pipeline::new(clock, cache).timed(metrics.verify_duration.clone());
        Self {
            settings,
            snapshot,
            metrics,
            pipeline,
            adapter: ADAPTER,
        }
    }

    pub fn with_rate_limits(mut self, limits: Arc<RateLimits>) -> Self {
        self.pipeline = self.pipeline.with_rate_limits(limits);
        self
    }

    pub fn with_revocations(mut self, list: Option<Arc<RevocationList>>) -> Self {
        self.pipeline = self.pipeline.with_revocations(list);
        self
    }
}

/// Shared state the listener reads: the snapshot, the metrics, the clock.
pub type Shared = (Arc<ArcSwap<Snapshot>>, Arc<Metrics>, SharedClock);

/// The listener as a Pingora service of its own, on its own address, with
/// as many threads as the proxy (`server.threads`): its work is the same
/// decision the proxy makes, for every request the front proxy serves.
pub fn service(
    settings: AuthzSettings,
    (snapshot, metrics, clock): Shared,
    cache: Option<TokenCache>,
    revocations: Option<Arc<RevocationList>>,
    rate_limits: Arc<RateLimits>,
) -> Service<HttpServer<AuthzServer>> {
    let addr = settings.addr.clone();
    // The proxy's own counters: a client's budget is one, whichever
    // adapter its requests are decided by.
    let app = AuthzServer::new(settings, snapshot, metrics, clock, cache)
        .with_revocations(revocations)
        .with_rate_limits(rate_limits);
    let mut service = Service::new("jwtgate authz".to_string(), HttpServer::new_app(app));
    service.add_tcp(&addr);
    service
}

/// The request a decision request asks about, borrowed from its headers.
struct Original<'a> {
    method: Method,
    /// Origin form: `/path?query`.
    target: &'a [u8],
    /// The host it was sent to, when the convention carries it apart from
    /// the check request's own `Host`.
    host: Option<&'a [u8]>,
    scheme: Scheme,
}

/// A convention header's one value. Two values mean someone besides the
/// front proxy wrote one (a proxy that appends instead of replacing lets
/// the client's through): which is the original request is then unknown.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    values.next().is_none().then_some(value.as_bytes())
}

impl<'a> Original<'a> {
    /// `None` when a header the convention needs is missing or malformed.
    fn read(
        settings: &AuthzSettings,
        method: &Method,
        own_target: &'a [u8],
        headers: &'a HeaderMap,
    ) -> Option<Self> {
        let mut scheme = match header(headers, "x-forwarded-proto") {
            Some(proto) if proto.eq_ignore_ascii_case(b"https") => Scheme::Https,
            _ => Scheme::Http,
        };
        let (method, target, host) = match settings.convention {
            AuthzConvention::IngressNginx => {
                let url = split_url(header(headers, "x-original-url")?)?;
                scheme = url.0;
                (
                    parse_method(header(headers, "x-original-method")?)?,
                    url.2,
                    Some(url.1),
                )
            }
            AuthzConvention::Nginx => (
                parse_method(header(headers, "x-original-method")?)?,
                header(headers, "x-original-uri")?,
                None,
            ),
            AuthzConvention::Forwarded => (
                parse_method(header(headers, "x-forwarded-method")?)?,
                header(headers, "x-forwarded-uri")?,
                header(headers, "x-forwarded-host"),
            ),
            AuthzConvention::Envoy => {
                let rest = own_target.strip_prefix(settings.path_prefix.as_bytes())?;
                (method.clone(), rest, None)
            }
        };
        Some(Self {
            method,
            target,
            host,
            scheme,
        })
    }

    fn target_form(&self) -> TargetForm<'a> {
        if self.target.first() != Some(&b'/') {
            return TargetForm::Unsupported;
        }
        match self.host {
            // The pipeline routes on an absolute-form authority before any
            // `Host`, so the check request's own `Host` (the auth server's
            // name) is never taken for the original one.
            Some(authority) => TargetForm::Absolute {
                authority,
                path_and_query: self.target,
            },
            None => TargetForm::Origin {
                path_and_query: self.target,
            },
        }
    }

    fn path(&self) -> &'a [u8] {
        let end = self
            .target
            .iter()
            .position(|&b| b == b'?')
            .unwrap_or(self.target.len());
        &self.target[..end]
    }
}

/// `scheme://authority/path?query` (ingress-nginx's
/// `$scheme://$http_host$request_uri`) as scheme, authority and target.
fn split_url(url: &[u8]) -> Option<(Scheme, &[u8], &[u8])> {
    let at = url.windows(3).position(|w| w == b"://")?;
    let scheme = match &url[..at] {
        s if s.eq_ignore_ascii_case(b"https") => Scheme::Https,
        s if s.eq_ignore_ascii_case(b"http") => Scheme::Http,
        _ => return None,
    };
    let rest = &url[at + 3..];
    let slash = rest.iter().position(|&b| b == b'/')?;
    Some((scheme, &rest[..slash], &rest[slash..]))
}

/// Method tokens are case-sensitive (RFC 9110 §9.1); `http` accepts any
/// token, so an extension method still routes (or is refused) as on the
/// proxy.
fn parse_method(bytes: &[u8]) -> Option<Method> {
    Method::from_bytes(bytes).ok()
}

fn secret_matches(secret: &SharedSecret, headers: &HeaderMap) -> bool {
    let Some(presented) = headers.get(&secret.header) else {
        return false;
    };
    verify_slices_are_equal(&sha256(presented.as_bytes()), &secret.digest).is_ok()
}

/// What the access log says about one decision request.
#[derive(Default)]
struct Logged<'a> {
    method: Option<&'a Method>,
    path: Option<&'a [u8]>,
    route: Option<&'a str>,
    sub: Option<&'a str>,
    issuer: Option<&'a str>,
    outcome: Option<&'static str>,
    reason: Option<&'static str>,
    client: Option<ClientAddress>,
    user_agent: Option<&'a HeaderValue>,
}

impl<'a> Logged<'a> {
    /// What the access log says of a decided request, on either transport.
    fn decided(
        decision: &'a Decision<'a>,
        snapshot: &'a Snapshot,
        original: &'a Original<'a>,
        client: Option<ClientAddress>,
        user_agent: Option<&'a HeaderValue>,
    ) -> Self {
        let identity = match decision {
            Decision::Allow { identity, .. } => Some(identity),
            _ => decision
                .denial()
                .and_then(|denial| denial.refused_identity.as_ref()),
        };
        let issuer = identity
            .map(|i| i.issuer)
            .or_else(|| decision.denial().and_then(|d| d.issuer));
        Self {
            method: Some(&original.method),
            path: Some(original.path()),
            route: decision.route().map(|r| r.name.as_str()),
            sub: identity.and_then(|i| i.subject()),
            issuer: issuer.map(|i| snapshot.issuers[i].name.as_str()),
            outcome: decision.outcome(),
            reason: decision.reason(),
            client,
            user_agent,
        }
    }
}

/// The client behind the front proxy at `peer`: its `X-Forwarded-For` is
/// believed only from a trusted proxy, as on the proxy listener.
fn client_address(peer: IpAddr, headers: &http::HeaderMap, snapshot: &Snapshot) -> ClientAddress {
    let forwarded_for = headers
        .get_all(&crate::proxy::headers::FORWARDED_FOR_NAME)
        .iter()
        .map(HeaderValue::as_bytes);
    ClientAddress::resolve(peer, forwarded_for, &snapshot.trusted_proxies)
}

/// The answer to a decision request without the shared secret.
fn unauthenticated(request_id: &str) -> (ResponseHeader, Bytes) {
    reject::refused(
        403,
        "forbidden",
        "the decision request is not authenticated",
        request_id,
    )
}

/// The identity headers an allowed request carries upstream: each claim
/// the route forwards that the token has, rendered as a header value.
fn identity_headers<'a>(
    identity: &'a crate::auth::VerifiedToken,
    forward: &'a [ClaimHeader],
) -> impl Iterator<Item = (&'a ClaimHeader, String)> + 'a {
    forward.iter().filter_map(move |header| {
        // header_value() refuses anything invalid in a header.
        let value =
            claims::lookup(&identity.claims, &header.claim).and_then(claims::header_value)?;
        Some((header, value))
    })
}

/// The answer to an allowed request: `200`, no body, the identity headers
/// the route forwards.
fn allowed(
    identity: Option<&crate::auth::VerifiedToken>,
    forward: &[ClaimHeader],
    request_id: &str,
) -> (ResponseHeader, Bytes) {
    let mut header = ResponseHeader::build(200, Some(4 + forward.len())).expect("valid status");
    let _ = header.insert_header(http::header::CONTENT_LENGTH, "0");
    let _ = header.insert_header(http::header::CACHE_CONTROL, "no-store");
    let _ = header.insert_header(REQUEST_ID, request_id);
    if let Some(identity) = identity {
        for (claim, value) in identity_headers(identity, forward) {
            let _ = header.insert_header(claim.sent_as.clone(), value);
        }
    }
    (header, Bytes::new())
}

/// The decision in the words front proxies read: the same builders, so
/// the same status, challenge and body, as the proxy's own answers.
fn answer(
    decision: &Decision<'_>,
    snapshot: &Snapshot,
    request_id: &str,
) -> (ResponseHeader, Bytes) {
    match decision {
        Decision::Allow {
            route, identity, ..
        } => allowed(Some(identity), &route.forward.claims, request_id),
        // The front proxy forwards these as it would an allowed one, and
        // sends the identity headers it copies empty, so none arrive. A
        // preflight carries no credentials: the upstream (or the front
        // proxy) answers it with its own CORS policy.
        Decision::Anonymous { .. } | Decision::WouldDeny { .. } | Decision::Preflight { .. } => {
            allowed(None, &[], request_id)
        }
        Decision::Deny { denial, .. } => {
            reject::rejection(&denial.rejection, &snapshot.realm, request_id)
        }
        Decision::Refuse(Refusal::Limit(exceeded)) => {
            let (error, description) = exceeded.error();
            reject::refused(exceeded.status(), error, description, request_id)
        }
        Decision::Refuse(Refusal::Target(_)) => reject::bad_target(request_id),
        Decision::Refuse(Refusal::MethodNotAllowed { allow }) => {
            reject::method_not_allowed(allow, request_id)
        }
        Decision::RateLimited { limited, .. } => reject::rate_limited(limited, request_id),
        Decision::NoRoute => reject::not_found(request_id),
        Decision::HttpsRequired { location, .. } => match location {
            Some(location) => reject::https_redirect(location, request_id),
            None => reject::https_forbidden(request_id),
        },
    }
}

fn into_response((header, body): (ResponseHeader, Bytes)) -> Response<Vec<u8>> {
    Response::from_parts(header.as_owned_parts(), body.to_vec())
}

#[async_trait]
impl ServeHttp for AuthzServer {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let started = Instant::now();
        let snapshot = self.snapshot.load_full();
        let request = session.req_header();
        let id = request_id(request);
        let request_id = request_id_text(&id);
        let headers = &request.headers;
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|peer| client_address(peer.ip(), headers, &snapshot));
        let user_agent = headers.get(http::header::USER_AGENT);
        let refused = |reason| Logged {
            client,
            user_agent,
            reason: Some(reason),
            ..Logged::default()
        };

        if let Some(secret) = &self.settings.secret
            && !secret_matches(secret, headers)
        {
            let response = unauthenticated(request_id);
            let logged = refused(SECRET_MISSING);
            return self.finish(response, &logged, request_id, started);
        }
        let original = Original::read(&self.settings, &request.method, request.raw_path(), headers);
        let Some(original) = original else {
            let response = reject::refused(
                400,
                "bad_request",
                "the decision request does not describe the original request",
                request_id,
            );
            let logged = refused(ORIGINAL_MISSING);
            return self.finish(response, &logged, request_id, started);
        };
        let view = RequestView {
            method: &original.method,
            raw_target: original.target,
            target: original.target_form(),
            headers,
            client,
            scheme: original.scheme,
        };
        let decision = self.pipeline.decide(&snapshot, &view).await;
        decision.record(&snapshot, &self.metrics);
        let response = answer(&decision, &snapshot, request_id);

        let status = response.0.status.as_u16();
        let body_len = response.1.len();
        let logged = Logged::decided(&decision, &snapshot, &original, client, user_agent);
        self.account(&decision, &logged, request_id, status, body_len, started);
        into_response(response)
    }
}

/// The access log's bound on client-chosen text, as on the proxy.
const LOGGED_TEXT_BYTES: usize = 256;

impl AuthzServer {
    /// An answer given before the pipeline was asked: counted without a
    /// route, logged with why.
    fn finish(
        &self,
        response: (ResponseHeader, Bytes),
        logged: &Logged<'_>,
        request_id: &str,
        started: Instant,
    ) -> Response<Vec<u8>> {
        let status = response.0.status.as_u16();
        let body_len = response.1.len();
        self.metrics.count_request(NO_ROUTE, None, status);
        self.access_log(logged, request_id, status, body_len, started);
        into_response(response)
    }

    /// Counts a decided request under its route and logs it, as the proxy
    /// does for the requests it decides.
    fn account(
        &self,
        decision: &Decision<'_>,
        logged: &Logged<'_>,
        request_id: &str,
        status: u16,
        body_len: usize,
        started: Instant,
    ) {
        let route = decision.route();
        self.metrics.count_request(
            route.map_or(NO_ROUTE, |r| r.name.as_str()),
            route.map(|r| &r.series),
            status,
        );
        self.access_log(logged, request_id, status, body_len, started);
    }

    /// The proxy's access-log line, field for field, with `adapter=authz`
    /// (or `authz_grpc`): `method` and `path` are the original request's.
    fn access_log(
        &self,
        logged: &Logged<'_>,
        request_id: &str,
        status: u16,
        bytes_out: usize,
        started: Instant,
    ) {
        if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
            return;
        }
        let user_agent = logged
            .user_agent
            .map(|ua| String::from_utf8_lossy(ua.as_bytes()));
        let path = logged.path.map(String::from_utf8_lossy);
        let latency_ms = started.elapsed().as_micros() as f64 / 1000.0;
        tracing::info!(
            target: ACCESS_TARGET,
            request_id = %request_id,
            method = logged.method.map(tracing::field::display),
            path = path
                .as_deref()
                .map(|p| tracing::field::display(Truncated::new(p, LOGGED_TEXT_BYTES))),
            route = logged.route,
            status,
            sub = logged
                .sub
                .map(|sub| tracing::field::display(Truncated::new(sub, LOGGED_TEXT_BYTES))),
            issuer = logged.issuer,
            outcome = logged.outcome,
            reason = logged.reason,
            client = logged.client.map(|c| tracing::field::display(c.client)),
            user_agent = user_agent
                .as_deref()
                .map(|ua| tracing::field::display(Truncated::new(ua, LOGGED_TEXT_BYTES))),
            bytes_in = 0u64,
            bytes_out = bytes_out as u64,
            upstream = None::<&str>,
            latency_ms,
            error = None::<&str>,
            adapter = self.adapter,
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(convention: AuthzConvention, path_prefix: &str) -> AuthzSettings {
        AuthzSettings {
            addr: "127.0.0.1:1".into(),
            convention,
            path_prefix: path_prefix.into(),
            secret: None,
            grpc_addr: None,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn each_convention_reads_its_own_headers_only() {
        let all = headers(&[
            ("x-original-method", "DELETE"),
            ("x-original-uri", "/nginx?q=1"),
            ("x-forwarded-method", "PUT"),
            ("x-forwarded-uri", "/traefik"),
            ("x-forwarded-host", "api.test"),
            ("x-forwarded-proto", "https"),
        ]);
        let nginx = settings(AuthzConvention::Nginx, "");
        let original = Original::read(&nginx, &Method::GET, b"/auth", &all).unwrap();
        assert_eq!(
            (original.method.as_str(), original.target),
            ("DELETE", &b"/nginx?q=1"[..])
        );
        assert_eq!(original.host, None);
        assert_eq!(original.path(), b"/nginx");
        assert_eq!(original.scheme, Scheme::Https);

        let forwarded = settings(AuthzConvention::Forwarded, "");
        let original = Original::read(&forwarded, &Method::GET, b"/auth", &all).unwrap();
        assert_eq!(
            (original.method.as_str(), original.target),
            ("PUT", &b"/traefik"[..])
        );
        assert_eq!(original.host, Some(&b"api.test"[..]));

        let ingress = settings(AuthzConvention::IngressNginx, "");
        let with_url = headers(&[
            ("x-original-method", "GET"),
            ("x-original-uri", "/spoofed"),
            ("x-original-url", "https://API.test:8443/orders/1?x=/y"),
        ]);
        let original = Original::read(&ingress, &Method::GET, b"/", &with_url).unwrap();
        assert_eq!(original.target, b"/orders/1?x=/y");
        assert_eq!(original.host, Some(&b"API.test:8443"[..]));
        assert_eq!(original.scheme, Scheme::Https);
        assert!(Original::read(&ingress, &Method::GET, b"/", &all).is_none());

        let envoy = settings(AuthzConvention::Envoy, "/check");
        let original = Original::read(&envoy, &Method::POST, b"/check/api/x?y", &all).unwrap();
        assert_eq!(
            (original.method.as_str(), original.target),
            ("POST", &b"/api/x?y"[..])
        );
    }

    #[test]
    fn a_missing_original_request_is_not_guessed() {
        let none = headers(&[("x-original-uri", "/a")]);
        for convention in [
            AuthzConvention::Nginx,
            AuthzConvention::IngressNginx,
            AuthzConvention::Forwarded,
        ] {
            let s = settings(convention, "");
            assert!(Original::read(&s, &Method::GET, b"/a", &none).is_none());
        }
        let twice = headers(&[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/public/x"),
            ("x-forwarded-uri", "/read/x"),
        ]);
        let forwarded = settings(AuthzConvention::Forwarded, "");
        assert!(Original::read(&forwarded, &Method::GET, b"/", &twice).is_none());

        let envoy = settings(AuthzConvention::Envoy, "/check");
        assert!(Original::read(&envoy, &Method::GET, b"/other/a", &none).is_none());
        // `/checkout` is not below `/check`: the rest must be a path.
        let original = Original::read(&envoy, &Method::GET, b"/checkout", &none).unwrap();
        assert_eq!(original.target_form(), TargetForm::Unsupported);
    }

    #[test]
    fn the_secret_is_compared_by_digest() {
        let secret = SharedSecret {
            header: http::HeaderName::from_static("x-secret"),
            digest: sha256(b"right"),
        };
        assert!(secret_matches(&secret, &headers(&[("x-secret", "right")])));
        assert!(!secret_matches(&secret, &headers(&[("x-secret", "wrong")])));
        assert!(!secret_matches(&secret, &headers(&[("x-secret", "righ")])));
        assert!(!secret_matches(&secret, &headers(&[])));
    }
}
