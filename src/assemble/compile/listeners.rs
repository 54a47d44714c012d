//! What the listeners serve with, besides routes: their addresses checked
//! the way binding reads them, the TLS listener's certificates and headers,
//! who the trusted proxies are, and the caps on a request head.

use crate::certificates::{CertificateFiles, Certificates};
use crate::client_certs::ClientCertAuthority;
use crate::config::ConfigError;
use crate::config::schema::{
    AsWritten, ClearTextMode, GatewayConfig, HstsConfig, HttpsListenConfig,
};
use crate::pipeline::HttpsState;
use crate::pipeline::canonical::PathRules;
use crate::pipeline::client::{CidrError, ClientCertHeader, TrustedProxies};
use crate::pipeline::limits::RequestLimits;

use super::Context;

/// The parts of a snapshot the listeners decide.
pub(super) struct Served {
    pub https: Option<HttpsState>,
    pub paths: PathRules,
    pub trusted_proxies: TrustedProxies,
    pub client_cert_header: Option<ClientCertHeader>,
    pub client_body_timeout: std::time::Duration,
    pub limits: RequestLimits,
    pub redirect_clear_text: bool,
}

pub(super) fn compile(config: &GatewayConfig, cx: &mut Context<'_>) -> Result<Served, ConfigError> {
    listener_addresses(config, cx).map_err(|message| cx.error(None, message))?;
    let https = https_state(config, cx).map_err(|message| cx.error(None, message))?;
    let https = match (https, &config.listen.https) {
        (Some(mut state), Some(listen)) => {
            state.client_certs = client_certs(listen, cx)?;
            Some(state)
        }
        (https, _) => https,
    };
    let client_cert_header = client_cert_header(config, cx)?;
    if config.tokens.max_bytes < 64 {
        return Err(cx.error(
            None,
            format!(
                "tokens.max_bytes is {}; it must be at least 64",
                config.tokens.max_bytes
            ),
        ));
    }
    let trusted_proxies = trusted_proxies(&config.server.trusted_proxies)
        .map_err(|e| cx.error(None, format!("server.trusted_proxies: {e}")))?;
    if trusted_proxies
        .ranges()
        .iter()
        .any(|range| range.is_everything())
    {
        cx.warnings.push(
            "server.trusted_proxies contains a /0 range: any peer can then choose the client address and X-Forwarded-* headers the upstream sees".into(),
        );
    }
    let limits = &config.limits;
    let limits = RequestLimits::new(
        limits.max_header_bytes,
        limits.max_headers,
        limits.max_uri_bytes,
    )
    .map_err(|e| cx.error(None, e.to_string()))?;
    let client_body_timeout = config.server.client_body_timeout;
    if client_body_timeout.is_zero() {
        return Err(cx.error(
            None,
            "server.client_body_timeout must be positive (a client must be given time to send its body)",
        ));
    }
    let paths = &config.paths;
    Ok(Served {
        https,
        paths: PathRules {
            encoded_slash: paths.encoded_slash,
            backslash: paths.backslash,
            semicolon: paths.semicolon,
            double_encoding: paths.double_encoding,
        },
        trusted_proxies,
        client_cert_header,
        client_body_timeout,
        limits,
        redirect_clear_text: config.listen.http.mode == ClearTextMode::Redirect,
    })
}

/// Each listener address must resolve the way the listener reads it
/// (`host:port`, the first address it resolves to), so that `check` refuses
/// what `run` would fail to bind, with the field and value named; and no
/// two listeners may share one.
fn listener_addresses(config: &GatewayConfig, cx: &Context<'_>) -> Result<(), String> {
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
        let resolved = cx
            .sources
            .resolve(addr)
            .map_err(|e| format!("{field}: {addr:?} is not a host:port address ({e})"))?;
        if resolved.is_empty() {
            return Err(format!("{field}: {addr:?} resolves to no address"));
        }
    }
    let http_off = config.listen.http.mode == ClearTextMode::Off;
    let mut addresses = vec![&config.admin.addr];
    addresses.extend((!http_off).then_some(&config.listen.http.addr));
    addresses.extend(config.listen.https.as_ref().map(|h| &h.addr));
    addresses.extend(config.echo.as_ref().map(|e| &e.addr));
    for (i, addr) in addresses.iter().enumerate() {
        if addresses[..i].contains(addr) {
            return Err(format!(
                "{addr} is used by two listeners (listen.http, listen.https.addr, admin.addr, echo.addr must differ)"
            ));
        }
    }
    Ok(())
}

