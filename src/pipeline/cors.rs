//! CORS (the Fetch standard's cross-origin protocol) for routes with a
//! `cors` block: jwtgate answers their preflights itself, without a token, and
//! adds the CORS headers to their actual responses, the upstream's and its own
//! rejections alike, for allowed origins only.
//!
//! Every header value is built once when the config is compiled. The policy
//! works on `http` types through [`ResponseHeaders`]; the Pingora side lives
//! in `proxy::preflight`.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::router::Router;
use crate::config::schema::{AsWritten, AuthMode, CorsConfig};
use crate::pipeline::CompiledRoute;

// Names as `&'static str`: Pingora keeps them as written, without a copy.
const ORIGIN: &str = "origin";
const VARY: &str = "vary";
const REQUEST_METHOD: &str = "access-control-request-method";
const REQUEST_HEADERS: &str = "access-control-request-headers";
const ALLOW_ORIGIN: &str = "access-control-allow-origin";
const ALLOW_CREDENTIALS: &str = "access-control-allow-credentials";
const ALLOW_METHODS: &str = "access-control-allow-methods";
const ALLOW_HEADERS: &str = "access-control-allow-headers";
const EXPOSE_HEADERS: &str = "access-control-expose-headers";
const MAX_AGE: &str = "access-control-max-age";

/// Browsers cap their preflight caches (Chromium at 2 hours, Firefox at 24):
/// a longer `max_age` would only mislead whoever reads the config.
const MAX_AGE_LIMIT: Duration = Duration::from_secs(24 * 60 * 60);

/// What a preflight's answer depends on besides the route: caches between
/// the browser and jwtgate must not mix answers for different requests.
const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// A `cors` block that can't work, naming the field and the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CorsError {
    #[error("cors.allowed_origins must list at least one origin, or \"*\"")]
    NoOrigins,
    #[error("cors.allowed_origins: \"*\" must be the only entry (it already allows every origin)")]
    WildcardAmongOrigins,
    #[error(
        "cors.allowed_origins \"*\" cannot go with cors.allow_credentials: true (browsers refuse credentials for any-origin answers); list the origins"
    )]
    WildcardWithCredentials,
    #[error(
        "cors.allowed_origins: \"null\" is not accepted: every sandboxed frame and file:// page sends it, so allowing it allows all of them"
    )]
    NullOrigin,
    #[error(
        "cors.allowed_origins: {origin:?} is not an origin: {why} (write scheme://host[:port])"
    )]
    InvalidOrigin { origin: String, why: &'static str },
    #[error("cors.allowed_methods must list at least one method")]
    NoMethods,
    #[error("cors.allowed_methods: {0:?} is not an HTTP method")]
    InvalidMethod(String),
    #[error("cors.{field}: {value:?} is not a header name")]
    InvalidHeader { field: &'static str, value: String },
    #[error("cors.{field}: wildcards are not supported; list each name")]
    Wildcard { field: &'static str },
    #[error("cors.max_age: {} must be whole seconds", AsWritten(*.0))]
    FractionalMaxAge(Duration),
    #[error("cors.max_age: {} is longer than 24h, the most any browser honours", AsWritten(*.0))]
    MaxAgeTooLong(Duration),
}

#[derive(Debug)]
enum Origins {
    /// `*`: every origin, answered with a literal `*`.
    Any,
    /// Exact origins as browsers serialize them (lower-case scheme and host,
    /// no default port), compared byte for byte with `Origin`.
    Exact(Vec<HeaderValue>),
}

/// A route's compiled CORS policy.
#[derive(Debug)]
pub struct CorsPolicy {
    origins: Origins,
    /// Case-sensitive, as the Fetch standard compares methods.
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    /// Lower-case.
    allowed_headers: Vec<HeaderName>,
    expose_headers: Option<HeaderValue>,
    allow_credentials: bool,
    max_age: HeaderValue,
}

/// Why a preflight was refused; the answer carries no CORS headers, so the
/// browser blocks the actual request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreflightRefusal {
    Origin,
    Method,
}

impl PreflightRefusal {
    pub fn description(self) -> &'static str {
        match self {
            PreflightRefusal::Origin => "this origin may not call this route",
            PreflightRefusal::Method => {
                "this method is not allowed for cross-origin requests on this route"
            }
        }
    }
}

