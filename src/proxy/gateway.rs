use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::authority::{RawTargetAuthority, raw_target_authority};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use super::canonical::{RequestTarget, TargetError};
use super::client::ClientAddress;
use super::cors;
use super::headers::{self, Forwarding};
use super::reject::{self, ProxyFailure};
use super::router::Lookup;
use crate::auth::cache::TokenCache;
use crate::auth::extract::{self, HeaderSource};
use crate::auth::verify::Failure;
use crate::auth::{Reason, Rejection, VerifiedToken};
use crate::clock::SharedClock;
use crate::config::schema::AuthMode;
use crate::config::{CompiledRoute, Snapshot};
use crate::keys::KeyStore;
use crate::telemetry::Metrics;
use crate::telemetry::logging::{ACCESS_TARGET, Truncated};
use crate::telemetry::metrics::{ALLOW, ANONYMOUS, DENY, NO_ISSUER, NO_ROUTE};

/// The proxy. Holds the current config snapshot behind an atomic pointer,
/// so a request takes one lock-free load and works from that snapshot to
/// its end.
pub struct Gateway {
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    cache: Option<TokenCache>,
}

impl Gateway {
    pub fn new(
        snapshot: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        clock: SharedClock,
        cache: Option<TokenCache>,
    ) -> Self {
        Self {
            snapshot,
            metrics,
            clock,
            cache,
        }
    }
}

/// Per-request state shared across phases.
pub struct RequestCtx {
    started: Instant,
    snapshot: Option<Arc<Snapshot>>,
    route: Option<Arc<CompiledRoute>>,
    request_id: String,
    identity: Option<Arc<VerifiedToken>>,
    /// Why the request was refused, for the access log.
    reason: Option<Reason>,
    /// Why the request was refused before any route was chosen (a bad
    /// target, a method the route lacks), for the access log.
    refused: Option<&'static str>,
    /// The origin-form target to send upstream when it differs from the
    /// client's (a canonicalized path, an absolute-form request).
    upstream_target: Option<Vec<u8>>,
    /// The `Host` to send upstream: an absolute-form request's authority.
    upstream_host: Option<Vec<u8>>,
    upstream_started: Option<Instant>,
    connect_attempts: usize,
    /// The response is jwtgate's answer to a CORS preflight, complete as built.
    cors_preflight: bool,
    /// Set in `request_filter`; `None` for a peer without an IP address.
    client_address: Option<ClientAddress>,
    /// For the access log: the issuer a refusal was attributed to, the
    /// verified token a route's policy refused (403), the upstream address
    /// last chosen.
    issuer: Option<usize>,
    denied_identity: Option<Arc<VerifiedToken>>,
    upstream_addr: Option<std::net::SocketAddr>,
}

impl RequestCtx {
    /// The address the request is attributed to: the peer, or, from a
    /// trusted proxy, the client its `X-Forwarded-For` names.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_address.map(|address| address.client)
    }

    /// Why jwtgate itself answered, for the access log.
    fn refusal_reason(&self) -> Option<&'static str> {
        self.reason.map(Reason::as_str).or(self.refused)
    }
}

struct RequestHeaders<'a>(&'a RequestHeader);

impl HeaderSource for RequestHeaders<'_> {
    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a [u8]> {
        self.0.headers.get_all(name).iter().map(|v| v.as_bytes())
    }
}

