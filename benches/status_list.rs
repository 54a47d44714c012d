//! What the Token Status List check costs per request, and what a list
//! costs in memory.
//!
//! `cargo bench --bench status_list` measures, with a cached, decoded list
//! of 1 000 000 entries of 1 and of 2 bits:
//! - `status_list/check/<bits>`: a verified token's `status.status_list`
//!   read from its claims, its list found by URI among the issuer's lists,
//!   and its entry read (what a request pays);
//! - `status_list/lookup/<bits>`: the entry read alone.
//!
//! Before measuring it prints the heap bytes each decoded list holds
//! (counted by this binary's allocator, and as `jwtgate_status_list_bytes`
//! reports it).

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{BenchmarkId, Criterion};
use jwtgate::auth::json::JsonObject;
use jwtgate::config::schema::StatusListMode;
use jwtgate::jose::AlgorithmSet;
use jwtgate::keys::fetch::FetchSettings;
use jwtgate::keys::{KeySet, KeyStore};
use jwtgate::state::status_list::{CurrentList, StatusBits, StatusListSettings, StatusLists};

#[path = "support/heap.rs"]
mod heap;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

const ENTRIES: u64 = 1_000_000;
const PREFIX: &str = "https://idp.example/statuslists/";
const NOW: i64 = 1_800_000_000;

fn lists() -> StatusLists {
    let settings = StatusListSettings {
        mode: StatusListMode::Required,
        allowed_uris: vec![PREFIX.into()],
        prefetch: Vec::new(),
        max_lists: 16,
        max_age: Duration::from_secs(86_400),
        min_refresh: Duration::from_secs(60),
        max_refresh: Duration::from_secs(3600),
        max_decompressed_bytes: 16 << 20,
        fetch: FetchSettings {
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_bytes: 1 << 20,
            allow_http: false,
        },
    };
    StatusLists::new(
        "corp".into(),
        "https://idp.example".into(),
        AlgorithmSet::default(),
        Arc::new(KeyStore::fixed(KeySet { keys: Vec::new() })),
        settings,
    )
}

/// A list of `ENTRIES` entries of `bits`, every 7th one invalid, as an
/// issuer would publish it.
fn decoded(bits: u8) -> StatusBits {
    let mut bytes = vec![0u8; (ENTRIES * u64::from(bits)).div_ceil(8) as usize];
    for idx in (0..ENTRIES).step_by(7) {
        let bit = idx * u64::from(bits);
        bytes[(bit / 8) as usize] |= 1 << (bit % 8);
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&bytes).expect("compress");
    let lst = URL_SAFE_NO_PAD.encode(encoder.finish().expect("compress"));
    let before = heap::allocated();
    let list = StatusBits::decode(u64::from(bits), &lst, 16 << 20).expect("decode");
    println!(
        "status list of {ENTRIES} entries of {bits} bit(s): {} heap bytes ({} reported), {} compressed",
        heap::allocated() - before,
        list.memory_bytes(),
        lst.len()
    );
    list
}

fn claims(uri: &str, idx: u64) -> JsonObject {
    let json = format!(
        r#"{{"iss":"https://idp.example","sub":"user-42","aud":"api","iat":1700000000,"exp":1700000300,"scope":"read write","status":{{"status_list":{{"idx":{idx},"uri":"{uri}"}}}}}}"#
    );
    JsonObject::parse(json.as_bytes()).expect("claims")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("status_list");
    for bits in [1u8, 2] {
        let lists = lists();
        // A few other lists beside it, as an issuer with several would have.
        for other in 0..3 {
            let list = CurrentList {
                bits: decoded(bits),
                fetched_at: NOW,
                exp: None,
                source: None,
            };
            assert!(lists.install(&format!("{PREFIX}other-{other}"), list));
        }
        let uri = format!("{PREFIX}{bits}");
        let list = CurrentList {
            bits: decoded(bits),
            fetched_at: NOW,
            exp: None,
            source: None,
        };
        assert!(lists.install(&uri, list));
        let valid = claims(&uri, ENTRIES / 2 + 1);
        assert!(lists.check(&valid, NOW).is_ok());
        assert!(lists.check(&claims(&uri, 7 * 1000), NOW).is_err());
        group.bench_with_input(BenchmarkId::new("check", bits), &valid, |b, claims| {
            b.iter(|| lists.check(black_box(claims), black_box(NOW)))
        });
        let bits_only = decoded(bits);
        group.bench_with_input(BenchmarkId::new("lookup", bits), &bits_only, |b, list| {
            b.iter(|| list.get(black_box(ENTRIES / 2 + 1)))
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
