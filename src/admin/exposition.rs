//! Which exposition `/metrics` answers: OpenMetrics 1.0.0 (with exemplars)
//! for a scraper whose `Accept` prefers it, the 0.0.4 text otherwise, as
//! before there was a choice.

use http::HeaderValue;

/// Whether `accept` (every `Accept` header's value) asks for
/// `application/openmetrics-text` of version 1.0.0 (or of no version), at
/// least as much as for the text format (types jwtgate can't serve, such as
/// Prometheus's protobuf, don't count). Prometheus prefers it; a client
/// that names no type, or prefers the text, keeps getting the text.
pub(super) fn wants_openmetrics<'a>(accept: impl Iterator<Item = &'a HeaderValue>) -> bool {
    let mut openmetrics: f32 = 0.0;
    let mut others: f32 = 0.0;
    let ranges = accept
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','));
    for range in ranges {
        let mut parts = range.split(';').map(str::trim);
        let media_type = parts.next().unwrap_or_default();
        let mut quality = 1.0;
        let mut version = None;
        for parameter in parts {
            let Some((name, value)) = parameter.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "q" => quality = value.parse().unwrap_or(0.0),
                "version" => version = Some(value),
                _ => {}
            }
        }
        if media_type.eq_ignore_ascii_case("application/openmetrics-text") {
            if version.is_none_or(|v| v == "1.0.0") {
                openmetrics = openmetrics.max(quality);
            }
        } else if ["text/plain", "text/*", "*/*"]
            .iter()
            .any(|text| media_type.eq_ignore_ascii_case(text))
        {
            others = others.max(quality);
        }
    }
    openmetrics > 0.0 && openmetrics >= others
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wants(headers: &[&str]) -> bool {
        let values: Vec<HeaderValue> = headers
            .iter()
            .map(|h| HeaderValue::from_str(h).unwrap())
            .collect();
        wants_openmetrics(values.iter())
    }

    #[test]
    fn prometheus_scrapers_get_openmetrics() {
        // Prometheus 2's scrape Accept, then Prometheus 3's default.
        assert!(wants(&[
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ]));
        assert!(wants(&[
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,application/openmetrics-text;version=1.0.0;q=0.4,application/openmetrics-text;version=0.0.1;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
        ]));
    }

    #[test]
    fn version_one_or_none_is_openmetrics() {
        assert!(wants(&["application/openmetrics-text"]));
        assert!(wants(&["Application/OpenMetrics-Text; Version=\"1.0.0\""]));
        assert!(wants(&["text/plain;q=0.5", "application/openmetrics-text"]));
        assert!(!wants(&["application/openmetrics-text; version=0.0.1"]));
        assert!(!wants(&["application/openmetrics-text; version=2.0.0"]));
    }

    #[test]
    fn anything_else_keeps_the_text_format() {
        assert!(!wants(&[]));
        assert!(!wants(&["*/*"]));
        assert!(!wants(&["text/plain; version=0.0.4"]));
        assert!(!wants(&["text/plain, application/openmetrics-text;q=0.9"]));
        assert!(!wants(&["application/openmetrics-text;q=0"]));
        assert!(!wants(&["application/openmetrics-text;q=zero"]));
    }
}
