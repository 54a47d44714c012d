//! What a rate limit costs per request, and what a key costs in memory.
//!
//! `cargo bench --bench rate_limit` measures `RateLimits::check` (the
//! shard lock, the table probe and the GCRA update) for a request that is
//! allowed:
//! - `rate_limit/check/local/1`: one key, checked over and over;
//! - `rate_limit/check/local/1000000`: a million distinct keys remembered,
//!   checked in turn (the table is cold in the CPU's caches);
//! - `rate_limit/check/shared/<n>`: the same with `rate_limit.redis`, which
//!   adds the key's SHA-256 digest and the record of what was spent.
//!
//! Before measuring it prints the heap bytes the counters hold per key
//! (counted by this binary's allocator before and after filling them).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion};
use jwtgate::config::schema::{AuthMode, RateLimitConfig};
use jwtgate::state::rate_limit::{RateLimits, RouteRateLimits};

#[path = "support/heap.rs"]
mod heap;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

const NOW: u64 = 1_800_000_000_000_000_000;
/// The limit's interval: 1 ms at 1000/s.
const STEP: u64 = 1_000_000;

/// A subject-shaped key, as `claim:sub` limits see them.
fn key(i: usize) -> [u8; 24] {
    let mut key = *b"user-000000000000-tenant";
    key[5..17].copy_from_slice(format!("{i:012}").as_bytes());
    key
}

fn limits() -> RouteRateLimits {
    RouteRateLimits::compile(
        "api",
        AuthMode::Required,
        &[RateLimitConfig {
            name: "per-user".into(),
            rate: "1000/s".into(),
            burst: Some(10),
            key: "claim:sub".into(),
        }],
    )
    .expect("a valid limit")
}

fn filled(counters: RateLimits, keys: &[[u8; 24]], what: &str) -> RateLimits {
    let route = limits();
    let limit = &route.after_auth[0];
    let before = heap::allocated();
    for key in keys {
        counters
            .check(limit, Some(key), NOW)
            .expect("a fresh key is allowed");
    }
    // What the sync task would have collected by now.
    drop(counters.take_spent());
    let bytes = heap::allocated() - before;
    println!(
        "{what} rate-limit counters with {} keys: {bytes} heap bytes, {:.1} bytes per key",
        keys.len(),
        bytes as f64 / keys.len() as f64
    );
    counters
}

fn bench(c: &mut Criterion) {
    let route = limits();
    let limit = &route.after_auth[0];
    let mut group = c.benchmark_group("rate_limit/check");
    for (what, shared) in [("local", false), ("shared", true)] {
        for count in [1, 1_000_000] {
            let keys: Vec<[u8; 24]> = (0..count).map(key).collect();
            let counters = if shared {
                RateLimits::shared(2 * count)
            } else {
                RateLimits::new(2 * count)
            };
            let counters = filled(counters, &keys, what);
            // Time moves one interval per round of keys, so every request
            // measured is allowed, as most are.
            let (mut i, mut n, mut now) = (0usize, 0u64, NOW);
            group.bench_function(BenchmarkId::new(what, count), |b| {
                b.iter(|| {
                    i += 1;
                    if i == count {
                        i = 0;
                        now += STEP;
                    }
                    let allowed = counters.check(limit, Some(black_box(&keys[i])), now);
                    // As the sync task would, now and then.
                    n += 1;
                    if shared && n % 4096 == 0 {
                        drop(counters.take_spent());
                    }
                    allowed
                })
            });
        }
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
