//! The export queue: finished spans wait in a bounded channel and a
//! background task sends them in batches. A span that finds the queue full
//! is dropped and counted; an export that fails or times out drops its
//! batch and is counted: a slow or absent collector never holds a request
//! and never grows memory past `max_queue_spans`.

use std::collections::HashMap;
use std::sync::Arc;
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
use tokio::sync::{mpsc, watch};
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
    /// Set by [`Flush::run`]: send what is queued, take nothing more.
    flush_asked: watch::Receiver<bool>,
    /// The queue has been closed for the flush.
    flushing: bool,
    /// Set when the loop has sent (or dropped) its last span.
    finished: watch::Sender<bool>,
    flush: Flush,
}

/// Ends the export loop at shutdown without losing what it holds: the
/// spans still queued, or waiting for their batch to fill, are sent at
/// once instead of with the process.
#[derive(Debug, Clone)]
pub struct Flush {
    ask: Arc<watch::Sender<bool>>,
    finished: watch::Receiver<bool>,
    limit: Duration,
}

impl Flush {
    /// Sends every span finished so far and ends the export loop, waiting
    /// at most `export_timeout`; whether everything was sent in time.
    pub async fn run(&self) -> bool {
        self.ask.send_replace(true);
        let mut finished = self.finished.clone();
        let sent = tokio::time::timeout(self.limit, finished.wait_for(|done| *done)).await;
        let sent = matches!(sent, Ok(Ok(_)));
        if !sent {
            tracing::warn!(
                "traces still queued after telemetry.tracing.export_timeout ({:?}) are dropped",
                self.limit
            );
        }
        sent
    }
}

pub(super) fn queue(settings: &TraceSettings, resource: Resource) -> (Queue, Exporting) {
    let (sender, receiver) = mpsc::channel(settings.max_queue_spans.max(1));
    let metrics = TraceMetrics::new();
    let queue = Queue {
        spans: sender,
        queue_full: metrics.dropped.with_label_values(&[QUEUE_FULL]),
    };
    let (ask, flush_asked) = watch::channel(false);
    let (finished, finished_seen) = watch::channel(false);
    let exporting = Exporting {
        spans: receiver,
        settings: settings.clone(),
        resource,
        metrics,
        flush_asked,
        flushing: false,
        finished,
        flush: Flush {
            ask: Arc::new(ask),
            finished: finished_seen,
            limit: settings.export_timeout,
        },
    };
    (queue, exporting)
}

/// Why a wait for a span ended without one.
enum NoSpan {
    /// The deadline passed first.
    Elapsed,
    /// The queue is closed and empty: the flush is done.
    Closed,
}

impl Exporting {
    pub fn metrics(&self) -> &TraceMetrics {
        &self.metrics
    }

    /// What ends this loop at shutdown with its spans sent.
    pub fn flush(&self) -> Flush {
        self.flush.clone()
    }

    /// Sends batches until the process stops, or until a [`Flush`] has
    /// had every span sent. The exporter is built here, inside the runtime
    /// its gRPC channel needs.
    pub async fn run(mut self) {
        match exporter(&self.settings) {
            Ok(exporter) => self.export_all(exporter).await,
            Err(error) => {
                tracing::error!("traces cannot be exported: {error}");
                self.drop_everything().await;
            }
        }
        self.finished.send_replace(true);
    }

    async fn export_all(&mut self, mut exporter: SpanExporter) {
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
    /// come within `batch_interval`, up to `max_batch_spans`; `None` once
    /// a flush has taken the last one.
    async fn next_batch(&mut self) -> Option<Vec<SpanData>> {
        let first = self.next_span(None).await.ok()?;
        let max = self.settings.max_batch_spans.max(1);
        let mut batch = Vec::with_capacity(max.min(64));
        batch.push(first);
        let deadline = Instant::now() + self.settings.batch_interval;
        while batch.len() < max {
            match self.next_span(Some(deadline)).await {
                Ok(span) => batch.push(span),
                Err(NoSpan::Elapsed | NoSpan::Closed) => break,
            }
        }
        Some(batch)
    }

    /// The next finished span, waiting until `deadline` if there is one.
    /// Once a flush is asked for, the queue takes no more spans and those
    /// in it come at once, without waiting.
    async fn next_span(&mut self, deadline: Option<Instant>) -> Result<SpanData, NoSpan> {
        loop {
            let elapsed = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // A queued span first: a closed queue still hands out its
                // spans before it says it is empty.
                biased;
                span = self.spans.recv() => return span.ok_or(NoSpan::Closed),
                () = asked(&mut self.flush_asked), if !self.flushing => {
                    self.spans.close();
                    self.flushing = true;
                }
                () = elapsed => return Err(NoSpan::Elapsed),
            }
        }
    }

    /// No exporter: every span is dropped as failed, so the counter says so.
    async fn drop_everything(&mut self) {
        let failed = self.metrics.dropped.with_label_values(&[EXPORT_FAILED]);
        while self.next_span(None).await.is_ok() {
            failed.inc();
        }
    }
}

/// Once a flush is asked for. The asking end lives as long as the loop
/// (it keeps a [`Flush`]), so the wait never ends any other way.
async fn asked(flush_asked: &mut watch::Receiver<bool>) {
    if flush_asked.wait_for(|asked| *asked).await.is_err() {
        std::future::pending::<()>().await;
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
