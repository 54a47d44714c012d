//! The JOSE header (RFC 7515 §4), parsed strictly and remembered per thread
//! by its exact encoding. A deployment's tokens carry a handful of distinct
//! headers (one per signing key), byte for byte the same on every token, so
//! decoding and parsing the same segment on every request is waste: about a
//! fifth of what verification added to an RSA signature check.

use std::cell::RefCell;
use std::rc::Rc;

use super::Reason;
use super::json::{JsonObject, JsonRef};
use super::token::decode_segment;
use crate::jose::Algorithm;

/// The parts of the header jwtgate acts on. Key material a token carries
/// (`jwk`, `jku`, `x5u`, `x5c`) is never read: a token may only select among
/// configured keys, by `kid`.
#[derive(Debug, PartialEq, Eq)]
pub struct Header {
    alg: String,
    /// `alg` when it names an algorithm we implement (so never `none`).
    algorithm: Option<Algorithm>,
    kid: Option<String>,
    typ: Option<String>,
    /// `typ` as compared with configured token types (see [`normalize_typ`]).
    media_type: Option<String>,
}

impl Header {
    fn from_fields(fields: &JsonObject) -> Result<Self, Reason> {
        // We implement no JWS extensions, so any critical one is unknown to us
        // and the token must be rejected (RFC 7515 §4.1.11); an unencoded
        // payload (RFC 7797 `b64: false`) changes what was signed.
        if fields.contains_key("crit") {
            return Err(Reason::UnsupportedHeader);
        }
        match fields.get("b64") {
            None | Some(JsonRef::Bool(true)) => {}
            Some(_) => return Err(Reason::UnsupportedHeader),
        }
        let optional = |name| match fields.get(name) {
            None => Ok(None),
            Some(JsonRef::String(value)) => Ok(Some(value.to_owned())),
            Some(_) => Err(Reason::Malformed),
        };
        let kid = optional("kid")?;
        let typ = optional("typ")?;
        let alg = optional("alg")?.ok_or(Reason::Malformed)?;
        Ok(Self {
            algorithm: alg.parse().ok(),
            alg,
            kid,
            media_type: typ.as_deref().map(normalize_typ),
            typ,
        })
    }

    pub fn alg(&self) -> &str {
        &self.alg
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub fn typ(&self) -> Option<&str> {
        self.typ.as_deref()
    }

    pub fn algorithm(&self) -> Option<Algorithm> {
        self.algorithm
    }

    pub fn media_type(&self) -> Option<&str> {
        self.media_type.as_deref()
    }
}

/// `typ` is a media type; RFC 7515 §4.1.9 lets `application/` be omitted,
/// and media types compare case-insensitively.
pub fn normalize_typ(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_string(),
        None => lower,
    }
}

/// How many distinct header encodings each thread remembers: enough for
/// several issuers mid-rotation; a miss only costs the parse it replaces.
const REMEMBERED: usize = 8;

/// Recently parsed header segments, replaced in turn once full.
struct Recent {
    entries: Vec<(Box<str>, Rc<Header>)>,
    next: usize,
}

impl Recent {
    fn find(&self, segment: &str) -> Option<Rc<Header>> {
        self.entries
            .iter()
            .find(|(seen, _)| **seen == *segment)
            .map(|(_, header)| header.clone())
    }

    fn remember(&mut self, segment: &str, header: Rc<Header>) {
        let entry = (Box::from(segment), header);
        if self.entries.len() < REMEMBERED {
            self.entries.push(entry);
        } else {
            self.entries[self.next] = entry;
            self.next = (self.next + 1) % REMEMBERED;
        }
    }
}

thread_local! {
    static RECENT: RefCell<Recent> = const {
        RefCell::new(Recent {
            entries: Vec::new(),
            next: 0,
        })
    };
}

/// The header in `segment` (base64url JSON). Parsing is a pure function of
/// the segment's bytes, so a remembered header is exactly what parsing again
/// would give; only headers that parsed are remembered.
pub fn parse(segment: &str) -> Result<Rc<Header>, Reason> {
    if let Some(header) = RECENT.with_borrow(|recent| recent.find(segment)) {
        return Ok(header);
    }
    let mut json = Vec::new();
    decode_segment(segment, &mut json)?;
    let fields = JsonObject::parse(&json)?;
    let header = Rc::new(Header::from_fields(&fields)?);
    RECENT.with_borrow_mut(|recent| recent.remember(segment, header.clone()));
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn segment(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn a_repeated_segment_is_parsed_once() {
        let rs = segment(r#"{"alg":"RS256","kid":"remembered","typ":"JWT"}"#);
        let first = parse(&rs).unwrap();
        assert!(Rc::ptr_eq(&first, &parse(&rs).unwrap()));
        assert_eq!(first.alg(), "RS256");
        assert_eq!(first.kid(), Some("remembered"));
        assert_eq!(first.typ(), Some("JWT"));
        assert_eq!(first.algorithm(), Some(Algorithm::RS256));
        assert_eq!(first.media_type(), Some("jwt"));
    }

    #[test]
    fn distinct_segments_stay_distinct_and_memory_is_bounded() {
        let segments: Vec<String> = (0..=REMEMBERED)
            .map(|i| segment(&format!(r#"{{"alg":"ES256","kid":"k{i}"}}"#)))
            .collect();
        let first = parse(&segments[0]).unwrap();
        for (i, s) in segments.iter().enumerate() {
            assert_eq!(parse(s).unwrap().kid(), Some(format!("k{i}").as_str()));
        }
        RECENT.with_borrow(|recent| assert_eq!(recent.entries.len(), REMEMBERED));
        // The oldest was replaced: parsed again, equal but not the same.
        let again = parse(&segments[0]).unwrap();
        assert!(!Rc::ptr_eq(&first, &again));
        assert_eq!(first, again);
    }

    #[test]
    fn refused_headers_are_refused_every_time() {
        let crit = segment(r#"{"alg":"RS256","crit":["exp"]}"#);
        let kid = segment(r#"{"alg":"RS256","kid":7}"#);
        for _ in 0..2 {
            assert_eq!(parse(&crit).unwrap_err(), Reason::UnsupportedHeader);
            assert_eq!(parse(&kid).unwrap_err(), Reason::Malformed);
        }
        RECENT.with_borrow(|recent| assert!(recent.find(&crit).is_none()));
    }
}
