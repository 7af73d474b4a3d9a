//! The cron loop: at each table's tick, one job per (cluster, table).
//!
//! Ticks are computed from the current time, so a scheduler that was down does not publish the
//! ticks it missed. The job's message id is derived from (cluster, table, tick), so two
//! scheduler replicas publishing the same tick make one job. Between ticks, the registry is read
//! again every `--registry-refresh` ([`crate::live`]); each tick publishes for the clusters of
//! the registry then.

use std::{collections::HashMap, str::FromStr};

use anyhow::Context;
use chrono::{DateTime, Utc};
use cron::Schedule;
use kubecensus::{
    model::catalog::Catalog, ops::admin::Health, ops::telemetry, queue::Queue, queue::job::Trigger,
    source::registry::Registry,
};

use crate::{live::Watch, publish::publish_jobs};

/// Runs `schedules` (see [`schedules`]) until SIGTERM or SIGINT, when `health` turns not ready,
/// reading the registry again every `registry_refresh`.
pub async fn run<'a>(
    js: &async_nats::jetstream::Context,
    queue: &Queue,
    mut watch: Watch<'a>,
    registry_refresh: std::time::Duration,
    schedules: &'a [(String, Schedule)],
    health: &Health,
) -> anyhow::Result<()> {
    let stop = telemetry::shutdown_signal();
    for (table, schedule) in schedules {
        tracing::info!(table, schedule = %schedule.source(), "schedule");
    }
    tracing::info!(tables = schedules.len(), "scheduler started");
    watch.tables = schedules.iter().map(|(table, _)| table.as_str()).collect();
    tokio::pin!(stop);
    let mut refresh = tokio::time::interval(registry_refresh);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = Utc::now();
        let Some((tick, due)) = next_tick(schedules, now) else {
            anyhow::bail!("no schedule has a next tick");
        };
        let wait = (tick - now).to_std().unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = refresh.tick() => {
                watch.refresh(js, queue).await;
                continue;
            }
            () = &mut stop => {
                health.drain();
                tracing::info!("scheduler stopped");
                return Ok(());
            }
        }
        let registry = watch.live.current();
        for table in due {
            publish_tick(js, queue, watch.catalog, &registry, table, tick).await;
        }
    }
}

/// Each job target of `catalog` with its schedule: the catalog's, unless overridden (by a table,
/// which sets all its targets, or by a target's name); only the targets of the tables in `only`,
/// when it is not empty.
pub fn schedules(catalog: &Catalog, overrides: &[String], only: &[String]) -> anyhow::Result<Vec<(String, Schedule)>> {
    let targets_of = |table: &str| {
        let targets = catalog.targets_of(table);
        anyhow::ensure!(!targets.is_empty(), "unknown table `{table}`");
        Ok(targets.into_iter().map(|t| t.name.as_str()).collect::<Vec<_>>())
    };
    let mut selected = Vec::new();
    for table in only {
        selected.extend(targets_of(table)?);
    }
    let mut chosen: HashMap<&str, String> =
        catalog.targets.iter().map(|t| (t.name.as_str(), t.schedule.clone())).collect();
    for entry in overrides.iter().filter(|e| !e.trim().is_empty()) {
        let (table, cron) = entry.split_once('=').with_context(|| format!("schedule `{entry}` is not TABLE=CRON"))?;
        for target in targets_of(table.trim()).with_context(|| format!("schedule `{entry}`"))? {
            chosen.insert(target, cron.trim().trim_matches('\'').to_owned());
        }
    }
    catalog
        .targets
        .iter()
        .map(|t| t.name.as_str())
        .filter(|name| selected.is_empty() || selected.contains(name))
        .map(|name| {
            let cron = &chosen[name];
            let schedule = Schedule::from_str(cron).with_context(|| {
                format!("schedule `{cron}` of {name}: expected 6 fields, seconds first (1 = Sunday)")
            })?;
            Ok((name.to_owned(), schedule))
        })
        .collect()
}

