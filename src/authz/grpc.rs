//! Envoy's gRPC external authorization (`envoy.service.auth.v3.Authorization/Check`)
//! on `listen.authz.grpc_addr`: the original request arrives as a
//! `CheckRequest` (method, path with query, host, scheme, headers, the
//! downstream address), goes through the same [`Pipeline`] as the HTTP
//! authorization listener's, and the answer is the HTTP listener's, in
//! Envoy's words: `OK` with the identity headers to set on the upstream
//! request, or a denial carrying the status, headers and JSON body the
//! client gets.
//!
//! A denial is always a `CheckResponse`, never a failed call, keys
//! unavailable included (`UNAVAILABLE` with a denied `503`): Envoy's
//! `failure_mode_allow` lets requests through when the call itself fails,
//! and a missing key must never do that.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::{Grpc, UnaryService};

use super::envoy::{self, CheckRequest, CheckResponse, code};
use super::{
    Asked, AuthzServer, ORIGINAL_MISSING, Original, SECRET_MISSING, answers, no_original,
    secret_matches, unauthenticated,
};
use crate::answers::Answer;
use crate::answers::request_id::REQUEST_ID;
use crate::client_certs;
use crate::pipeline::{Adapter, Decision, Forwarded, Pipeline, Scheme, Snapshot};

/// The one method served; anything else is `UNIMPLEMENTED`.
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The gRPC decision listener: a background service serving
/// `Authorization/Check` until Pingora stops.
pub struct GrpcAuthz {
    addr: SocketAddr,
    server: Arc<AuthzServer>,
}

/// Builds the listener. The address is already bound once by the startup
/// check, so it parses; the decision state is the proxy's, as for the HTTP
/// listener.
pub fn service(addr: SocketAddr, mut server: AuthzServer) -> GrpcAuthz {
    server.adapter = Adapter::AuthzGrpc;
    GrpcAuthz {
        addr,
        server: Arc::new(server),
    }
}

#[async_trait::async_trait]
impl BackgroundService for GrpcAuthz {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let service = CheckService(self.server.clone());
        let stopped = async move {
            let _ = shutdown.changed().await;
        };
        // Envoy keeps its HTTP/2 connection open; on shutdown hyper sends
        // GOAWAY and lets the calls in flight finish.
        let served = tonic::transport::Server::builder()
            .serve_with_shutdown(self.addr, service, stopped)
            .await;
        if let Err(error) = served {
            tracing::error!(addr = %self.addr, %error, "the gRPC authorization listener stopped");
        }
    }
}

/// The tower service tonic serves: one route, `Authorization/Check`.
#[derive(Clone)]
struct CheckService(Arc<AuthzServer>);

impl Service<http::Request<Body>> for CheckService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            return Box::pin(async {
                Ok(tonic::Status::unimplemented("only Authorization/Check is served").into_http())
            });
        }
        let check = Check(self.0.clone());
        Box::pin(async move {
            let mut grpc = Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(check, request).await)
        })
    }
}

struct Check(Arc<AuthzServer>);

impl UnaryService<CheckRequest> for Check {
    type Response = CheckResponse;
    type Future = BoxFuture<tonic::Response<CheckResponse>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<CheckRequest>) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move {
            let peer = request.remote_addr().map(|a| a.ip());
            let (metadata, _, check) = request.into_parts();
            let answer = server.check(peer, &metadata.into_headers(), check).await;
            Ok(tonic::Response::new(answer))
        })
    }
}

/// The original request's headers as a header map: from `headers`, or
/// from `header_map` when Envoy sends raw headers. Pseudo-headers
/// (`:path`, `:authority`…) and anything that is not a valid header are
/// left out; path and host come from their own fields.
fn original_headers(http: &envoy::HttpRequest) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(http.headers.len());
    let mut add = |key: &str, value: &[u8]| {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            map.append(name, value);
        }
    };
    for (key, value) in &http.headers {
        add(key, value.as_bytes());
    }
    if let Some(raw) = &http.header_map {
        for header in &raw.headers {
            let value = if header.raw_value.is_empty() {
                header.value.as_bytes()
            } else {
                &header.raw_value
            };
            add(&header.key, value);
        }
    }
    // Envoy names the request's id apart too (X-Request-Id or its
    // equivalent): answers and logs carry it as on the HTTP listener.
    if !map.contains_key(REQUEST_ID)
        && let Ok(id) = HeaderValue::from_str(&http.id)
        && !http.id.is_empty()
    {
        map.insert(REQUEST_ID, id);
    }
    map
}