impl Gateway {
    /// Routing and authentication. `Ok(Some(response))` ends the request
    /// here; `Ok(None)` lets it through to the upstream.
    async fn decide(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> Option<(ResponseHeader, Bytes)> {
        let snapshot = ctx.snapshot.clone().expect("set in request_filter");
        let request = session.req_header();
        let route = match route_request(request, &snapshot, ctx) {
            Ok(route) => route,
            Err(response) => return Some(*response),
        };
        ctx.route = Some(route.clone());
        if route.mode == AuthMode::Off {
            return None;
        }

        let headers = RequestHeaders(request);
        let token = match extract::extract(&headers, request.uri.query(), &route.sources) {
            Ok(token) => token,
            Err(reason) => {
                return Some(self.deny(
                    ctx,
                    &snapshot,
                    &route,
                    Rejection::invalid_request(reason),
                    None,
                ));
            }
        };
        let Some(token) = token else {
            if route.mode == AuthMode::Optional {
                self.metrics
                    .record_decision(&route.name, NO_ISSUER, ANONYMOUS, None);
                return None;
            }
            return Some(self.deny(ctx, &snapshot, &route, Rejection::no_token(), None));
        };

        let mut outcome = self.authorize(&snapshot, &route, token);
        if let Err(failure) = &outcome
            && let Some((keys, seen)) = refetchable(&snapshot, failure)
        {
            // Whether or not this request triggered the refetch (it may be
            // rate-limited, or another request's refetch may have brought
            // the key), only a changed key set can change the answer.
            keys.refetch().await;
            if keys.generation() != seen {
                outcome = self.authorize(&snapshot, &route, token);
            }
        }
        match outcome {
            Ok(identity) => {
                let issuer = &snapshot.issuers[identity.issuer].name;
                self.metrics
                    .record_decision(&route.name, issuer, ALLOW, None);
                ctx.identity = Some(identity);
                None
            }
            Err(failure) => {
                ctx.denied_identity = failure.refused;
                Some(self.deny(ctx, &snapshot, &route, failure.rejection, failure.issuer))
            }
        }
    }

    fn authorize(
        &self,
        snapshot: &Snapshot,
        route: &CompiledRoute,
        token: &str,
    ) -> Result<Arc<VerifiedToken>, Failure> {
        let started = Instant::now();
        let outcome = route.policy.authorize(
            token,
            &snapshot.issuers,
            self.clock.now_unix(),
            snapshot.max_token_bytes,
            self.cache.as_ref(),
            &mut (),
        );
        self.metrics
            .verify_duration
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    fn deny(
        &self,
        ctx: &mut RequestCtx,
        snapshot: &Snapshot,
        route: &CompiledRoute,
        rejection: Rejection,
        issuer: Option<usize>,
    ) -> (ResponseHeader, Bytes) {
        ctx.issuer = issuer;
        let issuer = issuer.map_or(NO_ISSUER, |i| snapshot.issuers[i].name.as_str());
        self.metrics
            .record_decision(&route.name, issuer, DENY, Some(rejection.reason));
        ctx.reason = Some(rejection.reason);
        reject::rejection(&rejection, &snapshot.realm, &ctx.request_id)
    }
}

/// Canonicalizes the request's target and finds its route. What jwtgate
/// answers itself (a refusal, a CORS preflight) is the response to send.
fn route_request(
    request: &RequestHeader,
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
) -> Result<Arc<CompiledRoute>, Box<(ResponseHeader, Bytes)>> {
    let hosts = request
        .headers
        .get_all(http::header::HOST)
        .iter()
        .map(|h| h.as_bytes());
    let target = split_target(request.raw_path()).and_then(|(authority, path_and_query)| {
        RequestTarget::new(authority, path_and_query, hosts, &snapshot.paths)
    });
    let target = match target {
        Ok(target) => target,
        Err(refusal) => {
            ctx.refused = Some(refusal.reason());
            return Err(Box::new(reject::bad_target(&ctx.request_id)));
        }
    };
    if let Some((route, policy)) = cors::preflight_route(
        &snapshot.router,
        target.host.as_deref(),
        target.route_path(),
        &request.method,
        &request.headers,
    ) {
        ctx.route = Some(route.clone());
        ctx.cors_preflight = true;
        return Err(Box::new(cors::preflight_response(
            policy,
            &request.headers,
            &ctx.request_id,
        )));
    }
    let found =
        snapshot
            .router
            .lookup(target.host.as_deref(), target.route_path(), &request.method);
    let route = match found {
        Lookup::Route(route) => route.clone(),
        Lookup::MethodNotAllowed { allow } => {
            ctx.refused = Some("method_not_allowed");
            return Err(Box::new(reject::method_not_allowed(allow, &ctx.request_id)));
        }
        Lookup::NoRoute => return Err(Box::new(reject::not_found(&ctx.request_id))),
    };
    ctx.upstream_target = target.upstream_target();
    ctx.upstream_host = target.authority.map(<[u8]>::to_vec);
    Ok(route)
}

/// Origin form (`/path?query`) or absolute form (`http://host/path?query`,
/// split by Pingora's own classifier, the one that already checked the
/// authority against `Host`); anything else (`*`, other schemes) is refused.
fn split_target(raw: &[u8]) -> Result<(Option<&[u8]>, &[u8]), TargetError> {
    match raw_target_authority(raw) {
        RawTargetAuthority::None if raw.first() == Some(&b'/') => Ok((None, raw)),
        RawTargetAuthority::Absolute {
            scheme,
            authority,
            path_and_query,
        } if scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https") => {
            Ok((Some(authority), path_and_query))
        }
        _ => Err(TargetError::InvalidTarget),
    }
}

/// Who the client is, from the peer address and, if the peer is a trusted
/// proxy, its `X-Forwarded-For`.
fn client_address(session: &Session, ctx: &RequestCtx) -> Option<ClientAddress> {
    let snapshot = ctx.snapshot.as_ref()?;
    let peer = session.client_addr()?.as_inet()?.ip();
    let forwarded_for = session
        .req_header()
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|value| value.as_bytes());
    Some(ClientAddress::resolve(
        peer,
        forwarded_for,
        &snapshot.trusted_proxies,
    ))
}