/// The earliest tick after `now`, and every table due at it.
fn next_tick(schedules: &[(String, Schedule)], now: DateTime<Utc>) -> Option<(DateTime<Utc>, Vec<&str>)> {
    let ticks: Vec<(&str, DateTime<Utc>)> =
        schedules.iter().filter_map(|(table, schedule)| Some((table.as_str(), schedule.after(&now).next()?))).collect();
    let earliest = ticks.iter().map(|(_, tick)| *tick).min()?;
    Some((earliest, ticks.into_iter().filter(|(_, tick)| *tick == earliest).map(|(table, _)| table).collect()))
}

/// Publishes `table`'s job of every cluster for `tick`, and logs how many were queued.
async fn publish_tick(
    js: &async_nats::jetstream::Context,
    queue: &Queue,
    catalog: &Catalog,
    registry: &Registry,
    table: &str,
    tick: DateTime<Utc>,
) {
    let published = publish_jobs(js, queue, catalog, &registry.clusters, &[table], Trigger::Schedule, tick).await;
    let queued = published.iter().filter(|p| p.queued).count();
    tracing::info!(table, %tick, queued, not_queued = published.len() - queued, "tick");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_defaults_and_bad_crons_say_what_is_expected() {
        let schedules = schedules(&Catalog::builtin(), &["kubernetes_pod_containers=0 0 * * * *".into()], &[]).unwrap();
        let pods = schedules.iter().find(|(t, _)| *t == "kubernetes_pods").unwrap();
        assert_eq!(pods.1.source(), "0 0 * * * *");
        let err = schedules_error("kubernetes_pods=*/5 * * * *");
        assert!(err.contains("6 fields"), "{err}");
        assert!(schedules_error("nope=0 * * * * *").contains("unknown table"));
    }

    #[test]
    fn each_custom_kind_has_its_own_schedule_and_the_table_sets_them_all() {
        let helm = "kubernetes_custom_resources/helm.toolkit.fluxcd.io/HelmRelease";
        let catalog = Catalog::builtin();
        let kinds = catalog.targets_of("kubernetes_custom_resources").len();
        let only = ["kubernetes_custom_resources".into()];
        let chosen = schedules(&catalog, &[format!("{helm}=0 */2 * * * *")], &only).unwrap();
        assert_eq!(chosen.len(), kinds, "one schedule per kind");
        let of = |name: &str| chosen.iter().find(|(t, _)| t.ends_with(name)).unwrap().1.source().to_owned();
        assert_eq!(of("/HelmRelease"), "0 */2 * * * *");
        assert_eq!(of("/Kustomization"), "0 */5 * * * *");
        assert_eq!(of("/Certificate"), "0 */30 * * * *", "the catalog's own schedule for a kind");
        let all = schedules(&catalog, &["kubernetes_custom_resources=0 0 * * * *".into()], &[]).unwrap();
        assert!(
            all.iter()
                .filter(|(t, _)| t.starts_with("kubernetes_custom_resources/"))
                .all(|(_, s)| s.source() == "0 0 * * * *")
        );
    }

    fn schedules_error(entry: &str) -> String {
        format!("{:#}", schedules(&Catalog::builtin(), &[entry.to_owned()], &[]).unwrap_err())
    }

    #[test]
    fn the_next_tick_is_after_now_and_groups_tables_due_together() {
        let pipeline_tables =
            ["kubernetes_pod_containers".to_owned(), "kubernetes_nodes".into(), "kubernetes_namespaces".into()];
        let schedules = schedules(&Catalog::builtin(), &[], &pipeline_tables).unwrap();
        let now = DateTime::parse_from_rfc3339("2024-05-01T10:07:30Z").unwrap().with_timezone(&Utc);
        let (tick, due) = next_tick(&schedules, now).unwrap();
        assert_eq!(tick.to_rfc3339(), "2024-05-01T10:10:00+00:00");
        assert_eq!(due, ["kubernetes_namespaces", "kubernetes_nodes", "kubernetes_pods"], "all due at :10");
    }
}
