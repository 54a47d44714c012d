//! The Grafana dashboard (`deploy/grafana/jwtgate.json`) and the Prometheus
//! alert rules (`deploy/prometheus/jwtgate-rules.yaml`) against the real
//! thing: `promtool` (Debian's `prometheus` package) checks the rules, runs
//! their unit tests and parses every dashboard query; then a real gateway is
//! driven until every metric either could use exists (an allowed and a
//! denied request, a remote and a local issuer, a failing JWKS fetch, a TLS
//! listener, a reload), and each metric name and label the queries name is
//! looked up in its `/metrics`. Last, a real Prometheus scrapes such a
//! gateway: every dashboard query must return data, every rule evaluate
//! without error.
//!
//! Without `promtool` and `prometheus` on `PATH` these tests fail, saying how
//! to get them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const DASHBOARD: &str = "deploy/grafana/jwtgate.json";
const RULES: &str = "deploy/prometheus/jwtgate-rules.yaml";
const RULE_TESTS: &str = "deploy/prometheus/jwtgate-rules.test.yaml";

/// Metrics the dashboard and rules already use but that another change adds
/// to jwtgate. Each is excused from the scrape check only while no source
/// file under `src/` registers it: once one does, it is checked like the
/// rest. A name used by a query and found neither in the scrape nor here
/// always fails.
const EXPECTED_SOON: &[&str] = &["jwtgate_upstream_healthy"];

/// Labels Prometheus attaches to every scraped series: queries may select
/// and group by them though jwtgate never exports them.
const TARGET_LABELS: &[&str] = &["job", "instance"];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn promtool(args: &[&str]) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install Debian's `prometheus` package \
                 (scripts/test does)"
            )
        })
}

fn assert_promtool_succeeds(args: &[&str]) -> String {
    let output = promtool(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

// ---------------------------------------------------------------------------
// Reading PromQL for the metric names and labels it uses
// ---------------------------------------------------------------------------

/// One vector selector: `metric{label="…", …}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    metric: String,
    /// Names of the labels its matchers test.
    labels: Vec<String>,
}

/// What a query reads: its selectors, and the labels it groups or matches
/// by (`by (…)`, `on (…)`, `group_left (…)`), which must exist on what it
/// reads. `without (…)` and `ignoring (…)` lists are not collected: naming a
/// label that is absent there changes nothing.
#[derive(Debug, Default, PartialEq, Eq)]
struct Reads {
    selectors: Vec<Selector>,
    grouping: Vec<String>,
}

/// Words that are PromQL syntax wherever they stand (case-insensitive):
/// operators, modifiers, numbers, and the aggregations, which may be
/// followed by `by (…)` rather than by their `(`.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    // Without a label list: `/ ignoring (x) group_left b`.
    "group_left",
    "group_right",
    "inf",
    "nan",
    "start",
    "end",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Modifiers followed by a list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Reads the selectors and grouping labels of a PromQL expression.
///
/// A small scanner, not a parser: string literals, comments and `[…]`
/// (ranges, subqueries) are skipped; an identifier followed by `(` is a
/// function or aggregation; a keyword is syntax; any other identifier is a
/// metric name, and a `{…}` after it holds its matchers. That is the whole
/// of how PromQL tells a metric name from the rest, so every metric an
/// expression reads is found (`promtool` has judged the syntax before).
fn promql_reads(expr: &str) -> Reads {
    let chars: Vec<char> = expr.chars().collect();
    let mut reads = Reads::default();
    let mut i = 0;
    let skip_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let identifier = |i: usize| {
        let mut end = i;
        while end < chars.len() && (chars[end].is_ascii_alphanumeric() || "_:".contains(chars[end]))
        {
            end += 1;
        }
        (chars[i..end].iter().collect::<String>(), end)
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration: 0.99, 1e-3, 5m, 0x1f.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                let exponent = "eE".contains(chars[i]);
                i += 1;
                if exponent && i < chars.len() && "+-".contains(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let (word, end) = identifier(i);
            let next = skip_space(end);
            let lower = word.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) && chars.get(next) == Some(&'(') {
                let close = next
                    + chars[next..]
                        .iter()
                        .position(|&c| c == ')')
                        .unwrap_or_else(|| panic!("unclosed {word} ( in {expr}"));
                let list: String = chars[next + 1..close].iter().collect();
                if !matches!(lower.as_str(), "without" | "ignoring") {
                    reads.grouping.extend(
                        list.split(',')
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_owned),
                    );
                }
                i = close + 1;
            } else if chars.get(next) == Some(&'(') || KEYWORDS.contains(&lower.as_str()) {
                i = end;
            } else {
                let mut selector = Selector {
                    metric: word,
                    labels: Vec::new(),
                };
                i = end;
                if chars.get(next) == Some(&'{') {
                    i = read_matchers(&chars, next, &mut selector.labels, expr);
                }
                reads.selectors.push(selector);
            }
        } else if c == '{' {
            panic!("a selector without a metric name is not supported here: {expr}");
        } else {
            i += 1;
        }
    }
    reads
}