/// The response headers a policy reads and writes.
pub trait ResponseHeaders {
    fn header_map(&self) -> &HeaderMap;
    fn set(&mut self, name: &'static str, value: HeaderValue);
    fn remove(&mut self, name: &'static str);
}

impl ResponseHeaders for HeaderMap {
    fn header_map(&self) -> &HeaderMap {
        self
    }

    fn set(&mut self, name: &'static str, value: HeaderValue) {
        self.insert(name, value);
    }

    fn remove(&mut self, name: &'static str) {
        HeaderMap::remove(self, name);
    }
}

/// The method a CORS preflight asks about: `Some` for an `OPTIONS` request
/// with `Origin` and `Access-Control-Request-Method`. An unparsable method
/// is returned as `OPTIONS`, so routing still finds the route whose policy
/// then refuses it. A plain `OPTIONS` is not a preflight.
pub fn preflight_method(method: &Method, headers: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS || !headers.contains_key(ORIGIN) {
        return None;
    }
    let requested = headers.get(REQUEST_METHOD)?;
    Some(Method::from_bytes(requested.as_bytes()).unwrap_or(Method::OPTIONS))
}

/// For a preflight, the route its actual request would take, when that
/// route has a CORS policy: jwtgate answers the preflight for it. `None` for
/// every other request, which is then routed by its own method.
pub fn preflight_route<'a>(
    router: &'a Router<Arc<CompiledRoute>>,
    host: Option<&str>,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Option<(&'a Arc<CompiledRoute>, &'a CorsPolicy)> {
    let requested = preflight_method(method, headers)?;
    let route = router.find(host, path, &requested)?;
    Some((route, route.cors.as_ref()?))
}

impl CorsPolicy {
    /// `auth_mode` and `token_header` are the route's: on a route that reads
    /// tokens, the headers carrying them are always allowed, since without
    /// them no cross-origin request could authenticate.
    pub fn compile(
        config: &CorsConfig,
        auth_mode: AuthMode,
        token_header: Option<&str>,
    ) -> Result<Self, CorsError> {
        let origins = compile_origins(config)?;

        if config.allowed_methods.is_empty() {
            return Err(CorsError::NoMethods);
        }
        let mut methods: Vec<Method> = Vec::with_capacity(config.allowed_methods.len());
        for text in &config.allowed_methods {
            if text == "*" {
                return Err(CorsError::Wildcard {
                    field: "allowed_methods",
                });
            }
            let method = Method::from_bytes(text.to_ascii_uppercase().as_bytes())
                .map_err(|_| CorsError::InvalidMethod(text.clone()))?;
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        let allow_methods = joined(methods.iter().map(Method::as_str));

        let mut allowed_headers = header_names("allowed_headers", &config.allowed_headers)?;
        if auth_mode != AuthMode::Off {
            // A browser sending a DPoP-bound token sends its proof too.
            let token_headers = ["authorization", "dpop"].into_iter().chain(token_header);
            for name in token_headers {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    CorsError::InvalidHeader {
                        field: "allowed_headers",
                        value: name.to_string(),
                    }
                })?;
                if !allowed_headers.contains(&name) {
                    allowed_headers.push(name);
                }
            }
        }
        let exposed = header_names("exposed_headers", &config.exposed_headers)?;
        let expose_headers =
            (!exposed.is_empty()).then(|| joined(exposed.iter().map(HeaderName::as_str)));

        let max_age = config.max_age;
        if max_age.subsec_nanos() != 0 {
            return Err(CorsError::FractionalMaxAge(max_age));
        }
        if max_age > MAX_AGE_LIMIT {
            return Err(CorsError::MaxAgeTooLong(max_age));
        }

        Ok(Self {
            origins,
            methods,
            allow_methods,
            allowed_headers,
            expose_headers,
            allow_credentials: config.allow_credentials,
            max_age: HeaderValue::from(max_age.as_secs()),
        })
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, or
    /// `None` when it is absent or not allowed. A shared precomputed value,
    /// never the client's bytes.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match &self.origins {
            Origins::Any => Some(HeaderValue::from_static("*")),
            Origins::Exact(allowed) => {
                let origin = origin?.as_bytes();
                allowed
                    .iter()
                    .find(|candidate| candidate.as_bytes() == origin)
                    .cloned()
            }
        }
    }

