//! What the pipeline reads of a request. Adapters fill it from whatever
//! their server hands them; every field borrows, so building one allocates
//! nothing.

use http::{HeaderMap, Method};

use super::client::ClientAddress;
use crate::auth::extract::HeaderSource;
use crate::client_certs::Thumbprint;
use crate::telemetry::Exemplar;

/// A request as the decision pipeline sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// The request-target exactly as received; request limits count its
    /// bytes.
    pub raw_target: &'a [u8],
    /// The same target, split by the adapter's HTTP parser, which has
    /// already checked an absolute-form authority against `Host`.
    pub target: TargetForm<'a>,
    /// Every request header; `Host` is read from here.
    pub headers: &'a HeaderMap,
    /// Who the client is, resolved by the adapter from the peer address and
    /// trusted forwarding headers. `None` when the peer has no IP address.
    /// Rate limits keyed by `client_address` count by it.
    pub client: Option<ClientAddress>,
    /// The scheme the client used to reach jwtgate: `Http` is redirected or
    /// refused where the listener or the route requires HTTPS.
    pub scheme: Scheme,
    /// The client certificate the request came with (RFC 8705 §3): the one
    /// presented in the TLS handshake, hashed once per connection, or, from
    /// a trusted proxy, the one `server.client_cert_header` names. What a
    /// token's `cnf["x5t#S256"]` is compared with.
    pub client_cert_thumbprint: Option<Thumbprint>,
    /// Who asks: a route without an upstream is decided for the
    /// authorization listeners only.
    pub adapter: Adapter,
    /// The request's sampled trace, kept as the exemplar of the
    /// verification time's bucket.
    pub exemplar: Option<Exemplar>,
}

/// The adapter a request came through, as the access log's `adapter` names
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    Proxy,
    /// The HTTP authorization listener (NGINX, Traefik, Caddy, Envoy HTTP).
    Authz,
    /// Envoy's gRPC `ext_authz`.
    AuthzGrpc,
    /// `jwtgate token verify`.
    Cli,
}

impl Adapter {
    pub fn as_str(self) -> &'static str {
        match self {
            Adapter::Proxy => "proxy",
            Adapter::Authz => "authz",
            Adapter::AuthzGrpc => "authz_grpc",
            Adapter::Cli => "cli",
        }
    }

    /// Whether the adapter forwards the request to the route's upstream
    /// itself (rather than answering a front proxy that does).
    pub fn forwards(self) -> bool {
        self == Adapter::Proxy
    }
}

/// The forms of request-target jwtgate routes (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm<'a> {
    /// `/path?query`.
    Origin { path_and_query: &'a [u8] },
    /// `http://authority/path?query`, as a forward proxy would send it.
    Absolute {
        authority: &'a [u8],
        path_and_query: &'a [u8],
    },
    /// Authority form, asterisk form, another scheme: refused with 400.
    Unsupported,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Token extraction reads headers through this, so `auth` needs no HTTP
/// library.
pub(super) struct Headers<'a>(pub &'a HeaderMap);

impl HeaderSource for Headers<'_> {
    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a [u8]> {
        self.0.get_all(name).iter().map(|value| value.as_bytes())
    }
}