/// The 414 / 431 answer when the request head is over a configured limit.
fn over_limit(session: &Session, ctx: &mut RequestCtx) -> Option<(ResponseHeader, Bytes)> {
    let snapshot = ctx.snapshot.as_ref()?;
    let request = session.req_header();
    let exceeded = snapshot
        .limits
        .check(request.raw_path(), &request.headers)
        .err()?;
    ctx.refused = Some(exceeded.as_str());
    let (error, description) = exceeded.error();
    Some(reject::refused(
        exceeded.status(),
        error,
        description,
        &ctx.request_id,
    ))
}

/// The key store worth refetching for this failure: a remote issuer's, when
/// the token named a `kid` we don't have (keys may have rotated) or there
/// are no keys yet, with the key-set generation the failure was decided
/// against. The store itself bounds and rate-limits the refetch.
fn refetchable<'a>(snapshot: &'a Snapshot, failure: &Failure) -> Option<(&'a KeyStore, u64)> {
    let reason = failure.rejection.reason;
    if reason != Reason::UnknownKid && reason != Reason::JwksUnavailable {
        return None;
    }
    let keys = &snapshot.issuers[failure.issuer?].keys;
    keys.is_remote()
        .then_some((keys.as_ref(), failure.keys_seen?))
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            started: Instant::now(),
            snapshot: None,
            route: None,
            request_id: String::new(),
            identity: None,
            reason: None,
            refused: None,
            upstream_target: None,
            upstream_host: None,
            upstream_started: None,
            connect_attempts: 0,
            cors_preflight: false,
            client_address: None,
            issuer: None,
            denied_identity: None,
            upstream_addr: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        ctx.snapshot = Some(self.snapshot.load_full());
        ctx.request_id = headers::request_id(session.req_header());
        ctx.client_address = client_address(session, ctx);
        let refused = over_limit(session, ctx);
        let response = match refused {
            Some(response) => Some(response),
            None => self.decide(session, ctx).await,
        };
        let Some((mut header, body)) = response else {
            return Ok(false);
        };
        if let Some(policy) = ctx.route.as_ref().and_then(|r| r.cors.as_ref())
            && !ctx.cors_preflight
        {
            policy.decorate(&session.req_header().headers, &mut header);
        }
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session.write_response_body(Some(body), true).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx.route.as_ref().expect("routed in request_filter");
        let upstream = &route.upstream;
        let addr = upstream.next_addr();
        ctx.upstream_addr = Some(addr);
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(upstream.connect_timeout);
        peer.options.read_timeout = Some(upstream.read_timeout);
        peer.options.write_timeout = Some(upstream.write_timeout);
        ctx.connect_attempts += 1;
        ctx.upstream_started.get_or_insert_with(Instant::now);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Try each address of the route once before giving up.
        let addresses = ctx.route.as_ref().map_or(1, |r| r.upstream.addrs.len());
        if ctx.connect_attempts < addresses {
            e.set_retry(true);
        }
        e
    }

    /// Pingora's default answers with its own bare status page; ours has
    /// the JSON body, `X-Request-Id`, and 504 for timeouts.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        FailToProxy {
            error_code: reject::answer_failure(
                session,
                e,
                &mut ctx.request_id,
                ctx.route.as_ref().and_then(|route| route.cors.as_ref()),
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
        let (Some(snapshot), Some(route)) = (&ctx.snapshot, &ctx.route) else {
            return Ok(());
        };
        if let Some(target) = &ctx.upstream_target {
            upstream_request.set_raw_path(target)?;
        }
        if let Some(host) = &ctx.upstream_host {
            upstream_request.insert_header(http::header::HOST, host.as_slice())?;
        }
        headers::rewrite(
            upstream_request,
            &Forwarding {
                route,
                identity_headers: &snapshot.identity_headers,
                identity: ctx.identity.as_deref(),
                request_id: &ctx.request_id,
                client: ctx.client_address,
            },
        );
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let _ = upstream_response.insert_header(headers::REQUEST_ID, ctx.request_id.as_str());
        if let Some(policy) = ctx.route.as_ref().and_then(|r| r.cors.as_ref()) {
            policy.decorate(&session.req_header().headers, upstream_response);
        }
        Ok(())
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
            ctx.request_id
        )
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Self::CTX) {
        let status = session
            .response_written()
            .map_or(0, |response| response.status.as_u16());
        let route = ctx.route.as_ref().map_or(NO_ROUTE, |r| r.name.as_str());
        // itoa formats on the stack: counting a request allocates nothing.
        let mut status_text = itoa::Buffer::new();
        self.metrics
            .requests
            .with_label_values(&[route, status_text.format(status)])
            .inc();
        if let Some(started) = ctx.upstream_started {
            self.metrics
                .upstream_duration
                .with_label_values(&[route])
                .observe(started.elapsed().as_secs_f64());
        }
        self.access_log(session, error, ctx);
    }
}

