//! The authorization adapter: jwtgate as the auth server of a front proxy
//! that stays in place (NGINX `auth_request`, Traefik and Caddy forward
//! auth, Envoy's HTTP `ext_authz`). It reads the original request from the
//! headers the front proxy sends, asks the same [`Pipeline`] the proxy
//! asks, and answers in the words front proxies understand: `200` with the
//! identity headers to copy upstream, or the proxy's own rejection (RFC 6750
//! status, challenge and JSON body, built by [`crate::answers`]) for the
//! front proxy to pass to the client.
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
use http::{HeaderMap, HeaderValue, Method, Response};
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;

use self::settings::{AuthzSettings, SharedSecret};
use crate::answers::request_id::{REQUEST_ID_NAME, request_id_in, request_id_text};
use crate::answers::{self, Answer};
use crate::client_certs::Thumbprint;
use crate::config::schema::AuthzConvention;
use crate::digest::sha256;
use crate::pipeline::client::{ClientAddress, client_cert};
use crate::pipeline::{
    Adapter, Decision, Forwarded, Pipeline, RequestView, Scheme, Snapshot, TargetForm,
};
use crate::telemetry::access::{self, AccessRecord};
use crate::telemetry::metrics::{NO_ROUTE, RequestLabels, RequestMetrics};
use crate::telemetry::traces::{self, RequestHead, RequestTrace};

/// The access log's `reason` for a decision request without the shared
/// secret: it never reached the pipeline.
pub const SECRET_MISSING: &str = "authz_secret_mismatch";

/// The access log's `reason` for a decision request that does not say
/// which request it asks about.
pub const ORIGINAL_MISSING: &str = "authz_original_request_missing";

pub struct AuthzServer {
    settings: AuthzSettings,
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: RequestMetrics,
    /// The proxy's own: a token verified through either is a cache hit on
    /// the other, and a client's rate-limit budget is one whichever decides.
    pipeline: Arc<Pipeline>,
    /// What the access log names this listener.
    adapter: Adapter,
}

impl AuthzServer {
    pub fn new(
        settings: AuthzSettings,
        snapshot: Arc<ArcSwap<Snapshot>>,
        metrics: RequestMetrics,
        pipeline: Arc<Pipeline>,
    ) -> Self {
        Self {
            settings,
            snapshot,
            metrics,
            pipeline,
            adapter: Adapter::Authz,
        }
    }
}

/// The listener as a Pingora service of its own, on its own address, with
/// as many threads as the proxy (`server.threads`): its work is the same
/// decision the proxy makes, for every request the front proxy serves.
pub fn service(server: AuthzServer) -> Service<HttpServer<AuthzServer>> {
    let addr = server.settings.addr.clone();
    let mut service = Service::new("jwtgate authz".to_string(), HttpServer::new_app(server));
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

    /// The original request as the pipeline reads it.
    fn view<'v>(
        &'v self,
        headers: &'v HeaderMap,
        asked: &Asked<'_>,
        adapter: Adapter,
    ) -> RequestView<'v> {
        RequestView {
            method: &self.method,
            raw_target: self.target,
            target: self.target_form(),
            headers,
            client: asked.client,
            scheme: self.scheme,
            client_cert_thumbprint: asked.client_cert,
            adapter,
            exemplar: asked.trace.as_ref().and_then(|trace| trace.exemplar()),
        }
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

/// What the access log says of a decided request, on either transport.
fn decided<'a>(
    decision: &'a Decision<'a>,
    snapshot: &'a Snapshot,
    original: &'a Original<'a>,
) -> AccessRecord<'a> {
    let identity = match decision {
        Decision::Forward {
            auth: Forwarded::Identity(identity),
            ..
        } => Some(identity),
        _ => decision
            .failure()
            .and_then(|failure| failure.refused.as_ref()),
    };
    let issuer = identity
        .map(|i| i.issuer)
        .or_else(|| decision.failure().and_then(|f| f.issuer));
    AccessRecord {
        method: Some(original.method.as_str()),
        path: Some(original.path()),
        route: decision.route().map(|r| r.name.as_str()),
        sub: identity.and_then(|i| i.subject()),
        issuer: issuer.map(|i| snapshot.issuers[i].name.as_str()),
        outcome: decision.outcome(),
        reason: decision.reason(),
        ..AccessRecord::default()
    }
}