/// Index after the string literal that starts at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// Reads `{name op "value", …}` from `open`, pushing each name; returns the
/// index after `}`.
fn read_matchers(chars: &[char], open: usize, labels: &mut Vec<String>, expr: &str) -> usize {
    let mut i = open + 1;
    loop {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
            i += 1;
        }
        match chars.get(i) {
            Some('}') => return i + 1,
            Some(_) => {}
            None => panic!("unclosed {{ in {expr}"),
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        labels.push(chars[start..i].iter().collect());
        while i < chars.len() && "=!~ ".contains(chars[i]) {
            i += 1;
        }
        assert!(
            i < chars.len() && "\"'`".contains(chars[i]),
            "expected a quoted label value at {i} in {expr}"
        );
        i = skip_string(chars, i);
    }
}

#[test]
fn the_promql_reader_finds_metrics_wherever_promql_puts_them() {
    let reads = promql_reads(
        r#"histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y}", z=~'w'}[5m])))
           / on (job) group_left (route) b offset 5m > bool 1e-3
           and sum without (pod) (rate(c:recorded[1h:1m])) # d_comment
           or label_replace(e, "dst", "$1", "src", "(f)") unless Inf
           / ignoring (pod) group_left g"#,
    );
    let names: Vec<&str> = reads.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["a_bucket", "b", "c:recorded", "e", "g"]);
    assert_eq!(reads.selectors[0].labels, ["x", "z"]);
    assert_eq!(reads.grouping, ["le", "job", "route"]);
}

// ---------------------------------------------------------------------------
// The dashboard
// ---------------------------------------------------------------------------

/// A PromQL expression and where it came from, for failure messages.
struct Query {
    place: String,
    expr: String,
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Grafana's built-in interval variables.
const GRAFANA_INTERVALS: &[&str] = &["__rate_interval", "__interval", "__range"];

/// The scrape job of the gateway in these tests, put for `$job`.
const JOB: &str = SCRAPE_JOB;

/// Every PromQL expression of the dashboard: panel targets, annotations and
/// the variables' `label_values(selector, label)` queries (their selector,
/// and a `by` over their label). Template variables are replaced by what
/// Grafana would put there: an interval by `interval`, `$job` by [`JOB`],
/// the multi-value variables by their "All" regex.
fn dashboard_queries(dashboard: &Value, interval: &str) -> Vec<Query> {
    let variables = defined_variables(dashboard);
    let substitute = |place: &str, expr: &str| -> String {
        let mut out = String::new();
        let mut rest = expr;
        while let Some(dollar) = rest.find('$') {
            out.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            let braced = after.starts_with('{');
            let body = if braced { &after[1..] } else { after };
            let len = body
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(body.len());
            let name = &body[..len];
            assert!(!name.is_empty(), "{place}: a bare $ in {expr}");
            if GRAFANA_INTERVALS.contains(&name) {
                out.push_str(interval);
            } else {
                assert!(
                    variables.contains(name),
                    "{place} uses ${name}, which the dashboard does not define: {expr}"
                );
                out.push_str(if name == "job" { JOB } else { ".*" });
            }
            rest = &body[len + usize::from(braced)..];
        }
        out.push_str(rest);
        out
    };

    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("untitled");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?} has a target without expr"));
            let place = format!("panel {title:?} target {}", target["refId"]);
            queries.push(Query {
                expr: substitute(&place, expr),
                place,
            });
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = annotation["expr"].as_str() {
            let place = format!("annotation {}", annotation["name"]);
            queries.push(Query {
                expr: substitute(&place, expr),
                place,
            });
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let place = format!("variable {}", variable["name"]);
        let query = variable["query"]["query"]
            .as_str()
            .unwrap_or_else(|| panic!("{place} has no query"));
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{place}: expected label_values(selector, label): {query}"));
        let (selector, label) = inner
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("{place}: expected label_values(selector, label): {query}"));
        queries.push(Query {
            expr: substitute(
                &place,
                &format!("count by ({}) ({})", label.trim(), selector.trim()),
            ),
            place,
        });
    }
    queries
}

fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        // A collapsed row carries its panels inside it.
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

fn defined_variables(dashboard: &Value) -> BTreeSet<String> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| v["name"].as_str().expect("variable name").to_owned())
        .collect()
}

#[test]
fn dashboard_is_a_grafana_model_whose_data_source_is_a_variable() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "jwtgate");
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));

    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data source variable");
    assert_eq!(datasource["query"], "prometheus");
    let source = json!({ "type": "prometheus", "uid": format!("${{{}}}", datasource["name"].as_str().unwrap()) });

    let mut ids = BTreeSet::new();
    // (x, y, w, h) of each top-level panel, to find overlaps.
    let mut placed: Vec<(&str, [u64; 4])> = Vec::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("numeric id")),
            "panel {title:?} repeats id {}",
            panel["id"]
        );
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        let (y, h) = (grid["y"].as_u64().unwrap(), grid["h"].as_u64().unwrap());
        assert!(x + w <= 24 && h > 0, "{title:?}: {grid}");
        for (other, [ox, oy, ow, oh]) in &placed {
            let apart = x + w <= *ox || ox + ow <= x || y + h <= *oy || oy + oh <= y;
            assert!(apart, "panels {title:?} and {other:?} overlap");
        }
        placed.push((title, [x, y, w, h]));
        if panel["type"] == "row" {
            continue;
        }
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "panel {title:?} has no description"
        );
        assert_eq!(panel["datasource"], source, "panel {title:?}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            assert_eq!(target["datasource"], source, "panel {title:?}");
        }
    }
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        assert_eq!(
            variable["datasource"], source,
            "variable {}",
            variable["name"]
        );
    }
    // Nothing pins the dashboard to one Grafana's data source.
    assert!(!read(DASHBOARD).contains("${DS_"));
}

/// Every dashboard query goes through Prometheus's own parser: written as a
/// recording rule, which `promtool check rules` parses.
#[test]
fn every_dashboard_query_is_valid_promql() {
    let queries = dashboard_queries(&dashboard(), "5m");
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| json!({ "record": format!("dashboard:query_{i}"), "expr": q.expr }))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dashboard-queries.yaml");
    // JSON is YAML.
    std::fs::write(
        &file,
        json!({ "groups": [{ "name": "dashboard", "rules": rules }] }).to_string(),
    )
    .expect("write rules");
    let output = promtool(&["check", "rules", file.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let listing: String = queries
        .iter()
        .enumerate()
        .map(|(i, q)| format!("query_{i}: {}: {}\n", q.place, q.expr))
        .collect();
    assert!(output.status.success(), "{text}\n{listing}");
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// The alert rules
// ---------------------------------------------------------------------------

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let checked = assert_promtool_succeeds(&["check", "rules", RULES]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = assert_promtool_succeeds(&["test", "rules", RULE_TESTS]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// The rules' alerts, with their expressions.
fn rule_queries() -> Vec<Query> {
    let rules: Value =
        serde_saphyr::from_str(&read(RULES)).unwrap_or_else(|e| panic!("{RULES}: {e}"));
    let mut queries = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .expect("a rule is an alert or a recording");
            queries.push(Query {
                place: format!("rule {name}"),
                expr: rule["expr"].as_str().expect("expr").to_owned(),
            });
        }
    }
    queries
}

/// Every alert rule has a severity, a summary and a description, and the
/// unit tests show it firing: an alert name with a warning and a critical
/// rule needs a test that expects each.
#[test]
fn every_alert_has_severity_summary_description_and_a_unit_test() {
    let rules: Value = serde_saphyr::from_str(&read(RULES)).expect("rules YAML");
    let tests: Value = serde_saphyr::from_str(&read(RULE_TESTS)).expect("rule tests YAML");
    let fired: BTreeSet<(&str, &str)> = tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .flat_map(|t| {
            let name = t["alertname"].as_str().expect("alertname");
            t["exp_alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |a| {
                    (
                        name,
                        a["exp_labels"]["severity"].as_str().expect("severity"),
                    )
                })
        })
        .collect();
    let mut alerts = 0;
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let Some(alert) = rule["alert"].as_str() else {
                continue;
            };
            alerts += 1;
            let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
            assert!(
                matches!(severity, "critical" | "warning"),
                "{alert}: severity {severity:?}"
            );
            for annotation in ["summary", "description"] {
                assert!(
                    rule["annotations"][annotation]
                        .as_str()
                        .is_some_and(|a| !a.is_empty()),
                    "{alert}: no {annotation}"
                );
            }
            assert!(
                fired.contains(&(alert, severity)),
                "{alert} ({severity}) is never shown firing in {RULE_TESTS}"
            );
        }
    }
    assert!(alerts >= 10, "{alerts} alert rules");
}

