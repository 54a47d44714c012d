//! Config → [`Snapshot`]: names resolved to indices, keys parsed into
//! ready-to-verify form, header plans and the route table built once, so the
//! request path only reads.

use std::collections::HashSet;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::Spanned;

use crate::auth::IssuerVerifier;
use crate::auth::extract::TokenSources;
use crate::auth::header::normalize_typ;
use crate::auth::policy::{ClaimRequirement, RoutePolicy};
use crate::auth::token_cache::CacheSettings;
use crate::auth::verify::TokenTypeRule;
use crate::auth::verify::VerifierId;
use crate::authz::settings::AuthzSettings;
use crate::config::ConfigError;
use crate::config::schema::{
    AuthMode, ClearTextMode, GatewayConfig, HstsConfig, HttpsOnly, IssuerConfig, RouteConfig,
    UpstreamConfig,
};
use crate::jose::{AlgorithmSet, KeyFamily};
use crate::keys::fetch::{FetchSettings, Locator, scheme_allowed};
use crate::keys::remote::{RefreshPolicy, RemoteIdentity, RemoteSource};
use crate::keys::{self, KeySet, KeyStore, VerifyingKey};
use crate::pipeline::canonical::{self, PathRules};
use crate::pipeline::client::{CidrError, TrustedProxies};
use crate::pipeline::cors::CorsPolicy;
use crate::pipeline::limits::RequestLimits;
use crate::pipeline::router::Router;
use crate::pipeline::{ClaimHeader, CompiledRoute, ForwardPlan, HttpsState, Snapshot};
use crate::state::rate_limit::RouteRateLimits;
use crate::state::rate_limit_sync::{self, RateLimitSettings};
use crate::state::revocation::settings::{self as revocation, RevocationSettings};
use crate::telemetry::metrics::RouteSeries;
use crate::tls::{CertificateFiles, Certificates};
use crate::upstream::discovery::Dns;
use crate::upstream::tls as upstream_tls;
use crate::upstream::{PoolIdentity, RouteUpstream, UpstreamPool};

/// A compiled config: what only a restart can change, and what a reload
/// swaps.
#[derive(Debug)]
pub struct Compiled {
    pub bootstrap: Bootstrap,
    pub snapshot: Snapshot,
    /// Each route's upstream, in the order of [`Snapshot::routes`]; `None`
    /// for a route only the authorization listener serves.
    pub upstreams: Vec<Option<RouteUpstream>>,
}

/// The settings read once at startup: listeners, threads, the drain, where
/// keys are kept on disk and how big the token cache is. A reload that
/// changes any of them is refused (see [`Bootstrap::changes`]).
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// `None`: `listen.http.mode: off`.
    pub listen_http: Option<String>,
    /// HTTP/2 with prior knowledge on the clear-text listener.
    pub h2c: bool,
    pub listen_https: Option<String>,
    /// ALPN offers `h2` on the TLS listener.
    pub https_h2: bool,
    pub admin_addr: String,
    pub echo_addr: Option<String>,
    pub threads: Option<usize>,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    pub keys_cache_dir: Option<PathBuf>,
    /// `None`: the verified-token cache is off.
    pub token_cache: Option<CacheSettings>,
    /// `None`: no `revocation` block, nothing is ever revoked.
    pub revocation: Option<RevocationSettings>,
    pub rate_limit: RateLimitSettings,
    /// `None`: no authorization listener.
    pub authz: Option<AuthzSettings>,
}

