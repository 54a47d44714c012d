//! The upstream request's headers: identity headers only ever come from a
//! verified token, never from the client; forwarding headers only from a
//! trusted proxy.

use std::io::Write;
use std::net::IpAddr;

use http::HeaderValue;
use pingora::http::RequestHeader;

use crate::answers::request_id::REQUEST_ID;
use crate::auth::VerifiedToken;
use crate::auth::extract::split_pair;
use crate::pipeline::CompiledRoute;
use crate::pipeline::Scheme;
use crate::pipeline::client::{ClientAddress, ClientCertHeader};
use crate::telemetry::traces::TRACESTATE;

/// What the upstream request needs beyond the client's own headers.
pub struct Forwarding<'a> {
    pub route: &'a CompiledRoute,
    pub identity_headers: &'a [http::HeaderName],
    pub identity: Option<&'a VerifiedToken>,
    pub request_id: &'a HeaderValue,
    /// `None` when the peer has no IP address (a Unix socket).
    pub client: Option<ClientAddress>,
    /// How the client reached jwtgate: `X-Forwarded-Proto` unless a trusted
    /// proxy said otherwise.
    pub scheme: Scheme,
    /// `server.client_cert_header`: only a trusted proxy's reaches the
    /// upstream.
    pub client_cert_header: Option<&'a ClientCertHeader>,
    /// jwtgate writes the request's trace context (tracing is on): the
    /// client's `tracestate` goes, and comes back only if its context was
    /// continued.
    pub replaces_trace_context: bool,
}

pub fn rewrite(upstream: &mut RequestHeader, forwarding: &Forwarding<'_>) {
    let plan = &forwarding.route.forward;
    let trusted = forwarding.client.is_some_and(|c| c.peer_trusted);

    // One pass over the client's header names finds everything to remove:
    // spoofed identity (every configured claim header and the reserved
    // prefix, in any spelling a backend would read as the same header:
    // `spoof_form` in config compilation, which the snapshot's names are
    // in), underscore spellings of the forwarding headers, and, from anyone
    // but a trusted proxy, the forwarding headers jwtgate doesn't make up.
    // A request carries a dozen names; a lookup per candidate costs more.
    let removed: Vec<http::HeaderName> = upstream
        .headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            is_reserved(name, forwarding.identity_headers, &plan.reserved_prefix)
                || is_forwarding_with_underscores(name)
                || (forwarding.replaces_trace_context && name == TRACESTATE)
                || (!trusted
                    && (ONLY_FROM_TRUSTED.contains(&name)
                        || forwarding
                            .client_cert_header
                            .is_some_and(|header| header.name == name)))
        })
        .cloned()
        .collect();
    for name in &removed {
        upstream.remove_header(name);
    }
    if plan.strip_authorization {
        upstream.remove_header(&http::header::AUTHORIZATION);
        if let Some(name) = &forwarding.route.sources.header {
            upstream.remove_header(name.as_str());
        }
        if let Some(cookie) = &forwarding.route.sources.cookie {
            strip_cookie(upstream, cookie);
        }
        if let Some(parameter) = &forwarding.route.sources.query {
            strip_query_parameter(upstream, parameter);
        }
    }

    if let Some(identity) = forwarding.identity {
        for (header, value) in plan.identity_values(identity) {
            // header_value() already refused anything invalid in a header.
            let _ = upstream.insert_header(header.sent_as.clone(), value);
        }
    }

    let _ = upstream.insert_header(REQUEST_ID, forwarding.request_id.clone());
    forwarded_headers(upstream, forwarding.client, forwarding.scheme);
}

const FORWARDED_FOR: &str = "x-forwarded-for";
const FORWARDED_PROTO: &str = "x-forwarded-proto";
const FORWARDED_HOST: &str = "x-forwarded-host";
const FORWARDED_PORT: &str = "x-forwarded-port";
/// Headers only a trusted proxy may pass on; anyone else's are removed.
const ONLY_FROM_TRUSTED: [&str; 4] = [FORWARDED_HOST, FORWARDED_PORT, "forwarded", "x-real-ip"];

