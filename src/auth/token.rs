//! Parsing a compact JWS (RFC 7515 §7.1) strictly, before any key is touched:
//! a size cap first, exactly three segments, strict unpadded base64url, and
//! JSON objects without duplicate member names for both the header and the
//! claims (RFC 7515 §5.2, RFC 8725 §3.4: two parsers must not be able to
//! read two different tokens out of the same bytes).

use std::ops::Range;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use std::rc::Rc;

use super::Reason;
use super::header::{self, Header};
use super::json::JsonObject;

/// A token split and decoded, but not yet verified: nothing in here may be
/// trusted until the signature has been checked.
#[derive(Debug)]
pub struct ParsedToken<'a> {
    /// Shared with other tokens of this thread that carry the same header.
    pub header: Rc<Header>,
    pub claims: JsonObject,
    /// `BASE64URL(header) "." BASE64URL(payload)`: the bytes that were signed.
    pub signing_input: &'a [u8],
    /// The payload and the signature decoded into one buffer (one
    /// allocation, not two); the signature is its tail.
    decoded: Vec<u8>,
    signature_start: usize,
}

impl ParsedToken<'_> {
    pub fn signature(&self) -> &[u8] {
        &self.decoded[self.signature_start..]
    }
}

pub fn parse(token: &str, max_bytes: usize) -> Result<ParsedToken<'_>, Reason> {
    if token.len() > max_bytes {
        return Err(Reason::TooLarge);
    }
    let mut segments = token.splitn(4, '.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        // Five segments is the JWE compact form: say so, rather than "malformed".
        return Err(if token.split('.').count() == 5 {
            Reason::EncryptedToken
        } else {
            Reason::Malformed
        });
    };
    let header = header::parse(header_b64)?;
    // The engine reserves 3 bytes per started group of 4 characters before
    // decoding each segment: room for both, so the buffer never moves.
    let mut decoded = Vec::with_capacity((payload_b64.len() + signature_b64.len()) / 4 * 3 + 8);
    let payload = decode_segment(payload_b64, &mut decoded)?;
    // Duplicate member names are refused at every depth.
    let claims = JsonObject::parse(&decoded[payload])?;
    let signature = decode_segment(signature_b64, &mut decoded)?;
    let signing_input_len = header_b64.len() + 1 + payload_b64.len();
    Ok(ParsedToken {
        header,
        claims,
        signing_input: &token.as_bytes()[..signing_input_len],
        decoded,
        signature_start: signature.start,
    })
}

/// Appends the decoded `segment` to `out` and says where it landed.
/// Unpadded base64url only, and never empty; the engine also refuses
/// non-canonical trailing bits, so one token has exactly one encoding.
pub(super) fn decode_segment(segment: &str, out: &mut Vec<u8>) -> Result<Range<usize>, Reason> {
    if segment.is_empty() {
        return Err(Reason::Malformed);
    }
    let start = out.len();
    URL_SAFE_NO_PAD
        .decode_vec(segment, out)
        .map_err(|_| Reason::Malformed)?;
    Ok(start..out.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, claims: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(claims), b64("sig"))
    }

    #[test]
    fn parses_a_well_formed_token() {
        let t = token(r#"{"alg":"RS256","kid":"k1"}"#, r#"{"sub":"alice"}"#);
        let parsed = parse(&t, 8192).unwrap();
        assert_eq!(parsed.header.alg(), "RS256");
        assert_eq!(parsed.header.kid(), Some("k1"));
        assert_eq!(parsed.header.typ(), None);
        assert_eq!(parsed.claims.get("sub").unwrap().as_str(), Some("alice"));
        assert_eq!(parsed.signature(), b"sig");
        assert_eq!(
            parsed.signing_input,
            t.rsplit_once('.').unwrap().0.as_bytes()
        );
    }

    #[test]
    fn unsupported_headers_and_encrypted_tokens_have_their_own_reasons() {
        let claims = b64(r#"{"sub":"a"}"#);
        for header in [
            r#"{"alg":"RS256","crit":["exp"],"exp":1}"#,
            r#"{"alg":"RS256","crit":[]}"#,
            r#"{"alg":"RS256","b64":false}"#,
            r#"{"alg":"RS256","b64":"false"}"#,
        ] {
            let token = format!("{}.{claims}.c2ln", b64(header));
            assert_eq!(
                parse(&token, 8192).unwrap_err(),
                Reason::UnsupportedHeader,
                "{header}"
            );
        }
        let token = format!("{}.{claims}.c2ln", b64(r#"{"alg":"RS256","b64":true}"#));
        assert!(parse(&token, 8192).is_ok());
        assert_eq!(
            parse("a.b.c.d.e", 8192).unwrap_err(),
            Reason::EncryptedToken
        );
    }

    #[test]
    fn nested_values_survive_strict_parsing() {
        let claims = r#"{"n":-1,"f":1.5,"big":18446744073709551615,"t":true,"z":null,"a":[1,"x",{"k":[]}],"o":{"p":{"q":"r"}}}"#;
        let t = token(r#"{"alg":"RS256"}"#, claims);
        let parsed = parse(&t, 8192).unwrap();
        assert_eq!(
            parsed.claims.to_value(),
            serde_json::from_str::<Value>(claims).unwrap()
        );
    }

    #[test]
    fn size_cap_comes_before_decoding() {
        assert_eq!(
            parse(&"x".repeat(9000), 8192).unwrap_err(),
            Reason::TooLarge
        );
    }

    #[test]
    fn rejects_malformed_shapes() {
        let good_header = b64(r#"{"alg":"RS256"}"#);
        let good_claims = b64(r#"{"sub":"a"}"#);
        let cases = [
            String::new(),
            "a.b".to_string(),
            format!("{good_header}.{good_claims}"),
            format!("{good_header}.{good_claims}.c2ln.extra"),
            format!("{good_header}.{good_claims}."),
            format!("{good_header}=.{good_claims}.c2ln"),
            format!("{good_header}.{good_claims}.c2ln+/"),
            format!("{}.{good_claims}.c2ln", b64("[1,2]")),
            format!("{good_header}.{}.c2ln", b64("\"text\"")),
            format!("{good_header}.{}.c2ln", b64("{not json")),
            format!("{}.{good_claims}.c2ln", b64(r#"{"kid":"no alg"}"#)),
            format!(
                "{}.{good_claims}.c2ln",
                b64(r#"{"alg":"RS256","alg":"none"}"#)
            ),
            format!("{}.{good_claims}.c2ln", b64(r#"{"alg":"RS256","kid":7}"#)),
            format!("{}.{good_claims}.c2ln", b64(r#"{"alg":["RS256"]}"#)),
            format!("{good_header}.{}.c2ln", b64(r#"{"sub":"a","sub":"b"}"#)),
            format!("{good_header}.{}.c2ln", b64(r#"{"o":{"r":1,"r":2}}"#)),
            format!("{good_header}.{}.c2ln", b64(r#"{"a":[{"r":1,"r":2}]}"#)),
        ];
        for case in cases {
            assert_eq!(parse(&case, 8192).unwrap_err(), Reason::Malformed, "{case}");
        }
    }
}