/// The client behind the front proxy at `peer`: its `X-Forwarded-For` is
/// believed only from a trusted proxy, as on the proxy listener.
fn client_address(peer: IpAddr, headers: &HeaderMap, snapshot: &Snapshot) -> ClientAddress {
    ClientAddress::from_headers(peer, headers, &snapshot.trusted_proxies)
}

/// The answer to a decision request without the shared secret.
fn unauthenticated(request_id: &str) -> Answer {
    answers::refused(
        403,
        "forbidden",
        "the decision request is not authenticated",
        request_id,
    )
}

/// The answer to a decision request that doesn't say which request it asks
/// about.
fn no_original(request_id: &str) -> Answer {
    answers::refused(
        400,
        "bad_request",
        "the decision request does not describe the original request",
        request_id,
    )
}

/// The answer to an allowed request: `200`, no body, the identity headers
/// the route forwards.
fn allowed(
    decision: &Decision<'_>,
    snapshot: &Snapshot,
    pipeline: &Pipeline,
    request_id: &str,
) -> Answer {
    let mut answer = Response::new(bytes::Bytes::new());
    let headers = answer.headers_mut();
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_NAME.clone(), id);
    }
    if let Decision::Forward {
        route,
        auth: Forwarded::Identity(identity),
        ..
    } = decision
    {
        for (claim, value) in route.forward.identity_values(identity) {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(claim.name.clone(), value);
            }
        }
        if let Some((name, value)) = pipeline.identity_token(snapshot, route, identity) {
            headers.insert(name.clone(), value);
        }
    }
    answer
}

/// The decision in the words front proxies read: `200` for what the proxy
/// would forward (identity headers only for `Forwarded::Identity`; the
/// front proxy sends the ones it copies empty otherwise, so none arrive),
/// the proxy's own answer for the rest. A preflight carries no credentials: the upstream
/// (or the front proxy) answers it with its own CORS policy.
fn answer(
    decision: &Decision<'_>,
    snapshot: &Snapshot,
    pipeline: &Pipeline,
    request_id: &str,
) -> Answer {
    answers::refusal(decision, &snapshot.realm, request_id)
        .unwrap_or_else(|| allowed(decision, snapshot, pipeline, request_id))
}

fn into_response(answer: Answer) -> Response<Vec<u8>> {
    answer.map(|body| body.to_vec())
}

#[async_trait]
impl ServeHttp for AuthzServer {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let snapshot = self.snapshot.load_full();
        let request = session.req_header();
        let headers = &request.headers;
        let peer = session.client_addr().and_then(|a| a.as_inet());
        let peer = peer.map(|peer| peer.ip());
        let mut asked = Asked::new(headers, peer, &snapshot, self.adapter);
        if let Some(secret) = &self.settings.secret
            && !secret_matches(secret, headers)
        {
            let answer = unauthenticated(asked.request_id());
            return into_response(self.finish(answer, &mut asked, SECRET_MISSING));
        }
        let original = Original::read(&self.settings, &request.method, request.raw_path(), headers);
        let Some(original) = original else {
            let answer = no_original(asked.request_id());
            return into_response(self.finish(answer, &mut asked, ORIGINAL_MISSING));
        };
        let decision = self.decide(&snapshot, &original, headers, &mut asked).await;
        let answer = answer(&decision, &snapshot, &self.pipeline, asked.request_id());
        into_response(self.account(&decision, &snapshot, &original, &mut asked, answer))
    }
}

impl AuthzServer {
    /// Asks the pipeline about the original request, telling the trace
    /// what it is.
    async fn decide<'s>(
        &self,
        snapshot: &'s Snapshot,
        original: &Original<'_>,
        headers: &HeaderMap,
        asked: &mut Asked<'_>,
    ) -> Decision<'s> {
        let view = original.view(headers, asked, self.adapter);
        // An unsampled request's head is never looked at.
        if let Some(trace) = asked.trace.as_mut().filter(|trace| trace.sampled()) {
            trace.request_head(RequestHead {
                method: original.method.as_str(),
                path: original.path(),
                https: original.scheme == Scheme::Https,
                http2: false,
                client: asked.client.map(|c| c.client),
                user_agent: asked.user_agent.map(HeaderValue::as_bytes),
                host: original
                    .host
                    .or_else(|| headers.get(http::header::HOST).map(HeaderValue::as_bytes)),
            });
        }
        self.pipeline
            .decide_traced(snapshot, &view, asked.trace.as_deref_mut())
            .await
    }
}

