//! The canonical request target: the one reading of a request's path and host
//! that routing uses and the upstream receives, so a public route can't be
//! used to reach a protected resource by spelling its path differently.
//!
//! Bytes in, a canonical form or a refusal out: nothing here knows about
//! Pingora or any HTTP server. What a backend could read in more than one way
//! (`%2F`, `\`, `;` parameters, double encoding) is refused unless the
//! gateway's `paths` rules say to keep it; what no reading makes sense of
//! (control characters, invalid UTF-8, bytes the request-target grammar
//! forbids) is always refused.
//!
//! An already canonical ASCII path (the common case) costs one scan and no
//! allocation.

use std::borrow::Cow;

pub use crate::config::schema::Handling;

/// The gateway's choices for each ambiguous path form.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PathRules {
    /// `%2F`: kept, it stays encoded, is no segment separator for routing and
    /// is forwarded as `%2F`.
    pub encoded_slash: Handling,
    /// `\` or `%5C`: kept, it is a plain character, forwarded as `%5C`.
    pub backslash: Handling,
    /// `;` (or `%3B`) parameters in a segment: kept, they are forwarded, and
    /// routing reads each segment without them, as servlet containers do.
    pub semicolon: Handling,
    /// `%25` followed by two hex digits: kept, it is forwarded as is and
    /// routed as it stands (`%252e` is a name, not a dot).
    pub double_encoding: Handling,
}

/// Why a request target was refused. Each has a fixed label for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("an encoded slash (%2F) in the path")]
    EncodedSlash,
    #[error("a backslash (raw or %5C) in the path")]
    Backslash,
    #[error("a ';' parameter in a path segment")]
    PathParameter,
    #[error("a double-encoded byte (%25 and two hex digits) in the path")]
    DoubleEncoding,
    #[error("a control character (raw or encoded) in the path")]
    ControlCharacter,
    #[error("the path is not UTF-8 once decoded")]
    InvalidUtf8,
    #[error("the request-target is outside the HTTP/1.1 grammar")]
    InvalidTarget,
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("the host is not a valid host name or address")]
    InvalidHost,
}

impl TargetError {
    pub const ALL: [TargetError; 9] = [
        TargetError::EncodedSlash,
        TargetError::Backslash,
        TargetError::PathParameter,
        TargetError::DoubleEncoding,
        TargetError::ControlCharacter,
        TargetError::InvalidUtf8,
        TargetError::InvalidTarget,
        TargetError::DuplicateHost,
        TargetError::InvalidHost,
    ];

    /// The access-log `reason` for this refusal.
    pub fn reason(self) -> &'static str {
        match self {
            TargetError::EncodedSlash => "encoded_slash",
            TargetError::Backslash => "backslash",
            TargetError::PathParameter => "path_parameter",
            TargetError::DoubleEncoding => "double_encoding",
            TargetError::ControlCharacter => "control_character",
            TargetError::InvalidUtf8 => "invalid_utf8",
            TargetError::InvalidTarget => "invalid_target",
            TargetError::DuplicateHost => "duplicate_host",
            TargetError::InvalidHost => "invalid_host",
        }
    }
}

/// A request's target in canonical form.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestTarget<'a> {
    /// The routing key of the host: lower case, without port or trailing dot.
    pub host: Option<Cow<'a, str>>,
    /// The canonical path, as the upstream receives it.
    pub path: Cow<'a, str>,
    /// With `semicolon: keep`, the path without its parameters, when it has any.
    route_path: Option<String>,
    /// The query as the client sent it, without the `?`; `None` without `?`.
    pub query: Option<&'a [u8]>,
    /// The authority of an absolute-form request (`GET http://host/x`).
    pub authority: Option<&'a [u8]>,
}

impl<'a> RequestTarget<'a> {
    /// `authority` is the absolute-form authority, if the request had one;
    /// `path_and_query` the rest of the request-target (for origin form, all
    /// of it); `host_headers` every `Host` header value. The absolute-form
    /// authority takes precedence over `Host` (RFC 9112 §3.2.2).
    pub fn new(
        authority: Option<&'a [u8]>,
        path_and_query: &'a [u8],
        mut host_headers: impl Iterator<Item = &'a [u8]>,
        rules: &PathRules,
    ) -> Result<Self, TargetError> {
        let first_host = host_headers.next();
        if host_headers.next().is_some() {
            return Err(TargetError::DuplicateHost);
        }
        let host = match authority.or(first_host) {
            Some(host) => host_key(host)?,
            None => None,
        };
        let (path, query) = match path_and_query.iter().position(|&b| b == b'?') {
            Some(at) => (&path_and_query[..at], Some(&path_and_query[at + 1..])),
            None => (path_and_query, None),
        };
        // `http://host` and `http://host?q` name the root (RFC 9112 §3.2.2).
        let path = if path.is_empty() && authority.is_some() {
            b"/"
        } else {
            path
        };
        let path = canonical_path(path, rules)?;
        let route_path = match rules.semicolon {
            Handling::Keep => without_parameters(&path),
            Handling::Reject => None,
        };
        Ok(Self {
            host,
            path,
            route_path,
            query,
            authority,
        })
    }