/// `attributes.source.certificate` (URL-encoded PEM), when Envoy sent one.
fn source_certificate(check: &CheckRequest) -> Option<&str> {
    let certificate = &check.attributes.as_ref()?.source.as_ref()?.certificate;
    (!certificate.is_empty()).then_some(certificate.as_str())
}

/// The downstream address Envoy saw, else the caller's own.
fn source_ip(check: &CheckRequest) -> Option<IpAddr> {
    let address = check
        .attributes
        .as_ref()?
        .source
        .as_ref()?
        .address
        .as_ref()?
        .socket_address
        .as_ref()?;
    address.address.parse().ok()
}

fn header_option(name: &str, value: &[u8]) -> envoy::HeaderValueOption {
    envoy::HeaderValueOption {
        header: Some(envoy::HeaderValue {
            key: name.to_string(),
            value: String::from_utf8_lossy(value).into_owned(),
            raw_value: Vec::new(),
        }),
        append_action: envoy::OVERWRITE_IF_EXISTS_OR_ADD,
    }
}

/// The gRPC status Envoy reads for a denial with this HTTP status. Envoy
/// sends the denied response whatever the code; the code is for its stats
/// and logs.
fn denial_code(status: u16) -> i32 {
    match status {
        401 => code::UNAUTHENTICATED,
        404 => code::NOT_FOUND,
        429 => code::RESOURCE_EXHAUSTED,
        503 => code::UNAVAILABLE,
        400 | 414 | 431 => code::INVALID_ARGUMENT,
        _ => code::PERMISSION_DENIED,
    }
}

/// A denial: the HTTP listener's status, headers and body. `Content-Length`
/// is left to Envoy, which frames the body itself.
fn denied(answer: &Answer) -> CheckResponse {
    let status = answer.status().as_u16();
    let headers = answer
        .headers()
        .iter()
        .filter(|(name, _)| *name != http::header::CONTENT_LENGTH)
        .map(|(name, value)| header_option(name.as_str(), value.as_bytes()))
        .collect();
    CheckResponse {
        status: Some(envoy::Status {
            code: denial_code(status),
            message: String::new(),
        }),
        denied_response: Some(envoy::DeniedHttpResponse {
            status: Some(envoy::HttpStatus {
                code: i32::from(status),
            }),
            headers,
            body: String::from_utf8_lossy(answer.body()).into_owned(),
        }),
        ok_response: None,
    }
}

/// `OK`: the route's identity headers set over whatever the client sent,
/// and every other identity header jwtgate fills removed, so none the
/// client wrote reaches the upstream whatever Envoy is told to strip.
fn allowed(decision: &Decision<'_>, snapshot: &Snapshot, pipeline: &Pipeline) -> CheckResponse {
    let mut headers = Vec::new();
    if let Decision::Forward {
        route,
        auth: Forwarded::Identity(identity),
        ..
    } = decision
    {
        headers.extend(
            route
                .forward
                .identity_values(identity)
                .map(|(header, value)| header_option(header.name.as_str(), value.as_bytes())),
        );
        if let Some((name, value)) = pipeline.identity_token(snapshot, route, identity) {
            headers.push(header_option(name.as_str(), value.as_bytes()));
        }
    }
    let is_set = |name: &HeaderName| {
        headers
            .iter()
            .any(|h| h.header.as_ref().is_some_and(|h| h.key == name.as_str()))
    };
    let headers_to_remove = snapshot
        .identity_headers
        .iter()
        .filter(|name| !is_set(name))
        .map(|name| name.as_str().to_string())
        .collect();
    CheckResponse {
        status: Some(envoy::Status {
            code: code::OK,
            message: String::new(),
        }),
        denied_response: None,
        ok_response: Some(envoy::OkHttpResponse {
            headers,
            headers_to_remove,
        }),
    }
}

