//! One injectable source of "now", so expiry logic is testable without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, as JWT NumericDate values are expressed.
pub trait Clock: Send + Sync + 'static {
    fn now_unix(&self) -> i64;

    /// Nanoseconds since the Unix epoch, for what runs finer than a second
    /// (rate limits).
    fn now_nanos(&self) -> u64 {
        u64::try_from(self.now_unix()).unwrap_or(0) * NANOS_PER_SEC
    }
}

pub const NANOS_PER_SEC: u64 = 1_000_000_000;

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    fn now_nanos(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; for tests. It counts nanoseconds,
/// so sub-second logic can be stepped too.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

const NANOS: i64 = NANOS_PER_SEC as i64;

impl ManualClock {
    pub fn at(unix: i64) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(unix * NANOS)))
    }

    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds * NANOS, Ordering::Relaxed);
    }

    pub fn advance_millis(&self, millis: i64) {
        self.0.fetch_add(millis * 1_000_000, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_unix(&self) -> i64 {
        self.0.load(Ordering::Relaxed).div_euclid(NANOS)
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.0.load(Ordering::Relaxed)).unwrap_or(0)
    }
}

pub type SharedClock = Arc<dyn Clock>;

pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}