/// The TLS listener's certificates (read, each key checked against its
/// certificate) and headers, and the clear-text modes that need it.
fn https_state(config: &GatewayConfig, cx: &mut Context<'_>) -> Result<Option<HttpsState>, String> {
    let mode = config.listen.http.mode;
    let Some(https) = &config.listen.https else {
        return match mode {
            ClearTextMode::Serve => Ok(None),
            ClearTextMode::Redirect => Err(
                "listen.http.mode is redirect but listen.https is not set: there is nothing to redirect to"
                    .into(),
            ),
            // The authorization listener serves on its own: an
            // authz-only gateway has no proxy listener at all.
            ClearTextMode::Off if config.listen.authz.is_some() => Ok(None),
            ClearTextMode::Off => Err(
                "listen.http.mode is off and listen.https is not set, nor listen.authz: jwtgate would serve nothing"
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
    let sources = cx.sources;
    let certificates = Certificates::load(
        https.certificates.iter().map(|entry| CertificateFiles {
            hosts: &entry.hosts,
            cert: cx.file(&entry.cert),
            key: cx.file(&entry.key),
        }),
        &|path| sources.read(path),
    )
    .map_err(|(i, e)| format!("listen.https.certificates[{i}]: {e}"))?;
    for (i, entry) in certificates.entries().iter().enumerate() {
        for host in entry.unnamed_hosts() {
            cx.warnings.push(format!(
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
        None => cx
            .sources
            .resolve(&https.addr)
            .ok()
            .and_then(|addrs| addrs.first().copied())
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
        client_certs: None,
    }))
}

/// `listen.https.client_certs`: the CA bundle read and checked, so that
/// `check`, startup and a reload refuse one no handshake could use.
fn client_certs(
    https: &HttpsListenConfig,
    cx: &Context<'_>,
) -> Result<Option<ClientCertAuthority>, ConfigError> {
    let Some(client_certs) = &https.client_certs else {
        return Ok(None);
    };
    let sources = cx.sources;
    ClientCertAuthority::load(cx.file(&client_certs.ca), client_certs.mode, &|path| {
        sources.read(path)
    })
    .map(Some)
    .map_err(|e| cx.error_at_field("listen.https", format!("listen.https.client_certs.ca: {e}")))
}

/// `server.client_cert_header`: a header name a request can carry.
fn client_cert_header(
    config: &GatewayConfig,
    cx: &mut Context<'_>,
) -> Result<Option<ClientCertHeader>, ConfigError> {
    let Some(header) = &config.server.client_cert_header else {
        return Ok(None);
    };
    let name = http::HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| {
        cx.error_at_field(
            "server",
            format!(
                "server.client_cert_header.name: {:?} is not a header name",
                header.name
            ),
        )
    })?;
    if config.server.trusted_proxies.is_empty() {
        cx.warnings.push(format!(
            "server.client_cert_header is set but server.trusted_proxies is empty: {name} is believed from no peer, so it is never read"
        ));
    }
    Ok(Some(ClientCertHeader {
        name,
        format: header.format,
    }))
}

/// `max-age=…; includeSubDomains; preload` (RFC 6797 §6.1).
fn hsts_value(hsts: &HstsConfig) -> Result<http::HeaderValue, String> {
    // What the browsers' preload list demands; a preload request it would
    // refuse is a mistake worth stopping at.
    const PRELOAD_MIN_AGE: u64 = 365 * 24 * 60 * 60;
    if hsts.preload && (!hsts.include_subdomains || hsts.max_age.as_secs() < PRELOAD_MIN_AGE) {
        return Err(format!(
            "listen.https.hsts.preload needs include_subdomains: true and a max_age of at least 365d; include_subdomains is {}, max_age {}",
            hsts.include_subdomains,
            AsWritten(hsts.max_age)
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
