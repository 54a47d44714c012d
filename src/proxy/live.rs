//! The proxy's side of long-lived connections (see [`crate::state::live`]):
//! which HTTP/1 requests are armed, and how each kind ends once its switch
//! fires. An ordinary request is looked at (its method, a status, a header
//! or two) and armed with nothing.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode, header};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;

use super::deadline_io::DeadlineIo;
use super::streams::{self, OnDrop};
use super::websocket::{self, FrameTracker};
use crate::answers::request_id::request_id_text;
use crate::answers::{self, Answer};
use crate::auth::VerifiedToken;
use crate::auth::json::JsonRef;
use crate::auth::{Reason, Rejection};
use crate::pipeline::{CompiledRoute, Snapshot, reconsider};
use crate::state::live::{
    Armed, ConnectionKind, Deadline, EndReason, Holder, LiveConnections, TokenKeys,
};

/// A request body at least this large is armed as an upload, as is one
/// streamed without a length.
const LARGE_UPLOAD: u64 = 1024 * 1024;

/// An armed request: its place in the table, and for a WebSocket where each
/// direction's frames begin.
pub struct LiveRequest {
    armed: Armed,
    frames: Option<Frames>,
}

#[derive(Default)]
struct Frames {
    to_client: FrameTracker,
    to_upstream: FrameTracker,
}

/// Whether the request's body is an upload worth arming: streamed without
/// a length, or large.
pub fn is_upload(request: &RequestHeader) -> bool {
    if request.method == Method::GET || request.method == Method::HEAD {
        return false;
    }
    let headers = &request.headers;
    let chunked = headers
        .get(header::TRANSFER_ENCODING)
        .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"chunked"));
    chunked
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|length| length.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|length| length >= LARGE_UPLOAD)
}

/// What the response makes of the request, if it outlives it: a `101`
/// upgrade, or a body with no announced end (server-sent events, a long
/// download, any chunked or close-delimited body).
pub fn long_lived_response(
    request: &RequestHeader,
    response: &ResponseHeader,
) -> Option<ConnectionKind> {
    let status = response.status;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Some(ConnectionKind::WebSocket);
    }
    if request.method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational()
    {
        return None;
    }
    // Server-sent events never carry a length, so one lookup covers them
    // too: an ordinary response pays for no more.
    (!response.headers.contains_key(header::CONTENT_LENGTH)).then_some(ConnectionKind::Stream)
}

/// Arms the request's HTTP/1 connection; `None` on HTTP/2 (whose streams
/// are armed by [`arm_stream`]) or when nothing could end it.
pub fn arm(
    live: &Arc<LiveConnections>,
    session: &Session,
    snapshot: &Snapshot,
    route: &CompiledRoute,
    identity: Option<&Arc<VerifiedToken>>,
    kind: ConnectionKind,
) -> Option<Box<LiveRequest>> {
    let io = DeadlineIo::in_session(session)?;
    let armed = armed(live, snapshot, route, identity, kind)?;
    let upgraded = kind == ConnectionKind::WebSocket;
    io.arm(armed.switch().clone(), upgraded);
    Some(Box::new(LiveRequest {
        armed,
        frames: upgraded.then(Frames::default),
    }))
}

/// Arms the HTTP/2 stream this task serves (a gRPC call, an event
/// stream); `on_drop` logs it if it has to be dropped. `None` when nothing
/// could end it.
pub fn arm_stream(
    live: &Arc<LiveConnections>,
    snapshot: &Snapshot,
    route: &CompiledRoute,
    identity: Option<&Arc<VerifiedToken>>,
    on_drop: OnDrop,
) -> Option<Box<LiveRequest>> {
    let armed = armed(live, snapshot, route, identity, ConnectionKind::Stream)?;
    streams::arm_stream(armed.switch().clone(), on_drop).then(|| {
        Box::new(LiveRequest {
            armed,
            frames: None,
        })
    })
}

/// The request of `route` in the table, until its token ends (if the route
/// ends requests with their token), a reload makes its route refuse it (if
/// the route ends requests then) or its lifetime ends.
fn armed(
    live: &Arc<LiveConnections>,
    snapshot: &Snapshot,
    route: &CompiledRoute,
    identity: Option<&Arc<VerifiedToken>>,
    kind: ConnectionKind,
) -> Option<Armed> {
    let settings = route.long_lived;
    let token = identity.filter(|_| settings.end_with_token);
    let (expires_at, keys) = match token {
        Some(token) => {
            let issuer = &snapshot.issuers[token.issuer];
            let claim = |name: &str| {
                token
                    .claims
                    .get(name)
                    .and_then(JsonRef::as_str)
                    .map(str::to_string)
            };
            let keys = TokenKeys {
                iss: issuer.issuer.clone(),
                jti: claim("jti"),
                sub: claim("sub"),
                sid: claim("sid"),
                iat: token.iat,
            };
            (token.exp.map(|exp| exp + issuer.leeway_secs), keys)
        }
        None => (None, TokenKeys::default()),
    };
    let revocable = keys.jti.is_some() || keys.sub.is_some() || keys.sid.is_some();
    let ends = expires_at.is_some() || settings.max_lifetime.is_some() || revocable;
    if !ends && !settings.end_on_reload {
        return None;
    }
    let deadline = Deadline {
        expires_at,
        max_lifetime: settings.max_lifetime,
    };
    let iss = identity.map(|token| snapshot.issuers[token.issuer].issuer.as_str());
    let holder = Holder {
        // Held even where a reload ends nothing: the next one may.
        token: identity.cloned(),
        iss: iss.unwrap_or_default().into(),
        enforce: settings.enforce,
    };
    Some(live.arm(deadline, keys, &route.name, kind, holder))
}

