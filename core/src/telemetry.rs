//! Logs and traces: the `tracing` subscriber of `hemicycle serve`, and, with
//! `telemetry.otlp_endpoint` set, an OpenTelemetry layer exporting spans over OTLP/HTTP.
//!
//! The spans that matter to an operator: the HTTP request (`request`, one per call, its parent
//! taken from a `traceparent` header when a peer sent one), the service step under it
//! (`rooms.append`, `federation.receive_transaction`, …), the wait for the database commit
//! (`db.commit`), and the transactions the federation sender sends (`federation.send_transaction`,
//! named by `txn_id`, whose trace context goes to the peer in `traceparent`), so one trace follows
//! a transaction from the sending server into the recipient's handling of each of its PDUs (the
//! client's request that made an event is a trace of its own: the sender works from the stream).

use std::time::Duration;

use opentelemetry::{propagation::TextMapPropagator, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, Layer};

use crate::config::Config;

/// Keeps the exporter alive; dropping it sends the spans still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5)) {
                eprintln!("hemicycle: flushing traces failed: {error}");
            }
        }
    }
}

/// The URL spans are posted to: the configured base URL with the OTLP traces path.
pub fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    match base.ends_with("/v1/traces") {
        true => base.to_owned(),
        false => format!("{base}/v1/traces"),
    }
}

/// Installs the process's subscriber: formatted logs on stderr filtered by `log.level` (or
/// `RUST_LOG`), plus the OTLP exporter when configured. The subscriber is the process's one
/// `tracing` dispatcher, which is how `tracing` works; the services do not depend on it.
pub fn init(config: &Config) -> Result<Telemetry, String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let Some(endpoint) = &config.telemetry.otlp_endpoint else {
        let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        tracing_subscriber::registry().with(filter).with(logs).init();
        return Ok(Telemetry { provider: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url(endpoint))
        .build()
        .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
    let batching = opentelemetry_sdk::trace::BatchConfigBuilder::default()
        .with_scheduled_delay(Duration::from_millis(config.telemetry.batch_delay_ms))
        .build();
    let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter).with_batch_config(batching).build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.telemetry.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new("matrix.server_name", config.server_name.to_string()))
        .build();
    let provider = SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build();
    let tracer = provider.tracer("hemicycle");
    // Spans are exported whatever the log level: the filter applies to the logs only.
    let traces = tracing_opentelemetry::layer().with_tracer(tracer);
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter);
    tracing_subscriber::registry().with(traces).with(logs).init();
    Ok(Telemetry { provider: Some(provider) })
}

/// Writes the current span's trace context into outgoing request headers (`traceparent`).
pub fn inject(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut opentelemetry_http::HeaderInjector(headers));
}

/// The span of one incoming HTTP request, child of the caller's trace when its headers carry one.
pub fn request_span(request: &http::Request<axum::body::Body>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = %route,
    );
    if request.headers().contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(request.headers()));
        // Fails only when no OpenTelemetry layer is installed: then there is nothing to join.
        let _ = span.set_parent(parent);
    }
    span
}
