//! What `scheduler explore` counts: its requests by route and status code, and how long they
//! took (server time, from the request's arrival to its answer).

use std::sync::LazyLock;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};

use super::PREFIX;

/// Upper bounds of the request duration buckets, in seconds: the API's target is 50 ms a page.
const REQUEST_DURATION_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// A request's route (the router's path pattern, bounded) and HTTP status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub code: String,
}

/// A route alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

/// What the explorer counts.
#[derive(Debug)]
pub struct ExplorerMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RouteLabel, Histogram>,
}

/// The explorer's metrics, created on first use.
pub fn explorer() -> &'static ExplorerMetrics {
    static METRICS: LazyLock<ExplorerMetrics> = LazyLock::new(|| ExplorerMetrics {
        requests: Family::default(),
        request_duration: Family::new_with_constructor(|| Histogram::new(REQUEST_DURATION_BUCKETS)),
    });
    &METRICS
}

impl ExplorerMetrics {
    /// A registry of the explorer's metrics, for `/metrics`.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(
            "explorer_requests",
            "Explorer requests, by route and HTTP status code",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "explorer_request_duration",
            "Explorer request time in the server, by route",
            Unit::Seconds,
            self.request_duration.clone(),
        );
        registry
    }

    /// Counts one answered request to `route` with `code`, after `seconds`.
    pub fn answered(&self, route: &str, code: u16, seconds: f64) {
        self.requests.get_or_create(&RequestLabels { route: route.to_owned(), code: code.to_string() }).inc();
        self.request_duration.get_or_create(&RouteLabel { route: route.to_owned() }).observe(seconds);
    }
}
