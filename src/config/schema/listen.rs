//! `listen`: the clear-text and TLS listeners, and the authorization
//! listener front proxies ask.

use std::path::PathBuf;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};

use super::json::DurationText;
use super::{default_true, duration, duration_text};

/// The proxy's listeners.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// The clear-text proxy listener: `host:port`, or a map with `addr`,
    /// `mode` and `h2c`.
    #[serde(deserialize_with = "http_listener")]
    #[schemars(schema_with = "http_listener_schema")]
    pub http: HttpListenConfig,
    /// The TLS listener; without it jwtgate serves clear text only.
    pub https: Option<HttpsListenConfig>,
    /// The authorization listener another proxy asks (NGINX
    /// `auth_request`, Traefik and Caddy forward auth, Envoy `ext_authz`);
    /// absent: none. Restart-only.
    pub authz: Option<AuthzListenConfig>,
}

/// `listen.authz`: answers NGINX `auth_request`, Traefik and Caddy forward
/// auth, or Envoy's HTTP `ext_authz` with the proxy's own decision. It
/// believes the request headers that describe the original request, so it
/// belongs on an address only the front proxy reaches.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthzListenConfig {
    /// Its address (`host:port`): an internal one only the front proxy
    /// reaches, since it believes the headers that describe the original
    /// request.
    pub addr: String,
    /// Where the original request is read from; only that convention's
    /// headers are read.
    #[serde(default)]
    pub convention: AuthzConvention,
    /// `envoy` only: the `path_prefix` Envoy puts before the original path,
    /// stripped before routing; empty, or `/…` without a trailing `/`
    /// (anything else, or a prefix with another convention, is a config
    /// error).
    #[serde(default)]
    pub path_prefix: String,
    /// Require every decision request to carry a secret header; a missing
    /// or wrong one is answered `403` (error `forbidden`) before anything is
    /// decided. Absent: none is asked for.
    pub shared_secret: Option<SharedSecretConfig>,
    /// Also serve Envoy's gRPC `ext_authz`
    /// (`envoy.service.auth.v3.Authorization/Check`, HTTP/2 without TLS) on
    /// this `IP:port`, an internal one like `addr`; the shared secret, if
    /// set, is read from the call's metadata. Not an IP address and port, or
    /// equal to `addr`: config error. Absent: not served.
    pub grpc_addr: Option<String>,
}

/// How a front proxy describes the request it asks about.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthzConvention {
    /// `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri` (Traefik, Caddy).
    #[default]
    Forwarded,
    /// `X-Original-Method`, `X-Original-URI`, `Host` and
    /// `X-Forwarded-Proto` (NGINX `auth_request`).
    Nginx,
    /// `X-Original-Method` and `X-Original-URL` (ingress-nginx's
    /// `auth-url`, which sends the auth service's own `Host`).
    IngressNginx,
    /// The check request's own method and path, below `path_prefix`, its
    /// `Host` and `X-Forwarded-Proto` (Envoy and Istio HTTP `ext_authz`).
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

/// The shared secret, read at startup from exactly one of an environment
/// variable or a file (never written in the config itself). Empty or
/// unreadable: config error. Compared by SHA-256 digest in constant time.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SharedSecretConfig {
    /// The header's name.
    #[serde(default = "default_secret_header")]
    pub header: String,
    /// The environment variable the secret is read from.
    pub env: Option<String>,
    /// The file the secret is read from (trailing line endings dropped).
    pub file: Option<PathBuf>,
}

fn default_secret_header() -> String {
    "x-jwtgate-authz-secret".into()
}

/// `listen.http`, the clear-text listener. The plain `host:port` form is
/// the map form with only `addr`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HttpListenConfig {
    /// Its address, `host:port` (`check` refuses an address that doesn't
    /// resolve, as `run` would).
    pub addr: String,
    /// What it does with requests; `redirect` needs `listen.https`, and
    /// `off` needs `listen.https`, or `listen.authz` for a gateway that
    /// only decides for another proxy.
    pub mode: ClearTextMode,
    /// Also serve HTTP/2 with prior knowledge (h2c, as gRPC clients inside
    /// a cluster speak it); HTTP/1 clients are served as before.
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
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClearTextMode {
    /// Route them as usual.
    #[default]
    Serve,
    /// Answer every request with `308` to `https://` the same host (the
    /// `listen.https` port, or `redirect_port`, unless 443), path and query.
    Redirect,
    /// No clear-text listener at all (needs `listen.https`, or
    /// `listen.authz` for a gateway that only decides).
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

/// What [`http_listener`] reads: a string, or the map.
fn http_listener_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            { "type": "string", "description": "`host:port`: the map form with only `addr`." },
            generator.subschema_for::<HttpListenConfig>(),
        ]
    })
}

/// `listen.https`: TLS 1.2 and 1.3, certificates chosen by SNI.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpsListenConfig {
    /// Its address, `host:port`.
    pub addr: String,
    /// At least one `{hosts, cert, key}` entry; the first is also served to
    /// clients that send no SNI or a name no entry lists.
    pub certificates: Vec<CertificateConfig>,
    /// Send `Strict-Transport-Security` on every response over TLS (never
    /// over clear text); absent: not sent.
    pub hsts: Option<HstsConfig>,
    /// Offer HTTP/2 in ALPN (`h2`, then `http/1.1`); false: HTTP/1.1 only.
    #[serde(default = "default_true")]
    pub h2: bool,
    /// The port a redirect to HTTPS names (left out when 443): set it when
    /// clients reach the TLS listener through another port, such as a
    /// container's port mapping or a load balancer; absent: the port of
    /// `addr`.
    pub redirect_port: Option<u16>,
    /// Ask clients for a certificate in the handshake (mutual TLS, RFC
    /// 8705): the thumbprint of the one presented is what a
    /// certificate-bound token's `cnf["x5t#S256"]` names. Applies to every
    /// host of the listener. Absent: no certificate is asked for.
    /// Reloadable, as the certificates are.
    pub client_certs: Option<ClientCertsConfig>,
}

/// `listen.https.client_certs`: which CAs client certificates must chain
/// to, and whether one is required.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCertsConfig {
    /// PEM file: the CA certificates a client certificate must chain to
    /// (intermediates the client sends are used to build the chain). No
    /// certificate in it, or one that can't be parsed: config error.
    pub ca: PathBuf,
    /// `required`: a handshake without a certificate that chains to `ca`
    /// fails. `optional`: a client without a certificate is served, one
    /// with a certificate that does not chain to `ca` is refused at the
    /// handshake.
    pub mode: ClientCertMode,
}

/// Whether the TLS listener demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertMode {
    /// Clients without a certificate are served too.
    Optional,
    /// Every client must present a certificate that chains to `ca`.
    Required,
}

/// One certificate of the TLS listener and the names it serves.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// The SNI names the entry serves: exact names, or `*.example.com` for
    /// any one label below `example.com`; case-insensitive; a name may
    /// appear in one entry only. An exact name wins over a wildcard.
    pub hosts: Vec<String>,
    /// PEM file: the certificate, then its intermediates.
    pub cert: PathBuf,
    /// PEM file: its private key (PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or
    /// Ed25519). A key that is not the certificate's is a config error.
    pub key: PathBuf,
}

/// `Strict-Transport-Security`, sent on every response over TLS.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HstsConfig {
    /// `max-age`, in whole seconds.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub max_age: Duration,
    /// Add `includeSubDomains`.
    pub include_subdomains: bool,
    /// Add `preload`; needs `include_subdomains: true` and a `max_age` of
    /// at least a year (what the browsers' preload list demands).
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