impl LiveRequest {
    pub fn fired(&self) -> Option<EndReason> {
        self.armed.fired()
    }

    /// Decides the request again if a reload swapped `current` in after it
    /// was decided under `decided`: that reload's walk of the live table may
    /// have come before the request was armed. The reload either saw it in
    /// the table or swapped before this look, so none escapes both.
    pub fn catch_up(
        &self,
        decided: &Snapshot,
        current: &Snapshot,
        route: &CompiledRoute,
        identity: Option<&Arc<VerifiedToken>>,
    ) {
        if std::ptr::eq(decided, current) {
            return;
        }
        let iss = identity.map_or("", |token| decided.issuers[token.issuer].issuer.as_str());
        let token = identity.map(|token| &**token);
        self.armed
            .reconsider(reconsider::on_reload(current, &route.name, token, iss));
    }

    /// The upstream's bytes on their way to the client. A stream whose
    /// switch fired while data flows ends here; a WebSocket is closed by
    /// [`Self::client_bytes`] instead, with its close frames.
    pub fn upstream_bytes(&mut self, body: Option<&Bytes>) -> Result<()> {
        match (&mut self.frames, body) {
            (Some(frames), Some(body)) => frames.to_client.feed(body),
            (None, _) if self.armed.fired().is_some() => {
                // The client's side is what ended: on HTTP/2 Pingora then
                // resets the upstream's stream too, so it stops sending.
                let ended = Error::explain(
                    ErrorType::Custom("long-lived connection ended"),
                    "the token no longer holds",
                );
                return Err(ended.into_down());
            }
            _ => {}
        }
        Ok(())
    }

    /// The client's bytes on their way upstream. Once the switch fired,
    /// the client's side reads as closed after an upgrade: each side then
    /// gets a close frame `1008` with the reason, if its direction is
    /// between two frames (otherwise it is just closed).
    pub async fn client_bytes(
        &mut self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> Result<()> {
        let Some(frames) = &mut self.frames else {
            // An HTTP/2 stream ends on data either way: the client's too.
            if session.is_http2() {
                return self.upstream_bytes(None);
            }
            return Ok(());
        };
        if let Some(body) = body {
            frames.to_upstream.feed(body);
        }
        let Some(reason) = self.armed.fired() else {
            return Ok(());
        };
        if !end_of_stream || !session.was_upgraded() {
            return Ok(());
        }
        if frames.to_client.at_boundary() {
            let close = websocket::close_to_client(reason.message());
            session.write_response_body(Some(close), false).await?;
        }
        if frames.to_upstream.at_boundary() && body.is_none() {
            *body = Some(websocket::close_to_upstream(reason.message()));
        }
        Ok(())
    }

    /// The request is over: the connection is unarmed for the next one on
    /// it; how it was ended, if it was, and on an `audit` route why it
    /// would have been.
    pub fn end(self, session: &Session) -> (Option<EndReason>, Option<EndReason>) {
        if let Some(io) = DeadlineIo::in_session(session) {
            io.disarm();
        }
        (self.armed.fired(), self.armed.would_have_ended())
    }

    /// What an upload whose token ended before any response gets: `401`
    /// with `invalid_token`. `None` when a response has started (the
    /// connection is cut) or the route's lifetime ended it.
    pub fn refusal(&self, snapshot: &Snapshot, request_id: &http::HeaderValue) -> Option<Answer> {
        let reason = match self.armed.fired()? {
            EndReason::Expired => Reason::Expired,
            EndReason::Revoked | EndReason::Reload => Reason::Revoked,
            EndReason::MaxLifetime => return None,
        };
        Some(answers::rejection(
            &Rejection::invalid_token(reason),
            &snapshot.realm,
            None,
            request_id_text(request_id),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build(method, b"/x", None).unwrap();
        for (name, value) in headers {
            request.insert_header(name.to_string(), *value).unwrap();
        }
        request
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut response = ResponseHeader::build(status, None).unwrap();
        for (name, value) in headers {
            response.insert_header(name.to_string(), *value).unwrap();
        }
        response
    }

    #[test]
    fn only_what_outlives_its_request_is_armed() {
        let get = request("GET", &[]);
        let kind = |req: &RequestHeader, res| long_lived_response(req, &res);
        assert_eq!(
            kind(&get, response(101, &[])),
            Some(ConnectionKind::WebSocket)
        );
        let events = [("content-type", "text/event-stream")];
        assert_eq!(
            kind(&get, response(200, &events)),
            Some(ConnectionKind::Stream)
        );
        let chunked = [("transfer-encoding", "chunked")];
        assert_eq!(
            kind(&get, response(200, &chunked)),
            Some(ConnectionKind::Stream)
        );
        assert_eq!(kind(&get, response(200, &[("content-length", "2")])), None);
        assert_eq!(kind(&get, response(204, &[])), None);
        assert_eq!(kind(&get, response(304, &[])), None);
        assert_eq!(kind(&request("HEAD", &[]), response(200, &[])), None);

        assert!(!is_upload(&get));
        assert!(!is_upload(&request("POST", &[("content-length", "1000")])));
        assert!(is_upload(&request(
            "POST",
            &[("content-length", "1048576")]
        )));
        assert!(is_upload(&request(
            "PUT",
            &[("transfer-encoding", "chunked")]
        )));
    }
}
