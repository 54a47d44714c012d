//! Verification and policy, end to end inside the library, with a manual
//! clock: expiry is tested by moving time, never by sleeping.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::policy::{ClaimRequirement, RoutePolicy};
use super::verify::{Explain, Failure};
use super::{IssuerVerifier, Reason, RejectionKind};
use crate::clock::{Clock, ManualClock};
use crate::jose::{Algorithm, KeyFamily};
use crate::keys::{KeySet, KeyStore, VerifyingKey, jwks};
use crate::mint::Signer;

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://issuer.test";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

fn jwks_issuer(algorithms: &[Algorithm]) -> Arc<IssuerVerifier> {
    let document: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("jwks.json")).unwrap()).unwrap();
    let allowed = algorithms.iter().copied().collect();
    let parsed = jwks::parse(&document, allowed).unwrap();
    issuer(ISS, algorithms, parsed.keys)
}

fn issuer(iss: &str, algorithms: &[Algorithm], keys: KeySet) -> Arc<IssuerVerifier> {
    Arc::new(IssuerVerifier::new(
        "main",
        iss,
        algorithms.iter().copied().collect(),
        vec!["api".into()],
        KeyStore::fixed(keys),
    ))
}

fn claims(extra: Value) -> Map<String, Value> {
    let mut claims = json!({
        "iss": ISS, "sub": "alice", "aud": "api", "iat": NOW, "exp": NOW + 300,
        "scope": "read write",
    })
    .as_object()
    .unwrap()
    .clone();
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            claims.remove(k);
        } else {
            claims.insert(k.clone(), v.clone());
        }
    }
    claims
}

fn sign(alg: Algorithm, key: &str, kid: &str, claims: &Map<String, Value>) -> String {
    Signer::from_file(&fixture(key), alg)
        .unwrap()
        .sign(claims, Some(kid), Some("JWT"))
        .unwrap()
}

fn rs256(extra: Value) -> String {
    sign(Algorithm::RS256, "rsa.pem", "rsa-1", &claims(extra))
}

/// Signed by a key other than the one the JWKS lists under its kid.
fn impostor_token() -> String {
    sign(
        Algorithm::RS256,
        "rsa-impostor.pem",
        "rsa-1",
        &claims(json!({})),
    )
}

fn run(
    policy: &RoutePolicy,
    issuers: &[Arc<IssuerVerifier>],
    token: &str,
    now: i64,
) -> Result<Arc<super::VerifiedToken>, Failure> {
    policy.authorize(token, issuers, now, 8192, None, &mut ())
}

fn reason(result: Result<Arc<super::VerifiedToken>, Failure>) -> Reason {
    result
        .expect_err("token should be rejected")
        .rejection
        .reason
}

fn open_policy() -> RoutePolicy {
    RoutePolicy::new(vec![0], vec![], vec![], vec![], vec![])
}

/// Accepted, or the reason for refusing: what most checks compare, so that
/// each fits on one line.
fn outcome_for(
    policy: &RoutePolicy,
    issuers: &[Arc<IssuerVerifier>],
    token: &str,
    now: i64,
) -> Result<(), Reason> {
    run(policy, issuers, token, now)
        .map(|_| ())
        .map_err(|failure| failure.rejection.reason)
}

fn outcome(issuers: &[Arc<IssuerVerifier>], token: &str, now: i64) -> Result<(), Reason> {
    outcome_for(&open_policy(), issuers, token, now)
}

#[test]
fn every_public_key_algorithm_verifies_with_its_key() {
    let all: Vec<Algorithm> = Algorithm::ALL
        .into_iter()
        .filter(|alg| alg.family() != KeyFamily::Hmac)
        .collect();
    assert_eq!(all.len(), 9);
    let issuers = [jwks_issuer(&all)];
    for alg in all {
        let (key, kid) = match alg {
            Algorithm::ES256 => ("ec256.pem", "ec256-1"),
            Algorithm::ES384 => ("ec384.pem", "ec384-1"),
            Algorithm::EdDSA => ("ed25519.pem", "ed25519-1"),
            _ => ("rsa.pem", "rsa-1"),
        };
        let token = sign(alg, key, kid, &claims(json!({})));
        let verified = run(&open_policy(), &issuers, &token, NOW).unwrap();
        assert_eq!(verified.algorithm, Some(alg));
        assert_eq!(verified.subject(), Some("alice"));
    }
}

