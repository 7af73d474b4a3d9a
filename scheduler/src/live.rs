//! The scheduler's side of the live registry: at every `--registry-refresh` the sources are read
//! again; a new cluster gets its jobs at once (not at the next tick), new fields get their
//! columns, the `clusters` table follows, and a cluster missing from every source for
//! `--prune-after` is pruned. A reading that changed nothing writes nothing.

use std::time::Duration;

use chrono::Utc;
use kubecensus::{
    model::catalog::Catalog,
    queue::{Queue, job::Trigger},
    source::registry::{Registry, sources::LiveRegistry},
    store,
};
use sqlx::PgPool;

use crate::publish::publish_jobs;

/// What a refresh of the registry needs.
pub struct Watch<'a> {
    /// The tables new fields add columns to and a pruned cluster's rows are deleted from.
    pub catalog: &'a Catalog,
    pub pool: &'a PgPool,
    pub live: &'a LiveRegistry,
    /// The job tables this scheduler schedules: a new cluster's first jobs.
    pub tables: Vec<&'a str>,
    pub prune_after: Duration,
}

impl Watch<'_> {
    /// Reads the sources again and acts on what changed.
    pub async fn refresh(&self, js: &async_nats::jetstream::Context, queue: &Queue) {
        let before = self.live.current();
        let refreshed = self.live.refresh().await;
        let now = self.live.current();
        if refreshed.changed {
            if let Err(err) = self.record(&before, &now).await {
                tracing::error!(%err, "cannot record the new registry in the database");
            }
            let added: Vec<_> = now.clusters.iter().filter(|c| before.get(&c.name).is_none()).collect();
            if !added.is_empty() {
                let published =
                    publish_jobs(js, queue, self.catalog, added, &self.tables, Trigger::Schedule, Utc::now()).await;
                let queued = published.iter().filter(|p| p.queued).count();
                tracing::info!(queued, "published the first jobs of new clusters");
            }
        }
        if refreshed.complete {
            let present: Vec<String> = now.clusters.iter().map(|c| c.name.clone()).collect();
            if let Err(err) =
                store::prune::prune_absent(self.pool, self.catalog, &present, self.prune_after, "scheduler").await
            {
                tracing::error!(%err, "cannot prune missing clusters");
            }
        }
    }

    /// New fields' columns, then the `clusters` table.
    async fn record(&self, before: &Registry, now: &Registry) -> kubecensus::Result<()> {
        store::ensure_new_fields(self.pool, self.catalog, before, now).await?;
        store::sync_clusters(self.pool, now).await
    }
}
