//! Arbitrary bytes through the whole decision a route makes:
//! `RoutePolicy::authorize` (parse, issuer, algorithm, key, signature,
//! registered claims, token type, scopes and claim rules) against a JWKS
//! issuer built from the test-only fixture keys and an HMAC issuer.
//!
//! Each input is tried twice: as it is, and re-signed. A fuzzer cannot forge
//! a signature, so mutated claims would otherwise never get past the
//! signature check; the re-signed form replaces the last segment with the
//! HS256 MAC (under the fuzz-only secret) of everything before it, so every
//! mutated header and claim set reaches claim validation and the route rules.
//!
//! Every decision is taken at several clock readings, with and without the
//! verified-token cache, and with an explanation; they must all agree.

#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwtgate::auth::token_cache::{CacheSettings, TokenCache};
use jwtgate::auth::json::JsonRef;
use jwtgate::auth::policy::{ClaimRequirement, RoutePolicy};
use jwtgate::auth::verify::{Explain, Failure, TokenTypeRule, VerifierId};
use jwtgate::auth::{IssuerVerifier, Reason, VerifiedToken};
use jwtgate::jose::{Algorithm, AlgorithmSet};
use jwtgate::keys::{KeySet, KeyStore, VerifyingKey, jwks};
use libfuzzer_sys::fuzz_target;
use prometheus::IntCounter;
use serde_json::{Value, json};

/// Public, test-only keys (tests/fixtures/keys/README.md).
const FIXTURE_JWKS: &str = include_str!("../../tests/fixtures/keys/jwks.json");
/// A fixed clock, so every run decides the same way. The seed tokens in
/// corpus/verify_token were minted with `iat` = NOW.
const NOW: i64 = 1_800_000_000;
const MAX_TOKEN_BYTES: usize = 8192;
const JWKS_ISSUER: &str = "https://issuer.test";
const HMAC_ISSUER: &str = "https://hmac.test";
/// Fuzz-only HMAC secret (32 bytes, the HS256 minimum); it protects nothing.
const HMAC_SECRET: &[u8; 32] = b"jwtgate-fuzz-only-hmac-secret-32";

struct Fixture {
    issuers: Vec<Arc<IssuerVerifier>>,
    policies: [RoutePolicy; 2],
    signer: hmac::Key,
    hits: IntCounter,
    misses: IntCounter,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let public: AlgorithmSet = [
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ]
        .into_iter()
        .collect();
        let document: Value = serde_json::from_str(FIXTURE_JWKS).expect("fixture JWKS is JSON");
        let keys = jwks::parse(&document, public)
            .expect("fixture JWKS parses")
            .keys;
        assert!(!keys.is_empty());
        let jwks_issuer = IssuerVerifier {
            id: VerifierId::fresh(),
            name: "jwks".into(),
            issuer: JWKS_ISSUER.into(),
            algorithms: public,
            audiences: vec!["api".into()],
            check_audience: true,
            leeway_secs: 30,
            require_exp: true,
            max_lifetime_secs: Some(86_400),
            require_sub: true,
            token_type: TokenTypeRule {
                typ: vec!["jwt".into(), "at+jwt".into()],
                claim: None,
                claim_values: vec![],
            },
            scope_claim: None,
            keys: Arc::new(KeyStore::fixed(keys)),
            required: true,
        };

        let hs256: AlgorithmSet = [Algorithm::HS256].into_iter().collect();
        let hmac_key = VerifyingKey::hmac(HMAC_SECRET, hs256).expect("32-byte secret");
        let hmac_issuer = IssuerVerifier {
            id: VerifierId::fresh(),
            name: "hmac".into(),
            issuer: HMAC_ISSUER.into(),
            algorithms: hs256,
            audiences: vec!["api".into(), "admin".into()],
            check_audience: false,
            leeway_secs: 0,
            require_exp: false,
            max_lifetime_secs: None,
            require_sub: false,
            token_type: TokenTypeRule {
                typ: vec![],
                claim: Some("token_use".into()),
                claim_values: vec![json!("access")],
            },
            scope_claim: Some("perm.scopes".into()),
            keys: Arc::new(KeyStore::fixed(KeySet {
                keys: vec![hmac_key],
            })),
            required: true,
        };

