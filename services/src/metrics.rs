//! Prometheus metrics, served on their own listener (`listen.metrics`) so they never share the
//! client API's address.
//!
//! What is counted on the request path (HTTP requests by route, their latency) lives in typed
//! families of the services' own registry; everything else is read from the services when
//! Prometheus scrapes (stream position, waiting syncs, federation queues, RocksDB, the process),
//! so no service has to know about metrics and nothing is counted twice. The `prometheus-client`
//! crate does the encoding (OpenMetrics text).

pub mod state;

use std::{
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        counter::ConstCounter,
        family::Family,
        gauge::ConstGauge,
        histogram::{exponential_buckets, Histogram},
        MetricType,
    },
    registry::Registry,
};

pub use self::state::{Histograms, Metrics, RequestLabels, RouteLabels};
use crate::{db::codec::Be64, services::Services};

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            started: Instant::now(),
            started_unix: crate::time::now_ms() as f64 / 1000.0,
        }
    }
}

impl Metrics {
    /// Seconds since the server started.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn record(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let route = route.to_owned();
        let method = method.to_owned();
        self.latency.get_or_create(&RouteLabels { route: route.clone(), method: method.clone() }).observe(seconds);
        self.requests.get_or_create(&RequestLabels { route, method, status: status.to_string() }).inc();
    }

    /// The exposition text of every metric, for one scrape.
    pub fn render(&self, services: &Arc<Services>) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("hemicycle");
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            self.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route and method",
            self.latency.clone(),
        );
        registry.register_collector(Box::new(Live(services.clone())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// Axum middleware counting every request of the router it wraps by its matched route.
pub async fn track(State(services): State<Arc<Services>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_deref().unwrap_or("unmatched");
    services.metrics.record(route, &method, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// The metrics listener's router: `GET /metrics` only.
pub fn router(services: Arc<Services>) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(services)
}

async fn scrape(State(services): State<Arc<Services>>) -> Response {
    let rendering = services.clone();
    match tokio::task::spawn_blocking(move || rendering.metrics.render(&rendering)).await {
        Ok(Ok(text)) => {
            ([(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                .into_response()
        }
        _ => (http::StatusCode::INTERNAL_SERVER_ERROR, "metrics could not be encoded").into_response(),
    }
}

/// Reads the services' live figures at scrape time.
struct Live(Arc<Services>);

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    ConstCounter::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// The process's resident memory and CPU time, from `/proc` (Linux).
fn process_figures() -> (Option<u64>, Option<f64>) {
    let rss = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    });
    // utime and stime are the 14th and 15th fields, after the parenthesised command name.
    let cpu = std::fs::read_to_string("/proc/self/stat").ok().and_then(|stat| {
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(ticks as f64 / 100.0)
    });
    (rss.map(|kb| kb * 1024), cpu)
}

/// How many pushes wait to be delivered, counted up to a bound (a scrape stays cheap).
const PENDING_COUNT_CAP: usize = 100_000;

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let services = &self.0;
        let db = &services.db;
        let head = db.current_count();
        counter(&mut encoder, "stream_position", "The last stream position handed out", head)?;
        gauge(
            &mut encoder,
            "sync_waiting",
            "Sync long-polls waiting right now",
            services.rooms.notifier().waiting() as f64,
        )?;
        gauge(
            &mut encoder,
            "media_downloads_waiting",
            "Downloads waiting for an upload in progress",
            services.media.waiting_downloads() as f64,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "events_appended",
                "Events appended since start-up, by origin (local or remote)",
                None,
                MetricType::Counter,
            )?;
            for (origin, count) in
                [("local", &services.rooms.appended.local), ("remote", &services.rooms.appended.remote)]
            {
                ConstCounter::new(count.load(Ordering::Relaxed))
                    .encode(family.encode_family(&[("origin", origin)])?)?;
            }
        }
        let destinations: Vec<(ruma::OwnedServerName, u64)> =
            db.tables.federation.servername_sentpos.iter().filter_map(Result::ok).map(|(s, Be64(p))| (s, p)).collect();
        let health: Vec<_> = destinations.iter().map(|(server, _)| services.federation.client.health(server)).collect();
        {
            let mut family = encoder.encode_descriptor(
                "federation_queue_positions",
                "Stream positions not yet delivered to each destination (its queue depth)",
                None,
                MetricType::Gauge,
            )?;
            for (server, sent) in &destinations {
                let behind = head.saturating_sub(*sent) as f64;
                ConstGauge::new(behind).encode(family.encode_family(&[("destination", server.as_str())])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "federation_failures",
                "Failed requests to each destination since start-up",
                None,
                MetricType::Counter,
            )?;
            for ((server, _), h) in destinations.iter().zip(&health) {
                ConstCounter::new(h.total_failures)
                    .encode(family.encode_family(&[("destination", server.as_str())])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "federation_backoff_seconds",
                "How long each destination is left alone after its last failure (0: not backing off)",
                None,
                MetricType::Gauge,
            )?;
            for ((server, _), h) in destinations.iter().zip(&health) {
                let seconds = h.retry_interval_ms as f64 / 1000.0;
                ConstGauge::new(seconds).encode(family.encode_family(&[("destination", server.as_str())])?)?;
            }
        }
        let pending = db.tables.push.pusherpos_pending.iter().take(PENDING_COUNT_CAP).count();
        gauge(&mut encoder, "pushers_pending", "Push notifications waiting to be delivered", pending as f64)?;
        gauge(&mut encoder, "database_size_bytes", "Bytes of the RocksDB directory on disk", db.size_on_disk() as f64)?;
        for (name, property, help) in [
            ("rocksdb_sst_bytes", "rocksdb.total-sst-files-size", "Bytes of RocksDB's table files"),
            ("rocksdb_memtable_bytes", "rocksdb.cur-size-all-mem-tables", "Bytes of RocksDB's memtables"),
            ("rocksdb_block_cache_bytes", "rocksdb.block-cache-usage", "Bytes in RocksDB's block cache"),
            ("rocksdb_estimated_keys", "rocksdb.estimate-num-keys", "Keys in the store (RocksDB's estimate)"),
            (
                "rocksdb_pending_compaction_bytes",
                "rocksdb.estimate-pending-compaction-bytes",
                "Bytes RocksDB still has to compact",
            ),
        ] {
            gauge(&mut encoder, name, help, db.property(property) as f64)?;
        }
        let metrics = &services.metrics;
        gauge(&mut encoder, "start_time_seconds", "When the server started (Unix time)", metrics.started_unix)?;
        let (rss, cpu) = process_figures();
        if let Some(rss) = rss {
            gauge(&mut encoder, "process_resident_memory_bytes", "Resident memory of the process", rss as f64)?;
        }
        if let Some(cpu) = cpu {
            gauge(&mut encoder, "process_cpu_seconds", "CPU time the process has used (user + system)", cpu)?;
        }
        Ok(())
    }
}
