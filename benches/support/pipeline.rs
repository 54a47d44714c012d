//! The whole request decision as the proxy asks for it
//! (`Pipeline::decide`), for a config given as text, and the typical
//! access token's claims the benches send through it.

use std::future::Future;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use serde_json::{Map, Value, json};

use jwtgate::auth::token_cache::TokenCache;
use jwtgate::pipeline::{
    Adapter, Decision, Forwarded, Pipeline, RequestView, Scheme, Snapshot, TargetForm,
};

pub const PIPELINE_TARGET: &[u8] = b"/api/orders/42?expand=items";

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys")
}

pub fn now() -> i64 {
    jwtgate::clock::system().now_unix()
}

/// A typical access token's claims from `iss`: a dozen, a few scopes.
pub fn typical_claims(iss: &str) -> Map<String, Value> {
    let claims = json!({
        "iss": iss, "sub": "user-4711", "aud": ["api", "billing"],
        "iat": now(), "exp": now() + 3600, "nbf": now() - 5,
        "jti": "c0ffee-1234", "client_id": "web-app",
        "scope": "orders:read orders:write profile",
        "realm_access": {"roles": ["user", "ops"]},
        "email": "user@example.com",
    });
    claims.as_object().unwrap().clone()
}

/// The pipeline and snapshot of `config` (read as if from `path`, which
/// relative paths in it are relative to), with the token cache on (the
/// default) and the system clock.
pub fn compiled(path: &Path, config: &str) -> (Pipeline, Snapshot) {
    let config = jwtgate::config::parse(path, config, &|_| None).unwrap();
    let compiled = jwtgate::assemble::compile_reusing(path, config, &()).unwrap();
    let counter = |name: &str| prometheus::IntCounter::new(name, name).unwrap();
    let settings = compiled
        .bootstrap
        .token_cache
        .expect("the cache is on by default");
    let cache = TokenCache::new(&settings, counter("hits"), counter("misses"));
    let pipeline = Pipeline::new(jwtgate::clock::system(), Some(cache));
    (pipeline, compiled.snapshot)
}

pub fn pipeline_headers(authorization: &str) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert("host", "api.example.com".parse().unwrap());
    headers.insert("user-agent", "bench/1.0".parse().unwrap());
    headers.insert("authorization", authorization.parse().unwrap());
    headers
}

/// A future that never waits (local keys, a local replay table, a cached
/// introspection answer), run to its end with one poll: a future that
/// would wait panics instead of being measured.
pub fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future)
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("nothing to wait for"),
    }
}

/// The request of `GET PIPELINE_TARGET` with `headers`, as the proxy sees it.
pub fn view(headers: &http::HeaderMap) -> RequestView<'_> {
    RequestView {
        method: &http::Method::GET,
        raw_target: PIPELINE_TARGET,
        target: TargetForm::Origin {
            path_and_query: PIPELINE_TARGET,
        },
        headers,
        client: None,
        scheme: Scheme::Http,
        client_cert_thumbprint: None,
        adapter: Adapter::Proxy,
        exemplar: None,
    }
}

/// The decision for `GET PIPELINE_TARGET` with `headers`, as the proxy asks for it.
pub fn decide<'s>(
    pipeline: &Pipeline,
    snapshot: &'s Snapshot,
    headers: &http::HeaderMap,
) -> Decision<'s> {
    ready(pipeline.decide(snapshot, black_box(&view(headers))))
}

pub fn forwarded(decision: &Decision<'_>) -> bool {
    matches!(
        decision,
        Decision::Forward {
            auth: Forwarded::Identity(_),
            ..
        }
    )
}