impl Bootstrap {
    /// Each restart-only setting that differs in `new`, as
    /// `field: old → new`, in config order.
    pub fn changes(&self, new: &Bootstrap) -> Vec<String> {
        fn addr(addr: &Option<String>) -> String {
            addr.clone().unwrap_or_else(|| "(none)".into())
        }
        fn listener(addr: &Option<String>) -> String {
            addr.clone().unwrap_or_else(|| "(off)".into())
        }
        fn threads(threads: Option<usize>) -> String {
            threads.map_or_else(|| "(one per core)".into(), |n| n.to_string())
        }
        fn dir(dir: &Option<PathBuf>) -> String {
            dir.as_ref()
                .map_or_else(|| "(none)".into(), |d| d.display().to_string())
        }
        fn duration(d: Duration) -> String {
            humantime::format_duration(d).to_string()
        }
        fn revocation(settings: &Option<RevocationSettings>) -> String {
            settings
                .as_ref()
                .map_or_else(|| "(none)".into(), RevocationSettings::describe)
        }
        // A cache turned on or off is one change, not one per size setting.
        fn cache(
            settings: &Option<CacheSettings>,
            field: impl Fn(&CacheSettings) -> String,
        ) -> String {
            settings.as_ref().map_or_else(String::new, field)
        }
        let (old_cache, new_cache) = match (&self.token_cache, &new.token_cache) {
            (Some(_), Some(_)) => (&self.token_cache, &new.token_cache),
            _ => (&None, &None),
        };
        let settings = [
            (
                "listen.http",
                listener(&self.listen_http),
                listener(&new.listen_http),
            ),
            ("listen.http.h2c", self.h2c.to_string(), new.h2c.to_string()),
            (
                "listen.https.addr",
                addr(&self.listen_https),
                addr(&new.listen_https),
            ),
            (
                "listen.https.h2",
                self.https_h2.to_string(),
                new.https_h2.to_string(),
            ),
            (
                "admin.addr",
                self.admin_addr.clone(),
                new.admin_addr.clone(),
            ),
            ("echo.addr", addr(&self.echo_addr), addr(&new.echo_addr)),
            (
                "server.threads",
                threads(self.threads),
                threads(new.threads),
            ),
            (
                "server.grace_period",
                duration(self.grace_period),
                duration(new.grace_period),
            ),
            (
                "server.graceful_shutdown_timeout",
                duration(self.graceful_shutdown_timeout),
                duration(new.graceful_shutdown_timeout),
            ),
            (
                "keys_cache_dir",
                dir(&self.keys_cache_dir),
                dir(&new.keys_cache_dir),
            ),
            (
                "token_cache.enabled",
                self.token_cache.is_some().to_string(),
                new.token_cache.is_some().to_string(),
            ),
            (
                "token_cache.max_entries",
                cache(old_cache, |c| c.max_entries.to_string()),
                cache(new_cache, |c| c.max_entries.to_string()),
            ),
            (
                "token_cache.max_bytes",
                cache(old_cache, |c| c.max_bytes.to_string()),
                cache(new_cache, |c| c.max_bytes.to_string()),
            ),
            (
                "token_cache.ttl",
                cache(old_cache, |c| duration(c.ttl)),
                cache(new_cache, |c| duration(c.ttl)),
            ),
            (
                "revocation",
                revocation(&self.revocation),
                revocation(&new.revocation),
            ),
            (
                "rate_limit",
                self.rate_limit.describe(),
                new.rate_limit.describe(),
            ),
            (
                "listen.authz",
                listener(&self.authz.as_ref().map(AuthzSettings::describe)),
                listener(&new.authz.as_ref().map(AuthzSettings::describe)),
            ),
        ];
        settings
            .into_iter()
            .filter(|(_, old, new)| old != new)
            .map(|(field, old, new)| format!("{field}: {old} → {new}"))
            .collect()
    }
}

/// The live things a running gateway already has, that a new config keeps
/// where its settings for them are unchanged: remote issuers' key stores,
/// by issuer identity, and upstream pools, by route and settings. At
/// startup there are none (`&()`).
pub trait Running {
    fn key_store(&self, identity: &RemoteIdentity) -> Option<Arc<KeyStore>>;
    fn upstream_pool(&self, identity: &PoolIdentity) -> Option<Arc<UpstreamPool>>;
}

impl Running for () {
    fn key_store(&self, _: &RemoteIdentity) -> Option<Arc<KeyStore>> {
        None
    }

    fn upstream_pool(&self, _: &PoolIdentity) -> Option<Arc<UpstreamPool>> {
        None
    }
}

/// The snapshot of a config, with new, empty key stores for remote
/// issuers: for what serves nothing (`token verify`, tests, benches).
pub fn compile(path: &Path, config: GatewayConfig) -> Result<Snapshot, ConfigError> {
    compile_reusing(path, config, &()).map(|compiled| compiled.snapshot)
}

