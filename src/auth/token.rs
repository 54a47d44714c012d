//! Parsing a compact JWS (RFC 7515 §7.1) strictly, before any key is touched:
//! a size cap first, exactly three segments, strict unpadded base64url, and
//! JSON objects for both the header and the claims.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::Reason;

/// The parts of the JOSE header jwtgate acts on.
#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub typ: Option<String>,
}

/// A token split and decoded, but not yet verified: nothing in here may be
/// trusted until the signature has been checked.
#[derive(Debug)]
pub struct ParsedToken<'a> {
    pub header: Header,
    pub claims: Map<String, Value>,
    /// `BASE64URL(header) "." BASE64URL(payload)`: the bytes that were signed.
    pub signing_input: &'a [u8],
    pub signature: Vec<u8>,
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
        return Err(Reason::Malformed);
    };
    let header_bytes = decode_segment(header_b64)?;
    let header: Header = serde_json::from_slice(&header_bytes).map_err(|_| Reason::Malformed)?;
    let claims = match serde_json::from_slice::<Value>(&decode_segment(payload_b64)?) {
        Ok(Value::Object(claims)) => claims,
        _ => return Err(Reason::Malformed),
    };
    let signature = decode_segment(signature_b64)?;
    if signature.is_empty() {
        return Err(Reason::Malformed);
    }
    let signing_input_len = header_b64.len() + 1 + payload_b64.len();
    Ok(ParsedToken {
        header,
        claims,
        signing_input: &token.as_bytes()[..signing_input_len],
        signature,
    })
}

/// Unpadded base64url only; the engine also refuses non-canonical trailing
/// bits, so one token has exactly one encoding.
fn decode_segment(segment: &str) -> Result<Vec<u8>, Reason> {
    if segment.is_empty() {
        return Err(Reason::Malformed);
    }
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Reason::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(parsed.header.alg, "RS256");
        assert_eq!(parsed.header.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.claims["sub"], "alice");
        assert_eq!(parsed.signature, b"sig");
        assert_eq!(
            parsed.signing_input,
            t.rsplit_once('.').unwrap().0.as_bytes()
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
        ];
        for case in cases {
            assert_eq!(parse(&case, 8192).unwrap_err(), Reason::Malformed, "{case}");
        }
    }
}
