//! At start, the events schedule against each cluster's event lifetime: a cluster whose API
//! server forgets an event sooner than the next listing comes loses events that come and go in
//! between, and every such listing records a gap (`kubecensus::store::event_history`). The
//! scheduler says so, once per cluster, in plain words.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cron::Schedule;
use kubecensus::{source::registry::Registry, store::event_history::EVENTS_TABLE};

/// Ticks looked at for the longest interval: a week of minutes.
const TICKS: usize = 7 * 24 * 60;

/// The longest time between two consecutive ticks of `schedule` among its next [`TICKS`] after
/// `now`; `None` for a schedule with fewer than two.
fn longest_interval(schedule: &Schedule, now: DateTime<Utc>) -> Option<Duration> {
    let ticks: Vec<DateTime<Utc>> = schedule.after(&now).take(TICKS).collect();
    ticks.windows(2).filter_map(|pair| (pair[1] - pair[0]).to_std().ok()).max()
}

/// The clusters of `registry` whose event lifetime is shorter than the longest interval of the
/// events schedule in `schedules`, with that interval; none when events are not scheduled.
fn too_slow<'r>(
    schedules: &[(String, Schedule)],
    registry: &'r Registry,
    now: DateTime<Utc>,
) -> Vec<(&'r str, Duration)> {
    let Some(interval) =
        schedules.iter().find(|(table, _)| table == EVENTS_TABLE).and_then(|(_, s)| longest_interval(s, now))
    else {
        return Vec::new();
    };
    registry
        .clusters
        .iter()
        .filter(|cluster| interval > cluster.event_lifetime.unwrap_or_default().0)
        .map(|cluster| (cluster.name.as_str(), interval))
        .collect()
}

/// Logs a warning for each cluster whose events the schedule cannot keep up with.
pub fn warn_if_too_slow(schedules: &[(String, Schedule)], registry: &Registry) {
    for (cluster, interval) in too_slow(schedules, registry, Utc::now()) {
        let lifetime = registry.get(cluster).and_then(|c| c.event_lifetime).unwrap_or_default();
        tracing::warn!(
            cluster,
            "events are listed as rarely as every {} but this cluster keeps an event only {lifetime} after its \
             last update (event_lifetime): events that come and go between two listings are never seen, and \
             each such listing records a gap in event_gaps; schedule {EVENTS_TABLE} more often or set the \
             cluster's event_lifetime to its API server's --event-ttl",
            humantime::format_duration(interval),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use kubecensus::source::registry::{ClusterConfig, EventLifetime};

    use super::*;

    #[test]
    fn clusters_with_a_lifetime_shorter_than_the_events_interval_are_named() {
        let cluster = |name: &str, lifetime: Option<u64>| ClusterConfig {
            name: name.into(),
            event_lifetime: lifetime.map(|minutes| EventLifetime(Duration::from_secs(minutes * 60))),
            ..ClusterConfig::default()
        };
        let registry = Registry {
            clusters: vec![cluster("short", Some(10)), cluster("default", None), cluster("long", Some(180))],
            ..Registry::default()
        };
        let now = DateTime::parse_from_rfc3339("2024-05-01T10:07:30Z").unwrap().with_timezone(&Utc);
        // Every 15 minutes, and a longer pause at night: the longest interval counts.
        let schedules = [(EVENTS_TABLE.to_owned(), Schedule::from_str("0 */15 6-22 * * *").unwrap())];
        let slow = too_slow(&schedules, &registry, now);
        let hours = Duration::from_secs(7 * 60 * 60 + 15 * 60);
        assert_eq!(slow, [("short", hours), ("default", hours), ("long", hours)]);
        let every_minute = [(EVENTS_TABLE.to_owned(), Schedule::from_str("0 * * * * *").unwrap())];
        assert!(too_slow(&every_minute, &registry, now).is_empty());
        let every_half_hour = [(EVENTS_TABLE.to_owned(), Schedule::from_str("0 */30 * * * *").unwrap())];
        assert_eq!(too_slow(&every_half_hour, &registry, now), [("short", Duration::from_secs(30 * 60))]);
        assert!(too_slow(&[], &registry, now).is_empty(), "events not scheduled");
    }
}
