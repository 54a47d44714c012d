//! The gateway's side of HTTP/2 streams that end with their token (see
//! [`crate::proxy::streams`]): which are armed, and what is logged of one
//! that has to be dropped.

use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::log::{self, Served};
use super::{Gateway, RequestCtx};
use crate::pipeline::UpstreamRewrite;
use crate::proxy::live;
use crate::proxy::streams::{self, OnDrop};
use crate::state::live::ConnectionKind;

impl Gateway {
    /// Arms a request that will outlive itself from its start: a gRPC call
    /// over HTTP/2, or an upload.
    pub(super) fn arm_request(&self, session: &Session, ctx: &mut RequestCtx) {
        if streams::is_grpc(session) {
            self.arm_h2(session, ctx);
        } else if live::is_upload(session.req_header()) {
            self.arm(session, ctx, ConnectionKind::Upload);
        }
    }

    /// Arms the request if its response makes it outlive itself: on
    /// HTTP/1 as [`live::long_lived_response`] says, on HTTP/2 an event
    /// stream.
    pub(super) fn arm_response(
        &self,
        session: &Session,
        response: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) {
        if !session.is_http2() {
            if let Some(kind) = live::long_lived_response(session.req_header(), response) {
                self.arm(session, ctx, kind);
            }
        } else if streams::is_event_stream(session, response) {
            self.arm_h2(session, ctx);
        }
    }

    fn arm_h2(&self, session: &Session, ctx: &mut RequestCtx) {
        let (Some(connections), Some(serving), Some(route)) =
            (&self.live, &ctx.serving, &ctx.route)
        else {
            return;
        };
        let on_drop = self.dropped_stream(session, ctx);
        let identity = ctx.identity.as_ref();
        ctx.live = live::arm_stream(connections, &serving.snapshot, route, identity, on_drop);
        self.catch_up(ctx);
    }

    /// What is counted and logged if the HTTP/2 stream of this request is
    /// dropped when its token ends: a copy of what the log line needs, made
    /// only for an armed stream. The stream is reset, so it has no status;
    /// the bytes it carried are not known then and logged as 0.
    fn dropped_stream(&self, session: &Session, ctx: &RequestCtx) -> OnDrop {
        let metrics = self.metrics.clone();
        let request = session.req_header().clone();
        let mut copy = RequestCtx {
            started: ctx.started,
            serving: ctx.serving.clone(),
            route: ctx.route.clone(),
            request_id: ctx.request_id.clone(),
            identity: ctx.identity.clone(),
            outcome: ctx.outcome,
            reason: ctx.reason,
            refusal: ctx.refusal,
            upstream: UpstreamRewrite::default(),
            upstream_started: ctx.upstream_started,
            connect_attempts: ctx.connect_attempts,
            cors_preflight: false,
            client_address: ctx.client_address,
            issuer: ctx.issuer,
            denied_identity: ctx.denied_identity.clone(),
            upstream_addr: ctx.upstream_addr,
            scheme: ctx.scheme,
            live: None,
            ended: None,
            would_end: None,
            client_cert: ctx.client_cert,
            // The stream's span ends with the request's own context.
            trace: None,
        };
        Box::new(move |reason| {
            copy.ended = Some(reason.as_str());
            let served = Served {
                request: &request,
                status: None,
                bytes_in: 0,
                bytes_out: 0,
            };
            log::record(&metrics, &served, None, &mut copy);
        })
    }
}
