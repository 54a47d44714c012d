//! Reading the Prometheus text exposition of the admin `/metrics`.

use std::collections::BTreeMap;

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
