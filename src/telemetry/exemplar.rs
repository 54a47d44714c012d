//! Exemplars: the trace of one recent observation in each histogram bucket,
//! so a dashboard can jump from a slow bucket to a request's trace. Only
//! the OpenMetrics exposition carries them (`super::openmetrics`).
//!
//! An observation without an exemplar (tracing off, or the request not
//! sampled) costs what a plain histogram observation costs: no lock, no
//! allocation. One with an exemplar takes its bucket's lock, held for a
//! copy of 40 bytes; the latest exemplar of a bucket wins.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, HistogramVec};

/// The W3C trace context of a sampled request: what an exemplar names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Exemplar {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

impl Exemplar {
    /// 32 lowercase hex digits, as `traceparent` and the access log write it.
    pub fn trace_id_hex(&self) -> Hex<32> {
        Hex::of(&self.trace_id)
    }

    /// 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> Hex<16> {
        Hex::of(&self.span_id)
    }
}

/// An id in lowercase hex, formatted on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Hex<N> {
    fn of(bytes: &[u8]) -> Self {
        let mut text = [0; N];
        hex::encode_to_slice(bytes, &mut text).expect("N is twice the id's length");
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl<const N: usize> fmt::Display for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An exemplar as it is exposed: the observed value and when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recorded {
    pub exemplar: Exemplar,
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// The latest exemplar of each bucket of one histogram series; the last
/// slot is the `+Inf` bucket's.
#[derive(Debug)]
pub struct BucketExemplars {
    upper_bounds: Arc<[f64]>,
    slots: Box<[Mutex<Option<Recorded>>]>,
}

impl BucketExemplars {
    fn new(upper_bounds: Arc<[f64]>) -> Self {
        let slots = (0..=upper_bounds.len()).map(|_| Mutex::new(None)).collect();
        Self {
            upper_bounds,
            slots,
        }
    }

    /// Keeps `exemplar` as the latest of the bucket `value` falls in, the
    /// first whose upper bound is at least `value` (the bucket Prometheus
    /// counts it in).
    pub fn record(&self, value: f64, exemplar: Exemplar) {
        self.record_at(value, exemplar, now_ms());
    }

    fn record_at(&self, value: f64, exemplar: Exemplar, timestamp_ms: u64) {
        let bucket = self
            .upper_bounds
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(self.upper_bounds.len());
        *lock(&self.slots[bucket]) = Some(Recorded {
            exemplar,
            value,
            timestamp_ms,
        });
    }

    /// Each bucket's latest exemplar, in bucket order (`+Inf` last).
    pub fn latest(&self) -> Vec<Option<Recorded>> {
        self.slots.iter().map(|slot| *lock(slot)).collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A slot holds plain data written whole: a panic elsewhere leaves
    // nothing half-written in it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// A histogram series and its buckets' exemplars.
#[derive(Debug, Clone)]
pub struct ExemplarHistogram {
    histogram: Histogram,
    exemplars: Arc<BucketExemplars>,
}

impl ExemplarHistogram {
    /// Observes `value`; with an exemplar, also keeps it as its bucket's
    /// latest. The count goes first, so an exposition that reads the
    /// exemplars before the counts never shows one in an empty bucket.
    pub fn observe(&self, value: f64, exemplar: Option<Exemplar>) {
        self.histogram.observe(value);
        if let Some(exemplar) = exemplar {
            self.exemplars.record(value, exemplar);
        }
    }

    /// [`ExemplarHistogram::observe`] at a given time.
    #[cfg(test)]
    pub(crate) fn observe_at(&self, value: f64, exemplar: Exemplar, timestamp_ms: u64) {
        self.histogram.observe(value);
        self.exemplars.record_at(value, exemplar, timestamp_ms);
    }
}

/// Label values → that series' exemplars.
type SeriesExemplars = Mutex<HashMap<Box<[String]>, Arc<BucketExemplars>>>;

/// A histogram family whose series keep exemplars: a [`HistogramVec`], or
/// a plain histogram as a family without labels.
#[derive(Clone)]
pub struct ExemplarHistogramVec {
    name: Arc<str>,
    histograms: HistogramVec,
    label_names: Arc<[String]>,
    upper_bounds: Arc<[f64]>,
    series: Arc<SeriesExemplars>,
}

impl ExemplarHistogramVec {
    pub fn new(opts: HistogramOpts, label_names: &[&str]) -> prometheus::Result<Self> {
        let upper_bounds = opts.buckets.clone().into();
        let name = opts.common_opts.name.as_str().into();
        Ok(Self {
            name,
            histograms: HistogramVec::new(opts, label_names)?,
            label_names: label_names.iter().map(|&label| label.to_owned()).collect(),
            upper_bounds,
            series: Arc::default(),
        })
    }

    /// The series of these label values (in the order the family was made
    /// with): a hash and a lock, so callers on the request path resolve it
    /// once and keep it.
    pub fn with_label_values(&self, values: &[&str]) -> ExemplarHistogram {
        let histogram = self.histograms.with_label_values(values);
        let key: Box<[String]> = values.iter().map(|&value| value.to_owned()).collect();
        let exemplars = lock(&self.series)
            .entry(key)
            .or_insert_with(|| Arc::new(BucketExemplars::new(self.upper_bounds.clone())))
            .clone();
        ExemplarHistogram {
            histogram,
            exemplars,
        }
    }

    /// What a registry collects: the histograms, without exemplars.
    pub fn collector(&self) -> Box<dyn Collector> {
        Box::new(self.histograms.clone())
    }

    /// Every series' exemplars now, for an exposition: taken before the
    /// registry is gathered (see [`ExemplarHistogram::observe`]).
    pub fn snapshot(&self) -> FamilyExemplars {
        let series = lock(&self.series)
            .iter()
            .map(|(values, exemplars)| (values.clone(), exemplars.latest()))
            .collect();
        FamilyExemplars {
            name: self.name.clone(),
            label_names: self.label_names.clone(),
            series,
        }
    }
}

/// One histogram family's exemplars at one moment, by series.
#[derive(Debug, Clone)]
pub struct FamilyExemplars {
    name: Arc<str>,
    label_names: Arc<[String]>,
    series: HashMap<Box<[String]>, Vec<Option<Recorded>>>,
}

impl FamilyExemplars {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exemplars of the series with these labels (a gathered metric's
    /// label pairs, in any order), one per bucket with `+Inf` last.
    pub fn of<'a>(
        &self,
        labels: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Option<&[Option<Recorded>]> {
        let values: Option<Box<[String]>> = self
            .label_names
            .iter()
            .map(|wanted| {
                let mut labels = labels.clone();
                labels
                    .find(|(name, _)| name == wanted)
                    .map(|(_, value)| value.to_owned())
            })
            .collect();
        self.series.get(&values?).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: Exemplar = Exemplar {
        trace_id: [
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
            0x47, 0x36,
        ],
        span_id: [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
    };

    fn family() -> ExemplarHistogramVec {
        let opts = HistogramOpts::new("latency_seconds", "Latency.").buckets(vec![0.1, 1.0]);
        ExemplarHistogramVec::new(opts, &["route"]).unwrap()
    }

    #[test]
    fn ids_format_as_lowercase_hex() {
        assert_eq!(
            TRACE.trace_id_hex().as_str(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(TRACE.span_id_hex().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn each_bucket_keeps_its_latest_exemplar_per_series() {
        let family = family();
        let api = family.with_label_values(&["api"]);
        let later = Exemplar {
            span_id: [1; 8],
            ..TRACE
        };
        api.observe(0.05, Some(TRACE));
        api.observe(0.1, Some(later));
        api.observe(0.5, None);
        api.observe(7.0, Some(TRACE));
        family.with_label_values(&["other"]).observe(0.5, None);

        let snapshot = family.snapshot();
        let buckets = snapshot.of([("route", "api")].into_iter()).unwrap();
        assert_eq!(buckets.len(), 3);
        let first = buckets[0].unwrap();
        assert_eq!(
            (first.exemplar, first.value),
            (later, 0.1),
            "le is inclusive"
        );
        assert_eq!(buckets[1], None, "an observation without one keeps none");
        assert_eq!(buckets[2].map(|r| r.value), Some(7.0), "+Inf");
        let other = snapshot.of([("route", "other")].into_iter()).unwrap();
        assert!(other.iter().all(Option::is_none));
        assert!(snapshot.of([("route", "none")].into_iter()).is_none());
        assert!(snapshot.of(std::iter::empty()).is_none());
    }

    #[test]
    fn a_series_resolved_again_shares_its_exemplars() {
        let family = family();
        family.with_label_values(&["api"]).observe(0.2, Some(TRACE));
        let again = family.with_label_values(&["api"]);
        assert_eq!(again.exemplars.latest()[1].unwrap().exemplar, TRACE);
    }
}