    /// The path routing matches on: the canonical path, except that with
    /// `semicolon: keep` each segment is read without its parameters.
    pub fn route_path(&self) -> &str {
        self.route_path.as_deref().unwrap_or(&self.path)
    }

    /// The request-target to send upstream when it differs from the
    /// client's: the canonical path and the original query, in origin form.
    /// `None` when the client's target is already that.
    pub fn upstream_target(&self) -> Option<Vec<u8>> {
        if self.authority.is_none() && matches!(self.path, Cow::Borrowed(_)) {
            return None;
        }
        let mut target =
            Vec::with_capacity(self.path.len() + self.query.map_or(0, |q| q.len() + 1));
        target.extend_from_slice(self.path.as_bytes());
        if let Some(query) = self.query {
            target.push(b'?');
            target.extend_from_slice(query);
        }
        Some(target)
    }
}

/// Characters a canonical path carries as they are: unreserved, sub-delims
/// but `;`, `:` and `@` (RFC 3986 `pchar` without escapes), and `/`.
const fn plain_table() -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = (is_unreserved_or_sub_delim(c) && c != b';') || matches!(c, b':' | b'@' | b'/');
        b += 1;
    }
    table
}

static PLAIN: [bool; 256] = plain_table();

/// RFC 3986's `unreserved` and `sub-delims`: what both a path segment and a
/// host name may carry as they are (each adds its own few characters).
const fn is_unreserved_or_sub_delim(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The canonical form of a path (without its query): unreserved characters
/// decoded, other escapes in upper-case hex, dot segments resolved after
/// decoding, repeated slashes merged. Borrows when `path` is already canonical.
pub fn canonical_path<'a>(path: &'a [u8], rules: &PathRules) -> Result<Cow<'a, str>, TargetError> {
    if path.first() != Some(&b'/') {
        return Err(TargetError::InvalidTarget);
    }
    if already_canonical(path) {
        // Only ASCII passes `already_canonical`.
        return std::str::from_utf8(path)
            .map(Cow::Borrowed)
            .map_err(|_| TargetError::InvalidUtf8);
    }
    let decoded = decode(path, rules)?;
    let resolved = resolve_dot_segments(&decoded, rules)?;
    Ok(if resolved.as_bytes() == path {
        std::str::from_utf8(path)
            .map(Cow::Borrowed)
            .map_err(|_| TargetError::InvalidUtf8)?
    } else {
        Cow::Owned(resolved)
    })
}

/// The single scan of the common case: only plain characters, and no empty
/// or dot segment (a trailing `/` is fine).
fn already_canonical(path: &[u8]) -> bool {
    let mut segment_start = 1;
    for (i, &b) in path.iter().enumerate().skip(1) {
        if b == b'/' {
            if matches!(&path[segment_start..i], b"" | b"." | b"..") {
                return false;
            }
            segment_start = i + 1;
        } else if !PLAIN[b as usize] {
            return false;
        }
    }
    !matches!(&path[segment_start..], b"." | b"..")
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Refuses `byte` where `rules` refuse it: a backslash or a `;` however it
/// was written, a slash only %-encoded (a raw one separates segments).
fn allowed(byte: u8, rules: &PathRules) -> Result<(), TargetError> {
    let (handling, refusal) = match byte {
        b'/' => (rules.encoded_slash, TargetError::EncodedSlash),
        b'\\' => (rules.backslash, TargetError::Backslash),
        b';' => (rules.semicolon, TargetError::PathParameter),
        _ => return Ok(()),
    };
    match handling {
        Handling::Keep => Ok(()),
        Handling::Reject => Err(refusal),
    }
}

fn push_escape(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(byte >> 4)] as char);
    out.push(HEX[usize::from(byte & 0xF)] as char);
}

