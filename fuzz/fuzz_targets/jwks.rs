//! Arbitrary bytes → JSON → `jwks::parse` with every algorithm allowed (and
//! again with a narrow allow-list). It must never panic; every entry of a
//! JWK Set must end up either as a key or as a skipped key with a reason,
//! and no key may verify with an algorithm the allow-list does not hold.

#![no_main]

use jwtgate::jose::{Algorithm, AlgorithmSet};
use jwtgate::keys::{KeyChoice, jwks};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(document) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let all: AlgorithmSet = Algorithm::ALL.into_iter().collect();
    let narrow: AlgorithmSet = [Algorithm::RS256, Algorithm::ES256].into_iter().collect();
    for allowed in [all, narrow] {
        let Ok(parsed) = jwks::parse(&document, allowed) else {
            assert!(document.get("keys").and_then(Value::as_array).is_none());
            continue;
        };
        let entries = document["keys"].as_array().map_or(0, Vec::len);
        assert_eq!(parsed.keys.len() + parsed.skipped.len(), entries);
        for skipped in &parsed.skipped {
            assert!(!skipped.why.is_empty());
        }
        for key in &parsed.keys.keys {
            let algorithms = key.algorithms();
            assert!(!algorithms.is_empty());
            let _ = format!("{key:?}");
            for alg in Algorithm::ALL {
                assert_eq!(key.supports(alg), algorithms.contains(alg));
                if key.supports(alg) {
                    assert!(allowed.contains(alg), "{alg} outside the allow-list");
                    assert_eq!(alg.family(), key.family);
                    // Exercise the verifier on junk; the answer is irrelevant.
                    let _ = key.verify(alg, data, data);
                } else {
                    assert!(!key.verify(alg, data, data));
                }
            }
            let kid = key.kid.as_deref();
            for alg in algorithms.iter() {
                match parsed.keys.select(kid, alg) {
                    KeyChoice::Candidates(candidates) => assert!(!candidates.is_empty()),
                    _ => panic!("a parsed key must be selectable by its own kid and alg"),
                }
            }
        }
    }
});
