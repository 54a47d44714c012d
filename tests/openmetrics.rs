//! `/metrics` in OpenMetrics, read by parsers jwtgate doesn't share code
//! with: the Python client library's OpenMetrics parser (PyPI
//! `prometheus-client`, installed by scripts/test) reads the exposition of
//! a running gateway and one with exemplars; a real Prometheus (Debian's
//! `prometheus`) with exemplar storage on scrapes a gateway, as OpenMetrics,
//! stores the exemplars jwtgate writes, and the trace of a request traced
//! through a gateway with `telemetry.tracing` on.
//!
//! Without the virtualenv's parser or `prometheus` on `PATH` these tests
//! fail, saying how to get them.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use jwtgate::telemetry::metrics::RouteSeries;
use jwtgate::telemetry::{Exemplar, Metrics};
use serde_json::{Value, json};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prometheus 2's scrape `Accept`.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN_ID: &str = "00f067aa0ba902b7";

/// Reads an OpenMetrics exposition from stdin with
/// `prometheus_client.openmetrics.parser`, which raises on anything the
/// format forbids, and prints each family with its samples as JSON.
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = []
for family in text_string_to_metric_families(sys.stdin.read()):
    samples = []
    for s in family.samples:
        exemplar = None
        if s.exemplar is not None:
            exemplar = {"labels": s.exemplar.labels, "value": s.exemplar.value,
                        "timestamp": float(s.exemplar.timestamp)}
        samples.append({"name": s.name, "labels": s.labels, "value": s.value,
                        "exemplar": exemplar})
    families.append({"name": family.name, "type": family.type,
                     "help": family.documentation, "samples": samples})
print(json.dumps(families))
"#;

/// The families the Python parser reads in `text`; panics with its error.
fn parsed(text: &str) -> Vec<Value> {
    let python = venv_bin("python");
    let mut child = Command::new(&python)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): scripts/test installs prometheus-client into it",
                python.display()
            )
        });
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the exposition");
    let output = child.wait_with_output().expect("python ran");
    assert!(
        output.status.success(),
        "the OpenMetrics parser refused the exposition:\n{}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<Value>(&output.stdout)
        .expect("the parser's JSON")
        .as_array()
        .expect("a list of families")
        .clone()
}

fn family<'a>(families: &'a [Value], name: &str) -> &'a Value {
    families
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no family {name} in {families:#?}"))
}

/// The samples of a parsed family that carry an exemplar.
fn with_exemplars(family: &Value) -> Vec<&Value> {
    let samples = family["samples"].as_array().expect("samples");
    samples
        .iter()
        .filter(|s| !s["exemplar"].is_null())
        .collect()
}

fn exemplar() -> Exemplar {
    let mut trace_id = [0; 16];
    let mut span_id = [0; 8];
    hex::decode_to_slice(TRACE_ID, &mut trace_id).expect("hex");
    hex::decode_to_slice(SPAN_ID, &mut span_id).expect("hex");
    Exemplar { trace_id, span_id }
}

/// jwtgate's own metrics with exemplars on both latency histograms, as
/// the exposition writes them, pass the parser and keep their ids.
#[test]
fn exemplars_of_both_latency_histograms_pass_the_python_parser() {
    let metrics = Metrics::new();
    let series = RouteSeries::new(&[0]);
    let requests = &metrics.requests;
    requests.observe_upstream("api \"quoted\"", &series, 0.012, Some(exemplar()));
    requests.observe_upstream("api \"quoted\"", &series, 0.3, None);
    requests.verify_duration.observe(0.00004, Some(exemplar()));
    let text = String::from_utf8(metrics.render_openmetrics()).expect("UTF-8");
    assert!(text.ends_with("# EOF\n"), "{text}");

    let families = parsed(&text);
    let upstream = family(&families, "jwtgate_upstream_duration_seconds");
    assert_eq!(upstream["type"], "histogram");
    let traced = with_exemplars(upstream);
    assert_eq!(traced.len(), 1, "{upstream:#}");
    let bucket = traced[0];
    assert_eq!(bucket["name"], "jwtgate_upstream_duration_seconds_bucket");
    assert_eq!(bucket["labels"]["le"], "0.025", "the bucket 0.012 falls in");
    assert_eq!(bucket["labels"]["route"], "api \"quoted\"");
    assert_eq!(
        bucket["exemplar"]["labels"],
        json!({ "trace_id": TRACE_ID, "span_id": SPAN_ID })
    );
    assert_eq!(bucket["exemplar"]["value"], 0.012);
    assert!(bucket["exemplar"]["timestamp"].as_f64().unwrap() > 1.7e9);

    let verify = family(&families, "jwtgate_verify_duration_seconds");
    let traced = with_exemplars(verify);
    assert_eq!(traced.len(), 1, "{verify:#}");
    assert_eq!(traced[0]["labels"]["le"], "5e-05");
    assert_eq!(traced[0]["exemplar"]["labels"]["trace_id"], TRACE_ID);
}

