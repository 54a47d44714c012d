//! What the proxy counts and logs of each request, after it is over: in
//! Pingora's `logging` phase, or, for an HTTP/2 stream dropped when its
//! token ended, from the copy `super::h2` keeps, since `logging` never runs
//! for it.

use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::RequestCtx;
use crate::answers::request_id::request_id_text;
use crate::client_certs::Thumbprint;
use crate::pipeline::Adapter;
use crate::proxy::failure::ProxyFailure;
use crate::telemetry::access::{self, AccessRecord};
use crate::telemetry::metrics::{NO_ROUTE, RequestLabels, RequestMetrics};
use crate::telemetry::traces::TraceIds;

/// What the session says of a request that is over.
pub(super) struct Served<'a> {
    pub request: &'a RequestHeader,
    /// `None`: no response was sent.
    pub status: Option<u16>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl<'a> Served<'a> {
    pub fn of(session: &'a Session) -> Self {
        Self {
            request: session.req_header(),
            status: session
                .response_written()
                .map(|response| response.status.as_u16()),
            bytes_in: session.body_bytes_read() as u64,
            bytes_out: session.body_bytes_sent() as u64,
        }
    }
}

/// Counts the request, times its upstream, writes its access-log line and
/// ends its spans.
pub(super) fn record(
    metrics: &RequestMetrics,
    served: &Served,
    error: Option<&Error>,
    ctx: &mut RequestCtx,
) {
    let route = ctx.route.as_deref();
    let name = route.map_or(NO_ROUTE, |r| r.name.as_str());
    let error = failure(error, ctx);
    let labels = RequestLabels {
        adapter: Adapter::Proxy.as_str(),
        status: served.status.unwrap_or(0),
        reason: ctx.refusal,
        error: error.map(ProxyFailure::as_str),
    };
    metrics.count_request(name, route.map(|r| &r.series), labels);
    if let (Some(started), Some(route)) = (ctx.upstream_started, route) {
        let seconds = started.elapsed().as_secs_f64();
        let exemplar = ctx.trace.as_ref().and_then(|trace| trace.exemplar());
        metrics.observe_upstream(name, &route.series, seconds, exemplar);
    }
    let trace = ctx.trace.take();
    access_log(served, error, ctx, trace.as_ref().map(|trace| trace.ids()));
    if let Some(trace) = trace {
        trace.finish(served.status, error.map(ProxyFailure::as_str));
    }
}

/// How the request failed on its way through, if it did. How an armed
/// request ended says it all; the error it ended with would only look like
/// the client's or upstream's fault.
fn failure(error: Option<&Error>, ctx: &RequestCtx) -> Option<ProxyFailure> {
    error.filter(|_| ctx.ended.is_none()).map(ProxyFailure::of)
}

/// One line per request (target `jwtgate::access`).
fn access_log(
    served: &Served,
    error: Option<ProxyFailure>,
    ctx: &RequestCtx,
    trace: Option<TraceIds>,
) {
    // The fields below cost lookups and formatting: none of it when the
    // access log is filtered out (RUST_LOG=warn, as under load tests).
    if !access::enabled() {
        return;
    }
    let request = served.request;
    let identity = ctx.identity.as_ref().or(ctx.denied_identity.as_ref());
    let issuer = identity.map(|i| i.issuer).or(ctx.issuer);
    let issuer = ctx
        .serving
        .as_ref()
        .zip(issuer)
        .map(|(serving, i)| serving.snapshot.issuers[i].name.as_str());
    AccessRecord {
        request_id: request_id_text(&ctx.request_id),
        method: Some(request.method.as_str()),
        path: Some(request.uri.path().as_bytes()),
        route: ctx.route.as_ref().map(|r| r.name.as_str()),
        status: served.status,
        sub: identity.and_then(|i| i.subject()),
        issuer,
        outcome: ctx.outcome,
        reason: ctx.reason,
        client: ctx.client_ip(),
        client_cert: ctx.client_cert.as_ref().map(Thumbprint::as_str),
        user_agent: request
            .headers
            .get(http::header::USER_AGENT)
            .map(HeaderValue::as_bytes),
        bytes_in: served.bytes_in,
        bytes_out: served.bytes_out,
        upstream: ctx.upstream_addr,
        started: ctx.started,
        error: error.map(ProxyFailure::as_str),
        ended: ctx.ended,
        would_end: ctx.would_end,
        adapter: Adapter::Proxy.as_str(),
        trace,
    }
    .write();
}