impl AuthzServer {
    /// One `Check` call: the same steps as the HTTP listener's
    /// `response`, the original request read from the message.
    async fn check(
        &self,
        peer: Option<IpAddr>,
        metadata: &HeaderMap,
        check: CheckRequest,
    ) -> CheckResponse {
        let snapshot = self.snapshot.load_full();
        let http = check
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let headers = http.map(original_headers).unwrap_or_default();
        let peer = source_ip(&check).or(peer);
        let mut asked = Asked::new(&headers, peer, &snapshot, self.adapter);
        // Envoy writes the certificate it saw itself, where no client can.
        if let Some(certificate) = source_certificate(&check) {
            asked.client_cert = client_certs::from_escaped_pem(certificate);
        }
        // The secret travels as call metadata (`initial_metadata` of
        // Envoy's `grpc_service`).
        if let Some(secret) = &self.settings.secret
            && !secret_matches(secret, metadata)
        {
            let refused = unauthenticated(asked.request_id());
            let answer = self.finish(refused, &mut asked, SECRET_MISSING);
            return denied(&answer);
        }
        let Some(original) = http.and_then(original) else {
            let refused = no_original(asked.request_id());
            let answer = self.finish(refused, &mut asked, ORIGINAL_MISSING);
            return denied(&answer);
        };
        let decision = self
            .decide(&snapshot, &original, &headers, &mut asked)
            .await;
        match answers::refusal(&decision, &snapshot.realm, asked.request_id()) {
            Some(refused) => {
                denied(&self.account(&decision, &snapshot, &original, &mut asked, refused))
            }
            None => {
                let ok = Answer::new(bytes::Bytes::new());
                self.account(&decision, &snapshot, &original, &mut asked, ok);
                allowed(&decision, &snapshot, &self.pipeline)
            }
        }
    }
}

/// The original request, from the message's HTTP attributes.
fn original(http: &envoy::HttpRequest) -> Option<Original<'_>> {
    Some(Original {
        method: Method::from_bytes(http.method.as_bytes()).ok()?,
        target: http.path.as_bytes(),
        host: (!http.host.is_empty()).then_some(http.host.as_bytes()),
        scheme: if http.scheme.eq_ignore_ascii_case("https") {
            Scheme::Https
        } else {
            Scheme::Http
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn raw_headers_and_the_header_map_both_arrive() {
        let http = envoy::HttpRequest {
            headers: [
                (":authority".to_string(), "api.test".to_string()),
                ("authorization".to_string(), "Bearer a".to_string()),
            ]
            .into(),
            header_map: Some(envoy::HeaderMap {
                headers: vec![envoy::HeaderValue {
                    key: "x-raw".into(),
                    value: String::new(),
                    raw_value: b"raw".to_vec(),
                }],
            }),
            ..Default::default()
        };
        let map = original_headers(&http);
        assert_eq!(map.len(), 2);
        assert_eq!(map["authorization"], "Bearer a");
        assert_eq!(map["x-raw"], "raw");
    }

    #[test]
    fn each_denial_has_the_code_envoy_expects() {
        assert_eq!(denial_code(401), code::UNAUTHENTICATED);
        assert_eq!(denial_code(403), code::PERMISSION_DENIED);
        assert_eq!(denial_code(503), code::UNAVAILABLE);
        assert_eq!(denial_code(429), code::RESOURCE_EXHAUSTED);
        assert_eq!(denial_code(400), code::INVALID_ARGUMENT);
    }

    #[test]
    fn the_source_address_is_read_from_envoys_field_numbers() {
        // AttributeContext.source (1) → Peer.address (1) →
        // Address.socket_address (1) → SocketAddress.address (2).
        let socket = [&[0x12, 8][..], b"10.1.2.3"].concat();
        let address = [&[0x0a, socket.len() as u8][..], &socket].concat();
        let peer = [&[0x0a, address.len() as u8][..], &address].concat();
        let attributes = [&[0x0a, peer.len() as u8][..], &peer].concat();
        let check = [&[0x0a, attributes.len() as u8][..], &attributes].concat();
        let check = CheckRequest::decode(&check[..]).unwrap();
        assert_eq!(source_ip(&check), Some("10.1.2.3".parse().unwrap()));
    }
}
