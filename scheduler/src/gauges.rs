//! The scheduler's sampled gauges, read at each scrape of `/metrics`: the shared consumer's
//! backlog (from NATS) and the fleet's freshness (from `snapshots`).

use std::{
    collections::BTreeMap,
    sync::{Arc, OnceLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use cron::Schedule;
use kubecensus::{
    model::catalog::catalog,
    ops::{
        admin::Sampler,
        metrics::{self, TableLabel},
    },
    queue::Queue,
    source::registry::sources::LiveRegistry,
    store::freshness::freshness,
};
use sqlx::PgPool;

/// What the gauges are read from.
pub struct Gauges {
    pub pool: PgPool,
    pub js: async_nats::jetstream::Context,
    pub queue: Queue,
    /// The live registry: only its clusters' snapshots count, as it is at each scrape.
    pub live: Arc<LiveRegistry>,
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
        let clusters: Vec<String> = self.live.current().clusters.iter().map(|cluster| cluster.name.clone()).collect();
        match freshness(&self.pool, &clusters, &stale_after(&self.schedules, Utc::now())).await {
            Ok(tables) => {
                // Every kind of custom resource has its own snapshots under one label: the
                // oldest of them, and the stale ones summed.
                let mut by_label: BTreeMap<&str, (Option<f64>, i64)> = BTreeMap::new();
                for table in &tables {
                    let (oldest, stale) = by_label.entry(catalog().metric_table(&table.table)).or_default();
                    *oldest = match (*oldest, table.oldest_age_seconds) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                    *stale += table.stale;
                }
                for (table, (oldest, stale)) in by_label {
                    let label = TableLabel::new(table);
                    match oldest {
                        Some(age) => {
                            metrics.snapshot_oldest_age.get_or_create(&label).set(age);
                        }
                        None => {
                            metrics.snapshot_oldest_age.remove(&label);
                        }
                    }
                    metrics.snapshots_stale.get_or_create(&label).set(stale);
                }
            }
            Err(err) => tracing::warn!(%err, "cannot read the snapshots' freshness"),
        }
    }
}

/// Every snapshot name of the scheduled targets (a resource's tables, a custom kind's
/// target) with the age past which it is stale: twice its schedule's period at `now`.
fn stale_after(schedules: &[(&str, Schedule)], now: DateTime<Utc>) -> Vec<(String, Duration)> {
    let mut limits = Vec::new();
    for (target, schedule) in schedules {
        let Some(period) = period(schedule, now) else {
            continue;
        };
        match catalog().resource_of(target) {
            Some(resource) => limits.extend(resource.tables.iter().map(|table| (table.name.clone(), 2 * period))),
            // A custom kind's snapshot is named after its job target.
            None => limits.push((target.to_string(), 2 * period)),
        }
    }
    limits
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

    #[test]
    fn a_resources_tables_and_a_custom_kinds_target_are_stale_after_twice_their_period() {
        let now = DateTime::parse_from_rfc3339("2024-05-03T10:07:30Z").unwrap().with_timezone(&Utc);
        let every_5_minutes = Schedule::from_str("0 */5 * * * *").unwrap();
        let kustomizations = "kubernetes_custom_resources/kustomize.toolkit.fluxcd.io/Kustomization";
        let schedules = [("kubernetes_pods", every_5_minutes.clone()), (kustomizations, every_5_minutes)];
        let ten_minutes = Duration::from_secs(600);
        let pods = catalog().resource_of("kubernetes_pods").unwrap();
        let mut expected: Vec<_> = pods.tables.iter().map(|table| (table.name.clone(), ten_minutes)).collect();
        expected.push((kustomizations.to_owned(), ten_minutes));
        assert_eq!(stale_after(&schedules, now), expected);
    }
}
