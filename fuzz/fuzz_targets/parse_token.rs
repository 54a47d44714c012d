//! Arbitrary bytes into the strict compact-JWS parser, with the gateway's
//! default 8 KiB cap. It must never panic, and what it accepts must be the
//! one canonical encoding of what it returns.

#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwtgate::auth::Reason;
use jwtgate::auth::token;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const MAX_TOKEN_BYTES: usize = 8192;

fuzz_target!(|data: &[u8]| {
    // Checked UTF-8 when the bytes are UTF-8 (no copy), lossy otherwise, so
    // invalid sequences still reach the parser as U+FFFD.
    let token = String::from_utf8_lossy(data);
    let result = token::parse(&token, MAX_TOKEN_BYTES);
    if token.len() > MAX_TOKEN_BYTES {
        assert_eq!(result.unwrap_err(), Reason::TooLarge);
        return;
    }
    let Ok(parsed) = result else { return };

    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3, "accepted {token:?}");
    let signing_input = format!("{}.{}", segments[0], segments[1]);
    assert_eq!(parsed.signing_input, signing_input.as_bytes());
    assert!(!parsed.signature().is_empty());

    // One token, one encoding: every segment is the canonical unpadded
    // base64url of its bytes.
    let decoded: Vec<Vec<u8>> = segments
        .iter()
        .map(|s| URL_SAFE_NO_PAD.decode(s).expect("accepted segment decodes"))
        .collect();
    for (segment, bytes) in segments.iter().zip(&decoded) {
        assert_eq!(URL_SAFE_NO_PAD.encode(bytes), *segment);
    }
    assert_eq!(decoded[2], parsed.signature());

    // A plain JSON parser must read the same claims and header fields
    // (the strict parser only refuses more, never reads differently).
    let claims: Value = serde_json::from_slice(&decoded[1]).expect("claims are JSON");
    assert_eq!(claims, parsed.claims.to_value());
    let header: Value = serde_json::from_slice(&decoded[0]).expect("header is JSON");
    assert_eq!(header["alg"].as_str(), Some(parsed.header.alg()));
    assert_eq!(
        header.get("kid").and_then(Value::as_str),
        parsed.header.kid()
    );
    assert_eq!(
        header.get("typ").and_then(Value::as_str),
        parsed.header.typ()
    );
});