// ---------------------------------------------------------------------------
// Against a running gateway
// ---------------------------------------------------------------------------

/// A self-signed certificate for the TLS listener.
fn certificate() -> Pki {
    let pki = Pki::new();
    pki.self_signed(&Cert {
        key: "gateway.key",
        cert: "gateway.crt",
        cn: "gateway.test",
        days: 30,
        extensions: &["subjectAltName=DNS:gateway.test"],
    });
    pki
}

/// A local issuer, a remote one and a failing remote one, and a TLS
/// listener.
fn config() -> String {
    Config::new()
        .default_server()
        .https(
            &[r#"{ hosts: [gateway.test], cert: "{CERTS}/gateway.crt", key: "{CERTS}/gateway.key" }"#],
            &[],
        )
        // No leeway: a token of this issuer ends when its `exp` says.
        .issuer_with("local", "https://local.test", &["leeway: 0s"])
        // A collector that is not there: the trace counters are exported,
        // and every span is dropped.
        .section("telemetry:\n  tracing:\n    endpoint: \"http://127.0.0.1:{DOWN}\"\n    batch_interval: 100ms\n")
        .issuers(REMOTE_ISSUERS)
        .routes(ROUTES)
}

const REMOTE_ISSUERS: &str = r#"
  - name: remote
    issuer: https://remote.test
    jwks_uri: "http://{JWKS}/jwks.json"
    fetch: { allow_http: true }
    algorithms: [RS256]
    audiences: [api]
  # The upstream's JSON is no JWK Set: a fetch failure (invalid_jwks).
  - name: broken
    issuer: https://broken.test
    jwks_uri: "http://{UPSTREAM}/jwks.json"
    fetch: { allow_http: true }
    algorithms: [RS256]
    audiences: [api]
    required: false
  # Its introspection endpoint is not there: an opaque token gets 503 and
  # the call counts as failed (network).
  - name: opaque
    issuer: https://opaque.test
    audiences: [api]
    fetch: { allow_http: true }
    introspection: { endpoint: "http://127.0.0.1:{DOWN}/introspect", client_id: gateway, client_secret_env: INTROSPECTION_SECRET }
"#;

const ROUTES: &str = r#"
  - name: api
    match: { path_prefix: /api }
    upstream: { addrs: ["{UPSTREAM}"] }
  - name: uploads
    match: { path_prefix: /uploads }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { long_lived: { max_lifetime: 1s } }
  - name: audited-uploads
    match: { path_prefix: /audited-uploads }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: audit, long_lived: { max_lifetime: 4s } }
  # Nothing listens there: its requests fail (upstream_refused).
  - name: down
    match: { path_prefix: /down }
    upstream: { addrs: ["127.0.0.1:{DOWN}"] }
    auth: { mode: off }
"#;

fn token_of(issuer: &str) -> String {
    token(issuer, "dashboards", json!({ "exp": now() + 600 }))
}

/// Series name → every label name it has, from a Prometheus text exposition.
fn scraped_series(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, labels, _) in text.lines().filter_map(parse_sample) {
        series.entry(name).or_default().extend(labels.into_keys());
    }
    series
}

