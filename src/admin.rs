//! The admin listener, on its own address so it can stay off the public
//! network: `/metrics` (Prometheus text), `/healthz` (the process is alive),
//! `/readyz` (config loaded and every issuer has usable keys, and not
//! shutting down).

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::clock::SharedClock;
use crate::config::Snapshot;
use crate::shutdown::Drain;
use crate::telemetry::Metrics;

pub struct Admin {
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    drain: Drain,
    started: std::time::Instant,
}

impl Admin {
    pub fn new(
        snapshot: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        clock: SharedClock,
        drain: Drain,
    ) -> Self {
        Self {
            snapshot,
            metrics,
            clock,
            drain,
            started: std::time::Instant::now(),
        }
    }

    /// Issuers that hold readiness back, by name; empty means ready. An
    /// issuer without usable keys counts unless it is marked not required
    /// and the startup grace has passed.
    fn issuers_without_keys(&self) -> Vec<String> {
        let snapshot = self.snapshot.load();
        let in_grace = self.started.elapsed() < snapshot.startup_grace;
        snapshot
            .issuers
            .iter()
            .filter(|issuer| !issuer.keys.is_ready() && (issuer.required || in_grace))
            .map(|issuer| issuer.name.clone())
            .collect()
    }

    fn refresh_gauges(&self) {
        let now = self.clock.now_unix();
        for issuer in &self.snapshot.load().issuers {
            let name = issuer.name.as_str();
            self.metrics
                .jwks_keys
                .with_label_values(&[name])
                .set(issuer.keys.current().len() as i64);
            if issuer.keys.is_remote() {
                let last = issuer.keys.last_success();
                let age = if last == 0 { -1 } else { now - last };
                self.metrics.jwks_age.with_label_values(&[name]).set(age);
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
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                )
            }
            "/healthz" => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            // Load balancers stop sending to an instance that is not ready;
            // that is what the grace period waits for.
            "/readyz" if self.drain.is_draining() => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                b"not ready: draining, shutting down\n".to_vec(),
            ),
            "/readyz" => {
                let missing = self.issuers_without_keys();
                if missing.is_empty() {
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