    /// The answer to a preflight (see [`preflight_method`]): `Ok` with the
    /// headers written into `response`, or why it is refused.
    pub fn preflight(
        &self,
        request: &HeaderMap,
        response: &mut impl ResponseHeaders,
    ) -> Result<(), PreflightRefusal> {
        let allow_origin = self
            .allow_origin(request.get(ORIGIN))
            .ok_or(PreflightRefusal::Origin)?;
        let requested = request
            .get(REQUEST_METHOD)
            .map_or(&[][..], HeaderValue::as_bytes);
        if !self
            .methods
            .iter()
            .any(|m| m.as_str().as_bytes() == requested)
        {
            return Err(PreflightRefusal::Method);
        }
        response.set(ALLOW_ORIGIN, allow_origin);
        response.set(ALLOW_METHODS, self.allow_methods.clone());
        if let Some(headers) = self.allow_headers(request) {
            response.set(ALLOW_HEADERS, headers);
        }
        if self.allow_credentials {
            response.set(ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        response.set(MAX_AGE, self.max_age.clone());
        response.set(VARY, HeaderValue::from_static(PREFLIGHT_VARY));
        Ok(())
    }

    /// Of the headers the preflight asks for, those this route allows. The
    /// browser refuses the actual request if any requested one is missing,
    /// and says which in its console. When every one is allowed (the usual
    /// case) the request's own value is echoed, which costs no allocation.
    fn allow_headers(&self, request: &HeaderMap) -> Option<HeaderValue> {
        let mut every_one_allowed = true;
        let mut allowed: Vec<&str> = Vec::new();
        let mut lines = 0;
        for value in request.get_all(REQUEST_HEADERS) {
            lines += 1;
            let Ok(text) = value.to_str() else {
                every_one_allowed = false;
                continue;
            };
            for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if self
                    .allowed_headers
                    .iter()
                    .any(|a| a.as_str().eq_ignore_ascii_case(name))
                {
                    allowed.push(name);
                } else {
                    every_one_allowed = false;
                }
            }
        }
        if allowed.is_empty() {
            return None;
        }
        if every_one_allowed && lines == 1 {
            return request.get(REQUEST_HEADERS).cloned();
        }
        Some(joined(allowed.into_iter()))
    }

    /// The CORS headers of an actual (non-preflight) response: any the
    /// upstream set are replaced, so a browser never sees two answers; the
    /// origin, credentials and exposed headers are added for an allowed
    /// origin only. `Vary: Origin` goes on every response of an
    /// exact-origin route, since whether it carries the headers depends on
    /// `Origin`.
    pub fn decorate(&self, request: &HeaderMap, response: &mut impl ResponseHeaders) {
        for name in [
            ALLOW_ORIGIN,
            ALLOW_CREDENTIALS,
            EXPOSE_HEADERS,
            ALLOW_METHODS,
            ALLOW_HEADERS,
            MAX_AGE,
        ] {
            if response.header_map().contains_key(name) {
                response.remove(name);
            }
        }
        if matches!(self.origins, Origins::Exact(_)) {
            add_vary_origin(response);
        }
        let Some(allow_origin) = self.allow_origin(request.get(ORIGIN)) else {
            return;
        };
        response.set(ALLOW_ORIGIN, allow_origin);
        if self.allow_credentials {
            response.set(ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if let Some(expose) = &self.expose_headers {
            response.set(EXPOSE_HEADERS, expose.clone());
        }
    }
}

/// `Origin` joins whatever `Vary` the response has, as one field line, since
/// not every cache combines several. `Vary: *` already covers it.
fn add_vary_origin(response: &mut impl ResponseHeaders) {
    let existing = response.header_map().get_all(VARY);
    let mut merged = String::new();
    for value in existing {
        let Ok(text) = value.to_str() else { continue };
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token == "*" || token.eq_ignore_ascii_case("origin") {
                return;
            }
            if !merged.is_empty() {
                merged.push_str(", ");
            }
            merged.push_str(token);
        }
    }
    if merged.is_empty() {
        response.set(VARY, HeaderValue::from_static("Origin"));
        return;
    }
    merged.push_str(", Origin");
    let value = HeaderValue::from_str(&merged).expect("visible ASCII tokens joined by \", \"");
    response.set(VARY, value);
}

fn compile_origins(config: &CorsConfig) -> Result<Origins, CorsError> {
    let listed = &config.allowed_origins;
    if listed.is_empty() {
        return Err(CorsError::NoOrigins);
    }
    if listed.iter().any(|o| o == "*") {
        if listed.len() > 1 {
            return Err(CorsError::WildcardAmongOrigins);
        }
        if config.allow_credentials {
            return Err(CorsError::WildcardWithCredentials);
        }
        return Ok(Origins::Any);
    }
    let mut origins: Vec<HeaderValue> = Vec::with_capacity(listed.len());
    for text in listed {
        let origin = serialize_origin(text)?;
        let value = HeaderValue::from_str(&origin).map_err(|_| CorsError::InvalidOrigin {
            origin: text.clone(),
            why: "it is not a valid header value",
        })?;
        if !origins.contains(&value) {
            origins.push(value);
        }
    }
    Ok(Origins::Exact(origins))
}

/// An origin as a browser sends it in `Origin` (RFC 6454 §6.1): lower-case
/// scheme and host, the port only when it isn't the scheme's default, no
/// path. What can never equal a browser's `Origin` is refused.
fn serialize_origin(text: &str) -> Result<String, CorsError> {
    let invalid = |why| CorsError::InvalidOrigin {
        origin: text.to_string(),
        why,
    };
    if text.eq_ignore_ascii_case("null") {
        return Err(CorsError::NullOrigin);
    }
    let (scheme, authority) = text.split_once("://").ok_or(invalid("no scheme://"))?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(invalid("the scheme is not valid"));
    }
    if authority.contains(['/', '?', '#']) {
        return Err(invalid(
            "it has a path, query or fragment, which Origin never has",
        ));
    }
    if authority.contains('@') {
        return Err(invalid("it has user information, which Origin never has"));
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (address, after) = rest.split_once(']').ok_or(invalid("an unclosed ["))?;
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid("the bracketed host is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(invalid("junk after ]"))?),
        };
        (&authority[..address.len() + 2], port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.')));
    if !host_ok {
        return Err(invalid(
            "the host is empty or has characters a host name can't",
        ));
    }
    let scheme = scheme.to_ascii_lowercase();
    let mut origin = format!("{scheme}://{}", host.to_ascii_lowercase());
    if let Some(port) = port {
        let number: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0 && port.bytes().all(|b| b.is_ascii_digit()))
            .ok_or(invalid("the port is not a number from 1 to 65535"))?;
        let default = match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        };
        if default != Some(number) {
            origin.push(':');
            origin.push_str(&number.to_string());
        }
    }
    Ok(origin)
}

