//! `telemetry.tracing` checked into the tracer's settings: every mistake
//! an export would only reveal at runtime (a bad URL, a header that can't
//! be sent, a ratio past 1) is a config error instead.

use crate::config::schema::{IncomingContext, OtlpProtocol, TelemetryConfig, TracingConfig};
use crate::telemetry::traces::{Incoming, Protocol, TraceSettings};

/// Where OTLP/HTTP takes traces, under the collector's base URL.
const TRACES_PATH: &str = "/v1/traces";

/// The settings, or the error, whose message starts with the field it is
/// about.
pub(super) fn compile(config: &TelemetryConfig) -> Result<Option<TraceSettings>, String> {
    let Some(tracing) = &config.tracing else {
        return Ok(None);
    };
    let field = |name: &str, problem: String| format!("telemetry.tracing.{name}: {problem}");
    let endpoint = endpoint(tracing).map_err(|problem| field("endpoint", problem))?;
    for (name, value) in &tracing.headers {
        http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| field("headers", format!("{name:?} is not a header name")))?;
        // The value may be a secret: never quoted.
        http::HeaderValue::from_str(value).map_err(|_| {
            field(
                "headers",
                format!("the value of {name} is not a header value"),
            )
        })?;
    }
    let ratio = tracing.sampling_ratio;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(field(
            "sampling_ratio",
            format!("{ratio} is not between 0.0 and 1.0"),
        ));
    }
    if tracing.max_queue_spans == 0 || tracing.max_batch_spans == 0 {
        return Err(field(
            "max_queue_spans",
            "max_queue_spans and max_batch_spans must be positive".into(),
        ));
    }
    if tracing.max_batch_spans > tracing.max_queue_spans {
        return Err(field(
            "max_batch_spans",
            format!(
                "{} is more than max_queue_spans ({})",
                tracing.max_batch_spans, tracing.max_queue_spans
            ),
        ));
    }
    for (name, value) in [
        ("batch_interval", tracing.batch_interval),
        ("export_timeout", tracing.export_timeout),
    ] {
        if value.is_zero() {
            return Err(field(name, "must be positive".into()));
        }
    }
    Ok(Some(TraceSettings {
        endpoint,
        protocol: match tracing.protocol {
            OtlpProtocol::Grpc => Protocol::Grpc,
            OtlpProtocol::HttpProtobuf => Protocol::HttpProtobuf,
        },
        headers: tracing.headers.clone(),
        service_name: tracing.service_name.clone(),
        resource_attributes: tracing.resource_attributes.clone(),
        sampling_ratio: ratio,
        incoming: match tracing.incoming_context {
            IncomingContext::Trusted => Incoming::Trusted,
            IncomingContext::Always => Incoming::Always,
            IncomingContext::Never => Incoming::Never,
        },
        max_queue_spans: tracing.max_queue_spans,
        max_batch_spans: tracing.max_batch_spans,
        batch_interval: tracing.batch_interval,
        export_timeout: tracing.export_timeout,
    }))
}

/// The collector's URL: `http` or `https` with a host; for OTLP/HTTP,
/// with the traces path.
fn endpoint(tracing: &TracingConfig) -> Result<String, String> {
    let text = tracing.endpoint.trim();
    let uri: http::Uri = text.parse().map_err(|_| format!("{text:?} is not a URL"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        return Err(format!(
            "{text:?} must be an http:// or https:// URL with a host"
        ));
    }
    if tracing.protocol == OtlpProtocol::Grpc || uri.path().ends_with(TRACES_PATH) {
        return Ok(text.to_string());
    }
    Ok(format!("{}{TRACES_PATH}", text.trim_end_matches('/')))
}

/// The settings in words, for a restart-only change: never a header's
/// value, which may be a secret.
pub(super) fn describe(settings: &TraceSettings) -> String {
    let headers: Vec<&str> = settings.headers.keys().map(String::as_str).collect();
    format!(
        "{} ({:?}) sampling_ratio {} incoming_context {:?} headers [{}] service_name {} max_queue_spans {} max_batch_spans {} batch_interval {:?} export_timeout {:?}",
        settings.endpoint,
        settings.protocol,
        settings.sampling_ratio,
        settings.incoming,
        headers.join(", "),
        settings.service_name,
        settings.max_queue_spans,
        settings.max_batch_spans,
        settings.batch_interval,
        settings.export_timeout,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracing(yaml: &str) -> Result<Option<TraceSettings>, String> {
        let config: TelemetryConfig = serde_saphyr::from_str(yaml).expect("valid shape");
        compile(&config)
    }

    #[test]
    fn an_http_endpoint_gets_the_traces_path_once() {
        let settings = tracing("tracing: {endpoint: 'http://c:4318', protocol: http/protobuf}")
            .unwrap()
            .unwrap();
        assert_eq!(settings.endpoint, "http://c:4318/v1/traces");
        let settings =
            tracing("tracing: {endpoint: 'http://c:4318/v1/traces', protocol: http/protobuf}")
                .unwrap()
                .unwrap();
        assert_eq!(settings.endpoint, "http://c:4318/v1/traces");
        let grpc = tracing("tracing: {endpoint: 'http://c:4317'}")
            .unwrap()
            .unwrap();
        assert_eq!(grpc.endpoint, "http://c:4317");
        assert_eq!(grpc.sampling_ratio, 1.0);
        assert_eq!(grpc.incoming, Incoming::Trusted);
    }

    #[test]
    fn mistakes_name_their_field_and_never_a_header_value() {
        let cases = [
            (
                "tracing: {endpoint: 'c:4317'}",
                "telemetry.tracing.endpoint",
            ),
            (
                "tracing: {endpoint: 'ftp://c'}",
                "telemetry.tracing.endpoint",
            ),
            (
                "tracing: {endpoint: 'http://c', sampling_ratio: 1.5}",
                "telemetry.tracing.sampling_ratio",
            ),
            (
                "tracing: {endpoint: 'http://c', max_queue_spans: 4, max_batch_spans: 8}",
                "telemetry.tracing.max_batch_spans",
            ),
            (
                "tracing: {endpoint: 'http://c', batch_interval: 0s}",
                "telemetry.tracing.batch_interval",
            ),
            (
                "tracing: {endpoint: 'http://c', headers: {'bad name': x}}",
                "telemetry.tracing.headers",
            ),
        ];
        for (yaml, field) in cases {
            let error = tracing(yaml).unwrap_err();
            assert!(error.starts_with(field), "{yaml}: {error}");
        }
        let error =
            tracing("tracing: {endpoint: 'http://c', headers: {x-key: \"secret\\nvalue\"}}")
                .unwrap_err();
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn no_tracing_block_is_no_tracing() {
        assert_eq!(tracing("{}").unwrap(), None);
    }
}
