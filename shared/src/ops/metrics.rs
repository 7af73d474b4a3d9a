//! The Prometheus metrics of both binaries, served on `/metrics` by [`super::admin`].
//!
//! Names follow Prometheus's conventions (<https://prometheus.io/docs/practices/naming/>): the
//! `kubecensus_` prefix, base units (`_seconds`), `_total` on counters (added by
//! prometheus-client when it encodes a counter). Labels are bounded: a table is a catalog table
//! (the caller's [`crate::model::catalog::Catalog::metric_table`]), an outcome a `runs.status`
//! word, an error an [`crate::Error::metric_label`], a code an HTTP status; no label names a
//! cluster. The README's "Monitoring" section lists every metric. Metrics take plain labels, so
//! this module depends on no layer that records them.
//!
//! The metrics are process-wide (one set per binary, recorded from wherever the event happens:
//! a list request in [`crate::source::kubeapi`], a replace conflict in [`crate::store::replace`]);
//! [`WorkerMetrics::registry`] and [`SchedulerMetrics::registry`] gather each binary's set, and
//! [`ExplorerMetrics::registry`] that of `scheduler explore`.

mod explorer;

pub use explorer::{ExplorerMetrics, explorer};

use std::{
    sync::{LazyLock, atomic::AtomicU64},
    time::Instant,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

/// The prefix of every metric name.
const PREFIX: &str = "kubecensus";
/// The `table` label of a job whose message is not read yet.
const UNKNOWN_TABLE: &str = "unknown";
/// Upper bounds of the job duration buckets, in seconds: from a small cluster's namespaces
/// (tens of milliseconds) to the default `--job-timeout` (10 minutes).
const JOB_DURATION_BUCKETS: [f64; 13] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// The `table` label: a catalog table's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table: String,
}

impl TableLabel {
    pub fn new(table: &str) -> Self {
        Self { table: table.to_owned() }
    }
}

/// Jobs by table and outcome (a `runs.status` word).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub table: String,
    pub outcome: &'static str,
}

/// Failed attempts by table and error ([`crate::Error::metric_label`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobErrorLabels {
    pub table: String,
    pub error: &'static str,
}

/// List requests by HTTP status code (`error` when no response came).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

/// Published jobs by trigger (`schedule` or `manual`, as in `runs.trigger`) and result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PublishLabels {
    pub trigger: &'static str,
    pub result: &'static str,
}

/// What the worker counts.
#[derive(Debug)]
pub struct WorkerMetrics {
    pub jobs: Family<JobLabels, Counter>,
    pub job_errors: Family<JobErrorLabels, Counter>,
    pub job_duration: Family<TableLabel, Histogram>,
    pub rows_written: Family<TableLabel, Counter>,
    pub rows_inserted: Family<TableLabel, Counter>,
    pub rows_deleted: Family<TableLabel, Counter>,
    pub objects_skipped: Family<TableLabel, Counter>,
    pub replace_conflicts: Family<TableLabel, Counter>,
    pub jobs_in_flight: Gauge,
    pub api_list_requests: Family<CodeLabel, Counter>,
    pub api_throttled: Family<CodeLabel, Counter>,
    /// Gaps recorded in `event_gaps` (crate::store::event_history).
    pub event_gaps: Counter,
}

/// Failed readings of a registry source, malformed Secrets and new overlaps, in the scheduler and
/// the worker alike ([`crate::source::registry::sources`]).
pub fn registry_source_errors() -> &'static Counter {
    static ERRORS: LazyLock<Counter> = LazyLock::new(Counter::default);
    &ERRORS
}

/// Adds [`registry_source_errors`] to `registry`: both binaries serve it.
fn register_registry_source_errors(registry: &mut Registry) {
    registry.register(
        "registry_source_errors",
        "Failed readings of a registry source (the file, the home cluster), malformed Secrets, and each new \
         overlap once",
        registry_source_errors().clone(),
    );
}

/// The worker's metrics, created on first use.
pub fn worker() -> &'static WorkerMetrics {
    static METRICS: LazyLock<WorkerMetrics> = LazyLock::new(|| WorkerMetrics {
        jobs: Family::default(),
        job_errors: Family::default(),
        job_duration: Family::new_with_constructor(|| Histogram::new(JOB_DURATION_BUCKETS)),
        rows_written: Family::default(),
        rows_inserted: Family::default(),
        rows_deleted: Family::default(),
        objects_skipped: Family::default(),
        replace_conflicts: Family::default(),
        jobs_in_flight: Gauge::default(),
        api_list_requests: Family::default(),
        api_throttled: Family::default(),
        event_gaps: Counter::default(),
    });
    &METRICS
}