/// Whether a metric family named by `series` (a histogram's `_bucket`,
/// `_sum` or `_count`, or the family itself) is registered in jwtgate's
/// source.
fn registered_in_source(series: &str) -> bool {
    let mut families = vec![series];
    for suffix in ["_bucket", "_sum", "_count"] {
        families.extend(series.strip_suffix(suffix));
    }
    let mut pending = vec![repo("src")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let source = std::fs::read_to_string(&path).expect("read source");
                if families
                    .iter()
                    .any(|f| source.contains(&format!("\"{f}\"")))
                {
                    return true;
                }
            }
        }
    }
    false
}

/// Why each query's metrics or labels are not in the scrape, one line each,
/// and the expected-soon names that were excused.
fn check_against_scrape(
    queries: &[Query],
    scraped: &BTreeMap<String, BTreeSet<String>>,
) -> (Vec<String>, BTreeSet<String>) {
    let mut problems = Vec::new();
    let mut excused = BTreeSet::new();
    for query in queries {
        let reads = promql_reads(&query.expr);
        assert!(
            !reads.selectors.is_empty(),
            "{}: no metric found in {}",
            query.place,
            query.expr
        );
        let mut available: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
        // A query with a metric that is pending or already reported missing
        // has no labels to judge its grouping by.
        let mut incomplete = false;
        for selector in &reads.selectors {
            let name = selector.metric.as_str();
            let Some(labels) = scraped.get(name) else {
                if EXPECTED_SOON.contains(&name) && !registered_in_source(name) {
                    excused.insert(name.to_owned());
                } else {
                    problems.push(format!(
                        "{}: {name} is not in /metrics ({})",
                        query.place, query.expr
                    ));
                }
                incomplete = true;
                continue;
            };
            available.extend(labels.iter().map(String::as_str));
            for label in &selector.labels {
                if !labels.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                    problems.push(format!(
                        "{}: {name} has no label {label:?} (it has {labels:?})",
                        query.place
                    ));
                }
            }
        }
        if incomplete {
            continue;
        }
        for label in &reads.grouping {
            if !available.contains(label.as_str()) {
                problems.push(format!(
                    "{}: groups by {label:?}, which none of its metrics has ({})",
                    query.place, query.expr
                ));
            }
        }
    }
    (problems, excused)
}

/// A gateway with a local, a remote and a failing remote issuer and a TLS
/// listener, driven until every metric the dashboard and the rules read
/// exists: a token of each working issuer allowed and proxied, a request
/// without one denied, one to an upstream that refuses, a reload, a failed
/// JWKS fetch.
struct Driven {
    gateway: Gateway,
    _upstream: Upstream,
    _certs: Pki,
}

async fn driven_gateway() -> Driven {
    let certs = certificate();
    let jwks = serve_jwks();
    let config = config()
        .replace("{HTTPS}", &free_port().to_string())
        .replace("{CERTS}", &certs.dir().display().to_string())
        .replace("{JWKS}", &jwks.to_string())
        .replace("{DOWN}", &free_port().to_string());
    let upstream = Upstream::start();
    let secret = [("INTROSPECTION_SECRET", "s3cret")];
    let gateway = Gateway::start_with_env(&config, &upstream, &[], &secret).await;
    let driven = Driven {
        gateway,
        _upstream: upstream,
        _certs: certs,
    };
    let gateway = &driven.gateway;

    // The remote issuers' first fetches, one good, one failed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateway
        .metric(
            "jwtgate_jwks_fetch_total",
            &[("issuer", "remote"), ("result", "success")],
        )
        .await
        == 0.0
        || gateway
            .metric(
                "jwtgate_jwks_fetch_total",
                &[("issuer", "broken"), ("result", "invalid_jwks")],
            )
            .await
            == 0.0
    {
        assert!(
            Instant::now() < deadline,
            "the remote issuers were not fetched; log:\n{}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reload(gateway).await;
    for issuer in ["https://local.test", "https://remote.test"] {
        let response = gateway.get("/api/orders", Some(&token_of(issuer))).await;
        assert_eq!(response.status(), 200, "a token of {issuer}");
    }
    let denied = gateway.get("/api/orders", None).await;
    assert_eq!(denied.status(), 401);
    let failed = gateway.get("/down/x", None).await;
    assert_eq!(failed.status(), 502);
    let opaque = gateway.get("/api/orders", Some("an-opaque-token")).await;
    assert_eq!(opaque.status(), 503, "the introspection endpoint is down");
    // The request counters are written after the response is sent.
    gateway
        .expect_metric(REQUESTS, &[("route", "api")], 4.0)
        .await;
    gateway
        .expect_metric(REQUESTS, &[("error", "upstream_refused")], 1.0)
        .await;
    stalled_uploads(gateway).await;
    driven
}

/// Uploads that never finish, ended by their routes' `max_lifetime`: the
/// long-lived connection metrics' series. The one on the `audit` route has
/// a token that expires first, which only counts `would_end`.
async fn stalled_uploads(gateway: &Gateway) {
    let lasting = token_of("https://local.test");
    let brief = token(
        "https://local.test",
        "dashboards",
        json!({ "exp": now() + 2 }),
    );
    tokio::join!(
        stalled_upload(gateway, "/uploads", &lasting),
        stalled_upload(gateway, "/audited-uploads", &brief),
    );
    gateway
        .expect_metric(
            "jwtgate_connections_ended_total",
            &[("route", "uploads"), ("reason", "max_lifetime")],
            1.0,
        )
        .await;
    gateway
        .expect_metric(
            "jwtgate_connections_would_end_total",
            &[("route", "audited-uploads"), ("reason", "expired")],
            1.0,
        )
        .await;
}

async fn stalled_upload(gateway: &Gateway, path: &str, token: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut client = tokio::net::TcpStream::connect(gateway.proxy_addr())
        .await
        .expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    );
    client.write_all(head.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), client.read_to_end(&mut answer))
        .await
        .expect("the upload ended by its route's max_lifetime")
        .expect("read");
}

