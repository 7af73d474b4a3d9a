//! The worker's command line.

use std::time::Duration;

use clap::Parser;
use kubecensus::ops::{
    admin::AdminArgs,
    args::{CommonArgs, JobArgs},
};

/// Claims poll jobs from JetStream, lists each resource from its cluster, and swaps the rows
/// into PostgreSQL. Run as many replicas as you like: they share one durable consumer.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Jobs this worker runs at once; it pulls only as many jobs as it has free slots.
    #[arg(long, env = "KUBECENSUS_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// Name in the `runs` table; defaults to `<hostname>-<pid>`.
    #[arg(long, env = "KUBECENSUS_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Objects per page when listing.
    #[arg(long, env = "KUBECENSUS_PAGE_SIZE", default_value_t = 500)]
    pub page_size: u32,
    /// Bytes of new or changed rows (COPY text) a job holds in memory until its final
    /// transaction; past it they are streamed into a temporary staging table of the job's
    /// session. A worker's memory is bounded by about this times its concurrency.
    #[arg(long, env = "KUBECENSUS_IN_PLACE_LIMIT", default_value_t = 2 << 20)]
    pub in_place_limit: usize,
    /// Whether each replace records the objects it created, updated and deleted in
    /// `object_changes` (README "History"); `false` only to measure its cost or to keep none.
    #[arg(long, env = "KUBECENSUS_CHANGE_HISTORY", default_value_t = true, action = clap::ArgAction::Set)]
    pub change_history: bool,
    /// Clusters whose API client (its connection pool and TLS state) is kept between jobs; the
    /// least recently used one is dropped past this. Bounds a worker's memory in a large fleet.
    #[arg(long, env = "KUBECENSUS_CACHED_CLIENTS", default_value = "16")]
    pub cached_clients: std::num::NonZeroUsize,
    #[command(flatten)]
    pub job: JobArgs,
    /// How long a job may go unacknowledged before NATS hands it to another worker; a running
    /// job sends progress acks every third of it. Applies when the shared consumer is created.
    #[arg(long, env = "KUBECENSUS_ACK_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ack_wait: Duration,
    /// On SIGTERM, how long in-flight jobs may take to finish before they are handed back.
    #[arg(long, env = "KUBECENSUS_SHUTDOWN_GRACE", default_value = "25s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}
