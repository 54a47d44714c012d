use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use self::log::Served;
use self::read::{scheme, target_form};
use super::client_certs::presented;
use super::failure::{self, ProxyFailure};
use super::handshake;
use super::headers::{self, Forwarding};
use super::live::{self, LiveRequest};
use super::streams;
use crate::answers::request_id::{REQUEST_ID, request_id_in, request_id_text};
use crate::answers::{self, Answer};
use crate::auth::VerifiedToken;
use crate::client_certs::Thumbprint;
use crate::identity::DOCUMENT_CACHE_CONTROL;
use crate::pipeline::client::{ClientAddress, client_cert};
use crate::pipeline::{
    Adapter, Decision, Forwarded, Pipeline, RequestView, Scheme, UpstreamRewrite,
};
use crate::pipeline::{CompiledRoute, Snapshot};
use crate::state::live::{ConnectionKind, EndReason, LiveConnections};
use crate::telemetry::access;
use crate::telemetry::metrics::NO_ROUTE;
use crate::telemetry::metrics::RequestMetrics;
use crate::telemetry::traces::RequestTrace;
use crate::upstream::RouteUpstream;

mod h2;
mod log;
mod read;
mod trace;

/// What the proxy serves from: the config snapshot decisions are made
/// against, and where each of its routes' requests go, in the order of
/// [`Snapshot::routes`]. A reload replaces both at once.
pub struct Serving {
    pub snapshot: Arc<Snapshot>,
    pub upstreams: Vec<Option<RouteUpstream>>,
}

impl Serving {
    fn upstream(&self, route: &CompiledRoute) -> Option<&RouteUpstream> {
        self.upstreams.get(route.index)?.as_ref()
    }
}

/// The proxy. Holds what it serves from behind an atomic pointer, so a
/// request takes one lock-free load and works from that config to its end.
pub struct Gateway {
    serving: Arc<ArcSwap<Serving>>,
    metrics: RequestMetrics,
    pipeline: Arc<Pipeline>,
    /// Where long-lived requests are armed; `None`: none is.
    live: Option<Arc<LiveConnections>>,
}

impl Gateway {
    /// The proxy deciding with `pipeline`, the one every adapter shares
    /// (its token cache, revocations and rate-limit counters).
    pub fn new(
        serving: Arc<ArcSwap<Serving>>,
        metrics: RequestMetrics,
        pipeline: Arc<Pipeline>,
    ) -> Self {
        Self {
            serving,
            metrics,
            pipeline,
            live: None,
        }
    }

    /// Arms requests that outlive themselves (WebSockets, streams,
    /// uploads) in `live`, so they end with their token.
    pub fn with_live_connections(mut self, live: Arc<LiveConnections>) -> Self {
        self.live = Some(live);
        self
    }

    /// Arms the request as a long-lived `kind` if its route ends such
    /// requests.
    fn arm(&self, session: &Session, ctx: &mut RequestCtx, kind: ConnectionKind) {
        let (Some(live), Some(serving), Some(route)) = (&self.live, &ctx.serving, &ctx.route)
        else {
            return;
        };
        let identity = ctx.identity.as_ref();
        ctx.live = live::arm(live, session, &serving.snapshot, route, identity, kind);
        self.catch_up(ctx);
    }

    /// See [`live::LiveRequest::catch_up`]: one pointer load per armed
    /// request, none for an ordinary one.
    fn catch_up(&self, ctx: &RequestCtx) {
        let (Some(armed), Some(serving), Some(route)) = (&ctx.live, &ctx.serving, &ctx.route)
        else {
            return;
        };
        let current = self.serving.load();
        armed.catch_up(
            &serving.snapshot,
            &current.snapshot,
            route,
            ctx.identity.as_ref(),
        );
    }
}

