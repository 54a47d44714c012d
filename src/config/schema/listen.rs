//! `listen`: the clear-text and TLS listeners, and the authorization
//! listener front proxies ask.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{default_true, duration};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// The clear-text listener: `host:port`, or a map with `addr`, `mode`
    /// and `h2c`.
    #[serde(deserialize_with = "http_listener")]
    pub http: HttpListenConfig,
    /// The TLS listener; absent: none.
    pub https: Option<HttpsListenConfig>,
    /// The authorization listener front proxies ask; absent: none.
    pub authz: Option<AuthzListenConfig>,
}

/// `listen.authz`: answers NGINX `auth_request`, Traefik and Caddy forward
/// auth, or Envoy's HTTP `ext_authz` with the proxy's own decision. It
/// believes the request headers that describe the original request, so it
/// belongs on an address only the front proxy reaches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzListenConfig {
    pub addr: String,
    /// Where the original request's method and target are read from.
    #[serde(default)]
    pub convention: AuthzConvention,
    /// `envoy`: the prefix Envoy's `path_prefix` adds before the original
    /// path, stripped before routing; empty: none.
    #[serde(default)]
    pub path_prefix: String,
    /// A header every decision request must carry with this secret value;
    /// absent: none is asked for.
    pub shared_secret: Option<SharedSecretConfig>,
    /// Where Envoy's gRPC `ext_authz` (`Authorization/Check`) is served,
    /// as an IP address and port; absent: not served.
    pub grpc_addr: Option<String>,
}

/// How a front proxy describes the request it asks about.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthzConvention {
    /// `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri` (Traefik, Caddy).
    #[default]
    Forwarded,
    /// `X-Original-Method`, `X-Original-URI` and `Host` (NGINX
    /// `auth_request`).
    Nginx,
    /// `X-Original-Method` and `X-Original-URL` (ingress-nginx's
    /// `auth-url`, which sends the auth service's own `Host`).
    IngressNginx,
    /// The check request's own method and path, below `path_prefix`
    /// (Envoy and Istio HTTP `ext_authz`).
    Envoy,
}

impl AuthzConvention {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::Nginx => "nginx",
            Self::IngressNginx => "ingress_nginx",
            Self::Envoy => "envoy",
        }
    }
}

/// The shared secret, read from exactly one of an environment variable or
/// a file (never written in the config itself).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedSecretConfig {
    #[serde(default = "default_secret_header")]
    pub header: String,
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

fn default_secret_header() -> String {
    "x-jwtgate-authz-secret".into()
}

/// `listen.http`. The plain `host:port` form configs have always used is
/// the map form with only `addr`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpListenConfig {
    pub addr: String,
    pub mode: ClearTextMode,
    /// HTTP/2 with prior knowledge (h2c), as gRPC clients inside a cluster
    /// speak it; HTTP/1 clients are served as before.
    pub h2c: bool,
}

impl Default for HttpListenConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".into(),
            mode: ClearTextMode::Serve,
            h2c: false,
        }
    }
}

/// What the clear-text listener does with requests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClearTextMode {
    /// Route them like any other.
    #[default]
    Serve,
    /// Answer each with a 308 to the same path and query over HTTPS.
    Redirect,
    /// No clear-text listener at all.
    Off,
}

/// `listen.http` as a string or a map; serde's untagged enums would hide
/// the map's own errors (an unknown field, a wrong mode) behind "did not
/// match any variant".
fn http_listener<'de, D: Deserializer<'de>>(deserializer: D) -> Result<HttpListenConfig, D::Error> {
    struct Form;
    impl<'de> serde::de::Visitor<'de> for Form {
        type Value = HttpListenConfig;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a host:port address or a map with addr, mode and h2c")
        }
        fn visit_str<E: serde::de::Error>(self, addr: &str) -> Result<Self::Value, E> {
            Ok(HttpListenConfig {
                addr: addr.to_string(),
                ..HttpListenConfig::default()
            })
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            HttpListenConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    deserializer.deserialize_any(Form)
}

/// `listen.https`: TLS 1.2 and 1.3, certificates chosen by SNI.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsListenConfig {
    pub addr: String,
    /// One entry per certificate; the first is also served to clients that
    /// send no SNI or a name no entry lists.
    pub certificates: Vec<CertificateConfig>,
    /// `Strict-Transport-Security` on every response over TLS; absent: not
    /// sent.
    pub hsts: Option<HstsConfig>,
    /// Offer HTTP/2 in ALPN (`h2`, then `http/1.1`); false: HTTP/1.1 only.
    #[serde(default = "default_true")]
    pub h2: bool,
    /// The port redirects to HTTPS name, when clients reach this listener
    /// through another one (a container port mapping, a load balancer);
    /// absent: the port of `addr`.
    pub redirect_port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// The SNI names it serves: exact names, or `*.example.com` for any one
    /// label below `example.com`.
    pub hosts: Vec<String>,
    /// PEM: the certificate, then its intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HstsConfig {
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
    pub include_subdomains: bool,
    pub preload: bool,
}

impl Default for HstsConfig {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(365 * 24 * 60 * 60),
            include_subdomains: false,
            preload: false,
        }
    }
}
