//! Reading the Prometheus text exposition of the admin `/metrics`, and a
//! real Prometheus server scraping a gateway.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{free_port, http_client};

/// Requests answered, by `route` and `status`.
pub const REQUESTS: &str = "jwtgate_requests_total";

/// Authentication decisions, by `route`, `issuer`, `outcome` and `reason`.
pub const DECISIONS: &str = "jwtgate_auth_decisions_total";

/// One sample line: metric name, labels, value.
pub fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let (name, rest) = line.split_once(' ')?;
            (name, BTreeMap::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name.to_string(), labels, value))
}

fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(labels);
        }
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break,
                other => value.push(other),
            }
        }
        labels.insert(name.trim().to_string(), value);
    }
}

/// Sum of every series of `name` whose labels include all of `wanted`.
pub fn metric_value(text: &str, name: &str, wanted: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(parse_sample)
        .filter(|(n, labels, _)| {
            n == name
                && wanted
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, value)| value)
        .sum()
}

/// The jwtgate request and decision counters, for failure messages.
pub fn relevant_lines(text: &str) -> String {
    text.lines()
        .filter(|l| {
            l.starts_with("jwtgate_auth_decisions_total") || l.starts_with("jwtgate_requests_total")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The labels of a deny decision on `route` for `reason`.
pub fn deny<'a>(route: &'a str, issuer: &'a str, reason: &'a str) -> [(&'static str, &'a str); 4] {
    [
        ("route", route),
        ("issuer", issuer),
        ("outcome", "deny"),
        ("reason", reason),
    ]
}

/// In `text`: the decisions with `labels`, and all decisions. A rejection
/// test reads both before and after its request: exactly one decision, the
/// expected one, may have been added.
pub fn decisions(text: &str, labels: &[(&str, &str)]) -> (f64, f64) {
    (
        metric_value(text, DECISIONS, labels),
        metric_value(text, DECISIONS, &[]),
    )
}

/// The job a [`Prometheus`] scrapes its one target as.
pub const SCRAPE_JOB: &str = "jwtgate";

/// A Prometheus server (the `prometheus` binary of the Debian package that
/// brings promtool) scraping one gateway every second and evaluating the
/// given rule files, on a loopback port, with its storage in a temporary
/// directory. Killed on drop.
pub struct Prometheus {
    child: std::process::Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl Prometheus {
    /// Scrapes `target`'s `/metrics`; `args` are more command-line flags
    /// (`--enable-feature=exemplar-storage`).
    pub async fn start(target: SocketAddr, rule_files: &[&Path], args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        let settings = json!({
            "global": { "scrape_interval": "1s", "evaluation_interval": "1s" },
            "rule_files": rule_files,
            "scrape_configs": [{
                "job_name": SCRAPE_JOB,
                "static_configs": [{ "targets": [target.to_string()] }],
            }],
        });
        std::fs::write(&config, settings.to_string()).expect("write prometheus.yml");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run prometheus ({e}): install Debian's `prometheus` package \
                     (scripts/test does)"
                )
            });
        let client = http_client();
        let mut prometheus = Self {
            child,
            addr,
            dir,
            client,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", prometheus.log());
            }
            let ready = prometheus
                .client
                .get(format!("http://{addr}/-/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return prometheus;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus was not ready within 60 s:\n{}",
                prometheus.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    pub async fn api(&self, path_and_query: &str) -> Value {
        let response = self
            .client
            .get(format!("http://{}{path_and_query}", self.addr))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"));
        let body: Value = response.json().await.expect("Prometheus answers JSON");
        assert_eq!(body["status"], "success", "{path_and_query}: {body}");
        body["data"].clone()
    }

    /// The instant vector (or scalar) `expr` evaluates to now.
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        let data = self
            .api(&format!("/api/v1/query?query={}", percent_encode(expr)))
            .await;
        match data["resultType"].as_str() {
            Some("vector") => data["result"].as_array().cloned().unwrap_or_default(),
            Some("scalar") => vec![data["result"].clone()],
            other => panic!("{expr} gave a {other:?}: {data}"),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything but RFC 3986's unreserved characters, percent-encoded.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
