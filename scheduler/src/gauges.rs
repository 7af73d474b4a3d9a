//! The scheduler's sampled gauges, read at each scrape of `/metrics`: the shared consumer's
//! backlog (from NATS) and the fleet's freshness (from `snapshots`).

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use cron::Schedule;
use kubecensus::{
    model::catalog::catalog,
    ops::{
        admin::Sampler,
        metrics::{self, table_label},
    },
    queue::Queue,
    store::freshness::freshness,
};
use sqlx::PgPool;

/// What the gauges are read from.
pub struct Gauges {
    pub pool: PgPool,
    pub js: async_nats::jetstream::Context,
    pub queue: Queue,
    /// The registry's cluster names: only their snapshots count.
    pub clusters: Vec<String>,
    /// Each scheduled resource's job table with its schedule.
    pub schedules: Vec<(&'static str, Schedule)>,
}

/// A [`Sampler`] reading `gauges` once start-up has set them (nothing before).
pub fn sampler(gauges: Arc<OnceLock<Gauges>>) -> Sampler {
    Box::new(move || {
        let gauges = gauges.clone();
        Box::pin(async move {
            if let Some(gauges) = gauges.get() {
                gauges.sample().await;
            }
        })
    })
}

impl Gauges {
    /// Reads the backlog and the freshness into the scheduler's metrics; a failed read is
    /// logged and leaves its gauges as they were.
    async fn sample(&self) {
        let metrics = metrics::scheduler();
        match self.queue.backlog(&self.js).await {
            Ok(backlog) => {
                metrics.consumer_pending_jobs.set(backlog.pending as i64);
                metrics.consumer_ack_pending_jobs.set(backlog.ack_pending as i64);
            }
            Err(err) => tracing::warn!(%err, "cannot read the job consumer's backlog"),
        }
        match freshness(&self.pool, &self.clusters, &self.stale_after(Utc::now())).await {
            Ok(tables) => {
                for table in tables {
                    let label = table_label(&table.table);
                    match table.oldest_age_seconds {
                        Some(age) => {
                            metrics.snapshot_oldest_age.get_or_create(&label).set(age);
                        }
                        None => {
                            metrics.snapshot_oldest_age.remove(&label);
                        }
                    }
                    metrics.snapshots_stale.get_or_create(&label).set(table.stale);
                }
            }
            Err(err) => tracing::warn!(%err, "cannot read the snapshots' freshness"),
        }
    }

    /// Every table of the scheduled resources with the age past which its snapshot is stale:
    /// twice its schedule's period at `now`.
    fn stale_after(&self, now: DateTime<Utc>) -> Vec<(String, Duration)> {
        let mut limits = Vec::new();
        for (job_table, schedule) in &self.schedules {
            let (Some(period), Some(resource)) = (period(schedule, now), catalog().resource_of(job_table)) else {
                continue;
            };
            limits.extend(resource.tables.iter().map(|table| (table.name.clone(), 2 * period)));
        }
        limits
    }
}

/// The time between the tick before `now` and the tick after it.
fn period(schedule: &Schedule, now: DateTime<Utc>) -> Option<Duration> {
    let next = schedule.after(&now).next()?;
    let previous = schedule.after(&now).next_back()?;
    (next - previous).to_std().ok()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn a_period_is_the_gap_between_the_ticks_around_now() {
        let now = DateTime::parse_from_rfc3339("2024-05-03T10:07:30Z").unwrap().with_timezone(&Utc);
        let every_5_minutes = Schedule::from_str("0 */5 * * * *").unwrap();
        assert_eq!(period(&every_5_minutes, now), Some(Duration::from_secs(300)));
        // Friday 10:07: from Friday 09:00 to Monday 09:00.
        let weekdays = Schedule::from_str("0 0 9 * * MON-FRI").unwrap();
        assert_eq!(period(&weekdays, now), Some(Duration::from_secs(3 * 24 * 3600)));
    }
}