/// Compiles a config, taking each remote issuer's key store from
/// `existing` when it has one for the issuer's [`RemoteIdentity`] (at
/// startup, nothing has one): that is how a reload keeps keys. Local keys
/// (files, inline, secrets) are read afresh, so a reload also picks up a
/// rotated key file.
pub fn compile_reusing(
    path: &Path,
    config: GatewayConfig,
    running: &dyn Running,
) -> Result<Compiled, ConfigError> {
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let err_at = |span: Option<&Spanned<String>>, message: String| {
        ConfigError::new(
            path,
            span.map(|s| (s.referenced.line(), s.referenced.column())),
            message,
        )
    };
    let mut warnings = Vec::new();

    listener_addresses(&config).map_err(|message| err_at(None, message))?;
    let http_off = config.listen.http.mode == ClearTextMode::Off;
    let mut addresses = vec![&config.admin.addr];
    addresses.extend((!http_off).then_some(&config.listen.http.addr));
    addresses.extend(config.listen.https.as_ref().map(|h| &h.addr));
    addresses.extend(config.echo.as_ref().map(|e| &e.addr));
    for (i, addr) in addresses.iter().enumerate() {
        if addresses[..i].contains(addr) {
            return Err(err_at(
                None,
                format!(
                    "{addr} is used by two listeners (listen.http, listen.https.addr, admin.addr, echo.addr must differ)"
                ),
            ));
        }
    }
    let https =
        https_state(&config, base_dir, &mut warnings).map_err(|message| err_at(None, message))?;
    let cache = &config.token_cache;
    if cache.enabled && (cache.max_entries == 0 || cache.max_bytes == 0 || cache.ttl.is_zero()) {
        return Err(err_at(
            None,
            format!(
                "token_cache: max_entries, max_bytes and ttl must be positive (or set enabled: false); max_entries is {}, max_bytes {}, ttl {}",
                cache.max_entries,
                cache.max_bytes,
                humantime::format_duration(cache.ttl)
            ),
        ));
    }
    if config.tokens.max_bytes < 64 {
        return Err(err_at(
            None,
            format!(
                "tokens.max_bytes is {}; it must be at least 64",
                config.tokens.max_bytes
            ),
        ));
    }
    let trusted_proxies = trusted_proxies(&config.server.trusted_proxies)
        .map_err(|e| err_at(None, format!("server.trusted_proxies: {e}")))?;
    if trusted_proxies
        .ranges()
        .iter()
        .any(|range| range.is_everything())
    {
        warnings.push(
            "server.trusted_proxies contains a /0 range: any peer can then choose the client address and X-Forwarded-* headers the upstream sees".into(),
        );
    }
    let limits = &config.limits;
    let limits = RequestLimits::new(
        limits.max_header_bytes,
        limits.max_headers,
        limits.max_uri_bytes,
    )
    .map_err(|e| err_at(None, e.to_string()))?;

    let mut issuers = Vec::with_capacity(config.issuers.len());
    let mut remote = Vec::new();
    let mut issuer_names: Vec<&str> = Vec::new();
    for issuer in &config.issuers {
        let name = issuer.name.value.as_str();
        if issuer_names.contains(&name) {
            return Err(err_at(
                Some(&issuer.name),
                format!("issuer {name:?} is defined twice"),
            ));
        }
        issuer_names.push(name);
        let (verifier, source) = compile_issuer(issuer, base_dir, running, &mut warnings)
            .map_err(|message| err_at(Some(&issuer.name), format!("issuer {name:?}: {message}")))?;
        remote.extend(source);
        issuers.push(verifier);
    }

    if config.routes.is_empty() {
        return Err(err_at(None, "no routes are defined".into()));
    }
    let dns = Dns::compile(&config.dns).map_err(|e| err_at(None, e.to_string()))?;
    let identity_headers = identity_headers(&config.routes)
        .map_err(|(route, message)| err_at(Some(&route.name), message))?;
    let mut routes = Vec::with_capacity(config.routes.len());
    let mut upstreams = Vec::with_capacity(config.routes.len());
    let mut router = Router::default();
    let mut route_names = HashSet::new();
    for route in &config.routes {
        let name = route.name.value.as_str();
        if !route_names.insert(name) {
            return Err(err_at(
                Some(&route.name),
                format!("route {name:?} is defined twice"),
            ));
        }
        if let Some(parameter) = &route.auth.token_query {
            warnings.push(format!(
                "route {name:?} accepts tokens in the query parameter {parameter:?}: URLs end up in logs, browser histories and Referer headers (RFC 6750 §5.3)"
            ));
        }
        if let Some(upstream) = &route.upstream {
            warnings.extend(upstream_tls::warning(name, upstream));
        } else if config.listen.authz.is_none() {
            return Err(err_at(
                Some(&route.name),
                format!(
                    "route {name:?} has no upstream: only the authorization listener serves such a route, and listen.authz is not set"
                ),
            ));
        }
        if let (Some(https_only), None) = (route.matcher.https_only, &https) {
            return Err(err_at(
                Some(&route.name),
                format!(
                    "route {name:?}: match.https_only is {} but listen.https is not set: no request could reach this route",
                    https_only_name(https_only)
                ),
            ));
        }
        let (compiled, upstream) = compile_route(
            route,
            routes.len(),
            &issuer_names,
            &issuers,
            base_dir,
            &dns,
            running,
        )
        .map_err(|(span, message)| {
            err_at(
                Some(span.unwrap_or(&route.name)),
                format!("route {name:?}: {message}"),
            )
        })?;
        let compiled = Arc::new(compiled);
        let methods = route
            .matcher
            .methods
            .as_ref()
            .map(|methods| {
                methods
                    .iter()
                    .map(|m| {
                        m.to_ascii_uppercase()
                            .parse::<http::Method>()
                            .map_err(|_| m)
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|method| {
                err_at(
                    Some(&route.name),
                    format!("route {name:?}: match.methods: {method:?} is not an HTTP method"),
                )
            })?;
        router.add(
            route.matcher.host.as_deref(),
            &route.matcher.path_prefix,
            methods,
            compiled.clone(),
        );
        routes.push(compiled);
        upstreams.push(upstream);
    }

    let keys_cache_dir = config.keys_cache_dir.map(|dir| resolve(base_dir, &dir));
    if !remote.is_empty() && keys_cache_dir.is_none() {
        warnings.push(
            "keys_cache_dir is not set: after a restart during an identity-provider outage, remote issuers will have no keys".into(),
        );
    }

    let revocation =
        revocation::compile(config.revocation, base_dir, &|var| std::env::var(var).ok())
            .map_err(|error| err_at(None, error.to_string()))?;
    let rate_limit =
        rate_limit_sync::compile(config.rate_limit, base_dir, &|var| std::env::var(var).ok())
            .map_err(|error| err_at(None, error.to_string()))?;
    let bootstrap = Bootstrap {
        listen_http: (!http_off).then_some(config.listen.http.addr),
        h2c: config.listen.http.h2c,
        listen_https: config.listen.https.as_ref().map(|h| h.addr.clone()),
        https_h2: config.listen.https.as_ref().is_some_and(|h| h.h2),
        admin_addr: config.admin.addr,
        echo_addr: config.echo.map(|e| e.addr),
        threads: config.server.threads,
        grace_period: config.server.grace_period,
        graceful_shutdown_timeout: config.server.graceful_shutdown_timeout,
        keys_cache_dir,
        token_cache: config.token_cache.enabled.then_some(CacheSettings {
            max_entries: config.token_cache.max_entries,
            max_bytes: config.token_cache.max_bytes,
            ttl: config.token_cache.ttl,
        }),
        revocation,
        rate_limit,
        authz: crate::authz::settings::compile(config.listen.authz.as_ref(), base_dir, &|var| {
            std::env::var(var).ok()
        })
        .map_err(|error| err_at(None, error.to_string()))?,
    };
    let snapshot = Snapshot {
        realm: config.server.realm,
        max_token_bytes: config.tokens.max_bytes,
        startup_grace: config.admin.startup_grace,
        remote,
        issuers,
        routes,
        router,
        paths: PathRules {
            encoded_slash: config.paths.encoded_slash,
            backslash: config.paths.backslash,
            semicolon: config.paths.semicolon,
            double_encoding: config.paths.double_encoding,
        },
        identity_headers,
        warnings,
        trusted_proxies,
        limits,
        https,
        redirect_clear_text: config.listen.http.mode == ClearTextMode::Redirect,
    };
    Ok(Compiled {
        bootstrap,
        snapshot,
        upstreams,
    })
}

fn https_only_name(https_only: HttpsOnly) -> &'static str {
    match https_only {
        HttpsOnly::Redirect => "redirect",
        HttpsOnly::Forbid => "forbid",
    }
}

/// The TLS listener's certificates (read from disk, each key checked
/// against its certificate) and headers, and the clear-text modes that
/// need it.
fn https_state(
    config: &GatewayConfig,
    base_dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Option<HttpsState>, String> {
    let mode = config.listen.http.mode;
    let Some(https) = &config.listen.https else {
        return match mode {
            ClearTextMode::Serve => Ok(None),
            ClearTextMode::Redirect => Err(
                "listen.http.mode is redirect but listen.https is not set: there is nothing to redirect to"
                    .into(),
            ),
            ClearTextMode::Off => Err(
                "listen.http.mode is off and listen.https is not set: jwtgate would serve nothing"
                    .into(),
            ),
        };
    };
    if https.certificates.is_empty() {
        return Err("listen.https.certificates must list at least one certificate".into());
    }
    for (i, entry) in https.certificates.iter().enumerate() {
        if entry.hosts.is_empty() {
            return Err(format!(
                "listen.https.certificates[{i}].hosts must list at least one host name"
            ));
        }
    }
    let certificates =
        Certificates::load(https.certificates.iter().map(|entry| CertificateFiles {
            hosts: &entry.hosts,
            cert: resolve(base_dir, &entry.cert),
            key: resolve(base_dir, &entry.key),
        }))
        .map_err(|(i, e)| format!("listen.https.certificates[{i}]: {e}"))?;
    for (i, entry) in certificates.entries().iter().enumerate() {
        for host in entry.unnamed_hosts() {
            warnings.push(format!(
                "listen.https.certificates[{i}]: {host:?} is not among the names of the certificate in {} ({}): clients will refuse it for that host",
                entry.cert_path.display(),
                entry.names.join(", ")
            ));
        }
    }
    let hsts = https.hsts.as_ref().map(hsts_value).transpose()?;
    let port = match https.redirect_port {
        Some(0) => return Err("listen.https.redirect_port: 0 is not a port".into()),
        Some(port) => port,
        None => https
            .addr
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .map(|addr| addr.port())
            .ok_or_else(|| format!("listen.https.addr: {:?} has no port", https.addr))?,
    };
    Ok(Some(HttpsState {
        certificates,
        hsts,
        redirect_port: if port == 443 {
            String::new()
        } else {
            format!(":{port}")
        },
    }))
}

/// `max-age=…; includeSubDomains; preload` (RFC 6797 §6.1).
fn hsts_value(hsts: &HstsConfig) -> Result<http::HeaderValue, String> {
    // What the browsers' preload list demands; a preload request it would
    // refuse is a mistake worth stopping at.
    const PRELOAD_MIN_AGE: u64 = 365 * 24 * 60 * 60;
    if hsts.preload && (!hsts.include_subdomains || hsts.max_age.as_secs() < PRELOAD_MIN_AGE) {
        return Err(format!(
            "listen.https.hsts.preload needs include_subdomains: true and a max_age of at least 1 year; include_subdomains is {}, max_age {}",
            hsts.include_subdomains,
            humantime::format_duration(hsts.max_age)
        ));
    }
    let mut value = format!("max-age={}", hsts.max_age.as_secs());
    if hsts.include_subdomains {
        value.push_str("; includeSubDomains");
    }
    if hsts.preload {
        value.push_str("; preload");
    }
    Ok(http::HeaderValue::from_str(&value).expect("digits and ASCII words"))
}

fn trusted_proxies(ranges: &[String]) -> Result<TrustedProxies, CidrError> {
    let ranges = ranges
        .iter()
        .map(|range| range.parse())
        .collect::<Result<_, _>>()?;
    Ok(TrustedProxies::new(ranges))
}

/// Each listener address must resolve the way the listener reads it
/// (`host:port`, the first address it resolves to), so that `check` refuses
/// what `run` would fail to bind, with the field and value named.
fn listener_addresses(config: &GatewayConfig) -> Result<(), String> {
    let listeners = [
        ("listen.http", Some(&config.listen.http.addr)),
        (
            "listen.https.addr",
            config.listen.https.as_ref().map(|h| &h.addr),
        ),
        ("admin.addr", Some(&config.admin.addr)),
        ("echo.addr", config.echo.as_ref().map(|e| &e.addr)),
        (
            "listen.authz.addr",
            config.listen.authz.as_ref().map(|a| &a.addr),
        ),
    ];
    for (field, addr) in listeners {
        let Some(addr) = addr else { continue };
        let mut resolved = addr
            .as_str()
            .to_socket_addrs()
            .map_err(|e| format!("{field}: {addr:?} is not a host:port address ({e})"))?;
        if resolved.next().is_none() {
            return Err(format!("{field}: {addr:?} resolves to no address"));
        }
    }
    Ok(())
}

fn compile_issuer(
    issuer: &IssuerConfig,
    base_dir: &Path,
    running: &dyn Running,
    warnings: &mut Vec<String>,
) -> Result<(Arc<IssuerVerifier>, Option<RemoteSource>), String> {
    if issuer.issuer.is_empty() {
        return Err("issuer (the exact iss value) must not be empty".into());
    }
    let algorithms: AlgorithmSet = issuer.algorithms.iter().copied().collect();
    if algorithms.is_empty() {
        return Err("algorithms must list at least one algorithm".into());
    }
    if issuer.audiences.is_empty() && !issuer.skip_audience_check {
        return Err(
            "audiences is empty: list the audiences this gateway accepts, or set skip_audience_check: true to accept any"
                .into(),
        );
    }

    let sources = [
        issuer.jwks_file.is_some(),
        issuer.jwks.is_some(),
        issuer.hmac_secret_env.is_some(),
        issuer.hmac_secret_file.is_some(),
        issuer.discovery,
        issuer.jwks_uri.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err(
            "give exactly one key source: discovery: true, jwks_uri, jwks_file, jwks, hmac_secret_env or hmac_secret_file"
                .into(),
        );
    }
    let token_type = &issuer.token_type;
    if token_type.claim.is_some() == token_type.values.is_empty() {
        return Err(format!(
            "token_type.claim and token_type.values go together; claim is {}, values has {}",
            token_type
                .claim
                .as_deref()
                .map_or_else(|| "not set".to_string(), |c| format!("{c:?}")),
            token_type.values.len()
        ));
    }
    if token_type.typ.iter().any(|t| t.trim().is_empty()) {
        return Err("token_type.typ values must not be empty".into());
    }
    let uses_hmac = issuer.hmac_secret_env.is_some() || issuer.hmac_secret_file.is_some();
    // An allow-list mixing secret and public-key algorithms is how
    // algorithm-confusion attacks start; refuse it outright.
    for alg in algorithms.iter() {
        if (alg.family() == KeyFamily::Hmac) != uses_hmac {
            return Err(if uses_hmac {
                format!(
                    "{alg} cannot be verified with an HMAC secret; list only HS256, HS384 or HS512"
                )
            } else {
                format!(
                    "{alg} needs an HMAC secret (hmac_secret_env or hmac_secret_file), not a JWKS"
                )
            });
        }
    }

    let locator = match (&issuer.jwks_uri, issuer.discovery) {
        (Some(uri), _) => Some(Locator::JwksUri(uri.clone())),
        (None, true) => Some(Locator::Discovery {
            issuer: issuer.issuer.clone(),
        }),
        (None, false) => None,
    };
    if let Some(locator) = locator {
        let (fetch, refresh) = remote_settings(issuer, &locator)?;
        let refetch = (
            issuer.refresh.unknown_kid_interval,
            issuer.refresh.unknown_kid_wait,
        );
        let identity = RemoteIdentity {
            name: issuer.name.value.clone(),
            issuer: issuer.issuer.clone(),
            algorithms,
            locator,
            fetch,
            refresh,
            refetch: Some(refetch),
        };
        let keys = running
            .key_store(&identity)
            .unwrap_or_else(|| Arc::new(KeyStore::remote(refetch.0, refetch.1)));
        let verifier = Arc::new(verifier(issuer, algorithms, keys.clone()));
        let source = RemoteSource {
            name: identity.name,
            issuer: identity.issuer,
            algorithms,
            keys,
            locator: identity.locator,
            fetch: identity.fetch,
            refresh: identity.refresh,
        };
        return Ok((verifier, Some(source)));
    }

    let keys = if uses_hmac {
        let secret = read_secret(issuer, base_dir)?;
        let key = VerifyingKey::hmac(&secret, algorithms).map_err(|e| e.0)?;
        KeySet { keys: vec![key] }
    } else {
        let document = match (&issuer.jwks_file, &issuer.jwks) {
            (Some(file), _) => {
                let file = resolve(base_dir, file);
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| format!("cannot read jwks_file {}: {e}", file.display()))?;
                serde_json::from_str(&text)
                    .map_err(|e| format!("jwks_file {} is not JSON: {e}", file.display()))?
            }
            (None, Some(inline)) => inline.clone(),
            (None, None) => unreachable!("one key source is present"),
        };
        let parsed = keys::jwks::parse(&document, algorithms).map_err(|e| e.0)?;
        // A local key set is the operator's own: unacceptable key material in
        // it is a mistake to fix, not something to skip quietly.
        if let Some(refused) = parsed.skipped.iter().find(|s| s.refused) {
            return Err(format!(
                "key {} refused: {}",
                refused.kid.as_deref().unwrap_or("(no kid)"),
                refused.why
            ));
        }
        for skipped in &parsed.skipped {
            warnings.push(format!(
                "issuer {:?}: key {} skipped: {}",
                issuer.name.value,
                skipped
                    .kid
                    .as_deref()
                    .map_or("(no kid)".into(), |k| format!("{k:?}")),
                skipped.why
            ));
        }
        if parsed.keys.is_empty() {
            let reasons: Vec<String> = parsed
                .skipped
                .iter()
                .map(|s| format!("{}: {}", s.kid.as_deref().unwrap_or("(no kid)"), s.why))
                .collect();
            return Err(if reasons.is_empty() {
                "the JWKS has no keys".into()
            } else {
                format!("the JWKS has no usable key ({})", reasons.join("; "))
            });
        }
        parsed.keys
    };

    Ok((
        Arc::new(verifier(
            issuer,
            algorithms,
            Arc::new(KeyStore::fixed(keys)),
        )),
        None,
    ))
}

fn verifier(
    issuer: &IssuerConfig,
    algorithms: AlgorithmSet,
    keys: Arc<KeyStore>,
) -> IssuerVerifier {
    IssuerVerifier {
        id: VerifierId::fresh(),
        name: issuer.name.value.clone(),
        issuer: issuer.issuer.clone(),
        algorithms,
        audiences: issuer.audiences.clone(),
        check_audience: !issuer.skip_audience_check,
        leeway_secs: issuer.leeway.as_secs() as i64,
        require_exp: issuer.require_exp,
        max_lifetime_secs: issuer.max_lifetime.map(|d| d.as_secs() as i64),
        require_sub: issuer.require_sub,
        require_jti: issuer.require_jti,
        token_type: TokenTypeRule {
            typ: issuer
                .token_type
                .typ
                .iter()
                .map(|t| normalize_typ(t))
                .collect(),
            claim: issuer.token_type.claim.clone(),
            claim_values: issuer.token_type.values.clone(),
        },
        scope_claim: issuer.scope_claim.clone(),
        keys,
        required: issuer.required,
    }
}

/// How a remote issuer's keys are fetched and kept fresh, checked.
fn remote_settings(
    issuer: &IssuerConfig,
    locator: &Locator,
) -> Result<(FetchSettings, RefreshPolicy), String> {
    let fetch = &issuer.fetch;
    let url = match locator {
        Locator::JwksUri(uri) => uri.as_str(),
        Locator::Discovery { issuer } => issuer.as_str(),
    };
    if !scheme_allowed(url, fetch.allow_http) {
        return Err(format!(
            "{url:?} must be an https:// URL (fetch.allow_http: true permits http:// for loopback tests)"
        ));
    }
    let refresh = &issuer.refresh;
    if refresh.min_refresh > refresh.max_refresh {
        return Err(format!(
            "refresh.min_refresh ({}) must not exceed refresh.max_refresh ({})",
            humantime::format_duration(refresh.min_refresh),
            humantime::format_duration(refresh.max_refresh)
        ));
    }
    if fetch.max_bytes < 1024 {
        return Err(format!(
            "fetch.max_bytes is {}; it must be at least 1024",
            fetch.max_bytes
        ));
    }
    Ok((
        FetchSettings {
            connect_timeout: fetch.connect_timeout,
            timeout: fetch.timeout,
            max_bytes: fetch.max_bytes,
            allow_http: fetch.allow_http,
        },
        RefreshPolicy {
            min_refresh: refresh.min_refresh,
            max_refresh: refresh.max_refresh,
            max_stale: refresh.max_stale,
        },
    ))
}

/// Secrets come from the environment or a file, never inline in YAML (where
/// they'd end up in version control). Trailing line endings in a file are
/// not part of the secret.
fn read_secret(issuer: &IssuerConfig, base_dir: &Path) -> Result<Vec<u8>, String> {
    if let Some(var) = &issuer.hmac_secret_env {
        return std::env::var(var)
            .map(String::into_bytes)
            .map_err(|_| format!("environment variable {var} (hmac_secret_env) is not set"));
    }
    let file = resolve(base_dir, issuer.hmac_secret_file.as_ref().expect("checked"));
    let bytes = std::fs::read(&file)
        .map_err(|e| format!("cannot read hmac_secret_file {}: {e}", file.display()))?;
    Ok(keys::secret_file_bytes(&bytes).to_vec())
}

/// Relative paths in the config are relative to the config file.
fn resolve(base_dir: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() {
        file.to_path_buf()
    } else {
        base_dir.join(file)
    }
}

type RouteError<'a> = (Option<&'a Spanned<String>>, String);

fn compile_route<'a>(
    route: &'a RouteConfig,
    index: usize,
    issuer_names: &[&str],
    issuers: &[Arc<IssuerVerifier>],
    base_dir: &Path,
    dns: &Dns,
    running: &dyn Running,
) -> Result<(CompiledRoute, Option<RouteUpstream>), RouteError<'a>> {
    let prefix = &route.matcher.path_prefix;
    if !prefix.starts_with('/') {
        return Err((None, format!("path_prefix {prefix:?} must start with /")));
    }
    if let Some(host) = &route.matcher.host
        && !matches!(canonical::host_key(host.as_bytes()), Ok(Some(_)))
    {
        return Err((
            None,
            format!("match.host {host:?} is not a host name or address (e.g. api.example.com)"),
        ));
    }
    let auth = &route.auth;
    let issuer_indices: Vec<usize> = if auth.issuers.is_empty() {
        (0..issuers.len()).collect()
    } else {
        auth.issuers
            .iter()
            .map(|name| {
                issuer_names
                    .iter()
                    .position(|n| *n == name.value)
                    .ok_or_else(|| {
                        (
                            Some(name),
                            format!("issuer {:?} is not defined", name.value),
                        )
                    })
            })
            .collect::<Result<_, _>>()?
    };
    if auth.mode != AuthMode::Off && issuer_indices.is_empty() {
        return Err((
            None,
            "auth is required but no issuers are configured (set auth.mode: off for a public route)"
                .into(),
        ));
    }
    let claims = auth
        .claims
        .iter()
        .map(|rule| ClaimRequirement {
            claim: rule.claim.clone(),
            any_of: rule.any_of.clone(),
            all_of: rule.all_of.clone(),
        })
        .collect();
    let policy = RoutePolicy::new(
        issuer_indices,
        auth.audiences.clone(),
        auth.scopes.all_of.clone(),
        auth.scopes.any_of.clone(),
        claims,
    );
    let sources = TokenSources {
        header: auth
            .token_header
            .as_ref()
            .map(|h| header_name(h).map(|n| n.as_str().to_string()))
            .transpose()
            .map_err(|e| (None, e))?,
        cookie: auth.token_cookie.clone(),
        query: auth.token_query.clone(),
    };

    let upstream = route
        .upstream
        .as_ref()
        .map(|upstream| route_upstream(&route.name.value, upstream, base_dir, dns, running))
        .transpose()
        .map_err(|e| (None, e))?;

    let forward = ForwardPlan {
        claims: route
            .forward
            .claims
            .iter()
            .map(|(claim, header)| {
                let name = header_name(header)?;
                Ok(ClaimHeader {
                    claim: claim.clone(),
                    sent_as: bytes::Bytes::copy_from_slice(name.as_str().as_bytes()),
                    name,
                })
            })
            .collect::<Result<_, String>>()
            .map_err(|e| (None, e))?,
        strip_authorization: route.forward.strip_authorization,
        reserved_prefix: spoof_form(&route.forward.reserved_prefix),
    };

    let cors = route
        .cors
        .as_ref()
        .map(|cors| CorsPolicy::compile(cors, auth.mode, sources.header.as_deref()))
        .transpose()
        .map_err(|e| (None, e.to_string()))?;

    let compiled = CompiledRoute {
        name: route.name.value.clone(),
        index,
        mode: auth.mode,
        policy,
        sources,
        forward,
        cors,
        series: RouteSeries::new(issuers.len()),
        https_only: route.matcher.https_only,
        rate_limits: RouteRateLimits::compile(&route.name.value, auth.mode, &route.rate_limits)
            .map_err(|e| (None, e.to_string()))?,
        authz_only: route.upstream.is_none(),
    };
    Ok((compiled, upstream))
}