/// A running gateway's whole exposition, after an allowed and a refused
/// request, through the parser: counters named without `_total`, and the
/// same series as the text format has. Without the header, the text.
#[tokio::test]
async fn a_running_gateways_openmetrics_passes_the_python_parser() {
    let config = Config::main(ISS).routes(
        r#"
  - name: api
    match: { path_prefix: /api }
    upstream: { addrs: ["{UPSTREAM}"] }
"#,
    );
    let (_upstream, gateway) = start(&config).await;
    let allowed = token(ISS, "alice", json!({ "exp": now() + 600 }));
    assert_eq!(gateway.status("/api/x", Some(&allowed)).await, 200);
    assert_eq!(gateway.status("/api/x", None).await, 401);
    // Each is counted once its response is out: wait for both.
    for status in ["200", "401"] {
        gateway
            .expect_metric(REQUESTS, &[("route", "api"), ("status", status)], 1.0)
            .await;
    }

    let response = gateway
        .client()
        .get(gateway.admin_url("/metrics"))
        .header("accept", PROMETHEUS_ACCEPT)
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], OPENMETRICS);
    let text = response.text().await.expect("body");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let families = parsed(&text);
    let requests = family(&families, "jwtgate_requests");
    assert_eq!(requests["type"], "counter");
    let total: f64 = requests["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == REQUESTS && s["labels"]["route"] == "api")
        .map(|s| s["value"].as_f64().unwrap())
        .sum();
    assert_eq!(total, 2.0, "{requests:#}");
    let verify = family(&families, "jwtgate_verify_duration_seconds");
    assert_eq!(verify["type"], "histogram");

    // Every series of the text format is there, under the same name.
    let plain = gateway.metrics().await;
    assert!(!plain.contains("# EOF"), "the text format is unchanged");
    let sampled: std::collections::BTreeSet<String> = families
        .iter()
        .flat_map(|f| f["samples"].as_array().unwrap())
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    for (name, _, _) in plain.lines().filter_map(parse_sample) {
        assert!(sampled.contains(&name), "{name} is missing from:\n{text}");
    }
}

/// Polls `query` on Prometheus until its result satisfies `done`.
async fn wait_for(prometheus: &Prometheus, query: &str, done: impl Fn(&Value) -> bool) -> Value {
    poll(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let data = prometheus.api(query).await;
            if done(&data) {
                Ok(data)
            } else {
                Err(format!(
                    "{query} never got there: {data}\n{}",
                    prometheus.log()
                ))
            }
        },
    )
    .await
}

/// Prometheus with exemplar storage scrapes OpenMetrics (bucket bounds in
/// its canonical form: `le="1.0"`, where the text format writes `1`).
#[tokio::test]
async fn prometheus_scrapes_openmetrics() {
    let config = Config::new().routes(OPEN_ROUTE);
    let (_upstream, gateway) = start(&config).await;
    assert_eq!(gateway.status("/anything", None).await, 200);
    let prometheus = Prometheus::start(
        gateway.admin_addr(),
        &[],
        &["--enable-feature=exemplar-storage"],
    )
    .await;
    let query = format!(
        "/api/v1/query?query={}",
        percent_encode(r#"jwtgate_upstream_duration_seconds_bucket{route="open",le="1.0"}"#)
    );
    let data = wait_for(&prometheus, &query, |data| {
        data["result"].as_array().is_some_and(|r| !r.is_empty())
    })
    .await;
    assert_eq!(data["result"][0]["value"][1], "1", "{data}");
}

/// The exemplars jwtgate writes are ones Prometheus stores: its
/// exposition with an exemplar, served as is, scraped with exemplar
/// storage on.
#[tokio::test]
async fn prometheus_stores_the_exemplars_jwtgate_writes() {
    let metrics = Metrics::new();
    let series = RouteSeries::new(&[0]);
    let requests = &metrics.requests;
    requests.observe_upstream("api", &series, 0.012, Some(exemplar()));
    let content_type = format!("content-type: {OPENMETRICS}\r\n");
    let exposition = serve_body(metrics.render_openmetrics(), &content_type);
    let prometheus =
        Prometheus::start(exposition, &[], &["--enable-feature=exemplar-storage"]).await;
    assert_eq!(stored_trace_ids(&prometheus).await, [TRACE_ID]);
}

/// The trace ids of the exemplars Prometheus has of
/// `jwtgate_upstream_duration_seconds_bucket`, once it has any.
async fn stored_trace_ids(prometheus: &Prometheus) -> Vec<String> {
    let query = format!(
        "/api/v1/query_exemplars?query={}&start={}&end={}",
        percent_encode("jwtgate_upstream_duration_seconds_bucket"),
        now() - 3600,
        now() + 3600
    );
    let data = wait_for(prometheus, &query, |data| {
        data.as_array().is_some_and(|series| !series.is_empty())
    })
    .await;
    data.as_array()
        .unwrap()
        .iter()
        .flat_map(|series| series["exemplars"].as_array().unwrap())
        .map(|exemplar| exemplar["labels"]["trace_id"].as_str().unwrap().to_owned())
        .collect()
}

/// A traced request's trace id becomes the exemplar of its upstream
/// time's bucket in Prometheus. Its parent is accepted from any client
/// (`incoming_context: always`) and sampled (flags 01); the collector's
/// address is closed, as no span needs to arrive for this.
#[tokio::test]
async fn prometheus_stores_a_traced_requests_exemplar() {
    let config = Config::new()
        .section(&format!(
            "telemetry:\n  tracing:\n    endpoint: http://{}\n    incoming_context: always\n",
            closed_addr()
        ))
        .routes(OPEN_ROUTE);
    let (_upstream, gateway) = start(&config).await;
    let prometheus = Prometheus::start(
        gateway.admin_addr(),
        &[],
        &["--enable-feature=exemplar-storage"],
    )
    .await;
    let traceparent = format!("00-{TRACE_ID}-{SPAN_ID}-01");
    let response = gateway
        .get_with("/traced", None, &[("traceparent", &traceparent)])
        .await;
    assert_eq!(response.status(), 200);

    assert_eq!(stored_trace_ids(&prometheus).await, [TRACE_ID]);
}
