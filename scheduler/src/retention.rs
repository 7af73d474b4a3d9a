//! The scheduler's upkeep of the history tables ([`kubecensus::store::retention`]): at start and
//! then every hour, so tomorrow's partitions always exist a few days ahead and a day past the
//! retention is dropped within the hour.

use std::time::Duration;

use chrono::Utc;
use kubecensus::{
    ops::metrics,
    store::retention::{self, Retention},
};
use sqlx::PgPool;

/// How often the upkeep runs.
const EVERY: Duration = Duration::from_secs(3600);

/// Runs the upkeep every [`EVERY`], logging what it did and recording it in the metrics; an error
/// is logged and the next run tries again.
pub async fn run_forever(pool: PgPool, retention: Retention) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = Utc::now();
        match retention::upkeep(&pool, &retention, now).await {
            Ok(Some(tables)) => {
                for done in tables {
                    let age = done.oldest_kept.map(|oldest| (now - oldest).num_milliseconds() as f64 / 1000.0);
                    metrics::scheduler().retained(done.table, done.dropped.len() as u64, done.deleted, age);
                    tracing::info!(
                        table = done.table,
                        created = ?done.created,
                        dropped = ?done.dropped,
                        deleted = done.deleted,
                        oldest_kept = ?done.oldest_kept,
                        "history retention"
                    );
                }
            }
            Ok(None) => tracing::debug!("another scheduler does the history retention"),
            Err(err) => tracing::error!(%err, "history retention failed; trying again in an hour"),
        }
    }
}
