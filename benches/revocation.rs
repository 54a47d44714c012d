//! What the revocation check costs per request, and what an entry costs in
//! memory.
//!
//! `cargo bench --bench revocation` measures, with 1 and with 1 000 000
//! `jti` entries in the list:
//! - `revocation/check/miss/<n>`: a verified token that is not revoked
//!   (the common case): its `jti` looked up, and `sub`/`sid` skipped since
//!   those tables are empty;
//! - `revocation/check/hit/<n>`: a revoked token;
//! - `revocation/check/cut_offs/<n>`: the same miss with a `sub` and a `sid`
//!   entry present, so all three tables are probed.
//!
//! Before measuring it prints the heap bytes the list holds per entry
//! (counted by this binary's allocator before and after filling it).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion};
use jwtgate::auth::VerifiedToken;
use jwtgate::auth::json::JsonObject;
use jwtgate::auth::verify::VerifierId;
use jwtgate::jose::Algorithm;
use jwtgate::state::revocation::{Entry, Kind, RevocationList};

#[path = "support/heap.rs"]
mod heap;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

const ISS: &str = "https://login.example.com/realms/main";

/// A UUID-shaped `jti`, as most identity providers issue.
fn jti(i: usize) -> String {
    format!("{:08x}-4b1d-4c6e-9f3a-{:012x}", i as u32, i)
}

fn token(jti: &str) -> VerifiedToken {
    let claims = format!(
        r#"{{"iss":"{ISS}","sub":"user-42","sid":"session-42","aud":"api","jti":"{jti}","iat":1700000000,"exp":1700000300,"scope":"read write"}}"#
    );
    VerifiedToken {
        issuer: 0,
        algorithm: Some(Algorithm::RS256),
        claims: JsonObject::parse(claims.as_bytes()).expect("claims"),
        exp: Some(1_700_000_300),
        nbf: None,
        iat: Some(1_700_000_000),
        key_generation: 0,
        verifier: VerifierId::fresh(),
        bound: false,
    }
}

fn filled(entries: usize) -> RevocationList {
    let before = heap::allocated();
    let list = RevocationList::new();
    for i in 0..entries {
        list.insert(&Entry {
            kind: Kind::Jti,
            iss: ISS.into(),
            value: jti(i),
            at: 1_800_000_000,
        });
    }
    let bytes = heap::allocated() - before;
    println!(
        "revocation list with {entries} jti entries: {bytes} heap bytes, {:.1} bytes per entry",
        bytes as f64 / entries as f64
    );
    list
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("revocation/check");
    for entries in [1, 1_000_000] {
        let list = filled(entries);
        let miss = token("not-revoked-0000-0000-000000000000");
        let hit = token(&jti(entries / 2));
        assert_eq!(list.check(ISS, &miss), None);
        assert_eq!(list.check(ISS, &hit), Some(Kind::Jti));
        group.bench_with_input(BenchmarkId::new("miss", entries), &miss, |b, token| {
            b.iter(|| list.check(black_box(ISS), black_box(token)))
        });
        group.bench_with_input(BenchmarkId::new("hit", entries), &hit, |b, token| {
            b.iter(|| list.check(black_box(ISS), black_box(token)))
        });
        for (kind, value) in [(Kind::Sub, "someone-else"), (Kind::Sid, "another-session")] {
            list.insert(&Entry {
                kind,
                iss: ISS.into(),
                value: value.into(),
                at: 1_800_000_000,
            });
        }
        assert_eq!(list.check(ISS, &miss), None);
        group.bench_with_input(BenchmarkId::new("cut_offs", entries), &miss, |b, token| {
            b.iter(|| list.check(black_box(ISS), black_box(token)))
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