#[test]
fn hmac_algorithms_verify_and_short_secrets_are_refused() {
    let secret = b"0123456789abcdef0123456789abcdef";
    let hs = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
    let key = VerifyingKey::hmac(secret, hs.into_iter().collect()).unwrap();
    let issuers = [issuer(ISS, &hs, KeySet { keys: vec![key] })];
    for alg in hs {
        let token = Signer::from_bytes(secret, alg)
            .ok()
            .unwrap()
            .sign(&claims(json!({})), None, None)
            .unwrap();
        assert!(run(&open_policy(), &issuers, &token, NOW).is_ok(), "{alg}");
    }
    assert!(VerifyingKey::hmac(b"too short", hs.into_iter().collect()).is_err());
}

#[test]
fn algorithm_must_be_allowed_and_fit_the_key() {
    let issuers = [jwks_issuer(&[Algorithm::RS256])];
    // An allowed-by-nobody algorithm, from a key that is in the JWKS.
    let es = sign(Algorithm::ES256, "ec256.pem", "ec256-1", &claims(json!({})));
    assert_eq!(outcome(&issuers, &es, NOW), Err(Reason::AlgNotAllowed));

    // RS256 → HS256 confusion: the attacker HMACs with the public key bytes.
    let public_jwks = std::fs::read(fixture("jwks.json")).unwrap();
    let forged = Signer::from_bytes(&public_jwks, Algorithm::HS256)
        .ok()
        .unwrap()
        .sign(&claims(json!({})), Some("rsa-1"), None)
        .unwrap();
    assert_eq!(outcome(&issuers, &forged, NOW), Err(Reason::AlgNotAllowed));

    // A key whose JWK says RS256 cannot verify PS256, even when allowed.
    let issuers = [jwks_issuer(&[Algorithm::RS256, Algorithm::PS256])];
    let ps = sign(
        Algorithm::PS256,
        "rsa-rs256-only.pem",
        "rsa-rs256-only",
        &claims(json!({})),
    );
    assert_eq!(outcome(&issuers, &ps, NOW), Err(Reason::AlgNotAllowed));
}

#[test]
fn signature_and_key_selection() {
    let issuers = [jwks_issuer(&[Algorithm::RS256])];
    let impostor = impostor_token();
    assert_eq!(outcome(&issuers, &impostor, NOW), Err(Reason::BadSignature));
    let unknown = sign(Algorithm::RS256, "rsa.pem", "nope", &claims(json!({})));
    assert_eq!(outcome(&issuers, &unknown, NOW), Err(Reason::UnknownKid));
    // Without a kid, every key usable with the algorithm is tried.
    let no_kid = Signer::from_file(&fixture("rsa.pem"), Algorithm::RS256)
        .unwrap()
        .sign(&claims(json!({})), None, None)
        .unwrap();
    assert_eq!(outcome(&issuers, &no_kid, NOW), Ok(()));
}

#[test]
fn time_claims_follow_the_clock_with_leeway() {
    use Reason::*;
    let issuers = [jwks_issuer(&[Algorithm::RS256])];
    let clock = ManualClock::at(NOW);
    let token = rs256(json!({"exp": NOW + 60}));
    let at_clock = || outcome(&issuers, &token, clock.now_unix());
    assert_eq!(at_clock(), Ok(()));
    clock.advance(60 + 29);
    assert_eq!(at_clock(), Ok(()), "within leeway");
    clock.advance(1);
    assert_eq!(at_clock(), Err(Expired));

    for (extra, expected) in [
        (json!({"nbf": NOW + 31}), Err(NotYetValid)),
        (json!({"nbf": NOW + 30}), Ok(())),
        (json!({"iat": NOW + 31}), Err(IssuedInFuture)),
        (json!({"exp": null}), Err(MissingClaim)),
        (json!({"exp": "1800000000"}), Err(Malformed)),
        (json!({"exp": -1}), Err(Malformed)),
        (json!({"exp": 1e300}), Err(Malformed)),
    ] {
        let token = rs256(extra.clone());
        assert_eq!(outcome(&issuers, &token, NOW), expected, "{extra}");
    }
}