/// The longest path the access log prints: a client can't flood the log
/// with a 64 KiB request target.
const LOGGED_PATH_BYTES: usize = 256;
/// The same bound for other client-chosen text: user agent, `sub`.
const LOGGED_TEXT_BYTES: usize = 256;

impl Gateway {
    /// One line per request (target `jwtgate::access`). A field the request
    /// did not have is left empty: `null` in JSON logs, `-` in text.
    fn access_log(&self, session: &Session, error: Option<&Error>, ctx: &RequestCtx) {
        // The fields below cost lookups and formatting: none of it when the
        // access log is filtered out (RUST_LOG=warn, as under load tests).
        if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
            return;
        }
        let request = session.req_header();
        // None when no response was sent (the client went away first).
        let status = session
            .response_written()
            .map(|response| response.status.as_u16());
        let identity = ctx.identity.as_ref().or(ctx.denied_identity.as_ref());
        let issuer = identity.map(|i| i.issuer).or(ctx.issuer);
        let issuer = ctx
            .snapshot
            .as_ref()
            .zip(issuer)
            .map(|(snapshot, i)| snapshot.issuers[i].name.as_str());
        let user_agent = request
            .headers
            .get(http::header::USER_AGENT)
            .map(|ua| String::from_utf8_lossy(ua.as_bytes()));
        // Whole microseconds, printed as milliseconds: 1.234.
        let latency_ms = ctx.started.elapsed().as_micros() as f64 / 1000.0;
        tracing::info!(
            target: ACCESS_TARGET,
            request_id = %ctx.request_id,
            method = %request.method,
            // Never the query: a route may take its token there.
            path = %Truncated::new(request.uri.path(), LOGGED_PATH_BYTES),
            route = ctx.route.as_ref().map(|r| r.name.as_str()),
            status,
            sub = identity
                .and_then(|i| i.subject())
                .map(|sub| display(Truncated::new(sub, LOGGED_TEXT_BYTES))),
            issuer,
            reason = ctx.refusal_reason(),
            client = ctx.client_ip().map(display),
            user_agent = user_agent
                .as_deref()
                .map(|ua| display(Truncated::new(ua, LOGGED_TEXT_BYTES))),
            bytes_in = session.body_bytes_read() as u64,
            bytes_out = session.body_bytes_sent() as u64,
            upstream = ctx.upstream_addr.map(display),
            latency_ms,
            error = error.map(|e| ProxyFailure::of(e).as_str()),
            "request"
        );
    }
}
