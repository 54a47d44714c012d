//! Poll delivery (RFC 8936): POST `{"ack": [...], "setErrs": {...},
//! "maxEvents": N, "returnImmediately": false}` to the stream's endpoint
//! with the configured bearer token; each returned SET is verified and
//! applied like a pushed one, and its `jti` acknowledged (or reported in
//! `setErrs`) in the next request. A SET that could not be stored is
//! neither, so the transmitter sends it again. Errors back off, doubling
//! from `interval` up to 5 minutes.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::stream::{Discovered, POLL_METHOD};
use super::{PollSettings, Receiver, Refused, Transmitter};

const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// A long poll (`returnImmediately: false`) may be held this long by the
/// transmitter before it answers with nothing.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);
/// Largest poll answer read.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Every `error` label of `jwtgate_ssf_poll_errors_total`.
pub const ERRORS: [&str; 3] = ["network", "http_status", "invalid_response"];

/// `error` of `jwtgate_ssf_poll_errors_total`: a closed set.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("{0}")]
    Network(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("{0}")]
    InvalidResponse(String),
}

impl PollError {
    fn label(&self) -> &'static str {
        match self {
            Self::Network(_) => ERRORS[0],
            Self::Status(_) => ERRORS[1],
            Self::InvalidResponse(_) => ERRORS[2],
        }
    }
}

/// What the next request reports.
#[derive(Default)]
struct Report {
    ack: Vec<String>,
    errors: Map<String, Value>,
}

pub async fn run(
    receiver: Arc<Receiver>,
    transmitter: Arc<Transmitter>,
    settings: &PollSettings,
    discovered: &Discovered,
) {
    let name = transmitter.settings.name.as_str();
    let allow_http = transmitter.settings.fetch.allow_http;
    let client = match reqwest::Client::builder()
        .connect_timeout(transmitter.settings.fetch.connect_timeout)
        .timeout(REQUEST_TIMEOUT)
        .https_only(!allow_http)
        .user_agent(concat!("jwtgate/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(
                transmitter = name,
                "shared signals: cannot build the HTTP client: {error}"
            );
            return;
        }
    };
    let mut backoff = settings.interval;
    let endpoint = loop {
        let found = match &settings.endpoint {
            Some(endpoint) => Ok(endpoint.clone()),
            None => poll_endpoint(&client, settings, discovered).await,
        };
        match found {
            Ok(endpoint) => break endpoint,
            Err(error) => {
                receiver.poll_error(&transmitter, error.label());
                tracing::warn!(
                    transmitter = name,
                    "shared signals: no poll endpoint: {error}"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    let mut report = Report::default();
    backoff = settings.interval;
    loop {
        match poll_once(&client, &endpoint, settings, &report).await {
            Ok((sets, more)) => {
                backoff = settings.interval;
                report = Report::default();
                let received = !sets.is_empty();
                for (jti, set) in sets {
                    let Some(set) = set.as_str() else {
                        report
                            .errors
                            .insert(jti, set_error("invalid_request", "not a string"));
                        continue;
                    };
                    match receiver.receive(&transmitter, set).await {
                        Ok(()) => report.ack.push(jti),
                        Err(Refused::Set(error)) => {
                            report
                                .errors
                                .insert(jti, set_error(error.code.as_str(), &error.description));
                        }
                        Err(Refused::Storage) => {}
                    }
                }
                if !received && !more {
                    tokio::time::sleep(settings.interval).await;
                }
            }
            Err(error) => {
                receiver.poll_error(&transmitter, error.label());
                tracing::warn!(transmitter = name, "shared signals: poll failed: {error}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn set_error(code: &str, description: &str) -> Value {
    json!({ "err": code, "description": description })
}

/// One request: the SETs it brought (`jti` → SET) and `moreAvailable`.
async fn poll_once(
    client: &reqwest::Client,
    endpoint: &str,
    settings: &PollSettings,
    report: &Report,
) -> Result<(Map<String, Value>, bool), PollError> {
    let mut body = json!({
        "ack": report.ack,
        "maxEvents": settings.max_events,
        "returnImmediately": false,
    });
    if !report.errors.is_empty() {
        body["setErrs"] = Value::Object(report.errors.clone());
    }
    let answer = post_json(client, endpoint, &settings.token, Some(body)).await?;
    let sets = match answer.get("sets") {
        Some(Value::Object(sets)) => sets.clone(),
        None => Map::new(),
        Some(_) => return Err(PollError::InvalidResponse("sets is not an object".into())),
    };
    let more = answer
        .get("moreAvailable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((sets, more))
}

/// A POST (or a GET without a body) with the bearer token; the JSON answer.
async fn post_json(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> Result<Value, PollError> {
    let request = match body {
        Some(body) => client.post(url).json(&body),
        None => client.get(url),
    };
    let mut response = request
        .bearer_auth(token)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| PollError::Network(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(PollError::Status(status.as_u16()));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| PollError::Network(e.to_string()))?
    {
        if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(PollError::InvalidResponse(format!(
                "larger than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&bytes).map_err(|e| PollError::InvalidResponse(e.to_string()))
}

/// The `endpoint_url` of the poll stream the transmitter's
/// `configuration_endpoint` returns (one stream, or a list of them).
async fn poll_endpoint(
    client: &reqwest::Client,
    settings: &PollSettings,
    discovered: &Discovered,
) -> Result<String, PollError> {
    let url = discovered
        .configuration_endpoint
        .as_deref()
        .ok_or_else(|| {
            PollError::InvalidResponse(
                "the transmitter has no configuration_endpoint: set poll.endpoint".into(),
            )
        })?;
    let answer = post_json(client, url, &settings.token, None).await?;
    let streams = match answer {
        Value::Array(streams) => streams,
        stream => vec![stream],
    };
    streams
        .iter()
        .filter_map(|stream| stream.get("delivery"))
        .find(|delivery| delivery.get("method").and_then(Value::as_str) == Some(POLL_METHOD))
        .and_then(|delivery| delivery.get("endpoint_url").and_then(Value::as_str))
        .map(str::to_string)
        .ok_or_else(|| PollError::InvalidResponse("no stream delivers by poll".into()))
}