/// A route's upstream: the running pool when one has the same settings,
/// else a new one (IP addresses are endpoints at once; names are resolved
/// when the runtime starts it).
fn route_upstream(
    route: &str,
    config: &UpstreamConfig,
    base_dir: &Path,
    dns: &Dns,
    running: &dyn Running,
) -> Result<RouteUpstream, String> {
    let tls = upstream_tls::compile(config, base_dir).map_err(|e| e.to_string())?;
    let pool =
        UpstreamPool::compile(route, config, dns, tls.as_ref()).map_err(|e| e.to_string())?;
    let pool = running
        .upstream_pool(pool.identity())
        .unwrap_or_else(|| Arc::new(pool));
    Ok(RouteUpstream {
        pool,
        connect_timeout: config.connect_timeout,
        read_timeout: config.read_timeout,
        write_timeout: config.write_timeout,
        tls,
    })
}

fn header_name(name: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))
}

/// The union of every claim header across routes, in the spelling spoofed
/// copies are matched in (see [`spoof_form`]). Hop-by-hop and framing
/// headers can't be identity headers: overwriting them would break HTTP.
fn identity_headers(
    routes: &[RouteConfig],
) -> Result<Vec<http::HeaderName>, (&RouteConfig, String)> {
    const FORBIDDEN: [&str; 8] = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "authorization",
        "cookie",
    ];
    let mut names = Vec::new();
    for route in routes {
        for header in route.forward.claims.values() {
            let name = header_name(header).map_err(|e| (route, e))?;
            if FORBIDDEN.contains(&name.as_str()) {
                return Err((route, format!("{:?} cannot carry a claim", name.as_str())));
            }
            names.push(header_name(&spoof_form(name.as_str())).expect("still a header name"));
        }
    }
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Ok(names)
}