/// Per-request state shared across phases.
pub struct RequestCtx {
    /// For the access log's latency: unread (and so not taken) when the
    /// access log is filtered out.
    started: Option<Instant>,
    serving: Option<Arc<Serving>>,
    route: Option<Arc<CompiledRoute>>,
    /// Shared by the upstream request, the response and the logs.
    request_id: HeaderValue,
    identity: Option<Arc<VerifiedToken>>,
    /// The authentication outcome (allow, deny, would_deny, anonymous), for
    /// the access log.
    outcome: Option<&'static str>,
    /// Why jwtgate refused, or on an audit route would have refused, for
    /// the access log.
    reason: Option<&'static str>,
    /// Why jwtgate answered the request itself, for the request counter.
    refusal: Option<&'static str>,
    /// The target and `Host` to send upstream when they differ from the
    /// client's.
    upstream: UpstreamRewrite,
    upstream_started: Option<Instant>,
    connect_attempts: usize,
    /// The response is jwtgate's answer to a CORS preflight, complete as built.
    cors_preflight: bool,
    /// Set in `request_filter`; `None` for a peer without an IP address.
    client_address: Option<ClientAddress>,
    /// For the access log: the issuer a refusal was attributed to, the
    /// verified token a route's policy refused (403, or its audit-mode
    /// would_deny), the upstream address last chosen.
    issuer: Option<usize>,
    denied_identity: Option<Arc<VerifiedToken>>,
    upstream_addr: Option<std::net::SocketAddr>,
    /// Whether the client came over TLS; set in `request_filter`.
    scheme: Scheme,
    /// Set when the request outlives itself on a route that ends such
    /// requests with their token; boxed, as most requests have none.
    live: Option<Box<LiveRequest>>,
    /// How an armed request was ended, for the access log.
    ended: Option<&'static str>,
    /// Why an `audit` route would have ended it, for the access log.
    would_end: Option<&'static str>,
    /// The client certificate the request is attributed to.
    client_cert: Option<Thumbprint>,
    /// The request's spans, when tracing is on; boxed, as they are large.
    trace: Option<Box<RequestTrace>>,
}

impl RequestCtx {
    /// The address the request is attributed to: the peer, or, from a
    /// trusted proxy, the client its `X-Forwarded-For` names.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_address.map(|address| address.client)
    }

    /// Where the request's route sends it.
    fn upstream(&self) -> Option<&RouteUpstream> {
        let (serving, route) = (self.serving.as_ref()?, self.route.as_ref()?);
        serving.upstream(route)
    }
}

impl Gateway {
    /// Asks the pipeline about the request. `Some(answer)` ends the
    /// request here; `None` lets it through to the upstream.
    async fn decide(
        &self,
        session: &Session,
        snapshot: &Snapshot,
        ctx: &mut RequestCtx,
    ) -> Option<Answer> {
        let request = session.req_header();
        if let Some(answer) = published_keys(snapshot, request) {
            return Some(answer);
        }
        let view = RequestView {
            method: &request.method,
            raw_target: request.raw_path(),
            target: target_form(request.raw_path()),
            headers: &request.headers,
            client: ctx.client_address,
            scheme: ctx.scheme,
            client_cert_thumbprint: ctx.client_cert,
            adapter: Adapter::Proxy,
            exemplar: ctx.trace.as_ref().and_then(|trace| trace.exemplar()),
        };
        let decision = (self.pipeline)
            .decide_traced(snapshot, &view, ctx.trace.as_deref_mut())
            .await;
        decision.record(snapshot, &self.metrics);
        ctx.outcome = decision.outcome();
        ctx.reason = decision.reason();
        ctx.refusal = decision.refusal();
        ctx.route = decision.route().cloned();
        let request_id = request_id_text(&ctx.request_id);
        let answer = match &decision {
            Decision::Preflight { policy, .. } => {
                ctx.cors_preflight = true;
                Some(answers::preflight(policy, &request.headers, request_id))
            }
            _ => answers::refusal(&decision, &snapshot.realm, request_id),
        };
        match decision {
            Decision::Forward {
                upstream,
                auth: Forwarded::Identity(identity),
                ..
            } => {
                ctx.identity = Some(identity);
                ctx.upstream = upstream;
            }
            Decision::Forward {
                upstream,
                auth: Forwarded::Anonymous,
                ..
            } => ctx.upstream = upstream,
            Decision::Forward {
                upstream,
                auth: Forwarded::WouldDeny(failure),
                ..
            } => {
                ctx.issuer = failure.issuer;
                ctx.denied_identity = failure.refused;
                ctx.upstream = upstream;
            }
            Decision::Deny { failure, .. } => {
                ctx.issuer = failure.issuer;
                ctx.denied_identity = failure.refused;
            }
            _ => {}
        }
        answer
    }
}

/// The identity tokens' JWK Set or discovery document, on a proxy that
/// publishes them (`identity_tokens.publish_on`), ahead of every route.
fn published_keys(snapshot: &Snapshot, request: &RequestHeader) -> Option<Answer> {
    let tokens = snapshot.identity_tokens.as_ref()?;
    let (content_type, body) = tokens.proxy_document(request.uri.path())?;
    http::Response::builder()
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, DOCUMENT_CACHE_CONTROL)
        .body(body.clone())
        .ok()
}