use crate::pipeline::client::FORWARDED_FOR as FORWARDED_FOR_NAME;
static FORWARDED_PROTO_NAME: http::HeaderName = http::HeaderName::from_static(FORWARDED_PROTO);

/// `X_Forwarded_For` and the like: no proxy writes them, but CGI/WSGI-style
/// backends read them as the real header, so they are removed whoever sent
/// them.
fn is_forwarding_with_underscores(name: &str) -> bool {
    const FORWARDING: [&str; 6] = [
        FORWARDED_FOR,
        FORWARDED_PROTO,
        ONLY_FROM_TRUSTED[0],
        ONLY_FROM_TRUSTED[1],
        ONLY_FROM_TRUSTED[2],
        ONLY_FROM_TRUSTED[3],
    ];
    name.contains('_')
        && FORWARDING.iter().any(|header| {
            header.len() == name.len()
                && header
                    .bytes()
                    .zip(name.bytes())
                    .all(|(h, n)| h == n || (h == b'-' && n == b'_'))
        })
}

/// The forwarding headers: a trusted proxy's are extended, anyone else's
/// replaced with what jwtgate itself knows (the others were removed with
/// the spoofed names). `X-Forwarded-Host` and `-Port` are not made up: the
/// upstream receives the request's own `Host`, and each header jwtgate adds
/// costs every request. X-Real-IP is never made up either: X-Forwarded-For
/// carries the same address.
fn forwarded_headers(upstream: &mut RequestHeader, client: Option<ClientAddress>, scheme: Scheme) {
    let trusted = client.is_some_and(|c| c.peer_trusted);
    match client {
        Some(client) if client.peer_trusted => {
            let list = appended_forwarded_for(upstream, client.peer);
            let _ = upstream.insert_header(FORWARDED_FOR, list);
        }
        Some(client) => {
            let _ = upstream.insert_header(FORWARDED_FOR, ip_header_value(client.peer));
        }
        None => {
            upstream.remove_header(&FORWARDED_FOR_NAME);
        }
    }
    if !(trusted && upstream.headers.contains_key(&FORWARDED_PROTO_NAME)) {
        let proto = match scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        let _ = upstream.insert_header(FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
}

/// An address as header text. IPv4, nearly every peer, is spelled by hand:
/// `Display` for an address costs more than the rest of the header work.
fn ip_header_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).expect("an address is a valid header value");
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(octet).as_bytes();
        text[len..len + digits.len()].copy_from_slice(digits);
        len += digits.len();
    }
    HeaderValue::from_bytes(&text[..len]).expect("digits and dots are a valid header value")
}

/// A trusted proxy's `X-Forwarded-For` lines, as one list, with the peer
/// added at the end. Bytes are kept as sent: only a trusted proxy gets here.
fn appended_forwarded_for(upstream: &RequestHeader, peer: IpAddr) -> Vec<u8> {
    let mut list = Vec::new();
    for value in upstream.headers.get_all(&FORWARDED_FOR_NAME) {
        let value = value.as_bytes().trim_ascii();
        if !value.is_empty() {
            list.extend_from_slice(value);
            list.extend_from_slice(b", ");
        }
    }
    let _ = write!(list, "{peer}");
    list
}

/// `name` comes lower-cased from the parser; `identity_headers` and
/// `prefix` are already in spoof form.
fn is_reserved(name: &str, identity_headers: &[http::HeaderName], prefix: &str) -> bool {
    let matches = |candidate: &str| {
        (!prefix.is_empty() && candidate.starts_with(prefix))
            || identity_headers.iter().any(|h| h.as_str() == candidate)
    };
    if name.contains('_') {
        matches(&name.replace('_', "-"))
    } else {
        matches(name)
    }
}

/// Removes the token parameter from the query, keeping the others.
fn strip_query_parameter(upstream: &mut RequestHeader, parameter: &str) {
    let Some(query) = upstream.uri.query() else {
        return;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| split_pair(pair).0 != parameter)
        .collect();
    let path = upstream.uri.path();
    let path_and_query = if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    if let Ok(uri) = http::Uri::builder().path_and_query(path_and_query).build() {
        upstream.set_uri(uri);
    }
}

