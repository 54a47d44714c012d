//! `htu` as compared (RFC 9449 §4.3 check 9): the request's URI without
//! query and fragment, after the syntax- and scheme-based normalization of
//! RFC 3986 §6.2.2 and §6.2.3, so `HTTPS://Example.COM:443/a/%7euser/./b`
//! and `https://example.com/a/~user/b` are one URI.

use std::fmt::Write;

/// `uri` normalized: scheme and host lower-cased, the scheme's default port
/// dropped, an empty path made `/`, percent-encodings of unreserved
/// characters decoded and the others upper-cased, dot segments removed,
/// query and fragment dropped. `None` for what is no absolute `http` or
/// `https` URI with a host, or names a user (`user@host`). Normalizing
/// twice gives what normalizing once gave.
pub fn normalize_htu(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return None;
    }
    // An IPv6 literal has colons of its own: the port follows its `]`.
    let port_colon = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].find(':').map(|i| bracket + i),
        None => authority.rfind(':'),
    };
    let (host, port) = match port_colon {
        Some(colon) => (&authority[..colon], &authority[colon + 1..]),
        None => (authority, ""),
    };
    // A name has no `:`, `[` or `]`; an IPv6 literal is bracketed whole.
    let literal = host.starts_with('[') && host.ends_with(']');
    if host.is_empty() || (!literal && host.contains([':', '[', ']'])) {
        return None;
    }
    let mut out = format!("{scheme}://{}", host.to_ascii_lowercase());
    if !port.is_empty() {
        if !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let port: u16 = port.parse().ok()?;
        if port != default_port {
            write!(out, ":{port}").ok()?;
        }
    }
    out.push_str(&remove_dot_segments(&normalize_percent(path)?));
    Some(out)
}

/// Percent-encodings of unreserved characters decoded (RFC 3986 §6.2.2.2),
/// the others upper-cased (§6.2.2.1); `None` for a `%` without two hex
/// digits.
fn normalize_percent(path: &str) -> Option<String> {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let hex = rest.get(at + 1..at + 3)?;
        // Checked first: `from_str_radix` would also take a sign.
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let byte = u8::from_str_radix(hex, 16).ok()?;
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            write!(out, "%{byte:02X}").ok()?;
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// RFC 3986 §5.2.4 on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." | ".." => {
                if *segment == ".." {
                    out.pop();
                }
                // `/a/.` is the directory `/a/`.
                if i == last {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    format!("/{}", out.join("/"))
}
