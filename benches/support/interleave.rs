//! Comparing two measurements on a shared machine: both sides run
//! alternately in small batches within each sample, so that the machine's
//! drift (other tenants, clock changes) hits both alike; and criterion's
//! own estimates, read back after a run.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Per comparison, each interleaved sample's figure (a ratio or a
/// difference of its two sides).
pub type Samples = RefCell<BTreeMap<String, Vec<f64>>>;

/// How many iterations of one side run before switching to the other.
const INTERLEAVE_BATCH: u64 = 16;

/// `iters` runs of `a` and as many of `b`, alternating in batches of
/// [`INTERLEAVE_BATCH`]; returns the time each side took in all.
pub fn alternate(iters: u64, mut a: impl FnMut(), mut b: impl FnMut()) -> (Duration, Duration) {
    let (mut a_time, mut b_time) = (Duration::ZERO, Duration::ZERO);
    let mut left = iters;
    while left > 0 {
        let batch = left.min(INTERLEAVE_BATCH);
        let start = Instant::now();
        (0..batch).for_each(|_| a());
        a_time += start.elapsed();
        let start = Instant::now();
        (0..batch).for_each(|_| b());
        b_time += start.elapsed();
        left -= batch;
    }
    (a_time, b_time)
}

/// [`alternate`], whose sample's `full`/`raw` ratio goes into `ratios`
/// under `name`; returns the time of both sides, for criterion.
#[allow(dead_code)]
pub fn interleave(
    iters: u64,
    ratios: &Samples,
    name: &str,
    full: impl FnMut(),
    raw: impl FnMut(),
) -> Duration {
    let (full_time, raw_time) = alternate(iters, full, raw);
    record(
        ratios,
        name,
        full_time.as_secs_f64() / raw_time.as_secs_f64(),
    );
    full_time + raw_time
}

pub fn record(samples: &Samples, name: &str, value: f64) {
    samples
        .borrow_mut()
        .entry(name.to_owned())
        .or_default()
        .push(value);
}

/// criterion's mean estimate of one benchmark, in nanoseconds.
pub fn estimate(id: &str) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let file = target.join("criterion").join(id).join("new/estimates.json");
    let estimates: Value = serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()?;
    estimates["mean"]["point_estimate"].as_f64()
}

/// The value below which `fraction` of the sorted `values` lie.
pub fn quantile(sorted: &[f64], fraction: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}
