//! The export queue: finished spans wait in a bounded channel and a
//! background task sends them in batches. A span that finds the queue full
//! is dropped and counted; an export that fails or times out drops its
//! batch and is counted: a slow or absent collector never holds a request
//! and never grows memory past `max_queue_spans`.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_otlp::{
    SpanExporter, WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};
use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, Opts};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Protocol, TraceSettings};

/// `jwtgate_trace_spans_*`.
#[derive(Debug, Clone)]
pub struct TraceMetrics {
    pub(super) exported: IntCounter,
    pub(super) dropped: IntCounterVec,
}

/// Why spans were dropped (the `reason` label).
pub(super) const QUEUE_FULL: &str = "queue_full";
pub(super) const EXPORT_FAILED: &str = "export_failed";

impl TraceMetrics {
    fn new() -> Self {
        let exported = IntCounter::with_opts(Opts::new(
            "jwtgate_trace_spans_exported_total",
            "Spans the collector accepted.",
        ))
        .expect("valid metric");
        let dropped = IntCounterVec::new(
            Opts::new(
                "jwtgate_trace_spans_dropped_total",
                "Spans dropped: the export queue was full (queue_full), or the collector failed or timed out (export_failed).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in [QUEUE_FULL, EXPORT_FAILED] {
            dropped.with_label_values(&[reason]);
        }
        Self { exported, dropped }
    }

    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.exported.clone()),
            Box::new(self.dropped.clone()),
        ]
    }
}

/// The span processor: hands each finished, sampled span to the queue
/// without waiting.
#[derive(Debug)]
pub(super) struct Queue {
    spans: mpsc::Sender<SpanData>,
    queue_full: IntCounter,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            self.queue_full.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The export loop and what it needs; run it with [`Exporting::run`].
pub struct Exporting {
    spans: mpsc::Receiver<SpanData>,
    settings: TraceSettings,
    resource: Resource,
    metrics: TraceMetrics,
}

pub(super) fn queue(settings: &TraceSettings, resource: Resource) -> (Queue, Exporting) {
    let (sender, receiver) = mpsc::channel(settings.max_queue_spans.max(1));
    let metrics = TraceMetrics::new();
    let queue = Queue {
        spans: sender,
        queue_full: metrics.dropped.with_label_values(&[QUEUE_FULL]),
    };
    let exporting = Exporting {
        spans: receiver,
        settings: settings.clone(),
        resource,
        metrics,
    };
    (queue, exporting)
}

impl Exporting {
    pub fn metrics(&self) -> &TraceMetrics {
        &self.metrics
    }

    /// Sends batches until the process stops. The exporter is built here,
    /// inside the runtime its gRPC channel needs.
    pub async fn run(mut self) {
        let mut exporter = match exporter(&self.settings) {
            Ok(exporter) => exporter,
            Err(error) => {
                tracing::error!("traces cannot be exported: {error}");
                return self.drop_everything().await;
            }
        };
        exporter.set_resource(&self.resource);
        let failed = self.metrics.dropped.with_label_values(&[EXPORT_FAILED]);
        let mut failing = false;
        while let Some(batch) = self.next_batch().await {
            let count = batch.len() as u64;
            let result =
                tokio::time::timeout(self.settings.export_timeout, exporter.export(batch)).await;
            let error = match result {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some(format!(
                    "no answer within {:?}",
                    self.settings.export_timeout
                )),
            };
            match error {
                None => {
                    self.metrics.exported.inc_by(count);
                    if std::mem::take(&mut failing) {
                        tracing::info!("traces are exported again");
                    }
                }
                Some(error) => {
                    failed.inc_by(count);
                    // Once per outage, not once per batch.
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(
                            endpoint = %self.settings.endpoint,
                            "cannot export traces; dropping them until the collector answers (jwtgate_trace_spans_dropped_total): {error}"
                        );
                    }
                }
            }
        }
    }

    /// The next batch: the first span waited for, then as many more as
    /// come within `batch_interval`, up to `max_batch_spans`.
    async fn next_batch(&mut self) -> Option<Vec<SpanData>> {
        let first = self.spans.recv().await?;
        let max = self.settings.max_batch_spans.max(1);
        let mut batch = Vec::with_capacity(max.min(64));
        batch.push(first);
        let deadline = Instant::now() + self.settings.batch_interval;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, self.spans.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        Some(batch)
    }

    /// No exporter: every span is dropped as failed, so the counter says so.
    async fn drop_everything(mut self) {
        let failed = self.metrics.dropped.with_label_values(&[EXPORT_FAILED]);
        while self.spans.recv().await.is_some() {
            failed.inc();
        }
    }
}

pub(super) fn exporter(settings: &TraceSettings) -> Result<SpanExporter, String> {
    let built = match settings.protocol {
        Protocol::Grpc => {
            let headers: HashMap<String, String> = settings.headers.clone().into_iter().collect();
            let metadata = http::HeaderMap::try_from(&headers).map_err(|e| e.to_string())?;
            let mut builder = SpanExporter::builder().with_tonic();
            if settings.endpoint.starts_with("https://") {
                // The system's roots, as the HTTP/protobuf exporter's client.
                let tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
                builder = builder.with_tls_config(tls);
            }
            builder
                .with_endpoint(settings.endpoint.clone())
                .with_timeout(settings.export_timeout)
                .with_metadata(tonic::metadata::MetadataMap::from_headers(metadata))
                .build()
        }
        Protocol::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(settings.export_timeout)
            .with_headers(settings.headers.clone().into_iter().collect())
            .build(),
    };
    built.map_err(|e| e.to_string())
}
