//! Finding the token in a request: `Authorization: Bearer` (RFC 6750 §2.1)
//! or `Authorization: DPoP` (RFC 9449 §7.1, a token sent with a proof of
//! possession), plus an optional route-configured header, cookie or query
//! parameter. A token found in more
//! than one place is refused (RFC 6750 §2: "MUST NOT use more than one
//! method"), because two candidates invite confusion about which was checked.

use super::Reason;

/// Where a route looks for its token, besides `Authorization`.
#[derive(Debug, Clone, Default)]
pub struct TokenSources {
    /// Lower-case header name carrying the raw token.
    pub header: Option<String>,
    pub cookie: Option<String>,
    /// Query parameter; off unless configured (RFC 6750 §5.3).
    pub query: Option<String>,
}

/// The request headers extraction reads, abstracted so this module needs no
/// HTTP library: `values(name)` yields every value of a lower-case header.
pub trait HeaderSource {
    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a [u8]>;
}

/// A token as the request presented it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credential<'a> {
    pub token: &'a str,
    /// Sent as `Authorization: DPoP`: it must come with a `DPoP` proof of
    /// the key it is bound to.
    pub dpop: bool,
}

/// `Ok(None)`: no token anywhere. `Err`: a token sent two ways, or an
/// `Authorization` header that claims to be Bearer or DPoP but is unusable.
pub fn extract<'a>(
    headers: &'a impl HeaderSource,
    query: Option<&'a str>,
    sources: &TokenSources,
) -> Result<Option<Credential<'a>>, Reason> {
    let mut found: Option<Credential<'a>> = None;
    let mut offer = |token: &'a str, dpop: bool| {
        if found.replace(Credential { token, dpop }).is_some() {
            Err(Reason::AmbiguousToken)
        } else {
            Ok(())
        }
    };

    for value in headers.values("authorization") {
        if let Some((token, dpop)) = authorization(value)? {
            offer(token, dpop)?;
        }
    }
    if let Some(name) = &sources.header {
        for value in headers.values(name) {
            let token = std::str::from_utf8(value)
                .map_err(|_| Reason::Malformed)?
                .trim();
            if !token.is_empty() {
                offer(token, false)?;
            }
        }
    }
    if let Some(cookie_name) = &sources.cookie {
        for value in headers.values("cookie") {
            let Ok(text) = std::str::from_utf8(value) else {
                continue;
            };
            for pair in text.split(';') {
                if let (name, Some(token)) = split_pair(pair.trim())
                    && name == cookie_name
                    && !token.is_empty()
                {
                    offer(token, false)?;
                }
            }
        }
    }
    // JWTs use only URL-safe characters, so no percent-decoding is needed
    // (an encoded token simply fails to parse).
    if let (Some(parameter), Some(query)) = (&sources.query, query) {
        for pair in query.split('&') {
            if let (key, Some(token)) = split_pair(pair)
                && key == parameter
                && !token.is_empty()
            {
                offer(token, false)?;
            }
        }
    }
    Ok(found)
}

/// One `name=value` pair of a `Cookie` header or a query string: the name
/// and, when there is an `=`, the value. The proxy strips token cookies and
/// parameters with this same reading, so what authenticated a request is
/// what gets removed from it.
pub fn split_pair(pair: &str) -> (&str, Option<&str>) {
    match pair.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (pair, None),
    }
}

