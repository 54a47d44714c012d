//! The access log's line, one per request whichever adapter served it:
//! every adapter fills the same record, so the fields, their bounds and
//! their order are written in one place (the formatter in
//! [`super::logging`] then prints every declared field on every line).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tracing::field::{DisplayValue, display};

use super::logging::{ACCESS_TARGET, Truncated};
use super::traces::TraceIds;

/// The longest client-chosen text the access log prints (path, user agent,
/// `sub`): a client can't flood the log with a 64 KiB request target.
const LOGGED_TEXT_BYTES: usize = 256;

/// Whether access lines are written at all: when they are filtered out
/// (`RUST_LOG=warn`, as under load tests) nothing of a record is gathered.
pub fn enabled() -> bool {
    tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO)
}

/// One request, as the access log describes it. A field the request did
/// not have stays `None`: `null` in JSON logs, `-` in text.
#[derive(Default)]
pub struct AccessRecord<'a> {
    pub request_id: &'a str,
    pub method: Option<&'a str>,
    /// Never the query: a route may take its token there.
    pub path: Option<&'a [u8]>,
    pub route: Option<&'a str>,
    /// `None` when no response was sent (the client went away first).
    pub status: Option<u16>,
    pub sub: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub outcome: Option<&'static str>,
    pub reason: Option<&'static str>,
    pub client: Option<IpAddr>,
    /// The `x5t#S256` thumbprint of the client certificate the request came
    /// with (TLS handshake or trusted front proxy).
    pub client_cert: Option<&'a str>,
    pub user_agent: Option<&'a [u8]>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub upstream: Option<SocketAddr>,
    /// When the request started; `None` when the log was off then.
    pub started: Option<Instant>,
    pub error: Option<&'static str>,
    /// How jwtgate ended a connection that outlived its request
    /// (`expired`, `revoked`, `reload`, `max_lifetime`).
    pub ended: Option<&'static str>,
    /// On an `audit` route, why jwtgate would first have ended such a
    /// connection, which it left open (`expired`, `revoked`, `reload`).
    pub would_end: Option<&'static str>,
    pub adapter: &'static str,
    /// The request's trace and server span, when tracing is on.
    pub trace: Option<TraceIds>,
}

/// Client-chosen text, cut at [`LOGGED_TEXT_BYTES`].
fn bounded(text: Option<&str>) -> Option<DisplayValue<Truncated<'_>>> {
    text.map(|text| display(Truncated::new(text, LOGGED_TEXT_BYTES)))
}

impl AccessRecord<'_> {
    pub fn write(&self) {
        let path = self.path.map(String::from_utf8_lossy);
        let user_agent = self.user_agent.map(String::from_utf8_lossy);
        // Whole microseconds, printed as milliseconds: 1.234.
        let latency_ms = self
            .started
            .map(|started| started.elapsed().as_micros() as f64 / 1000.0);
        tracing::info!(
            target: ACCESS_TARGET,
            request_id = %self.request_id,
            method = self.method,
            path = bounded(path.as_deref()),
            route = self.route,
            status = self.status,
            sub = bounded(self.sub),
            issuer = self.issuer,
            outcome = self.outcome,
            reason = self.reason,
            client = self.client.map(display),
            client_cert = self.client_cert,
            user_agent = bounded(user_agent.as_deref()),
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            upstream = self.upstream.map(display),
            latency_ms,
            error = self.error,
            ended = self.ended,
            would_end = self.would_end,
            adapter = self.adapter,
            trace_id = self.trace.map(|ids| display(ids.trace_id)),
            span_id = self.trace.map(|ids| display(ids.span_id)),
            "request"
        );
    }
}
