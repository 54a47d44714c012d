//! Active health checks, with pingora-load-balancing's TCP and HTTP checks.
//! An HTTP check of a TLS upstream speaks TLS as the proxy does: the same
//! CA list, client certificate and server name for each configured address.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::lb::Backend;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::upstreams::peer::HttpPeer;

use super::discovery::Origin;
use crate::config::schema::{AsWritten, HealthCheckConfig, HealthCheckProtocol};
use crate::upstream::tls::UpstreamTls;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HealthCheckError {
    #[error("upstream.health_check.interval is {0}; it must be at least 100ms")]
    Interval(String),
    #[error("upstream.health_check.timeout must be positive")]
    ZeroTimeout,
    #[error("upstream.health_check.{field} is 0; it must be at least 1")]
    ZeroThreshold { field: &'static str },
    #[error("upstream.health_check.expected_status is {0}; it must be from 100 to 599")]
    Status(u16),
    #[error(
        "upstream.health_check.path {0:?} is not a path (it must start with / and be a valid request target)"
    )]
    Path(String),
}

pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The checks of one upstream, ready to run.
pub struct Probe {
    kind: Kind,
    healthy_threshold: usize,
    unhealthy_threshold: usize,
    route: String,
}

enum Kind {
    Tcp(Box<TcpHealthCheck>),
    /// One check per configured address: each has its own Host header and,
    /// over TLS, its own server name.
    Http(Vec<HttpHealthCheck>),
}

impl Probe {
    /// Checks `config` and builds the probe; `addrs` are the configured
    /// addresses, `tls` the upstream's TLS settings.
    pub fn compile(
        route: &str,
        config: &HealthCheckConfig,
        addrs: &[String],
        tls: Option<&UpstreamTls>,
    ) -> Result<Self, HealthCheckError> {
        if config.interval < MIN_INTERVAL {
            return Err(HealthCheckError::Interval(
                AsWritten(config.interval).to_string(),
            ));
        }
        if config.timeout.is_zero() {
            return Err(HealthCheckError::ZeroTimeout);
        }
        for (field, value) in [
            ("healthy_threshold", config.healthy_threshold),
            ("unhealthy_threshold", config.unhealthy_threshold),
        ] {
            if value == 0 {
                return Err(HealthCheckError::ZeroThreshold { field });
            }
        }
        if !(100..=599).contains(&config.expected_status) {
            return Err(HealthCheckError::Status(config.expected_status));
        }
        let kind = match config.protocol {
            HealthCheckProtocol::Tcp => {
                let mut check = TcpHealthCheck::new();
                check.peer_template.options.connection_timeout = Some(config.timeout);
                Kind::Tcp(check)
            }
            HealthCheckProtocol::Http => Kind::Http(
                addrs
                    .iter()
                    .enumerate()
                    .map(|(origin, addr)| http_check(config, addr, origin, tls))
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Self {
            kind,
            healthy_threshold: config.healthy_threshold,
            unhealthy_threshold: config.unhealthy_threshold,
            route: route.to_string(),
        })
    }
}

fn http_check(
    config: &HealthCheckConfig,
    addr: &str,
    origin: usize,
    tls: Option<&UpstreamTls>,
) -> Result<HttpHealthCheck, HealthCheckError> {
    let bad_path = || HealthCheckError::Path(config.path.clone());
    if !config.path.starts_with('/') {
        return Err(bad_path());
    }
    let mut request =
        RequestHeader::build("GET", config.path.as_bytes(), None).map_err(|_| bad_path())?;
    // The configured `host:port`: what a client addressing the service by
    // that name would send.
    request
        .insert_header(http::header::HOST, addr)
        .map_err(|_| bad_path())?;
    request
        .insert_header(http::header::USER_AGENT, "jwtgate-health-check")
        .map_err(|_| bad_path())?;
    let mut check = HttpHealthCheck::new(addr, false);
    check.req = request;
    // The address is a placeholder the check replaces with the endpoint's.
    let placeholder = SocketAddr::from(([0, 0, 0, 0], 1));
    let mut peer = match tls {
        None => HttpPeer::new(placeholder, false, String::new()),
        Some(tls) => tls.peer(placeholder, origin),
    };
    peer.options.connection_timeout = Some(config.timeout);
    peer.options.total_connection_timeout = Some(config.timeout);
    peer.options.read_timeout = Some(config.timeout);
    peer.options.write_timeout = Some(config.timeout);
    check.peer_template = peer;
    let expected = config.expected_status;
    check.validator = Some(Box::new(move |response| {
        if response.status.as_u16() == expected {
            Ok(())
        } else {
            pingora::Error::e_explain(
                pingora::ErrorType::CustomCode("unexpected status", response.status.as_u16()),
                "the health check's answer",
            )
        }
    }));
    Ok(check)
}

#[async_trait]
impl HealthCheck for Probe {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        match &self.kind {
            Kind::Tcp(check) => check.check(target).await,
            Kind::Http(checks) => {
                let origin = target.ext.get::<Origin>().map_or(0, |origin| origin.0);
                checks[origin.min(checks.len() - 1)].check(target).await
            }
        }
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if healthy {
            tracing::info!(route = %self.route, endpoint = %target.addr, "upstream endpoint is healthy again");
        } else {
            tracing::warn!(route = %self.route, endpoint = %target.addr, "upstream endpoint failed its health checks; it gets no traffic until it passes them");
        }
    }

    fn backend_summary(&self, target: &Backend) -> String {
        format!("route {:?} endpoint {}", self.route, target.addr)
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.healthy_threshold
        } else {
            self.unhealthy_threshold
        }
    }
}