/// Removes the token cookie from every `Cookie` header, keeping the others.
fn strip_cookie(upstream: &mut RequestHeader, cookie_name: &str) {
    let values: Vec<String> = upstream
        .headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .map(str::trim)
                .filter(|pair| match split_pair(pair) {
                    (name, Some(_)) => name != cookie_name,
                    (_, None) => true,
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|v| !v.is_empty())
        .collect();
    upstream.remove_header("cookie");
    for value in values {
        let _ = upstream.append_header("cookie", value);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_are_spelled_as_display_spells_them() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "127.0.0.1",
            "192.168.100.9",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:10.1.2.3",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(
                super::ip_header_value(ip).as_bytes(),
                ip.to_string().as_bytes()
            );
        }
    }

    use super::*;

    #[test]
    fn reserved_names_cover_prefix_and_underscore_spellings() {
        let identity = [http::HeaderName::from_static("x-user-id")];
        assert!(is_reserved("x-user-id", &identity, "x-jwt-"));
        assert!(is_reserved("x_user_id", &identity, "x-jwt-"));
        assert!(is_reserved("x-jwt-anything", &identity, "x-jwt-"));
        assert!(is_reserved("x_jwt_anything", &identity, "x-jwt-"));
        assert!(!is_reserved("x-user-ids", &identity, "x-jwt-"));
        assert!(!is_reserved("accept", &identity, ""));
    }

    #[test]
    fn configured_underscore_spellings_are_matched_like_any_other() {
        let yaml = format!(
            r#"
issuers:
  - name: main
    issuer: https://issuer.test
    algorithms: [RS256]
    audiences: [api]
    jwks_file: {}/tests/fixtures/keys/jwks.json
routes:
  - name: api
    match: {{ path_prefix: / }}
    upstream: {{ addrs: ["127.0.0.1:9"] }}
    auth: {{ mode: optional }}
    forward:
      claims: {{ sub: X_User_Id }}
      reserved_prefix: X_Jwt_
"#,
            env!("CARGO_MANIFEST_DIR")
        );
        let path = std::path::Path::new("test.yaml");
        let config = crate::config::parse(path, &yaml, &|_| None).unwrap();
        let snapshot = crate::assemble::compile(path, config).unwrap();
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        for name in [
            "x-user-id",
            "x_user_id",
            "X-USER-ID",
            "x-jwt-role",
            "x_jwt_role",
        ] {
            request.append_header(name, "spoofed").unwrap();
        }
        request.append_header("x-user-idx", "kept").unwrap();
        rewrite(
            &mut request,
            &Forwarding {
                route: &snapshot.routes[0],
                identity_headers: &snapshot.identity_headers,
                identity: None,
                request_id: &HeaderValue::from_static("id"),
                client: None,
                scheme: Scheme::Http,
                client_cert_header: None,
                replaces_trace_context: false,
            },
        );
        let left: Vec<&str> = request.headers.keys().map(|n| n.as_str()).collect();
        for spoofed in ["x-user-id", "x_user_id", "x-jwt-role", "x_jwt_role"] {
            assert!(
                !left.contains(&spoofed),
                "{spoofed} reached the upstream: {left:?}"
            );
        }
        assert!(left.contains(&"x-user-idx"), "{left:?}");
    }

    #[test]
    fn only_the_token_query_parameter_is_stripped() {
        let mut request = RequestHeader::build("GET", b"/p?a=1&access_token=t&b=2", None).unwrap();
        strip_query_parameter(&mut request, "access_token");
        assert_eq!(request.uri.to_string(), "/p?a=1&b=2");
        let mut request = RequestHeader::build("GET", b"/p?access_token=t", None).unwrap();
        strip_query_parameter(&mut request, "access_token");
        assert_eq!(request.uri.to_string(), "/p");
    }

    #[test]
    fn only_the_token_cookie_is_stripped() {
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        request.append_header("cookie", "a=1; at=tok; b=2").unwrap();
        request.append_header("cookie", "at=tok").unwrap();
        strip_cookie(&mut request, "at");
        let cookies: Vec<&str> = request
            .headers
            .get_all("cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(cookies, ["a=1; b=2"]);
    }
}