#[test]
fn issuer_and_audience() {
    let issuers = [jwks_issuer(&[Algorithm::RS256])];
    let cases = [
        (json!({"iss": "https://other.test"}), Reason::WrongIssuer),
        (json!({"iss": null}), Reason::MissingClaim),
        (json!({"aud": "other"}), Reason::WrongAudience),
        (json!({"aud": ["other", 1]}), Reason::Malformed),
        (json!({"aud": null}), Reason::MissingClaim),
    ];
    for (extra, expected) in cases {
        let token = rs256(extra.clone());
        assert_eq!(outcome(&issuers, &token, NOW), Err(expected), "{extra}");
    }
    let any_listed = rs256(json!({"aud": ["x", "api"]}));
    assert_eq!(outcome(&issuers, &any_listed, NOW), Ok(()));

    let route_audience = RoutePolicy::new(vec![0], vec!["orders".into()], vec![], vec![], vec![]);
    let for_route = |token: &str| outcome_for(&route_audience, &issuers, token, NOW);
    assert_eq!(for_route(&rs256(json!({}))), Err(Reason::WrongAudience));
    let both = rs256(json!({"aud": ["api", "orders"]}));
    assert_eq!(for_route(&both), Ok(()));
}

#[test]
fn a_route_only_trusts_its_own_issuers() {
    let main = jwks_issuer(&[Algorithm::RS256]);
    let other = issuer("https://other.test", &[Algorithm::RS256], KeySet::default());
    let issuers = [other, main];
    let only_other = RoutePolicy::new(vec![0], vec![], vec![], vec![], vec![]);
    assert_eq!(
        reason(run(&only_other, &issuers, &rs256(json!({})), NOW)),
        Reason::WrongIssuer
    );
    let only_main = RoutePolicy::new(vec![1], vec![], vec![], vec![], vec![]);
    assert_eq!(
        run(&only_main, &issuers, &rs256(json!({})), NOW)
            .unwrap()
            .issuer,
        1
    );
}

#[test]
fn an_issuer_without_keys_is_unavailable_not_invalid() {
    let issuers = [issuer(ISS, &[Algorithm::RS256], KeySet::default())];
    let failure = run(&open_policy(), &issuers, &rs256(json!({})), NOW).unwrap_err();
    assert_eq!(failure.rejection.status(), 503);
    assert_eq!(failure.rejection.reason, Reason::JwksUnavailable);
}

#[test]
fn scopes_and_claim_rules_are_403() {
    let issuers = [jwks_issuer(&[Algorithm::RS256])];
    let token = rs256(json!({"realm_access": {"roles": ["ops"]}, "tier": "gold"}));
    let policy = |all: &[&str], any: &[&str], claims: Vec<ClaimRequirement>| {
        RoutePolicy::new(
            vec![0],
            vec![],
            all.iter().map(|s| s.to_string()).collect(),
            any.iter().map(|s| s.to_string()).collect(),
            claims,
        )
    };
    let check = |policy: RoutePolicy| outcome_for(&policy, &issuers, &token, NOW);
    assert_eq!(check(policy(&["read", "write"], &[], vec![])), Ok(()));
    assert_eq!(check(policy(&[], &["admin", "write"], vec![])), Ok(()));
    let read_admin = policy(&["read", "admin"], &[], vec![]);
    let failure = run(&read_admin, &issuers, &token, NOW).unwrap_err();
    assert_eq!(failure.rejection.reason, Reason::InsufficientScope);
    assert_eq!(
        failure.rejection.kind,
        RejectionKind::InsufficientScope {
            required: Some("read admin".into())
        }
    );

    let rule = |claim: &str, any_of: Vec<Value>| ClaimRequirement {
        claim: claim.into(),
        any_of,
        all_of: vec![],
    };
    let requiring_role = |role: &str| {
        let roles = rule("realm_access.roles", vec![json!(role)]);
        check(policy(&[], &[], vec![roles]))
    };
    assert_eq!(requiring_role("ops"), Ok(()));
    assert_eq!(requiring_role("admin"), Err(Reason::ClaimMismatch));
    let missing = policy(&[], &[], vec![rule("department", vec![])]);
    let failure = run(&missing, &issuers, &token, NOW).unwrap_err();
    assert_eq!(failure.rejection.reason, Reason::MissingClaim);
    assert_eq!(failure.rejection.status(), 403);
}

