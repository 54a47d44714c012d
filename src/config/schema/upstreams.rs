//! A route's `upstream`: addresses, timeouts, health checks, TLS, and
//! where names are resolved.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::json::DurationText;
use super::{duration, duration_text};

/// Where the proxy sends a route's requests.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// One or more `host:port`, an IP address or a DNS name (a Kubernetes
    /// Service or headless Service), round robin across every address they
    /// resolve to. No port, or a host that is neither: config error.
    pub addrs: Vec<String>,
    /// Per connection attempt; a failed connect tries the next endpoint.
    /// With `tls`, the handshake gets its own `connect_timeout` after the
    /// TCP connect.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "duration",
        serialize_with = "duration_text"
    )]
    #[schemars(with = "DurationText")]
    pub connect_timeout: Duration,
    /// The longest wait for the upstream's next bytes.
    #[serde(
        default = "default_read_timeout",
        deserialize_with = "duration",
        serialize_with = "duration_text"
    )]
    #[schemars(with = "DurationText")]
    pub read_timeout: Duration,
    /// The longest wait for the upstream to take the next bytes.
    #[serde(
        default = "default_read_timeout",
        deserialize_with = "duration",
        serialize_with = "duration_text"
    )]
    #[schemars(with = "DurationText")]
    pub write_timeout: Duration,
    /// How long a connection to the upstream is kept open for reuse with
    /// no request on it; as nginx's `keepalive_timeout` in an `upstream`
    /// block. Keep it below the upstream's own idle timeout, so that
    /// jwtgate never reuses a connection the upstream is closing.
    /// Positive.
    #[serde(
        default = "default_keepalive_timeout",
        deserialize_with = "duration",
        serialize_with = "duration_text"
    )]
    #[schemars(with = "DurationText")]
    pub keepalive_timeout: Duration,
    /// TLS to the upstream; absent: clear text. Its files are read at
    /// startup and on every reload.
    pub tls: Option<UpstreamTlsConfig>,
    /// How often DNS names in `addrs` are resolved again, in the
    /// background; changed addresses are followed without a reload. At
    /// least `100ms`.
    #[serde(
        default = "default_resolve_interval",
        deserialize_with = "duration",
        serialize_with = "duration_text"
    )]
    #[schemars(with = "DurationText")]
    pub resolve_interval: Duration,
    /// An endpoint that refused a connection (or failed the TLS handshake)
    /// gets no traffic for this long; `0s`: never set aside. Whole seconds.
    #[serde(
        default = "default_eject_for",
        deserialize_with = "duration",
        serialize_with = "duration_text"
    )]
    #[schemars(with = "DurationText")]
    pub eject_for: Duration,
    /// Active health checks of each endpoint; absent: none (connection
    /// failures still set an endpoint aside, see `eject_for`).
    pub health_check: Option<HealthCheckConfig>,
}

fn default_keepalive_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_resolve_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_eject_for() -> Duration {
    Duration::from_secs(10)
}

/// How each endpoint of an upstream is probed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `tcp`: a connection is accepted; `http`: `GET path` answers
    /// `expected_status` (over TLS with the upstream's `tls` settings).
    pub protocol: HealthCheckProtocol,
    /// The `http` check's request target; sent with `Host` set to the
    /// configured address and `User-Agent: jwtgate-health-check`. Must
    /// start with `/`.
    pub path: String,
    /// The status the `http` check wants; any other fails it. From 100 to
    /// 599.
    pub expected_status: u16,
    /// Time between checks of each endpoint; at least `100ms`.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub interval: Duration,
    /// For the connection and, with `http`, the answer; positive.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
    /// Consecutive passed checks that make an unhealthy endpoint healthy
    /// again; at least 1.
    pub healthy_threshold: usize,
    /// Consecutive failed checks that make a healthy endpoint unhealthy; at
    /// least 1.
    pub unhealthy_threshold: usize,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            protocol: HealthCheckProtocol::Tcp,
            path: "/".into(),
            expected_status: 200,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
        }
    }
}

/// How a health check probes an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckProtocol {
    // `HealthCheckConfig::protocol` says what each one checks.
    Tcp,
    Http,
}

/// Where upstream names are resolved.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Name servers that resolve upstream names, as `ip` or `ip:port` (UDP,
    /// TCP for a truncated answer), asked directly with the names as
    /// written (no search domains, no `/etc/hosts`). Empty: the system
    /// resolver (`/etc/hosts`, `/etc/resolv.conf` with its search domains,
    /// as in a pod). Not an IP address: config error.
    pub servers: Vec<String>,
    /// One resolution of one name, all servers and attempts included;
    /// positive.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            timeout: Duration::from_secs(2),
        }
    }
}

/// How jwtgate speaks TLS to a route's upstream. The files are read when
/// the config is loaded, so a reload picks up rotated ones.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// `false` keeps the block but speaks clear text.
    pub enabled: bool,
    /// The name the upstream's certificate must be valid for, sent as SNI;
    /// default: the host of each address (an address that is an IP is
    /// checked against the certificate's IP addresses and sends no SNI).
    /// Not a DNS name or IP address: config error.
    pub sni: Option<String>,
    /// Check the upstream's chain and name. `false` accepts any
    /// certificate; it is logged as a warning naming the route at startup
    /// and on every reload, and printed by `jwtgate check`.
    pub verify: bool,
    /// PEM bundle of the CAs to trust instead of the system roots
    /// (`SSL_CERT_FILE` / `SSL_CERT_DIR` or the OS store, read at startup;
    /// none found is a config error).
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain (leaf first) presented to an upstream that
    /// requires mTLS; goes with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert`; one that
    /// doesn't match the certificate is a config error.
    pub client_key: Option<PathBuf>,
    /// Offer HTTP/2 by ALPN (`h2`, then `http/1.1`); the upstream chooses.
    pub h2: bool,
}

impl Default for UpstreamTlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sni: None,
            verify: true,
            ca_file: None,
            client_cert: None,
            client_key: None,
            h2: false,
        }
    }
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_read_timeout() -> Duration {
    Duration::from_secs(30)
}
