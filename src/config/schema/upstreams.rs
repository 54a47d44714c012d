//! A route's `upstream`: addresses, timeouts, health checks, TLS, and
//! where names are resolved.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// One or more `host:port` (IP address or DNS name), used round robin
    /// across every address they resolve to.
    pub addrs: Vec<String>,
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    #[serde(default = "default_read_timeout", deserialize_with = "duration")]
    pub read_timeout: Duration,
    #[serde(default = "default_read_timeout", deserialize_with = "duration")]
    pub write_timeout: Duration,
    /// TLS to the upstream; absent: clear text.
    pub tls: Option<UpstreamTlsConfig>,
    /// How often DNS names in `addrs` are resolved again, in the background.
    #[serde(default = "default_resolve_interval", deserialize_with = "duration")]
    pub resolve_interval: Duration,
    /// How long an endpoint that refused a connection gets no traffic;
    /// `0s`: never set aside.
    #[serde(default = "default_eject_for", deserialize_with = "duration")]
    pub eject_for: Duration,
    /// Active health checks; absent: none (connection failures still set an
    /// endpoint aside, see `eject_for`).
    pub health_check: Option<HealthCheckConfig>,
}

fn default_resolve_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_eject_for() -> Duration {
    Duration::from_secs(10)
}

/// How each endpoint of an upstream is probed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `tcp`: a connection is accepted; `http`: `GET path` answers
    /// `expected_status` (over TLS when the upstream has `tls`).
    pub protocol: HealthCheckProtocol,
    pub path: String,
    pub expected_status: u16,
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// For the connection and, with `http`, the response.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Consecutive passed checks that make an unhealthy endpoint healthy.
    pub healthy_threshold: usize,
    /// Consecutive failed checks that make a healthy endpoint unhealthy.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckProtocol {
    Tcp,
    Http,
}

/// Where upstream names are resolved.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Name servers as `ip` or `ip:port` (UDP, then TCP for a truncated
    /// answer); empty: the system resolver (`/etc/hosts`,
    /// `/etc/resolv.conf` and its search domains).
    pub servers: Vec<String>,
    /// One resolution of one name, all servers and attempts included.
    #[serde(deserialize_with = "duration")]
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
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// `false` keeps the block but speaks clear text.
    pub enabled: bool,
    /// The name the upstream's certificate must be valid for, sent as SNI;
    /// default: the host of each address (an IP address is checked against
    /// the certificate's IP addresses and sends no SNI).
    pub sni: Option<String>,
    /// Check the upstream's certificate chain and name. Turning it off is
    /// explicit and warned about at startup and on every reload.
    pub verify: bool,
    /// PEM bundle of the CAs to trust; absent: the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain (leaf first) presented to an upstream that
    /// requires mTLS; goes with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert`.
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
