//! Parsing a compact JWS (RFC 7515 §7.1) strictly, before any key is touched:
//! a size cap first, exactly three segments, strict unpadded base64url, and
//! JSON objects without duplicate member names for both the header and the
//! claims (RFC 7515 §5.2, RFC 8725 §3.4: two parsers must not be able to
//! read two different tokens out of the same bytes).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::Reason;

/// The parts of the JOSE header jwtgate acts on. Key material a token
/// carries (`jwk`, `jku`, `x5u`, `x5c`) is never read: a token may only
/// select among configured keys, by `kid`.
#[derive(Debug, Clone)]
pub struct Header {
    pub alg: String,
    pub kid: Option<String>,
    pub typ: Option<String>,
}

impl Header {
    fn from_object(mut object: Map<String, Value>) -> Result<Self, Reason> {
        // We implement no JWS extensions, so any critical one is unknown to us
        // and the token must be rejected (RFC 7515 §4.1.11); an unencoded
        // payload (RFC 7797 `b64: false`) changes what was signed.
        if object.contains_key("crit") {
            return Err(Reason::UnsupportedHeader);
        }
        match object.get("b64") {
            None | Some(Value::Bool(true)) => {}
            Some(_) => return Err(Reason::UnsupportedHeader),
        }
        let mut string = |name: &str| match object.remove(name) {
            None => Ok(None),
            Some(Value::String(value)) => Ok(Some(value)),
            Some(_) => Err(Reason::Malformed),
        };
        Ok(Self {
            alg: string("alg")?.ok_or(Reason::Malformed)?,
            kid: string("kid")?,
            typ: string("typ")?,
        })
    }
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
        // Five segments is the JWE compact form: say so, rather than "malformed".
        return Err(if token.split('.').count() == 5 {
            Reason::EncryptedToken
        } else {
            Reason::Malformed
        });
    };
    let header = Header::from_object(strict_object(&decode_segment(header_b64)?)?)?;
    let claims = strict_object(&decode_segment(payload_b64)?)?;
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

/// A JSON object, with duplicate member names refused at every depth.
fn strict_object(bytes: &[u8]) -> Result<Map<String, Value>, Reason> {
    match serde_json::from_slice::<Strict>(bytes) {
        Ok(Strict(Value::Object(object))) => Ok(object),
        _ => Err(Reason::Malformed),
    }
}

/// A `serde_json::Value` whose objects may not repeat a member name
/// (serde_json itself silently keeps the last one).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            // One tree search per member: find the slot, then fill it.
            let serde_json::map::Entry::Vacant(slot) = object.entry(name) else {
                return Err(de::Error::custom("duplicate member name"));
            };
            let Strict(value) = map.next_value()?;
            slot.insert(value);
        }
        Ok(Value::Object(object))
    }
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
            Value::Object(parsed.claims),
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