/// Decodes unreserved characters and normalizes every other escape, refusing
/// what `rules` refuse. The result is ASCII.
fn decode(path: &[u8], rules: &PathRules) -> Result<String, TargetError> {
    let mut out = String::with_capacity(path.len());
    let mut encoded_non_ascii = false;
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        i += 1;
        match b {
            b'%' => {
                let value = match path.get(i..i + 2) {
                    Some(&[high, low]) => {
                        hex_value(high).zip(hex_value(low)).map(|(h, l)| h << 4 | l)
                    }
                    _ => None,
                }
                .ok_or(TargetError::InvalidTarget)?;
                i += 2;
                match value {
                    v if is_unreserved(v) => out.push(v as char),
                    0..=0x1f | 0x7f => return Err(TargetError::ControlCharacter),
                    v => {
                        allowed(v, rules)?;
                        encoded_non_ascii |= v >= 0x80;
                        push_escape(&mut out, v);
                    }
                }
            }
            b'\\' => {
                allowed(b, rules)?;
                push_escape(&mut out, b);
            }
            b';' => {
                allowed(b, rules)?;
                out.push(';');
            }
            0..=0x1f | 0x7f => return Err(TargetError::ControlCharacter),
            b if PLAIN[b as usize] => out.push(b as char),
            // Raw non-ASCII, spaces, quotes, brackets, braces, `|`, `^`, `` ` ``.
            _ => return Err(TargetError::InvalidTarget),
        }
    }
    // Checked on the result, so `%25%34%31` (decoded to `%2541`) is caught too.
    if rules.double_encoding == Handling::Reject && has_double_encoding(&out) {
        return Err(TargetError::DoubleEncoding);
    }
    if encoded_non_ascii && std::str::from_utf8(&percent_decode(&out)).is_err() {
        return Err(TargetError::InvalidUtf8);
    }
    Ok(out)
}

/// `%25` followed by two hex digits: decoded once more, it is another byte.
fn has_double_encoding(text: &str) -> bool {
    let bytes = text.as_bytes();
    text.match_indices("%25").any(|(at, _)| {
        bytes
            .get(at + 3..at + 5)
            .is_some_and(|pair| pair.iter().all(u8::is_ascii_hexdigit))
    })
}

/// Every `%XX` decoded, for the UTF-8 check; `text` came out of `decode`,
/// so its escapes are well formed.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some((h, l)) = bytes
                .get(i + 1)
                .and_then(|&h| hex_value(h))
                .zip(bytes.get(i + 2).and_then(|&l| hex_value(l)))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Where a segment's parameters start: its first `;` or `%3B`.
fn parameters_start(segment: &str) -> Option<usize> {
    let raw = segment.find(';');
    let encoded = segment.find("%3B");
    match (raw, encoded) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// RFC 3986 §5.2.4 on a decoded, rooted path, with empty segments dropped
/// (merged slashes). A trailing `/` (or a final dot segment) stays a
/// trailing `/`.
fn resolve_dot_segments(path: &str, rules: &PathRules) -> Result<String, TargetError> {
    let mut out = String::with_capacity(path.len());
    let mut ends_in_directory = false;
    for segment in path[1..].split('/') {
        if rules.semicolon == Handling::Keep
            && let Some(at) = parameters_start(segment)
            && matches!(&segment[..at], "." | "..")
        {
            // `..;x` is a dot segment to servlet containers and a name to
            // others: no reading of it is safe.
            return Err(TargetError::PathParameter);
        }
        ends_in_directory = true;
        match segment {
            "" | "." => {}
            ".." => {
                let parent = out.rfind('/').unwrap_or(0);
                out.truncate(parent);
            }
            name => {
                out.push('/');
                out.push_str(name);
                ends_in_directory = false;
            }
        }
    }
    if out.is_empty() || ends_in_directory {
        out.push('/');
    }
    Ok(out)
}

/// `path` with every segment's `;` parameters removed and empty segments
/// merged, as a servlet container reads it; `None` when it has none.
fn without_parameters(path: &str) -> Option<String> {
    parameters_start(path)?;
    let mut out = String::with_capacity(path.len());
    for segment in path[1..].split('/') {
        let name = &segment[..parameters_start(segment).unwrap_or(segment.len())];
        if !name.is_empty() {
            out.push('/');
            out.push_str(name);
        }
    }
    if out.is_empty() || path.ends_with('/') {
        out.push('/');
    }
    Some(out)
}

/// The routing key of a host (a `Host` header or an absolute-form
/// authority): lower case, without port and without one trailing dot, so
/// `Admin.Example.:8443` and `admin.example` name the same host. Borrows
/// unless there is upper case to fold. `Ok(None)` for an empty host.
pub fn host_key(host: &[u8]) -> Result<Option<Cow<'_, str>>, TargetError> {
    if host.is_empty() {
        return Ok(None);
    }
    let name = if host.first() == Some(&b'[') {
        // An IP literal: `[v6]` and an optional port.
        let end = host
            .iter()
            .position(|&b| b == b']')
            .ok_or(TargetError::InvalidHost)?;
        port_suffix(&host[end + 1..])?;
        &host[..=end]
    } else {
        let (name, port) = match host.iter().rposition(|&b| b == b':') {
            Some(at) => (&host[..at], &host[at..]),
            None => (host, &b""[..]),
        };
        port_suffix(port)?;
        let name = name.strip_suffix(b".").unwrap_or(name);
        let valid_byte = |b: &u8| is_unreserved_or_sub_delim(*b) || *b == b'%';
        if name.is_empty()
            || name.starts_with(b".")
            || name.ends_with(b".")
            || name.windows(2).any(|w| w == b"..")
            || !name.iter().all(valid_byte)
        {
            return Err(TargetError::InvalidHost);
        }
        name
    };
    let name = std::str::from_utf8(name).map_err(|_| TargetError::InvalidHost)?;
    Ok(Some(if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }))
}

