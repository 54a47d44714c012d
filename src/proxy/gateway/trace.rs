//! The proxy's side of a request's trace: the server span opened with the
//! request, the decision written into it, the context carried upstream and
//! the client span of the upstream call.

use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::RequestCtx;
use crate::pipeline::Adapter;
use crate::telemetry::traces::{self, RequestHead, TRACEPARENT, TRACESTATE};

/// Opens the request's server span when tracing is on; its parent is the
/// client's `traceparent` if the settings trust this peer's.
pub(super) fn start(session: &Session, ctx: &mut RequestCtx) {
    let Some(tracing) = traces::installed() else {
        return;
    };
    let request = session.req_header();
    let trusted = ctx.client_address.is_some_and(|c| c.peer_trusted);
    let mut trace = tracing.request(&request.headers, trusted, Adapter::Proxy.as_str());
    // An unsampled request's head is never looked at.
    if !trace.sampled() {
        ctx.trace = Some(trace);
        return;
    }
    let header = |name| request.headers.get(name).map(HeaderValue::as_bytes);
    trace.request_head(RequestHead {
        method: request.method.as_str(),
        path: request.uri.path().as_bytes(),
        https: ctx.scheme == crate::pipeline::Scheme::Https,
        http2: session.is_http2(),
        client: ctx.client_ip(),
        user_agent: header(http::header::USER_AGENT),
        host: header(http::header::HOST).or(request.uri.host().map(str::as_bytes)),
    });
    ctx.trace = Some(trace);
}

/// The trace context the upstream continues: jwtgate's, never the
/// client's as it came (an untrusted one was not continued at all). The
/// client's `tracestate` was removed with the headers jwtgate rewrites;
/// a continued one comes back.
pub(super) fn carry_on(ctx: &RequestCtx, upstream: &mut RequestHeader) {
    let Some(trace) = &ctx.trace else {
        return;
    };
    let _ = upstream.insert_header(TRACEPARENT, trace.traceparent());
    if let Some(state) = trace.tracestate() {
        let _ = upstream.insert_header(TRACESTATE, state);
    }
}
