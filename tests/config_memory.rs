//! What a reload of a config at platform scale costs in memory while it
//! compiles: with the running config held, reading and compiling 10 000
//! routes again must take no more than about one more compiled config at
//! its peak. Each parsed route is freed as soon as it is compiled; a change
//! that held them all until the end (or one buffer of them) would take
//! twice that, and fails here. Heap bytes are counted, not timed, so the
//! bound holds on any machine. Alone in its crate: the allocator counts the
//! whole process.

mod common;

#[path = "../benches/support/heap.rs"]
mod heap;
#[path = "../benches/support/reload.rs"]
mod reload;

use common::generated;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

fn mib(bytes: isize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[test]
fn a_reload_takes_about_one_more_compiled_config_at_its_peak() {
    let text = generated(&["--issuers", "100", "--routes", "10000"]);
    let (peak, kept) = reload::peak_and_kept(&text);
    let ratio = peak as f64 / kept as f64;
    assert!(
        ratio <= 1.25,
        "compiling beside the running config peaked at {:.1} MiB over it, {ratio:.2} times the {:.1} MiB the compiled config keeps",
        mib(peak),
        mib(kept)
    );
}
