//! Configs at platform scale, from `benches/load/big_config.py`: the heap a
//! compiled route holds, how long compiling takes (most of a reload), and
//! route lookup among 10 and 10 000 routes, by path alone and by host and
//! path.
//!
//! ```sh
//! cargo bench --bench scale
//! ```
//!
//! Before measuring it prints the heap bytes per route (10 000 routes and
//! 100 issuers against 10 routes and 100 issuers), the time one compile
//! of the large config takes, and the peak heap of compiling it again
//! beside the running one (a reload).

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion};
use jwtgate::assemble::compile_reusing;
use jwtgate::pipeline::router::Router;

#[path = "support/heap.rs"]
mod heap;
#[path = "support/reload.rs"]
mod reload;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

const ISSUERS: &str = "100";

fn generated(routes: usize) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/load/big_config.py");
    let routes = routes.to_string();
    let output = Command::new("python3")
        .arg(script)
        .args(["--issuers", ISSUERS, "--routes", &routes])
        .output()
        .expect("python3 runs the config generator");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("the config is text")
}

/// The heap a compiled config of `routes` routes holds, and how long
/// parsing and compiling it took.
fn compiled(routes: usize) -> (isize, f64) {
    let text = generated(routes);
    let path = Path::new("big.yaml");
    let before = heap::allocated();
    let started = Instant::now();
    let config = jwtgate::config::parse(path, &text, &|_| None).expect("the config parses");
    let compiled = compile_reusing(path, config, &()).expect("the config compiles");
    let seconds = started.elapsed().as_secs_f64();
    let held = heap::allocated() - before;
    drop(black_box(compiled));
    (held, seconds)
}

fn report_memory() {
    let (small, _) = compiled(10);
    let (large, seconds) = compiled(10_000);
    let per_route = (large - small) as f64 / 9_990.0;
    println!(
        "compiled config: {per_route:.0} heap bytes per route (10 000 routes, {ISSUERS} issuers); parse and compile {:.0} ms",
        seconds * 1000.0
    );
}

/// What a reload of the 10 000-route config takes at its peak, over the
/// running config, against what the new compiled config keeps.
fn report_reload_peak() {
    let (peak, kept) = reload::peak_and_kept(&generated(10_000));
    println!(
        "reload: peak {:.1} MB over the running config, {:.2} times the {:.1} MB the new one keeps",
        peak as f64 / 1e6,
        peak as f64 / kept as f64,
        kept as f64 / 1e6
    );
}

fn bench_lookup(c: &mut Criterion) {
    let method = http::Method::GET;
    let mut group = c.benchmark_group("scale/lookup");
    for count in [10usize, 10_000] {
        for hosts in [false, true] {
            let mut router = Router::default();
            for i in 0..count {
                let host = format!("svc-{}.example", i % 50);
                let host = hosts.then_some(host.as_str());
                router.add(host, &format!("/api/v{i}"), None, i);
            }
            let (host, path) = ("svc-7.example", "/api/v7/orders/42");
            assert_eq!(router.find(Some(host), path, &method), Some(&7));
            let name = if hosts { "host+path" } else { "path" };
            group.bench_function(BenchmarkId::new(name, count), |b| {
                b.iter(|| router.find(black_box(Some(host)), black_box(path), &method))
            });
        }
    }
    group.finish();
}

fn main() {
    report_memory();
    report_reload_peak();
    let mut criterion = Criterion::default().configure_from_args();
    bench_lookup(&mut criterion);
    criterion.final_summary();
}
