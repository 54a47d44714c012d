use prometheus::{HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::*;
use crate::telemetry::exemplar::{Exemplar, ExemplarHistogramVec};

const TRACE: Exemplar = Exemplar {
    trace_id: [
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ],
    span_id: [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
};

fn registered<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry.register(Box::new(c.clone())).unwrap();
    c
}

#[test]
fn counters_gauges_and_histograms_with_an_exemplar() {
    let registry = Registry::new();
    let requests = registered(
        &registry,
        IntCounterVec::new(Opts::new("app_requests_total", "Requests."), &["route"]).unwrap(),
    );
    requests.with_label_values(&["api"]).inc_by(3);
    let open = registered(&registry, IntGauge::new("app_open", "Open now.").unwrap());
    open.set(-2);
    let opts = HistogramOpts::new("app_latency_seconds", "Latency.").buckets(vec![0.001, 0.5, 1.0]);
    let latency = ExemplarHistogramVec::new(opts, &["route"]).unwrap();
    registry.register(latency.collector()).unwrap();
    let api = latency.with_label_values(&["api"]);
    api.observe(0.0, None);
    api.observe_at(0.25, TRACE, 1_733_400_000_123);
    api.observe_at(3.0, TRACE, 1_733_400_000_004);

    let text = encode(&registry.gather(), &[latency.snapshot()]);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "# TYPE app_latency_seconds histogram",
            "# HELP app_latency_seconds Latency.",
            "app_latency_seconds_bucket{route=\"api\",le=\"0.001\"} 1",
            "app_latency_seconds_bucket{route=\"api\",le=\"0.5\"} 2 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"} 0.25 1733400000.123",
            "app_latency_seconds_bucket{route=\"api\",le=\"1.0\"} 2",
            "app_latency_seconds_bucket{route=\"api\",le=\"+Inf\"} 3 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"} 3 1733400000.004",
            "app_latency_seconds_count{route=\"api\"} 3",
            "app_latency_seconds_sum{route=\"api\"} 3.25",
            "# TYPE app_open gauge",
            "# HELP app_open Open now.",
            "app_open -2",
            "# TYPE app_requests counter",
            "# HELP app_requests Requests.",
            "app_requests_total{route=\"api\"} 3",
            "# EOF",
        ]
    );
    assert!(text.ends_with("# EOF\n"));
}

/// Without an exemplar snapshot for the family, buckets are plain.
#[test]
fn a_histogram_without_exemplars_has_plain_buckets() {
    let registry = Registry::new();
    let opts = HistogramOpts::new("plain_seconds", "Plain.").buckets(vec![1.0]);
    let plain = ExemplarHistogramVec::new(opts, &[]).unwrap();
    registry.register(plain.collector()).unwrap();
    let series = plain.with_label_values(&[]);
    series.observe(0.5, Some(TRACE));
    let text = encode(&registry.gather(), &[]);
    assert!(
        text.contains("plain_seconds_bucket{le=\"1.0\"} 1\n"),
        "{text}"
    );
    assert!(!text.contains("trace_id"), "{text}");
    let with = encode(&registry.gather(), &[plain.snapshot()]);
    assert!(
        with.contains("plain_seconds_bucket{le=\"1.0\"} 1 # {trace_id="),
        "{with}"
    );
}

#[test]
fn label_values_and_help_are_escaped() {
    let registry = Registry::new();
    let counter = registered(
        &registry,
        IntCounterVec::new(
            Opts::new("odd_total", "Help with a \\ backslash,\na \"quote\"."),
            &["path"],
        )
        .unwrap(),
    );
    counter.with_label_values(&["a\\b\"c\nd"]).inc();
    let text = encode(&registry.gather(), &[]);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "# TYPE odd counter",
            "# HELP odd Help with a \\\\ backslash,\\na \\\"quote\\\".",
            "odd_total{path=\"a\\\\b\\\"c\\nd\"} 1",
            "# EOF",
        ]
    );
}

/// OpenMetrics counters are named without `_total` and sampled with it: one
/// named without keeps its series name as `unknown`.
#[test]
fn a_counter_without_total_is_unknown_and_keeps_its_name() {
    let registry = Registry::new();
    let count = registered(&registry, IntCounter::new("app_events", "Events.").unwrap());
    count.inc();
    let text = encode(&registry.gather(), &[]);
    assert_eq!(
        text,
        "# TYPE app_events unknown\n# HELP app_events Events.\napp_events 1\n# EOF\n"
    );
}

#[test]
fn an_empty_registry_is_just_eof() {
    assert_eq!(encode(&Registry::new().gather(), &[]), "# EOF\n");
}

/// The spec's examples of canonical `le` and `quantile` values, and
/// jwtgate's own bucket bounds.
#[test]
fn canonical_numbers_follow_gos_g() {
    let cases = [
        (0.0, "0.0"),
        (0.001, "0.001"),
        (0.95, "0.95"),
        (0.999, "0.999"),
        (1.0, "1.0"),
        (1.7, "1.7"),
        (10.0, "10.0"),
        (1e-10, "1e-10"),
        (1e-9, "1e-09"),
        (1e-5, "1e-05"),
        (1e-4, "0.0001"),
        (100000.0, "100000.0"),
        (1e6, "1e+06"),
        (1e10, "1e+10"),
        (5e-6, "5e-06"),
        (2.5e-5, "2.5e-05"),
        (0.00011, "0.00011"),
        (-0.5, "-0.5"),
        (f64::INFINITY, "+Inf"),
        (f64::NEG_INFINITY, "-Inf"),
        (f64::NAN, "NaN"),
    ];
    for (value, text) in cases {
        assert_eq!(canonical(value), text, "{value}");
    }
}

#[test]
fn sample_values_print_integers_as_integers() {
    let mut out = String::new();
    for value in [0.0, 17.0, -1.0, 0.25, 1.5e-7, 1e300] {
        write_number(&mut out, value);
        out.push(' ');
    }
    assert_eq!(out, "0 17 -1 0.25 1.5e-07 1e+300 ");
}

/// A collector's summary (the client library makes none itself): quantiles
/// with canonical labels, then count and sum.
#[test]
fn summaries_have_quantiles_count_and_sum() {
    use prometheus::proto::{Quantile, Summary};
    let mut quantile = Quantile::default();
    quantile.set_quantile(0.5);
    quantile.set_value(0.25);
    let mut summary = Summary::default();
    summary.set_quantile(vec![quantile]);
    summary.set_sample_count(4);
    summary.set_sample_sum(1.5);
    let mut metric = Metric::default();
    metric.set_summary(summary);
    let mut family = MetricFamily::default();
    family.set_name("rpc_seconds".into());
    family.set_field_type(MetricType::SUMMARY);
    family.set_metric(vec![metric]);
    assert_eq!(
        encode(&[family], &[]).lines().collect::<Vec<_>>(),
        [
            "# TYPE rpc_seconds summary",
            "rpc_seconds{quantile=\"0.5\"} 0.25",
            "rpc_seconds_count 4",
            "rpc_seconds_sum 1.5",
            "# EOF",
        ]
    );
}