impl WorkerMetrics {
    /// A registry of the worker's metrics, for `/metrics`.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(
            "jobs",
            "Jobs that ended, by job table and outcome (runs.status: succeeded, retrying, failed, skipped, superseded, rejected, handed_back)",
            self.jobs.clone(),
        );
        registry.register(
            "job_errors",
            "Failed attempts at jobs, by job table and error (the cause's kind: cluster_status, throttled, database, replace_conflict, timeout, ...)",
            self.job_errors.clone(),
        );
        registry.register_with_unit(
            "job_duration",
            "How long jobs took, from their message to their ack, by job table",
            Unit::Seconds,
            self.job_duration.clone(),
        );
        registry.register(
            "rows_written",
            "Rows the cluster has in the resource's tables after each successful job (runs.rows_written), by job table",
            self.rows_written.clone(),
        );
        registry.register(
            "rows_inserted",
            "Rows written because they are new or changed (runs.rows_inserted), by job table",
            self.rows_inserted.clone(),
        );
        registry.register(
            "rows_deleted",
            "Rows deleted because their object changed or is gone (runs.rows_deleted), by job table",
            self.rows_deleted.clone(),
        );
        registry.register(
            "objects_skipped",
            "Listed objects that could not be read and were skipped in successful jobs (runs.objects_skipped), by job table",
            self.objects_skipped.clone(),
        );
        registry.register(
            "replace_conflicts",
            "Attempts that found the rows replaced by another job of the same (cluster, table) while they listed; each is retried",
            self.replace_conflicts.clone(),
        );
        registry.register("jobs_in_flight", "Jobs this worker is running now", self.jobs_in_flight.clone());
        registry.register(
            "api_list_requests",
            "List requests sent to cluster APIs, by HTTP status code (error: no response)",
            self.api_list_requests.clone(),
        );
        registry.register(
            "api_throttled",
            "Throttled answers from cluster APIs (429, or 503 with Retry-After), each waited out and the request sent again, by HTTP status code",
            self.api_throttled.clone(),
        );
        registry.register(
            "event_gaps",
            "Gaps recorded in event_gaps: events listings of a cluster further apart than its event lifetime, so events in between may be missing",
            self.event_gaps.clone(),
        );
        register_registry_source_errors(&mut registry);
        registry
    }

    /// Counts a successful job of `table` (a catalog table): the rows the cluster has after it
    /// (`written`), those it inserted and deleted, and the objects it skipped.
    pub fn replaced(&self, table: &str, written: u64, inserted: u64, deleted: u64, objects_skipped: u64) {
        let label = TableLabel::new(table);
        self.rows_written.get_or_create(&label).inc_by(written);
        self.rows_inserted.get_or_create(&label).inc_by(inserted);
        self.rows_deleted.get_or_create(&label).inc_by(deleted);
        self.objects_skipped.get_or_create(&label).inc_by(objects_skipped);
    }

    /// Counts a failed attempt at a job of `table` (a catalog table) that ended in `error` (an
    /// [`crate::Error::metric_label`]).
    pub fn job_error(&self, table: &str, error: &'static str) {
        self.job_errors.get_or_create(&JobErrorLabels { table: table.to_owned(), error }).inc();
    }

    /// Counts a list request that got `status` (`None`: no response).
    pub fn list_request(&self, status: Option<u16>) {
        let code = status.map_or_else(|| "error".to_owned(), |status| status.to_string());
        self.api_list_requests.get_or_create(&CodeLabel { code }).inc();
    }

    /// Counts a throttled answer (HTTP `status` 429 or 503).
    pub fn throttled(&self, status: u16) {
        self.api_throttled.get_or_create(&CodeLabel { code: status.to_string() }).inc();
    }
}

/// One job as the metrics see it (kube-rs controller-rs's measure-on-drop timer): in flight
/// from [`JobTimer::start`] until dropped; on drop, a job given an outcome is counted in
/// `kubecensus_jobs_total` and its duration observed.
#[derive(Debug)]
pub struct JobTimer {
    table: TableLabel,
    started: Instant,
    outcome: Option<&'static str>,
}

impl JobTimer {
    /// A job whose message just arrived; its table is `unknown` until [`Self::set_table`].
    pub fn start() -> Self {
        worker().jobs_in_flight.inc();
        Self { table: TableLabel::new(UNKNOWN_TABLE), started: Instant::now(), outcome: None }
    }

    /// The job's table (a catalog table), once its message is read.
    pub fn set_table(&mut self, table: &str) {
        self.table = TableLabel::new(table);
    }

    /// How the job ended (a `runs.status` word).
    pub fn set_outcome(&mut self, status: &'static str) {
        self.outcome = Some(status);
    }
}

impl Drop for JobTimer {
    fn drop(&mut self) {
        let metrics = worker();
        metrics.jobs_in_flight.dec();
        if let Some(outcome) = self.outcome {
            metrics.jobs.get_or_create(&JobLabels { table: self.table.table.clone(), outcome }).inc();
            metrics.job_duration.get_or_create(&self.table).observe(self.started.elapsed().as_secs_f64());
        }
    }
}

/// What the scheduler counts and samples.
#[derive(Debug)]
pub struct SchedulerMetrics {
    pub jobs_published: Family<PublishLabels, Counter>,
    pub consumer_pending_jobs: Gauge,
    pub consumer_ack_pending_jobs: Gauge,
    pub snapshot_oldest_age: Family<TableLabel, Gauge<f64, AtomicU64>>,
    pub snapshots_stale: Family<TableLabel, Gauge>,
    pub history_partitions_dropped: Family<TableLabel, Counter>,
    pub history_rows_deleted: Family<TableLabel, Counter>,
    pub history_oldest_kept_age: Family<TableLabel, Gauge<f64, AtomicU64>>,
}