async fn reload(gateway: &Gateway) {
    let (status, body) = gateway.reload().await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_rules_use_is_exported() {
    let driven = driven_gateway().await;
    let gateway = &driven.gateway;
    let scraped = scraped_series(&gateway.metrics().await);
    for (name, labels) in [
        ("jwtgate_config_reloads_total", [("result", "success")]),
        ("jwtgate_jwks_fetch_total", [("result", "invalid_jwks")]),
        (
            "jwtgate_introspection_requests_total",
            [("result", "network")],
        ),
        (DECISIONS, [("outcome", "deny")]),
        (REQUESTS, [("reason", "missing_token")]),
        (REQUESTS, [("error", "upstream_refused")]),
        (
            "jwtgate_tls_certificate_expiry_timestamp_seconds",
            [("host", "gateway.test")],
        ),
    ] {
        assert!(
            gateway.metric(name, &labels).await > 0.0,
            "{name}{labels:?} did not happen"
        );
    }

    let mut queries = dashboard_queries(&dashboard(), "5m");
    let dashboard_count = queries.len();
    queries.extend(rule_queries());
    let (problems, excused) = check_against_scrape(&queries, &scraped);
    assert!(
        problems.is_empty(),
        "queries read what the gateway does not export:\n{}\n\nexported: {:?}",
        problems.join("\n"),
        scraped.keys().collect::<Vec<_>>()
    );
    if !excused.is_empty() {
        eprintln!(
            "not checked yet, no source registers them: {excused:?} (EXPECTED_SOON in {})",
            file!()
        );
    }
    // The check read every query: each gateway metric family the queries
    // name shows up among the names read.
    let read: BTreeSet<String> = queries
        .iter()
        .flat_map(|q| promql_reads(&q.expr).selectors)
        .map(|s| s.metric)
        .collect();
    assert!(dashboard_count > 20 && read.len() >= 14, "{read:?}");
}

/// The check itself catches a misspelt metric, a label the metric lacks and
/// a grouping by a label nothing has.
#[test]
fn the_scrape_check_reports_unknown_metrics_and_labels() {
    let scraped = scraped_series(
        "# TYPE jwtgate_requests_total counter\n\
         jwtgate_requests_total{adapter=\"proxy\",route=\"api\",status=\"200\",reason=\"none\",error=\"none\"} 3\n\
         jwtgate_verify_duration_seconds_bucket{le=\"0.001\"} 1\n",
    );
    let query = |expr: &str| Query {
        place: "test".into(),
        expr: expr.into(),
    };
    let (problems, _) = check_against_scrape(
        &[
            query(r#"sum by (route) (rate(jwtgate_requests_total{job="x",status="200"}[5m]))"#),
            query(r#"sum by (adapter) (rate(jwtgate_requests_total{reason!="none"}[5m]))"#),
            query(
                "histogram_quantile(0.9, sum by (le) (rate(jwtgate_verify_duration_seconds_bucket[5m])))",
            ),
        ],
        &scraped,
    );
    assert!(problems.is_empty(), "{problems:?}");

    let (problems, _) = check_against_scrape(
        &[
            query("rate(jwtgate_request_total[5m])"),
            query("jwtgate_verify_duration_seconds"),
            query(r#"jwtgate_requests_total{kind="x"}"#),
            query("sum by (issuer) (jwtgate_requests_total)"),
        ],
        &scraped,
    );
    assert_eq!(problems.len(), 4, "{problems:#?}");
}

/// An expected-soon name is excused only while no source registers it.
#[test]
fn expected_soon_metrics_are_excused_only_until_registered() {
    let scraped = BTreeMap::new();
    let query = |expr: &str| Query {
        place: "test".into(),
        expr: expr.into(),
    };
    for name in EXPECTED_SOON {
        let (problems, excused) = check_against_scrape(&[query(name)], &scraped);
        if registered_in_source(name) {
            assert_eq!(problems.len(), 1, "{name} is registered, so it is checked");
        } else {
            assert!(problems.is_empty() && excused.contains(*name));
        }
    }
    // A registered family, by a histogram series name.
    assert!(registered_in_source(
        "jwtgate_verify_duration_seconds_bucket"
    ));
    assert!(!registered_in_source("jwtgate_made_up_total"));
}

// ---------------------------------------------------------------------------
// Through a real Prometheus
// ---------------------------------------------------------------------------

/// Each dashboard query, evaluated by Prometheus over a scraped gateway,
/// returns data (so no label value is misspelt and no vector matching
/// fails), and each alert rule evaluates without error.
#[tokio::test]
async fn through_a_real_prometheus_every_panel_has_data_and_every_rule_evaluates() {
    let driven = driven_gateway().await;
    let gateway = &driven.gateway;
    let prometheus = Prometheus::start(gateway.admin_addr(), &[&repo(RULES)], &[]).await;

    // The reload annotation needs a reload Prometheus sees: one after its
    // first scrape, in a later second than the load before it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let loaded = loop {
        let samples = prometheus
            .query("jwtgate_config_last_reload_timestamp_seconds")
            .await;
        if let Some(value) = samples.first() {
            let text = value["value"][1].as_str().expect("sample value");
            break text.parse::<i64>().expect("a Unix time");
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped the gateway:\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    while now() <= loaded {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reload(gateway).await;

    // A rate needs two samples of a series: poll until every query has had
    // data (the reload annotation has it only for a minute).
    let queries: Vec<Query> = dashboard_queries(&dashboard(), "1m")
        .into_iter()
        .filter(|q| {
            promql_reads(&q.expr).selectors.iter().all(|s| {
                !EXPECTED_SOON.contains(&s.metric.as_str()) || registered_in_source(&s.metric)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut had_data = vec![false; queries.len()];
    loop {
        for (query, had) in queries.iter().zip(&mut had_data) {
            if !*had {
                *had = !prometheus.query(&query.expr).await.is_empty();
            }
        }
        let empty: Vec<String> = queries
            .iter()
            .zip(&had_data)
            .filter(|(_, had)| !**had)
            .map(|(query, _)| format!("{}: {}", query.place, query.expr))
            .collect();
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "these dashboard queries return nothing from a scraped gateway:\n{}\n\nmetrics:\n{}",
            empty.join("\n"),
            gateway.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Every rule has been evaluated, without error.
    let rule_count = rule_queries().len();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let data = prometheus.api("/api/v1/rules").await;
        let rules: Vec<&Value> = data["groups"]
            .as_array()
            .expect("rule groups")
            .iter()
            .flat_map(|g| g["rules"].as_array().expect("rules"))
            .collect();
        assert_eq!(rules.len(), rule_count, "{data}");
        let failed: Vec<String> = rules
            .iter()
            .filter(|r| r["health"] == "err")
            .map(|r| format!("{}: {}", r["name"], r["lastError"]))
            .collect();
        assert!(
            failed.is_empty(),
            "rules fail to evaluate:\n{}",
            failed.join("\n")
        );
        if rules.iter().all(|r| r["health"] == "ok") {
            break;
        }
        assert!(Instant::now() < deadline, "rules never evaluated: {data}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