/// Reads `Bearer <token>` or `DPoP <token>` (then `true`). Schemes are
/// case-insensitive (RFC 9110 §11.1); others (Basic, ...) are not ours and
/// count as no token.
fn authorization(value: &[u8]) -> Result<Option<(&str, bool)>, Reason> {
    let text = std::str::from_utf8(value).map_err(|_| Reason::Malformed)?;
    let text = text.trim();
    let Some((scheme, rest)) = text.split_once(' ') else {
        return Ok(None);
    };
    let dpop = scheme.eq_ignore_ascii_case("dpop");
    if !dpop && !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim_start();
    if token.is_empty() {
        return Ok(None);
    }
    Ok(Some((token, dpop)))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Headers(Vec<(&'static str, &'static str)>);

    impl HeaderSource for Headers {
        fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a [u8]> {
            let name = name.to_string();
            self.0
                .iter()
                .filter(move |(n, _)| n.eq_ignore_ascii_case(&name))
                .map(|(_, v)| v.as_bytes())
        }
    }

    /// The token found, however it was presented.
    fn token<'a>(found: Result<Option<Credential<'a>>, Reason>) -> Result<Option<&'a str>, Reason> {
        found.map(|credential| credential.map(|c| c.token))
    }

    fn sources() -> TokenSources {
        TokenSources {
            header: Some("x-token".into()),
            cookie: Some("at".into()),
            query: Some("access_token".into()),
        }
    }

    #[test]
    fn reads_bearer_case_insensitively() {
        let h = Headers(vec![("Authorization", "bEaReR abc.def.ghi")]);
        assert_eq!(
            token(extract(&h, None, &sources())),
            Ok(Some("abc.def.ghi"))
        );
    }

    #[test]
    fn reads_dpop_as_a_token_that_needs_its_proof() {
        let h = Headers(vec![("Authorization", "DPoP abc.def.ghi")]);
        let found = extract(&h, None, &sources()).unwrap().unwrap();
        assert_eq!((found.token, found.dpop), ("abc.def.ghi", true));
        let h = Headers(vec![("Authorization", "Bearer abc.def.ghi")]);
        assert!(!extract(&h, None, &sources()).unwrap().unwrap().dpop);
        let h = Headers(vec![
            ("authorization", "Bearer t1"),
            ("authorization", "DPoP t1"),
        ]);
        assert_eq!(extract(&h, None, &sources()), Err(Reason::AmbiguousToken));
    }

    #[test]
    fn other_schemes_and_empty_bearer_are_no_token() {
        for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "Token x"] {
            let h = Headers(vec![("authorization", value)]);
            assert_eq!(token(extract(&h, None, &sources())), Ok(None), "{value}");
        }
    }

    #[test]
    fn reads_configured_header_and_cookie() {
        let h = Headers(vec![("x-token", "t1")]);
        assert_eq!(token(extract(&h, None, &sources())), Ok(Some("t1")));
        let h = Headers(vec![("cookie", "a=b; at=t2; c=d")]);
        assert_eq!(token(extract(&h, None, &sources())), Ok(Some("t2")));
    }

    #[test]
    fn query_tokens_only_when_configured() {
        let h = Headers(vec![]);
        assert_eq!(
            token(extract(&h, Some("a=1&access_token=t3"), &sources())),
            Ok(Some("t3"))
        );
        let h = Headers(vec![("authorization", "Bearer t1")]);
        assert_eq!(
            token(extract(&h, Some("access_token=t3"), &sources())),
            Err(Reason::AmbiguousToken)
        );
    }

    #[test]
    fn two_places_is_ambiguous() {
        let h = Headers(vec![("authorization", "Bearer t1"), ("x-token", "t1")]);
        assert_eq!(
            token(extract(&h, None, &sources())),
            Err(Reason::AmbiguousToken)
        );
        let h = Headers(vec![
            ("authorization", "Bearer t1"),
            ("authorization", "Bearer t2"),
        ]);
        assert_eq!(
            token(extract(&h, None, &sources())),
            Err(Reason::AmbiguousToken)
        );
        let h = Headers(vec![("cookie", "at=t1; at=t2")]);
        assert_eq!(
            token(extract(&h, None, &sources())),
            Err(Reason::AmbiguousToken)
        );
    }

    #[test]
    fn unconfigured_sources_are_ignored() {
        let h = Headers(vec![("x-token", "t1"), ("cookie", "at=t2")]);
        assert_eq!(
            token(extract(
                &h,
                Some("access_token=t3"),
                &TokenSources::default()
            )),
            Ok(None)
        );
    }
}
