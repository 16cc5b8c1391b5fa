//! The state this component keeps for the server's lifetime, held by `Services`: declared
//! apart from the workers and functions that use it, which take the services they read, so the
//! aggregate of services depends only on what lies below it.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
};
use std::time::Instant;

/// The request-path metrics; the rest is read at scrape time.
pub struct Metrics {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) latency: Histograms,
    pub(crate) started: Instant,
    pub(crate) started_unix: f64,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route's pattern (`/_matrix/client/v3/rooms/{room_id}/send/...`), never the raw path,
    /// so the number of series stays bounded whatever clients ask for.
    pub(crate) route: String,
    pub(crate) method: String,
    pub(crate) status: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub(crate) route: String,
    pub(crate) method: String,
}
pub type Histograms = Family<RouteLabels, Histogram, fn() -> Histogram>;
