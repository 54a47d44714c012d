//! The upstream request's headers: identity headers only ever come from a
//! verified token, never from the client.

use std::net::IpAddr;

use pingora::http::RequestHeader;

use crate::auth::VerifiedToken;
use crate::auth::claims;
use crate::config::CompiledRoute;

pub const REQUEST_ID: &str = "x-request-id";
const MAX_REQUEST_ID_LEN: usize = 128;

/// Keeps a client's `X-Request-Id` when it looks like an id (visible ASCII,
/// bounded length), so traces join up across hops; otherwise makes one.
pub fn request_id(request: &RequestHeader) -> String {
    request
        .headers
        .get(REQUEST_ID)
        .map(|v| v.as_bytes())
        .filter(|v| {
            !v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN && v.iter().all(|b| b.is_ascii_graphic())
        })
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// What the upstream request needs beyond the client's own headers.
pub struct Forwarding<'a> {
    pub route: &'a CompiledRoute,
    pub identity_headers: &'a [http::HeaderName],
    pub identity: Option<&'a VerifiedToken>,
    pub request_id: &'a str,
    pub client_ip: Option<IpAddr>,
}

pub fn rewrite(upstream: &mut RequestHeader, forwarding: &Forwarding<'_>) {
    let plan = &forwarding.route.forward;

    // Spoofed identity: every configured claim header, and the reserved
    // prefix, whatever case the client used (header names are lower-cased
    // on parse, so comparing lower-case names covers every spelling).
    for name in forwarding.identity_headers {
        upstream.remove_header(name);
    }
    if !plan.reserved_prefix.is_empty() {
        let reserved: Vec<http::HeaderName> = upstream
            .headers
            .keys()
            .filter(|name| name.as_str().starts_with(&plan.reserved_prefix))
            .cloned()
            .collect();
        for name in &reserved {
            upstream.remove_header(name);
        }
    }
    if plan.strip_authorization {
        upstream.remove_header("authorization");
        if let Some(name) = &forwarding.route.sources.header {
            upstream.remove_header(name.as_str());
        }
    }

    if let Some(identity) = forwarding.identity {
        for (claim, header) in &plan.claims {
            let value = claims::lookup(&identity.claims, claim).and_then(claims::header_value);
            if let Some(value) = value {
                // header_value() already refused anything invalid in a header.
                let _ = upstream.insert_header(header.clone(), value);
            }
        }
    }

    let _ = upstream.insert_header(REQUEST_ID, forwarding.request_id);
    if let Some(ip) = forwarding.client_ip {
        let forwarded_for = match upstream.headers.get("x-forwarded-for").map(|v| v.to_str()) {
            Some(Ok(existing)) if !existing.trim().is_empty() => format!("{existing}, {ip}"),
            _ => ip.to_string(),
        };
        let _ = upstream.insert_header("x-forwarded-for", forwarded_for);
    }
    let _ = upstream.insert_header("x-forwarded-proto", "http");
}