/// The scheduler's metrics, created on first use.
pub fn scheduler() -> &'static SchedulerMetrics {
    static METRICS: LazyLock<SchedulerMetrics> = LazyLock::new(|| SchedulerMetrics {
        jobs_published: Family::default(),
        consumer_pending_jobs: Gauge::default(),
        consumer_ack_pending_jobs: Gauge::default(),
        snapshot_oldest_age: Family::default(),
        snapshots_stale: Family::default(),
        history_partitions_dropped: Family::default(),
        history_rows_deleted: Family::default(),
        history_oldest_kept_age: Family::default(),
    });
    &METRICS
}

impl SchedulerMetrics {
    /// A registry of the scheduler's metrics, for `/metrics`.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(
            "jobs_published",
            "Jobs published, by trigger (schedule, manual) and result (queued, already_pending, duplicate, failed)",
            self.jobs_published.clone(),
        );
        registry.register(
            "consumer_pending_jobs",
            "Jobs in the stream not yet delivered to a worker (the shared consumer's num_pending)",
            self.consumer_pending_jobs.clone(),
        );
        registry.register(
            "consumer_ack_pending_jobs",
            "Jobs delivered to a worker and not yet acked (the shared consumer's num_ack_pending)",
            self.consumer_ack_pending_jobs.clone(),
        );
        registry.register_with_unit(
            "snapshot_oldest_age",
            "Age of the oldest snapshot of the table among the registry's clusters (now - snapshots.swapped_at)",
            Unit::Seconds,
            self.snapshot_oldest_age.clone(),
        );
        registry.register(
            "snapshots_stale",
            "Registry clusters whose snapshot of the table is older than twice the table's schedule",
            self.snapshots_stale.clone(),
        );
        registry.register(
            "history_partitions_dropped",
            "Daily partitions of a history table (object_changes, event_history, runs) dropped by retention",
            self.history_partitions_dropped.clone(),
        );
        registry.register(
            "history_rows_deleted",
            "Rows of a history table's DEFAULT partition deleted by retention",
            self.history_rows_deleted.clone(),
        );
        registry.register_with_unit(
            "history_oldest_kept_age",
            "Age of the oldest time a history table keeps (its oldest daily partition, or older DEFAULT rows)",
            Unit::Seconds,
            self.history_oldest_kept_age.clone(),
        );
        register_registry_source_errors(&mut registry);
        registry
    }

    /// Records one retention upkeep of history table `table`: partitions dropped, DEFAULT rows
    /// deleted, and the age of the oldest time kept (0 when it keeps nothing).
    pub fn retained(&self, table: &str, dropped: u64, deleted: u64, oldest_kept_age: Option<f64>) {
        let label = TableLabel::new(table);
        self.history_partitions_dropped.get_or_create(&label).inc_by(dropped);
        self.history_rows_deleted.get_or_create(&label).inc_by(deleted);
        self.history_oldest_kept_age.get_or_create(&label).set(oldest_kept_age.unwrap_or(0.0));
    }

    /// Counts one publish of a job with `trigger` (`runs.trigger`) that ended in `result`
    /// (`queued`, `already_pending`, `duplicate`, `failed`).
    pub fn published(&self, trigger: &'static str, result: &'static str) {
        self.jobs_published.get_or_create(&PublishLabels { trigger, result }).inc();
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::prometheus_text;

    use super::*;

    #[test]
    fn names_carry_the_prefix_units_and_total() {
        let mut timer = JobTimer::start();
        timer.set_table("kubernetes_nodes");
        timer.set_outcome("succeeded");
        drop(timer);
        worker().list_request(Some(200));
        worker().throttled(429);
        worker().job_error("kubernetes_nodes", "throttled");
        let mut text = String::new();
        prometheus_text::encode(&mut text, &worker().registry()).unwrap();
        for line in [
            "# TYPE kubecensus_jobs_total counter",
            "kubecensus_jobs_total{table=\"kubernetes_nodes\",outcome=\"succeeded\"} 1",
            "# TYPE kubecensus_job_duration_seconds histogram",
            "kubecensus_job_duration_seconds_count{table=\"kubernetes_nodes\"} 1",
            "kubecensus_api_list_requests_total{code=\"200\"} 1",
            "kubecensus_api_throttled_total{code=\"429\"} 1",
            "# TYPE kubecensus_job_errors_total counter",
            "kubecensus_job_errors_total{table=\"kubernetes_nodes\",error=\"throttled\"} 1",
            "kubecensus_jobs_in_flight 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no line `{line}` in\n{text}");
        }
        let mut text = String::new();
        scheduler().snapshot_oldest_age.get_or_create(&TableLabel::new("kubernetes_pods")).set(1.5);
        prometheus_text::encode(&mut text, &scheduler().registry()).unwrap();
        assert!(text.contains("kubecensus_snapshot_oldest_age_seconds{table=\"kubernetes_pods\"} 1.5"), "{text}");
    }
}