        let open = RoutePolicy::new(vec![0, 1], vec![], vec![], vec![], vec![]);
        let strict = RoutePolicy::new(
            vec![1, 0],
            vec!["api".into()],
            vec!["read".into()],
            vec!["write".into(), "admin".into()],
            vec![
                ClaimRequirement {
                    claim: "realm_access.roles".into(),
                    any_of: vec![json!("admin"), json!("ops")],
                    all_of: vec![],
                },
                ClaimRequirement {
                    claim: "tenant".into(),
                    any_of: vec![],
                    all_of: vec![json!("acme")],
                },
            ],
        );
        Fixture {
            issuers: vec![Arc::new(jwks_issuer), Arc::new(hmac_issuer)],
            policies: [open, strict],
            signer: hmac::Key::new(hmac::HMAC_SHA256, HMAC_SECRET),
            hits: IntCounter::new("hits", "token cache hits").expect("valid counter"),
            misses: IntCounter::new("misses", "token cache misses").expect("valid counter"),
        }
    })
}

/// Renders every explanation, as `jwtgate token verify` does, so the
/// `detail` closures (arithmetic on claim values, formatting) run too.
struct Render(usize);

impl Explain for Render {
    fn passed(&mut self, check: &'static str, detail: &dyn Fn() -> String) {
        self.0 += check.len() + detail().len();
    }

    fn failed(&mut self, check: &'static str, reason: Reason) {
        self.0 += check.len() + reason.as_str().len();
    }
}

/// Clock readings each input is decided at, in order: the seeds' issue
/// time, a moment later, and long after every seed has expired. Time only
/// moves forward, as a cache sees it.
const TIMES: [i64; 3] = [NOW, NOW + 200, NOW + 100_000];

type Decision = Result<Arc<VerifiedToken>, Failure>;

fn summary(decision: &Decision) -> Result<(usize, Algorithm), Reason> {
    match decision {
        Ok(verified) => Ok((verified.issuer, verified.algorithm)),
        Err(failure) => Err(failure.rejection.reason),
    }
}

/// Authorizes `token` under both routes at each time, without a cache,
/// with one (a fresh cache per input, shared by the routes and times, so
/// later decisions are cache hits) and with an explanation, and checks that
/// these always agree and that whatever is accepted is consistent. Returns
/// the open route's uncached decision at `NOW`.
fn decide(f: &Fixture, token: &str) -> Decision {
    let cache = TokenCache::new(
        &CacheSettings {
            max_entries: 16,
            max_bytes: 1 << 16,
            ttl: Duration::from_secs(300),
        },
        f.hits.clone(),
        f.misses.clone(),
    );
    let [open, strict] = &f.policies;
    let mut first = None;
    for now in TIMES {
        let mut open_ok = false;
        for (i, policy) in [open, strict].into_iter().enumerate() {
            let quiet = policy.authorize(token, &f.issuers, now, MAX_TOKEN_BYTES, None, &mut ());
            let cached = policy.authorize(
                token,
                &f.issuers,
                now,
                MAX_TOKEN_BYTES,
                Some(&cache),
                &mut (),
            );
            // A cache hit passes no check a fresh verification would fail,
            // and fails none it would pass.
            assert_eq!(
                summary(&quiet),
                summary(&cached),
                "cache changed the decision at {now}"
            );
            if now == NOW {
                let mut render = Render(0);
                let explained =
                    policy.authorize(token, &f.issuers, now, MAX_TOKEN_BYTES, None, &mut render);
                assert_eq!(summary(&quiet), summary(&explained));
            }
            if let Ok(verified) = &quiet {
                let issuer = &f.issuers[verified.issuer];
                assert!(policy.issuers.contains(&verified.issuer));
                assert!(issuer.algorithms.contains(verified.algorithm));
                assert_eq!(
                    verified.claims.get("iss").and_then(JsonRef::as_str),
                    Some(issuer.issuer.as_str())
                );
                // The strict route only adds rules to the open one's.
                assert!(
                    i == 0 || open_ok,
                    "strict route admitted what the open one refused"
                );
            }
            if i == 0 {
                open_ok = quiet.is_ok();
                if now == NOW {
                    first = Some(quiet);
                }
            }
        }
    }
    first.expect("decided at NOW")
}

/// `VERIFY_TOKEN_TRACE=1` prints each input's decision at `NOW` on the open
/// route (e.g. to check that the seeds are accepted: run with `-runs=0`).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("VERIFY_TOKEN_TRACE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let token = String::from_utf8_lossy(data);
    let decision = decide(f, &token);
    if trace() {
        eprintln!("verify_token: {:?} <- {token:.48}", summary(&decision));
    }

    if let Some((signing_input, _)) = token.rsplit_once('.') {
        let tag = hmac::sign(&f.signer, signing_input.as_bytes());
        let resigned = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        if let Ok(verified) = decide(f, &resigned) {
            // Only the HMAC issuer holds this secret, and only under HS256:
            // no header can make a JWKS key accept an HMAC signature.
            assert_eq!(verified.issuer, 1);
            assert_eq!(verified.algorithm, Algorithm::HS256);
        }
    }
});
