//! Publishing jobs: the one path for the cron loop's ticks and for ad-hoc refreshes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kubecensus::{
    Error, Result,
    model::catalog::Catalog,
    ops::metrics,
    queue::job::{Job, Trigger},
    queue::{PUBLISH_RETRY_FOR, Published, Queue},
    source::registry::ClusterConfig,
};
use serde::Serialize;
use uuid::Uuid;

/// How long one publish may take, its retries through a leader election
/// ([`kubecensus::queue::PUBLISH_RETRY_FOR`]) included: a backstop for a NATS that never answers.
const PUBLISH_TIMEOUT: Duration = PUBLISH_RETRY_FOR.saturating_add(Duration::from_secs(15));

/// What became of one (cluster, table) job.
#[derive(Debug, Serialize)]
pub struct Publication {
    pub cluster: String,
    pub table: String,
    pub job_id: Option<Uuid>,
    /// `queued`, `already pending`, `duplicate`, or why the publish failed.
    pub result: String,
    #[serde(skip)]
    pub queued: bool,
}

/// Publishes one job per cluster of `clusters` and table of `tables` (job tables of `catalog`),
/// with `trigger` and the time `at`; never stops at a failed publish.
pub async fn publish_jobs<'a>(
    js: &async_nats::jetstream::Context,
    queue: &Queue,
    catalog: &Catalog,
    clusters: impl IntoIterator<Item = &'a ClusterConfig>,
    tables: &[&str],
    trigger: Trigger,
    at: DateTime<Utc>,
) -> Vec<Publication> {
    let mut publications = Vec::new();
    for cluster in clusters {
        for table in tables {
            let (job_id, published) = match Job::new(catalog, &cluster.name, table, trigger, at) {
                Ok(job) => (Some(job.id), publish(js, queue, &job).await),
                Err(err) => (None, Err(err)),
            };
            let result = published.as_ref().map_or("failed", |published| published.as_str());
            metrics::scheduler().published(trigger.as_str(), result);
            let result = match &published {
                Ok(Published::Queued) => "queued".to_owned(),
                Ok(Published::AlreadyPending) => "already pending".to_owned(),
                Ok(Published::Duplicate) => "duplicate".to_owned(),
                Err(err) => {
                    tracing::error!(%err, cluster = %cluster.name, table, "cannot publish a job");
                    format!("failed: {err}")
                }
            };
            publications.push(Publication {
                cluster: cluster.name.clone(),
                table: (*table).to_owned(),
                job_id,
                result,
                queued: matches!(published, Ok(Published::Queued)),
            });
        }
    }
    publications
}

async fn publish(js: &async_nats::jetstream::Context, queue: &Queue, job: &Job) -> Result<Published> {
    tokio::time::timeout(PUBLISH_TIMEOUT, queue.publish(js, job))
        .await
        .map_err(|elapsed| Error::nats(format!("NATS did not answer in {PUBLISH_TIMEOUT:?}"), elapsed))?
}