#[test]
fn explanations_name_each_check() {
    #[derive(Default)]
    struct Record(Vec<String>);
    impl Explain for Record {
        fn passed(&mut self, check: &'static str, _detail: &dyn Fn() -> String) {
            self.0.push(format!("pass {check}"));
        }
        fn failed(&mut self, check: &'static str, reason: Reason) {
            self.0.push(format!("fail {check} {reason}"));
        }
    }
    let issuers = [jwks_issuer(&[Algorithm::RS256])];
    let mut record = Record::default();
    let token = rs256(json!({"exp": NOW - 100}));
    let _ = open_policy().authorize(&token, &issuers, NOW, 8192, None, &mut record);
    assert_eq!(
        record.0,
        [
            "pass structure",
            "pass issuer",
            "pass algorithm",
            "pass key",
            "pass signature",
            "fail exp expired"
        ]
    );
}

#[test]
fn weak_rsa_keys_in_a_jwks_are_skipped() {
    let document: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("jwks-weak-rsa.json")).unwrap())
            .unwrap();
    let parsed = jwks::parse(&document, [Algorithm::RS256].into_iter().collect()).unwrap();
    assert!(parsed.keys.is_empty());
    assert!(
        parsed.skipped[0].why.contains("1024 bits"),
        "{:?}",
        parsed.skipped
    );
}

fn issuer_with(configure: impl FnOnce(&mut IssuerVerifier)) -> Arc<IssuerVerifier> {
    let mut issuer = Arc::try_unwrap(jwks_issuer(&[Algorithm::RS256])).unwrap();
    configure(&mut issuer);
    Arc::new(issuer)
}

#[test]
fn lifetime_is_bounded_with_or_without_iat() {
    let too_long = Err(Reason::LifetimeTooLong);
    let issuers = [issuer_with(|i| i.max_lifetime_secs = Some(3600))];
    let ok = rs256(json!({"iat": NOW, "exp": NOW + 3600}));
    assert_eq!(outcome(&issuers, &ok, NOW), Ok(()));
    let long = rs256(json!({"iat": NOW, "exp": NOW + 3601}));
    assert_eq!(outcome(&issuers, &long, NOW), too_long);
    // Without iat, what's left of the lifetime counts.
    let no_iat = rs256(json!({"iat": null, "exp": NOW + 7200}));
    assert_eq!(outcome(&issuers, &no_iat, NOW), too_long);
    assert_eq!(outcome(&issuers, &no_iat, NOW + 3600), Ok(()));
    // No exp at all is an unbounded lifetime.
    let issuers = [issuer_with(|i| {
        i.max_lifetime_secs = Some(3600);
        i.require_exp = false;
    })];
    let forever = rs256(json!({"exp": null}));
    assert_eq!(outcome(&issuers, &forever, NOW), too_long);
}

#[test]
fn token_type_guard_by_header_and_claim() {
    use Reason::*;
    let by_typ = [issuer_with(|i| i.token_type.typ = vec!["at+jwt".into()])];
    let sign_typ = |typ: Option<&str>| {
        Signer::from_file(&fixture("rsa.pem"), Algorithm::RS256)
            .unwrap()
            .sign(&claims(json!({})), Some("rsa-1"), typ)
            .unwrap()
    };
    for (typ, expected) in [
        (Some("at+jwt"), Ok(())),
        (Some("AT+JWT"), Ok(())),
        (Some("application/at+jwt"), Ok(())),
        (Some("JWT"), Err(WrongTokenType)),
        (Some("refresh+jwt"), Err(WrongTokenType)),
        (None, Err(WrongTokenType)),
    ] {
        assert_eq!(outcome(&by_typ, &sign_typ(typ), NOW), expected, "{typ:?}");
    }

    let by_claim = [issuer_with(|i| {
        i.token_type.claim = Some("token_use".into());
        i.token_type.claim_values = vec![json!("access")];
    })];
    for (extra, expected) in [
        (json!({"token_use": "access"}), Ok(())),
        (json!({"token_use": "refresh"}), Err(WrongTokenType)),
        (json!({"token_use": "id"}), Err(WrongTokenType)),
        (json!({}), Err(WrongTokenType)),
    ] {
        let token = rs256(extra.clone());
        assert_eq!(outcome(&by_claim, &token, NOW), expected, "{extra}");
    }
}