/// `""` or `:` and digits (RFC 3986 `port = *DIGIT`).
fn port_suffix(rest: &[u8]) -> Result<(), TargetError> {
    match rest.split_first() {
        None => Ok(()),
        Some((b':', digits)) if digits.iter().all(u8::is_ascii_digit) => Ok(()),
        _ => Err(TargetError::InvalidHost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict(path: &str) -> Result<Cow<'_, str>, TargetError> {
        canonical_path(path.as_bytes(), &PathRules::default())
    }

    fn keep_all() -> PathRules {
        PathRules {
            encoded_slash: Handling::Keep,
            backslash: Handling::Keep,
            semicolon: Handling::Keep,
            double_encoding: Handling::Keep,
        }
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for path in [
            "/",
            "/a/b",
            "/a/b/",
            "/api/v1/items:batch",
            "/a.b/c~d/@x",
            "/..a/b..",
        ] {
            assert!(
                matches!(strict(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn a_common_request_borrows_everything() {
        let target = RequestTarget::new(
            None,
            b"/api/orders/42?expand=items",
            [&b"api.example.com:8080"[..]].into_iter(),
            &PathRules::default(),
        )
        .unwrap();
        assert!(matches!(target.path, Cow::Borrowed("/api/orders/42")));
        assert!(matches!(
            target.host,
            Some(Cow::Borrowed("api.example.com"))
        ));
        assert!(target.route_path.is_none());
        assert_eq!(target.upstream_target(), None);
    }

    #[test]
    fn escapes_dot_segments_and_slashes_take_one_spelling() {
        for (path, canonical) in [
            // Unreserved escapes are decoded, others upper-cased.
            ("/%61dmin", "/admin"),
            ("/%7e%2D%5f", "/~-_"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%20b", "/a%20b"),
            ("/100%25", "/100%25"),
            ("/a%3fb", "/a%3Fb"),
            // Dot segments resolve after decoding, and slashes merge.
            ("/public/../admin", "/admin"),
            ("/public/%2e%2E/admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("//admin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/a/./b/", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/../..", "/"),
            ("/a//", "/a/"),
        ] {
            assert_eq!(strict(path).unwrap(), canonical, "{path:?}");
        }
    }

    #[test]
    fn ambiguous_forms_are_refused_by_default() {
        use TargetError::*;
        for (path, refusal) in [
            ("/admin%2fusers", EncodedSlash),
            ("/x/..%2Fadmin", EncodedSlash),
            ("/admin\\users", Backslash),
            ("/admin%5cusers", Backslash),
            ("/x/..;/admin", PathParameter),
            ("/admin;jsessionid=1", PathParameter),
            ("/admin%3Bx", PathParameter),
            ("/x/%252e%252e/admin", DoubleEncoding),
            ("/%2561dmin", DoubleEncoding),
            ("/%25%34%31", DoubleEncoding),
            ("/a%00b", ControlCharacter),
            ("/a\0b", ControlCharacter),
            ("/a%0Ab", ControlCharacter),
            ("/a%7F", ControlCharacter),
            ("/caf%C3%28", InvalidUtf8),
            ("/%C0%AF", InvalidUtf8),
            ("/%FF", InvalidUtf8),
            ("/caf\u{e9}", InvalidTarget),
            ("/a b", InvalidTarget),
            ("/a{b}", InvalidTarget),
            ("/a%zz", InvalidTarget),
            ("/a%2", InvalidTarget),
            ("*", InvalidTarget),
            ("", InvalidTarget),
            ("admin", InvalidTarget),
        ] {
            assert_eq!(strict(path), Err(refusal), "{path:?}");
        }
    }

    #[test]
    fn kept_forms_are_forwarded_in_one_spelling() {
        use TargetError::*;
        let rules = keep_all();
        let keep = |path: &str| canonical_path(path.as_bytes(), &rules).map(Cow::into_owned);
        for (path, kept) in [
            ("/a%2fb", Ok("/a%2Fb")),
            ("/a\\b", Ok("/a%5Cb")),
            ("/a%5cb", Ok("/a%5Cb")),
            ("/a;x=1/b", Ok("/a;x=1/b")),
            ("/a%252e", Ok("/a%252e")),
            // Controls and invalid UTF-8 are never kept.
            ("/a%00", Err(ControlCharacter)),
            ("/%FF", Err(InvalidUtf8)),
            // A dot segment with parameters means different things to
            // different backends.
            ("/x/..;/admin", Err(PathParameter)),
        ] {
            assert_eq!(keep(path), kept.map(String::from), "{path:?}");
        }
    }

    #[test]
    fn kept_parameters_are_not_routed_on() {
        let rules = PathRules {
            semicolon: Handling::Keep,
            ..PathRules::default()
        };
        let target = RequestTarget::new(
            None,
            b"/admin;jsessionid=1/x?q=1",
            std::iter::empty(),
            &rules,
        )
        .unwrap();
        assert_eq!(target.path, "/admin;jsessionid=1/x");
        assert_eq!(target.route_path(), "/admin/x");
        assert_eq!(
            target.upstream_target(),
            None,
            "already canonical: forwarded as sent"
        );
        let target =
            RequestTarget::new(None, b"/;p/admin%3Bx/", std::iter::empty(), &rules).unwrap();
        assert_eq!(target.route_path(), "/admin/");
    }

    #[test]
    fn upstream_target_is_the_canonical_path_and_the_original_query() {
        let rules = PathRules::default();
        let target =
            RequestTarget::new(None, b"/%61dmin//x?q=%2F&r", std::iter::empty(), &rules).unwrap();
        assert_eq!(target.upstream_target().unwrap(), b"/admin/x?q=%2F&r");
        let target = RequestTarget::new(None, b"/a/b?", std::iter::empty(), &rules).unwrap();
        assert_eq!(target.upstream_target(), None);
        assert_eq!(target.query, Some(&b""[..]));
        let target = RequestTarget::new(
            Some(b"Admin.Example"),
            b"?q",
            [&b"Admin.Example"[..]].into_iter(),
            &rules,
        )
        .unwrap();
        assert_eq!(target.host.as_deref(), Some("admin.example"));
        assert_eq!(target.upstream_target().unwrap(), b"/?q");
    }

    #[test]
    fn hosts_fold_case_port_and_trailing_dot() {
        let key = |h: &str| host_key(h.as_bytes()).map(|k| k.map(Cow::into_owned));
        for (host, folded) in [
            ("", None),
            ("admin.example", Some("admin.example")),
            ("ADMIN.example.", Some("admin.example")),
            ("Admin.Example.:8443", Some("admin.example")),
            ("admin.example:", Some("admin.example")),
            ("[::1]:8080", Some("[::1]")),
            ("127.0.0.1:80", Some("127.0.0.1")),
        ] {
            assert_eq!(key(host).unwrap().as_deref(), folded, "{host:?}");
        }
        for bad in [
            "admin.example..",
            ".",
            "a..b",
            "a/b",
            "a b",
            "user@admin.example",
            "admin.example:x",
            "::1",
            "[::1",
            "caf\u{e9}.example",
        ] {
            assert_eq!(key(bad), Err(TargetError::InvalidHost), "{bad:?}");
        }
    }

    #[test]
    fn two_host_headers_are_refused() {
        let hosts = [&b"a.example"[..], &b"b.example"[..]];
        assert_eq!(
            RequestTarget::new(None, b"/", hosts.into_iter(), &PathRules::default()),
            Err(TargetError::DuplicateHost)
        );
    }

    #[test]
    fn canonicalizing_is_idempotent_on_examples() {
        let rules = keep_all();
        for path in ["/a/../b//c/./%61%2fx", "/x;y/%252e/..", "/a\\b/%C3%A9/"] {
            let once = canonical_path(path.as_bytes(), &rules)
                .unwrap()
                .into_owned();
            let twice = canonical_path(once.as_bytes(), &rules).unwrap();
            assert_eq!(twice, once, "{path}");
        }
    }
}