/// `Strict-Transport-Security` on a response over TLS, when configured:
/// never over clear text, where an attacker could forge or strip it (RFC
/// 6797 §7.2). The value was built once; inserting it shares its bytes.
fn add_hsts(ctx: &RequestCtx, snapshot: &Snapshot, response: &mut ResponseHeader) {
    if ctx.scheme != Scheme::Https {
        return;
    }
    if let Some(hsts) = snapshot.https.as_ref().and_then(|h| h.hsts.as_ref()) {
        let _ = response.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
}

/// Who the client is, from the peer address and, if the peer is a trusted
/// proxy, its `X-Forwarded-For`.
fn client_address(session: &Session, snapshot: &Snapshot) -> Option<ClientAddress> {
    let peer = session.client_addr()?.as_inet()?.ip();
    Some(ClientAddress::from_headers(
        peer,
        &session.req_header().headers,
        &snapshot.trusted_proxies,
    ))
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            started: access::enabled().then(Instant::now),
            serving: None,
            route: None,
            request_id: HeaderValue::from_static(""),
            identity: None,
            outcome: None,
            reason: None,
            refusal: None,
            upstream: UpstreamRewrite::default(),
            upstream_started: None,
            connect_attempts: 0,
            cors_preflight: false,
            client_address: None,
            issuer: None,
            denied_identity: None,
            upstream_addr: None,
            scheme: Scheme::Http,
            live: None,
            ended: None,
            would_end: None,
            client_cert: None,
            trace: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let serving = self.serving.load_full();
        let snapshot = &serving.snapshot;
        ctx.request_id = request_id_in(&session.req_header().headers);
        ctx.client_address = client_address(session, snapshot);
        // HTTP/1 only: Pingora reads an HTTP/2 body without a timeout.
        session.set_read_timeout(Some(snapshot.client_body_timeout));
        ctx.scheme = scheme(session);
        ctx.client_cert = client_cert(
            ctx.client_address,
            presented(session),
            snapshot.client_cert_header.as_ref(),
            &session.req_header().headers,
        );
        trace::start(session, ctx);
        let answer = self.decide(session, snapshot, ctx).await;
        let Some(answer) = answer else {
            let arms = ctx.route.as_ref().is_some_and(|r| r.long_lived.arms());
            ctx.serving = Some(serving);
            if arms {
                self.arm_request(session, ctx);
            }
            return Ok(false);
        };
        let (parts, body) = answer.into_parts();
        let mut header = ResponseHeader::from(parts);
        if let Some(policy) = ctx.route.as_ref().and_then(|r| r.cors.as_ref())
            && !ctx.cors_preflight
        {
            policy.decorate(&session.req_header().headers, &mut header);
        }
        add_hsts(ctx, snapshot, &mut header);
        // Kept for the later phases and the log; one pointer load per request.
        ctx.serving = Some(serving);
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session.write_response_body(Some(body), true).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        // Only a routed request with an upstream gets past request_filter.
        let Some(upstream) = ctx.upstream() else {
            return Err(Error::explain(ErrorType::InternalError, "no upstream").into_in());
        };
        let Some(endpoint) = upstream.pool.select() else {
            // A name that has not resolved yet: nothing to connect to.
            return Err(Error::explain(
                ErrorType::ConnectNoRoute,
                "no upstream address has resolved yet",
            )
            .into_up());
        };
        let addr = endpoint.addr;
        let mut peer = match &upstream.tls {
            None => HttpPeer::new(addr, false, String::new()),
            Some(tls) => tls.peer(addr, endpoint.origin),
        };
        peer.options.connection_timeout = Some(upstream.connect_timeout);
        peer.options.read_timeout = Some(upstream.read_timeout);
        peer.options.write_timeout = Some(upstream.write_timeout);
        peer.options.idle_timeout = Some(upstream.keepalive_timeout);
        ctx.upstream_addr = Some(addr);
        ctx.connect_attempts += 1;
        if let Some(trace) = &mut ctx.trace {
            let host = Some(peer.sni.as_str()).filter(|sni| !sni.is_empty());
            let method = session.req_header().method.as_str();
            trace.upstream_call(method, addr, host, peer.is_tls());
        }
        ctx.upstream_started.get_or_insert_with(Instant::now);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(route) = &ctx.route {
            handshake::log_failed_handshake(route, peer, &ctx.request_id, &e);
        }
        // Set the endpoint aside for a while, and try each endpoint of the
        // route once before giving up.
        let pool = ctx.upstream().map(|upstream| &upstream.pool);
        if let (Some(pool), Some(addr)) = (&pool, ctx.upstream_addr) {
            pool.eject(addr);
        }
        let addresses = pool.map_or(1, |pool| pool.len());
        if ctx.connect_attempts < addresses {
            e.set_retry(true);
        }
        e
    }

    /// Pingora writes an ERROR line for every request that failed; one the
    /// client failed is in the access log already, with its `error`.
    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, error: &Error) -> bool {
        // An armed request jwtgate ended is no failure: the access log says
        // why it ended.
        ProxyFailure::of(error).is_client()
            || ctx.live.as_ref().is_some_and(|live| live.fired().is_some())
    }

    /// Pingora's default answers with its own bare status page; ours has
    /// the JSON body, `X-Request-Id`, and 504 for timeouts.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        if let Some(code) = self.answer_ended(session, ctx).await {
            return FailToProxy {
                error_code: code,
                can_reuse_downstream: false,
            };
        }
        FailToProxy {
            error_code: failure::answer_failure(
                session,
                e,
                &mut ctx.request_id,
                ctx.route.as_ref().and_then(|route| route.cors.as_deref()),
            )
            .await,
            can_reuse_downstream: false,
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let (Some(serving), Some(route)) = (&ctx.serving, &ctx.route) else {
            return Ok(());
        };
        if let Some(target) = &ctx.upstream.target {
            upstream_request.set_raw_path(target)?;
        }
        if let Some(host) = &ctx.upstream.host {
            upstream_request.insert_header(http::header::HOST, host.as_slice())?;
        }
        headers::rewrite(
            upstream_request,
            &Forwarding {
                route,
                identity_headers: &serving.snapshot.identity_headers,
                identity: ctx.identity.as_deref(),
                request_id: &ctx.request_id,
                client: ctx.client_address,
                scheme: ctx.scheme,
                client_cert_header: serving.snapshot.client_cert_header.as_ref(),
                replaces_trace_context: ctx.trace.is_some(),
            },
        );
        if let Some(identity) = &ctx.identity
            && let Some((name, value)) =
                self.pipeline
                    .identity_token(&serving.snapshot, route, identity)
        {
            upstream_request.insert_header(name.clone(), value)?;
        }
        trace::carry_on(ctx, upstream_request);
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let _ = upstream_response.insert_header(REQUEST_ID, ctx.request_id.clone());
        if let Some(trace) = &mut ctx.trace {
            trace.upstream_status(upstream_response.status.as_u16());
        }
        if let Some(policy) = ctx.route.as_ref().and_then(|r| r.cors.as_ref()) {
            policy.decorate(&session.req_header().headers, upstream_response);
        }
        if let Some(serving) = &ctx.serving {
            add_hsts(ctx, &serving.snapshot, upstream_response);
        }
        let arms = ctx.route.as_ref().is_some_and(|r| r.long_lived.arms());
        if arms && ctx.live.is_none() {
            self.arm_response(session, upstream_response, ctx);
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        match &mut ctx.live {
            Some(live) => live.client_bytes(session, body, end_of_stream).await,
            None => Ok(()),
        }
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(live) = &mut ctx.live {
            live.upstream_bytes(body.as_ref())?;
        }
        Ok(None)
    }

    /// What Pingora prints in its error logs. Its default includes the query
    /// string, where a route with `token_query` carries the token.
    fn request_summary(&self, session: &Session, ctx: &Self::CTX) -> String {
        let request = session.req_header();
        let route = ctx.route.as_ref().map_or(NO_ROUTE, |r| r.name.as_str());
        format!(
            "{} {} route={route} request_id={}",
            request.method,
            request.uri.path(),
            request_id_text(&ctx.request_id)
        )
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Self::CTX) {
        if let Some(live) = ctx.live.take() {
            let (ended, would_end) = live.end(session);
            ctx.ended = ended.map(EndReason::as_str);
            ctx.would_end = would_end.map(EndReason::as_str);
        }
        log::record(&self.metrics, &Served::of(session), error, ctx);
    }
}

impl Gateway {
    /// Answers an upload whose token ended before its response began:
    /// `401`; the status written, 0 when nothing could be, `None` when the
    /// request was not ended by jwtgate.
    async fn answer_ended(&self, session: &mut Session, ctx: &RequestCtx) -> Option<u16> {
        let live = ctx.live.as_ref().filter(|live| live.fired().is_some())?;
        if session.is_http2() {
            return Some(streams::end_with_trailers(session, live.fired()?).await);
        }
        if session.response_written().is_some() {
            return Some(0);
        }
        let serving = ctx.serving.as_ref()?;
        let (parts, body) = live
            .refusal(&serving.snapshot, &ctx.request_id)?
            .into_parts();
        let status = parts.status.as_u16();
        let header = ResponseHeader::from(parts);
        let written = session
            .as_downstream_mut()
            .write_error_response(header, body)
            .await;
        Some(if written.is_ok() { status } else { 0 })
    }
}