#[test]
fn subject_must_be_a_string_and_can_be_required() {
    let issuers = [jwks_issuer(&[Algorithm::RS256])];
    for (sub, expected) in [
        (json!(["alice"]), Err(Reason::Malformed)),
        (json!(7), Err(Reason::Malformed)),
        (json!(""), Err(Reason::Malformed)),
        (json!(null), Ok(())),
    ] {
        let token = rs256(json!({ "sub": sub }));
        assert_eq!(outcome(&issuers, &token, NOW), expected, "{sub}");
    }
    let strict = [issuer_with(|i| i.require_sub = true)];
    let no_sub = rs256(json!({"sub": null}));
    assert_eq!(outcome(&strict, &no_sub, NOW), Err(Reason::MissingClaim));
}

#[test]
fn jti_can_be_required() {
    let lax = [jwks_issuer(&[Algorithm::RS256])];
    assert_eq!(outcome(&lax, &rs256(json!({"jti": null})), NOW), Ok(()));
    let strict = [issuer_with(|i| i.require_jti = true)];
    for (jti, expected) in [
        (json!("t-1"), Ok(())),
        (json!(null), Err(Reason::MissingClaim)),
        (json!(""), Err(Reason::Malformed)),
        (json!(7), Err(Reason::Malformed)),
    ] {
        let token = rs256(json!({ "jti": jti }));
        assert_eq!(outcome(&strict, &token, NOW), expected, "{jti}");
    }
}

fn cache() -> (
    super::token_cache::TokenCache,
    prometheus::IntCounter,
    prometheus::IntCounter,
) {
    let hits = prometheus::IntCounter::new("hits", "hits").unwrap();
    let misses = prometheus::IntCounter::new("misses", "misses").unwrap();
    let settings = super::token_cache::CacheSettings {
        max_entries: 100,
        max_bytes: 1 << 20,
        ttl: std::time::Duration::from_secs(300),
    };
    let cache = super::token_cache::TokenCache::new(&settings, hits.clone(), misses.clone());
    (cache, hits, misses)
}

#[test]
fn a_cached_token_passes_no_check_an_uncached_one_would_fail() {
    let main = jwks_issuer(&[Algorithm::RS256]);
    let other = issuer("https://other.test", &[Algorithm::RS256], KeySet::default());
    let issuers = [main, other];
    let (cache, hits, misses) = cache();
    let token = rs256(json!({"exp": NOW + 60, "aud": ["api", "orders"]}));
    let authorize = |policy: &RoutePolicy, now: i64| {
        policy.authorize(&token, &issuers, now, 8192, Some(&cache), &mut ())
    };

    let open = RoutePolicy::new(vec![0], vec![], vec![], vec![], vec![]);
    assert!(authorize(&open, NOW).is_ok());
    assert_eq!((hits.get(), misses.get()), (0, 1));
    assert!(authorize(&open, NOW).is_ok());
    assert_eq!(
        (hits.get(), misses.get()),
        (1, 1),
        "the second use is a hit"
    );

    // Each of these is a hit that must still fail like a fresh verification.
    let expired = authorize(&open, NOW + 60 + 30).unwrap_err();
    assert_eq!(expired.rejection.reason, Reason::Expired);
    let other_issuer = RoutePolicy::new(vec![1], vec![], vec![], vec![], vec![]);
    let wrong_issuer = authorize(&other_issuer, NOW).unwrap_err();
    assert_eq!(wrong_issuer.rejection.reason, Reason::WrongIssuer);
    let route_audience = RoutePolicy::new(vec![0], vec!["billing".into()], vec![], vec![], vec![]);
    let wrong_audience = authorize(&route_audience, NOW).unwrap_err();
    assert_eq!(wrong_audience.rejection.reason, Reason::WrongAudience);
    let needs_scope = RoutePolicy::new(vec![0], vec![], vec!["admin".into()], vec![], vec![]);
    let forbidden = authorize(&needs_scope, NOW).unwrap_err();
    assert_eq!(forbidden.rejection.reason, Reason::InsufficientScope);
    assert_eq!(hits.get(), 5, "all of the above were cache hits");

    let not_yet = rs256(json!({"nbf": NOW + 100}));
    assert!(
        open.authorize(&not_yet, &issuers, NOW + 100, 8192, Some(&cache), &mut ())
            .is_ok()
    );
    let early = open
        .authorize(&not_yet, &issuers, NOW, 8192, Some(&cache), &mut ())
        .unwrap_err();
    assert_eq!(early.rejection.reason, Reason::NotYetValid);
}

