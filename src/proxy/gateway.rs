use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};

use super::headers::{self, Forwarding};
use super::{reject, router};
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
    /// Set when the request path had to be normalized before routing.
    normalized_path: Option<String>,
    upstream_started: Option<Instant>,
    connect_attempts: usize,
    /// For the access log: the issuer a refusal was attributed to, the
    /// verified token a route's policy refused (403), the upstream address
    /// last chosen.
    issuer: Option<usize>,
    refused: Option<Arc<VerifiedToken>>,
    upstream_addr: Option<std::net::SocketAddr>,
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
        ctx.normalized_path = router::normalize_path(request.uri.path());
        let path = ctx.normalized_path.as_deref().unwrap_or(request.uri.path());
        let host = request.uri.host().or_else(|| {
            request
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        let Some(route) = snapshot.router.find(host, path, &request.method).cloned() else {
            return Some(reject::not_found(&ctx.request_id));
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
                ctx.refused = failure.refused;
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
            normalized_path: None,
            upstream_started: None,
            connect_attempts: 0,
            issuer: None,
            refused: None,
            upstream_addr: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        ctx.snapshot = Some(self.snapshot.load_full());
        ctx.request_id = headers::request_id(session.req_header());
        let Some((header, body)) = self.decide(session, ctx).await else {
            return Ok(false);
        };
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

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let (Some(snapshot), Some(route)) = (&ctx.snapshot, &ctx.route) else {
            return Ok(());
        };
        if let Some(path) = &ctx.normalized_path {
            let path_and_query = match upstream_request.uri.query() {
                Some(query) => format!("{path}?{query}"),
                None => path.clone(),
            };
            let uri = http::Uri::builder()
                .path_and_query(path_and_query)
                .build()
                .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "normalized path", e))?;
            upstream_request.set_uri(uri);
        }
        let client_ip = session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map(|addr| addr.ip());
        headers::rewrite(
            upstream_request,
            &Forwarding {
                route,
                identity_headers: &snapshot.identity_headers,
                identity: ctx.identity.as_deref(),
                request_id: &ctx.request_id,
                client_ip,
            },
        );
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let _ = upstream_response.insert_header(headers::REQUEST_ID, ctx.request_id.as_str());
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
        let request = session.req_header();
        // None when no response was sent (the client went away first).
        let status = session
            .response_written()
            .map(|response| response.status.as_u16());
        let identity = ctx.identity.as_ref().or(ctx.refused.as_ref());
        let issuer = identity.map(|i| i.issuer).or(ctx.issuer);
        let issuer = ctx
            .snapshot
            .as_ref()
            .zip(issuer)
            .map(|(snapshot, i)| snapshot.issuers[i].name.as_str());
        // The peer itself: the one client address known for certain.
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
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
            reason = ctx.reason.map(Reason::as_str),
            client = client.map(display),
            user_agent = user_agent
                .as_deref()
                .map(|ua| display(Truncated::new(ua, LOGGED_TEXT_BYTES))),
            bytes_in = session.body_bytes_read() as u64,
            bytes_out = session.body_bytes_sent() as u64,
            upstream = ctx.upstream_addr.map(display),
            latency_ms,
            error = error.map(|e| e.etype().as_str()),
            "request"
        );
    }
}
