//! The OpenMetrics 1.0.0 text exposition of gathered metric families, with
//! histogram buckets' exemplars: the `prometheus` crate's `TextEncoder`
//! writes the 0.0.4 text format only, which has no place for them, and
//! Prometheus stores exemplars only from OpenMetrics.

use std::fmt::Write as _;

use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};

use super::exemplar::{FamilyExemplars, Recorded};

/// What `/metrics` answers an OpenMetrics scrape with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `families` in OpenMetrics text, `# EOF` last; the buckets of a histogram
/// family named in `exemplars` carry their series' exemplars.
pub fn encode(families: &[MetricFamily], exemplars: &[FamilyExemplars]) -> String {
    let mut out = String::new();
    for family in families {
        let of_family = exemplars.iter().find(|e| e.name() == family.name());
        write_family(&mut out, family, of_family);
    }
    out.push_str("# EOF\n");
    out
}

fn write_family(out: &mut String, family: &MetricFamily, exemplars: Option<&FamilyExemplars>) {
    let name = family.name();
    let kind = family.get_field_type();
    // An OpenMetrics counter's samples are its name plus `_total`: a counter
    // named without it is exposed as `unknown`, so its series keeps the
    // name it has in the 0.0.4 text.
    let (family_name, type_name) = match kind {
        MetricType::COUNTER => match name.strip_suffix("_total") {
            Some(stem) => (stem, "counter"),
            None => (name, "unknown"),
        },
        MetricType::GAUGE => (name, "gauge"),
        MetricType::HISTOGRAM => (name, "histogram"),
        MetricType::SUMMARY => (name, "summary"),
        MetricType::UNTYPED => (name, "unknown"),
    };
    let _ = writeln!(out, "# TYPE {family_name} {type_name}");
    if !family.help().is_empty() {
        let _ = writeln!(out, "# HELP {family_name} {}", Escaped(family.help()));
    }
    for metric in family.get_metric() {
        let labels = metric.get_label();
        let value = match kind {
            MetricType::COUNTER => metric.get_counter().get_value(),
            MetricType::GAUGE => metric.get_gauge().get_value(),
            // The client library makes no untyped metrics itself; a
            // collector could.
            #[allow(deprecated)]
            MetricType::UNTYPED => metric.get_untyped().get_value(),
            MetricType::HISTOGRAM => {
                write_histogram(out, name, metric, exemplars);
                continue;
            }
            MetricType::SUMMARY => {
                write_summary(out, name, metric);
                continue;
            }
        };
        sample(out, name, labels, None, value, None);
    }
}

fn write_histogram(
    out: &mut String,
    name: &str,
    metric: &Metric,
    exemplars: Option<&FamilyExemplars>,
) {
    let histogram = metric.get_histogram();
    let labels = metric.get_label();
    let recorded = exemplars.and_then(|family| {
        let pairs = labels.iter().map(|l| (l.name(), l.value()));
        family.of(pairs)
    });
    let exemplar = |i: usize| recorded.and_then(|buckets| buckets.get(i).copied().flatten());
    let bucket = format!("{name}_bucket");
    let buckets = histogram.get_bucket();
    for (i, b) in buckets.iter().enumerate() {
        let le = canonical(b.upper_bound());
        let count = b.cumulative_count() as f64;
        sample(out, &bucket, labels, Some(("le", &le)), count, exemplar(i));
    }
    // The client library's buckets stop before +Inf, which holds every
    // observation.
    if !buckets
        .last()
        .is_some_and(|b| b.upper_bound() == f64::INFINITY)
    {
        let count = histogram.get_sample_count() as f64;
        let inf = exemplar(buckets.len());
        sample(out, &bucket, labels, Some(("le", "+Inf")), count, inf);
    }
    let count = histogram.get_sample_count();
    count_and_sum(out, name, labels, count, histogram.get_sample_sum());
}

fn write_summary(out: &mut String, name: &str, metric: &Metric) {
    let summary = metric.get_summary();
    let labels = metric.get_label();
    for quantile in summary.get_quantile() {
        let q = canonical(quantile.quantile());
        sample(
            out,
            name,
            labels,
            Some(("quantile", &q)),
            quantile.value(),
            None,
        );
    }
    count_and_sum(
        out,
        name,
        labels,
        summary.sample_count(),
        summary.sample_sum(),
    );
}

fn count_and_sum(out: &mut String, name: &str, labels: &[LabelPair], count: u64, sum: f64) {
    sample(
        out,
        &format!("{name}_count"),
        labels,
        None,
        count as f64,
        None,
    );
    sample(out, &format!("{name}_sum"), labels, None, sum, None);
}

/// One sample line: the metric's labels, then `extra` (`le`, `quantile`),
/// the value and an exemplar.
fn sample(
    out: &mut String,
    name: &str,
    labels: &[LabelPair],
    extra: Option<(&str, &str)>,
    value: f64,
    exemplar: Option<Recorded>,
) {
    out.push_str(name);
    let pairs = labels.iter().map(|l| (l.name(), l.value()));
    write_labels(out, pairs.chain(extra));
    out.push(' ');
    write_number(out, value);
    if let Some(recorded) = exemplar {
        let ids = recorded.exemplar;
        let _ = write!(
            out,
            " # {{trace_id=\"{}\",span_id=\"{}\"}} ",
            ids.trace_id_hex(),
            ids.span_id_hex()
        );
        write_number(out, recorded.value);
        let (seconds, millis) = (recorded.timestamp_ms / 1000, recorded.timestamp_ms % 1000);
        let _ = write!(out, " {seconds}.{millis:03}");
    }
    out.push('\n');
}

fn write_labels<'a>(out: &mut String, mut pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    let Some((name, value)) = pairs.next() else {
        return;
    };
    let _ = write!(out, "{{{name}=\"{}\"", Escaped(value));
    for (name, value) in pairs {
        let _ = write!(out, ",{name}=\"{}\"", Escaped(value));
    }
    out.push('}');
}

/// A sample value: an integer as one (every counter and gauge of jwtgate's
/// is), anything else as a float.
fn write_number(out: &mut String, value: f64) {
    // Exactly representable integers print the same either way.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if value.fract() == 0.0 && value.abs() < EXACT {
        out.push_str(itoa::Buffer::new().format(value as i64));
    } else {
        out.push_str(&canonical(value));
    }
}

/// A float as OpenMetrics wants `le` and `quantile` label values (its
/// "canonical numbers"): Go's `%g` with the shortest round-trip digits,
/// `.0` added when that shows neither a point nor an exponent: `1.0`,
/// `0.0001`, `100000.0`, `1e-05`, `2.5e-06`, `1e+06`, `+Inf`.
pub fn canonical(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("LowerExp always writes an exponent");
    let exponent: i32 = exponent.parse().expect("LowerExp's exponent is an integer");
    if (-4..6).contains(&exponent) {
        let mut fixed = value.to_string();
        if !fixed.contains('.') {
            fixed.push_str(".0");
        }
        fixed
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
    }
}

/// A label value or help text with `\`, `"` and line feeds escaped.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['\\', '"', '\n']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
#[path = "openmetrics_tests.rs"]
mod tests;