/// What every decision request has, decided or not: its id, its client
/// (the original request's) and, for the access log, when it came.
struct Asked<'a> {
    id: HeaderValue,
    client: Option<ClientAddress>,
    /// The client certificate the front proxy says the original request
    /// came with (`server.client_cert_header`, from a trusted proxy).
    client_cert: Option<Thumbprint>,
    user_agent: Option<&'a HeaderValue>,
    started: Instant,
    /// The decision's spans, when tracing is on.
    trace: Option<Box<RequestTrace>>,
}

impl<'a> Asked<'a> {
    /// `headers` are the original request's; `peer` is who sent it.
    fn new(
        headers: &'a HeaderMap,
        peer: Option<IpAddr>,
        snapshot: &Snapshot,
        adapter: Adapter,
    ) -> Self {
        let client = peer.map(|ip| client_address(ip, headers, snapshot));
        // The front proxy is the peer: its trace context is the original
        // request's, continued when the front proxy is trusted.
        let trusted = client.is_some_and(|c| c.peer_trusted);
        let trace =
            traces::installed().map(|tracing| tracing.request(headers, trusted, adapter.as_str()));
        Self {
            id: request_id_in(headers),
            client,
            client_cert: client_cert(client, None, snapshot.client_cert_header.as_ref(), headers),
            user_agent: headers.get(http::header::USER_AGENT),
            started: Instant::now(),
            trace,
        }
    }

    fn request_id(&self) -> &str {
        request_id_text(&self.id)
    }
}

impl AuthzServer {
    /// An answer given before the pipeline was asked: counted without a
    /// route, logged with why.
    fn finish(&self, answer: Answer, asked: &mut Asked<'_>, reason: &'static str) -> Answer {
        let labels = self.labels(&answer, Some(reason));
        self.metrics.count_request(NO_ROUTE, None, labels);
        self.log(
            AccessRecord {
                reason: Some(reason),
                ..AccessRecord::default()
            },
            asked,
            &answer,
        );
        answer
    }

    /// Counts a decided request under its route and logs it, as the proxy
    /// does for the requests it decides.
    fn account(
        &self,
        decision: &Decision<'_>,
        snapshot: &Snapshot,
        original: &Original<'_>,
        asked: &mut Asked<'_>,
        answer: Answer,
    ) -> Answer {
        decision.record(snapshot, &self.metrics);
        let route = decision.route();
        self.metrics.count_request(
            route.map_or(NO_ROUTE, |r| r.name.as_str()),
            route.map(|r| &r.series),
            self.labels(&answer, decision.refusal()),
        );
        self.log(decided(decision, snapshot, original), asked, &answer);
        answer
    }

    /// The `jwtgate_requests_total` labels of an answer: the front proxy
    /// forwards what jwtgate allows, so none has an `error`.
    fn labels(&self, answer: &Answer, reason: Option<&'static str>) -> RequestLabels {
        RequestLabels {
            adapter: self.adapter.as_str(),
            status: answer.status().as_u16(),
            reason,
            error: None,
        }
    }

    /// The proxy's access-log line, field for field, with `adapter=authz`
    /// (or `authz_grpc`): `method` and `path` are the original request's.
    fn log(&self, record: AccessRecord<'_>, asked: &mut Asked<'_>, answer: &Answer) {
        let status = answer.status().as_u16();
        let trace = asked.trace.take();
        let ids = trace.as_ref().map(|trace| trace.ids());
        if let Some(trace) = trace {
            trace.finish(Some(status), None);
        }
        if !access::enabled() {
            return;
        }
        AccessRecord {
            request_id: asked.request_id(),
            status: Some(answer.status().as_u16()),
            client: asked.client.map(|c| c.client),
            client_cert: asked.client_cert.as_ref().map(Thumbprint::as_str),
            user_agent: asked.user_agent.map(HeaderValue::as_bytes),
            bytes_out: answer.body().len() as u64,
            started: Some(asked.started),
            adapter: self.adapter.as_str(),
            trace: ids,
            ..record
        }
        .write();
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