fn header_names(field: &'static str, names: &[String]) -> Result<Vec<HeaderName>, CorsError> {
    let mut parsed: Vec<HeaderName> = Vec::with_capacity(names.len());
    for name in names {
        if name == "*" {
            return Err(CorsError::Wildcard { field });
        }
        let header =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| CorsError::InvalidHeader {
                field,
                value: name.clone(),
            })?;
        if !parsed.contains(&header) {
            parsed.push(header);
        }
    }
    Ok(parsed)
}

fn joined<'a>(items: impl Iterator<Item = &'a str>) -> HeaderValue {
    let text = items.collect::<Vec<_>>().join(", ");
    HeaderValue::from_str(&text).expect("methods and header names are valid header values")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(origins: &[&str]) -> CorsConfig {
        CorsConfig {
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
            ..CorsConfig::default()
        }
    }

    fn policy(config: &CorsConfig) -> CorsPolicy {
        CorsPolicy::compile(config, AuthMode::Required, None).expect("valid cors config")
    }

    fn refused(config: &CorsConfig) -> CorsError {
        CorsPolicy::compile(config, AuthMode::Required, None).unwrap_err()
    }

    fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    /// A preflight from the allowed origin of most tests.
    fn preflight_request(method: &'static str, headers: &'static str) -> HeaderMap {
        request(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", method),
            ("access-control-request-headers", headers),
        ])
    }

    fn answer(policy: &CorsPolicy, request: &HeaderMap) -> HeaderMap {
        let mut response = HeaderMap::new();
        policy.preflight(request, &mut response).unwrap();
        response
    }

    fn text(map: &HeaderMap, name: &str) -> Option<String> {
        map.get(name).map(|v| v.to_str().unwrap().to_string())
    }

    /// Headers written as `name: value` lines, checked one by one so that a
    /// failure names the header.
    fn assert_headers(map: &HeaderMap, expected: &[&str]) {
        for line in expected {
            let (name, value) = line.split_once(": ").expect("a `name: value` line");
            assert_eq!(text(map, name).as_deref(), Some(value), "{name}");
        }
    }

    #[test]
    fn origins_are_serialized_as_browsers_send_them() {
        for (origin, serialized) in [
            ("HTTPS://App.Example.com:443", "https://app.example.com"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://[::1]:80", "http://[::1]"),
            ("capacitor://localhost", "capacitor://localhost"),
        ] {
            assert_eq!(serialize_origin(origin).unwrap(), serialized, "{origin}");
        }
    }

    #[test]
    fn what_no_browser_sends_is_refused_naming_the_value() {
        for bad in [
            "https://app.example.com/",
            "https://app.example.com/path",
            "app.example.com",
            "https://user@app.example.com",
            "https://app.example.com:0",
            "https://app.example.com:99999",
            "https://app.example.com:+80",
            "https://*.example.com",
            "https://",
            "1http://x",
            "http://[::1",
            "http://[nope]",
        ] {
            let err = refused(&config(&[bad]));
            assert!(
                matches!(&err, CorsError::InvalidOrigin { origin, .. } if origin == bad),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert_eq!(refused(&config(&["null"])), CorsError::NullOrigin);
    }

    #[test]
    fn wildcard_origin_is_alone_and_never_with_credentials() {
        assert_eq!(refused(&config(&[])), CorsError::NoOrigins);
        let among = config(&["*", "https://a.example"]);
        assert_eq!(refused(&among), CorsError::WildcardAmongOrigins);
        let credentials = CorsConfig {
            allow_credentials: true,
            ..config(&["*"])
        };
        let err = refused(&credentials);
        assert_eq!(err, CorsError::WildcardWithCredentials);
        assert!(err.to_string().contains("allow_credentials"), "{err}");
    }

    #[test]
    fn methods_headers_and_max_age_are_checked() {
        type Change = fn(&mut CorsConfig);
        let cases: [(Change, &str); 6] = [
            (
                |c| c.allowed_methods = vec![],
                "cors.allowed_methods must list",
            ),
            (
                |c| c.allowed_methods = vec!["GE T".into()],
                "cors.allowed_methods: \"GE T\"",
            ),
            (
                |c| c.allowed_headers = vec!["x bad".into()],
                "cors.allowed_headers: \"x bad\"",
            ),
            (
                |c| c.exposed_headers = vec!["*".into()],
                "cors.exposed_headers: wildcards",
            ),
            (
                |c| c.max_age = Duration::from_millis(1500),
                "cors.max_age: 1500ms",
            ),
            (
                |c| c.max_age = Duration::from_secs(2 * 24 * 3600),
                "cors.max_age: 2d",
            ),
        ];
        for (change, expected) in cases {
            let mut config = config(&["https://a.example"]);
            change(&mut config);
            let err = refused(&config);
            assert!(err.to_string().contains(expected), "{err}");
        }
        let base = config(&["https://a.example"]);
        assert!(CorsPolicy::compile(&base, AuthMode::Off, None).is_ok());
    }

    #[test]
    fn allowed_preflight_gets_every_header() {
        let config = CorsConfig {
            allowed_methods: vec!["get".into(), "PUT".into()],
            allowed_headers: vec!["Content-Type".into()],
            allow_credentials: true,
            max_age: Duration::from_secs(600),
            ..config(&["https://a.example"])
        };
        let request = preflight_request("PUT", "authorization,content-type");
        let response = answer(&policy(&config), &request);
        assert_headers(
            &response,
            &[
                "access-control-allow-origin: https://a.example",
                "access-control-allow-methods: GET, PUT",
                "access-control-allow-headers: authorization,content-type",
                "access-control-allow-credentials: true",
                "access-control-max-age: 600",
            ],
        );
        assert_eq!(text(&response, "vary").as_deref(), Some(PREFLIGHT_VARY));
    }

    #[test]
    fn only_allowed_request_headers_are_answered() {
        let policy = policy(&CorsConfig {
            allowed_headers: vec!["x-trace".into()],
            ..config(&["https://a.example"])
        });
        let request = preflight_request("GET", "Authorization, x-secret, X-Trace");
        let response = answer(&policy, &request);
        assert_eq!(
            text(&response, "access-control-allow-headers").as_deref(),
            Some("Authorization, X-Trace")
        );
    }

    #[test]
    fn authorization_is_allowed_only_where_tokens_are_read() {
        let config = config(&["https://a.example"]);
        let request = preflight_request("GET", "authorization,x-api-token");
        let with_header =
            CorsPolicy::compile(&config, AuthMode::Optional, Some("x-api-token")).expect("valid");
        let response = answer(&with_header, &request);
        assert_eq!(
            text(&response, "access-control-allow-headers").as_deref(),
            Some("authorization,x-api-token")
        );
        let public = CorsPolicy::compile(&config, AuthMode::Off, None).expect("valid");
        let response = answer(&public, &request);
        assert_eq!(text(&response, "access-control-allow-headers"), None);
        // A DPoP-bound token comes with its proof.
        let dpop = preflight_request("GET", "authorization,dpop");
        assert_eq!(
            text(&answer(&with_header, &dpop), "access-control-allow-headers").as_deref(),
            Some("authorization,dpop")
        );
    }

    #[test]
    fn preflight_refusals() {
        let policy = policy(&config(&["https://a.example"]));
        let mut response = HeaderMap::new();
        for (origin, method, refusal) in [
            ("https://evil.example", "GET", PreflightRefusal::Origin),
            ("https://a.example", "DELETE", PreflightRefusal::Method),
            // Methods are case-sensitive (Fetch), and `patch` is not normalized.
            ("https://a.example", "get", PreflightRefusal::Method),
        ] {
            let request = request(&[
                ("origin", origin),
                ("access-control-request-method", method),
            ]);
            assert_eq!(
                policy.preflight(&request, &mut response),
                Err(refusal),
                "{origin} {method}"
            );
        }
        assert!(response.is_empty());
    }

    #[test]
    fn preflights_are_recognized_by_method_and_both_headers() {
        let both = request(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "PUT"),
        ]);
        assert_eq!(preflight_method(&Method::OPTIONS, &both), Some(Method::PUT));
        assert_eq!(preflight_method(&Method::GET, &both), None);
        let no_acrm = request(&[("origin", "https://a.example")]);
        assert_eq!(preflight_method(&Method::OPTIONS, &no_acrm), None);
        let no_origin = request(&[("access-control-request-method", "PUT")]);
        assert_eq!(preflight_method(&Method::OPTIONS, &no_origin), None);
    }

    #[test]
    fn actual_responses_carry_headers_for_allowed_origins_only() {
        let policy = policy(&CorsConfig {
            exposed_headers: vec!["WWW-Authenticate".into(), "x-request-id".into()],
            allow_credentials: true,
            ..config(&["https://a.example"])
        });
        let mut upstream = HeaderMap::new();
        upstream.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        upstream.insert("vary", HeaderValue::from_static("Accept-Encoding"));
        policy.decorate(&request(&[("origin", "https://a.example")]), &mut upstream);
        assert_headers(
            &upstream,
            &[
                "access-control-allow-origin: https://a.example",
                "access-control-allow-credentials: true",
                "access-control-expose-headers: www-authenticate, x-request-id",
                "vary: Accept-Encoding, Origin",
            ],
        );

        let mut other = HeaderMap::new();
        other.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        policy.decorate(&request(&[("origin", "https://evil.example")]), &mut other);
        assert_eq!(text(&other, "access-control-allow-origin"), None);
        assert_eq!(text(&other, "access-control-allow-credentials"), None);
        assert_eq!(text(&other, "vary").as_deref(), Some("Origin"));

        let mut no_origin = HeaderMap::new();
        policy.decorate(&request(&[]), &mut no_origin);
        assert_eq!(text(&no_origin, "access-control-allow-origin"), None);
        assert_eq!(text(&no_origin, "vary").as_deref(), Some("Origin"));
    }

    #[test]
    fn vary_is_merged_once() {
        let policy = policy(&config(&["https://a.example"]));
        for (upstream, expected) in [
            (vec!["*"], "*"),
            (vec!["origin, accept"], "origin, accept"),
            (
                vec!["Accept", "Accept-Language"],
                "Accept, Accept-Language, Origin",
            ),
        ] {
            let mut response = HeaderMap::new();
            for value in upstream {
                response.append("vary", HeaderValue::from_static(value));
            }
            policy.decorate(&HeaderMap::new(), &mut response);
            let all: Vec<&str> = response
                .get_all("vary")
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            if expected.contains("Origin") {
                assert_eq!(all, vec![expected]);
            } else {
                assert!(all.contains(&expected), "{all:?}");
            }
        }
    }

    #[test]
    fn any_origin_answers_a_literal_star_without_vary() {
        let policy = policy(&config(&["*"]));
        let mut response = HeaderMap::new();
        policy.decorate(&request(&[("origin", "https://x.example")]), &mut response);
        assert_headers(&response, &["access-control-allow-origin: *"]);
        assert_eq!(text(&response, "vary"), None);
    }
}