#[test]
fn invalid_tokens_are_not_cached() {
    let issuers = [jwks_issuer(&[Algorithm::RS256])];
    let (cache, hits, _) = cache();
    let impostor = impostor_token();
    for _ in 0..3 {
        let failure = open_policy()
            .authorize(&impostor, &issuers, NOW, 8192, Some(&cache), &mut ())
            .unwrap_err();
        assert_eq!(failure.rejection.reason, Reason::BadSignature);
    }
    assert_eq!(hits.get(), 0);
    assert_eq!(cache.entry_count(), 0);
}

#[test]
fn the_cache_is_bounded_in_entries() {
    let issuers = [jwks_issuer(&[Algorithm::RS256])];
    let (cache, _, _) = cache();
    for i in 0..300 {
        let token = rs256(json!({ "jti": i }));
        open_policy()
            .authorize(&token, &issuers, NOW, 8192, Some(&cache), &mut ())
            .unwrap();
    }
    assert!(cache.entry_count() <= 100, "{}", cache.entry_count());
}

#[test]
fn the_cache_is_bounded_in_bytes() {
    let issuers = [jwks_issuer(&[Algorithm::RS256])];
    let hits = prometheus::IntCounter::new("hits", "hits").unwrap();
    let misses = prometheus::IntCounter::new("misses", "misses").unwrap();
    let max_bytes = 64 * 1024;
    let settings = super::token_cache::CacheSettings {
        max_entries: 100_000,
        max_bytes,
        ttl: std::time::Duration::from_secs(300),
    };
    let cache = super::token_cache::TokenCache::new(&settings, hits, misses);
    let roles: Vec<String> = (0..100).map(|i| format!("role-{i:04}")).collect();
    let mut weight = 0;
    for i in 0..300 {
        let token = rs256(json!({ "jti": i, "roles": roles }));
        let verified = open_policy()
            .authorize(&token, &issuers, NOW, 8192, Some(&cache), &mut ())
            .unwrap();
        weight = verified.memory_bytes();
    }
    // A hundred roles is a few KiB in memory whatever the encoding.
    assert!(weight > 4 * 1024, "{weight}");
    let held = cache.entry_count();
    assert!(held > 0);
    assert!(
        held * weight as u64 <= max_bytes,
        "{held} entries of {weight} bytes"
    );
}

#[test]
fn cached_entries_live_by_the_callers_clock_not_the_wall_clock() {
    // Long before today: by the wall clock this token expired decades ago,
    // by the caller's clock it has a minute left, and the cache must agree.
    const THEN: i64 = 1_000_000_000;
    let issuers = [jwks_issuer(&[Algorithm::RS256])];
    let (cache, hits, misses) = cache();
    let token = rs256(json!({"iat": THEN, "exp": THEN + 60}));
    for _ in 0..2 {
        open_policy()
            .authorize(&token, &issuers, THEN, 8192, Some(&cache), &mut ())
            .unwrap();
    }
    assert_eq!(
        (hits.get(), misses.get()),
        (1, 1),
        "the second use is a hit"
    );
}

#[test]
fn oversized_tokens_never_reach_the_cache() {
    let issuers = [jwks_issuer(&[Algorithm::RS256])];
    let (cache, hits, misses) = cache();
    let failure = open_policy()
        .authorize(
            &"x".repeat(9000),
            &issuers,
            NOW,
            8192,
            Some(&cache),
            &mut (),
        )
        .unwrap_err();
    assert_eq!(failure.rejection.reason, Reason::TooLarge);
    assert_eq!((hits.get(), misses.get()), (0, 0));
}