/// How a client's header is compared with the identity headers: lower
/// case, `_` read as `-`, since CGI/WSGI-style backends read `X_User_Id` as
/// `X-User-Id`. Both sides must be in this form, configured names included.
fn spoof_form(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrap(text: &str) -> Bootstrap {
        let path = Path::new("gateway.yaml");
        let routes = "routes:\n  - name: r\n    upstream: { addrs: [\"127.0.0.1:1\"] }\n    auth: { mode: off }\n";
        let config = crate::config::parse(path, &format!("{text}{routes}"), &|_| None).unwrap();
        compile_reusing(path, config, &()).unwrap().bootstrap
    }

    #[test]
    fn restart_only_changes_are_each_named_with_both_values() {
        let running = bootstrap("");
        assert!(running.changes(&bootstrap("")).is_empty());
        // Settings a reload may change are no restart-only change.
        let reloadable = "server: { realm: other, trusted_proxies: [10.0.0.0/8] }\ntokens: { max_bytes: 4096 }\n";
        assert!(running.changes(&bootstrap(reloadable)).is_empty());

        let changed = bootstrap(
            "listen: { http: \"127.0.0.1:8000\" }\nserver: { threads: 3, grace_period: 1s }\nkeys_cache_dir: /var/cache/jwtgate\ntoken_cache: { ttl: 1m }\n",
        );
        assert_eq!(
            running.changes(&changed),
            [
                "listen.http: 127.0.0.1:8080 → 127.0.0.1:8000",
                "server.threads: (one per core) → 3",
                "server.grace_period: 5s → 1s",
                "keys_cache_dir: (none) → /var/cache/jwtgate",
                "token_cache.ttl: 5m → 1m",
            ]
        );
        let cache_off = bootstrap("token_cache: { enabled: false }\n");
        assert_eq!(
            running.changes(&cache_off),
            ["token_cache.enabled: true → false"]
        );
    }

    #[test]
    fn a_changed_revocation_block_needs_a_restart_and_names_no_secret() {
        let with_redis = "revocation: { dir: /var/lib/j, redis: { url: 'redis://r:6379' } }
";
        let changes = bootstrap("").changes(&bootstrap(with_redis));
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(
            changes[0]
                .starts_with("revocation: (none) → dir /var/lib/j tokens [] redis redis://r:6379"),
            "{changes:?}"
        );
        assert!(
            bootstrap(with_redis)
                .changes(&bootstrap(with_redis))
                .is_empty()
        );
    }
}
