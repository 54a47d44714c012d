//! The admin listener, on its own address so it can stay off the public
//! network: `/metrics` (Prometheus text, or OpenMetrics with exemplars when
//! the scraper asks for it), `/healthz` (the process is alive),
//! `/readyz` (config loaded and every issuer has usable keys, and not
//! shutting down), `POST /-/reload` (read the config file again), and
//! with their blocks `/revocations` and `POST /ssf/events/{name}` (Shared
//! Signals push delivery).

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

mod exposition;
mod revocations;
mod signals;

use crate::clock::SharedClock;
use crate::identity;
use crate::pipeline::Snapshot;
use crate::shutdown::Drain;
use crate::ssf::Receiver;
use crate::state::revocation::Revocations;
use crate::telemetry::{Metrics, openmetrics};

/// What `POST /-/reload` asks of whoever can read and compile the config
/// again (the assembler's reloader): blocking, so it is called on a
/// blocking thread.
pub trait Reload: Send + Sync {
    /// What changed, as the answer's JSON; or why nothing did.
    fn reload(&self) -> Result<serde_json::Value, ReloadRefused>;
}

/// A reload that changed nothing.
pub struct ReloadRefused {
    /// The config asks for what only a restart can do (as opposed to a
    /// config that does not load).
    pub needs_restart: bool,
    pub message: String,
}

pub struct Admin {
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    drain: Drain,
    reloader: Arc<dyn Reload>,
    started: std::time::Instant,
    revocations: Option<Arc<Revocations>>,
    signals: Option<Arc<Receiver>>,
}

impl Admin {
    pub fn new(
        snapshot: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        clock: SharedClock,
        drain: Drain,
        reloader: Arc<dyn Reload>,
    ) -> Self {
        Self {
            snapshot,
            metrics,
            clock,
            drain,
            reloader,
            started: std::time::Instant::now(),
            revocations: None,
            signals: None,
        }
    }

    /// Serves `/revocations`, counts the list in `/metrics` and lets a
    /// stale copy fail `/readyz`.
    pub fn with_revocations(mut self, revocations: Option<Arc<Revocations>>) -> Self {
        self.revocations = revocations;
        self
    }

    /// Serves `/ssf/events/{name}`, Shared Signals push delivery.
    pub fn with_signals(mut self, signals: Option<Arc<Receiver>>) -> Self {
        self.signals = signals;
        self
    }

    /// Issuers that hold readiness back, by name; empty means ready. An
    /// issuer without usable keys counts unless it is marked not required
    /// and the startup grace has passed; one without a key source (it only
    /// introspects) has none to wait for.
    fn issuers_without_keys(&self) -> Vec<String> {
        let snapshot = self.snapshot.load();
        let in_grace = self.started.elapsed() < snapshot.startup_grace;
        snapshot
            .issuers
            .iter()
            .filter(|issuer| !issuer.algorithms.is_empty() && !issuer.keys.is_ready())
            .filter(|issuer| issuer.required || in_grace)
            .map(|issuer| issuer.name.clone())
            .collect()
    }

    /// Reloads on a blocking thread: reading and compiling the config must
    /// not hold up this listener's runtime.
    async fn reload(&self) -> Response<Vec<u8>> {
        let reloader = self.reloader.clone();
        let outcome = tokio::task::spawn_blocking(move || reloader.reload()).await;
        let (status, body) = match outcome {
            Ok(Ok(reloaded)) => (StatusCode::OK, reloaded),
            // A restart-only change is a request the running process can't
            // honour; anything else is a config that does not load.
            Ok(Err(refused)) => (
                if refused.needs_restart {
                    StatusCode::CONFLICT
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                },
                serde_json::json!({ "result": "error", "error": refused.message }),
            ),
            Err(panicked) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({ "result": "error", "error": panicked.to_string() }),
            ),
        };
        let mut body = body.to_string().into_bytes();
        body.push(b'\n');
        reply(status, "application/json", body)
    }

    /// The identity tokens' JWK Set or discovery document, from the config
    /// being served: a reload that rotates keys publishes at once.
    fn identity_keys(&self, path: &str) -> Response<Vec<u8>> {
        let snapshot = self.snapshot.load();
        let Some(tokens) = &snapshot.identity_tokens else {
            return reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec());
        };
        let Some((content_type, body)) = tokens.document(path) else {
            return reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec());
        };
        let mut response = reply(StatusCode::OK, content_type, body.to_vec());
        response.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static(identity::DOCUMENT_CACHE_CONTROL),
        );
        response
    }

    fn refresh_gauges(&self) {
        if let Some(revocations) = &self.revocations {
            revocations.refresh_gauges();
        }
        let now = self.clock.now_unix();
        for issuer in &self.snapshot.load().issuers {
            let name = issuer.name.as_str();
            self.metrics
                .keys
                .keys
                .with_label_values(&[name])
                .set(issuer.keys.current().len() as i64);
            if issuer.keys.is_remote() {
                let last = issuer.keys.last_success();
                let age = if last == 0 { -1 } else { now - last };
                self.metrics.keys.age.with_label_values(&[name]).set(age);
            }
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/metrics" => {
                self.refresh_gauges();
                let accept = session.req_header().headers.get_all(http::header::ACCEPT);
                if exposition::wants_openmetrics(accept.iter()) {
                    let body = self.metrics.render_openmetrics();
                    reply(StatusCode::OK, openmetrics::CONTENT_TYPE, body)
                } else {
                    let body = self.metrics.render();
                    reply(StatusCode::OK, "text/plain; version=0.0.4", body)
                }
            }
            "/healthz" => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            identity::JWKS_PATH | identity::DISCOVERY_PATH => self.identity_keys(&path),
            revocations::PATH if self.revocations.is_some() => {
                let revocations = self.revocations.as_ref().expect("checked");
                revocations::handle(revocations, &self.snapshot.load(), session).await
            }
            path if path.starts_with(signals::PREFIX) && self.signals.is_some() => {
                let receiver = self.signals.as_ref().expect("checked");
                signals::handle(receiver, session).await
            }
            "/-/reload" if session.req_header().method == http::Method::POST => self.reload().await,
            "/-/reload" => {
                let mut response = reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "text/plain",
                    b"use POST to reload the config\n".to_vec(),
                );
                response
                    .headers_mut()
                    .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
                response
            }
            // Load balancers stop sending to an instance that is not ready;
            // that is what the grace period waits for.
            "/readyz" if self.drain.is_draining() => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                b"not ready: draining, shutting down\n".to_vec(),
            ),
            "/readyz" => {
                let missing = self.issuers_without_keys();
                let stale = self.revocations.as_ref().and_then(|r| r.not_ready());
                if let Some(stale) = stale {
                    reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        format!("not ready: {stale}\n").into_bytes(),
                    )
                } else if missing.is_empty() {
                    reply(StatusCode::OK, "text/plain", b"ready\n".to_vec())
                } else {
                    let body = format!("not ready: no usable keys for issuers {missing:?}\n");
                    reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        body.into_bytes(),
                    )
                }
            }
            _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .expect("static response parts are valid")
}
