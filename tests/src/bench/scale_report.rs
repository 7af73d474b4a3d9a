//! What `bench-scale` measured ([`ScaleReport`]), its profiles' fleet shapes and targets
//! ([`Profile`]), and the report as Markdown with a row per target ([`verdicts`]).

use serde::Serialize;

use super::{
    access, explorer,
    nats_failover::{self, FailoverFigures},
    queries::QueryTiming,
    refresh::RoundResult,
    report::Verdict,
    scale::{ConcurrentReaders, Footprint, QueryFigures, Throughput},
    standby::StandbyFigures,
    stats::mib,
};
use crate::fleet::{FleetSpec, NamespaceObjects};

/// The fleet shapes `bench-scale` runs; each sets the knobs of [`ProfileKnobs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// 1,000 clusters × 20 namespaces (each with a few workloads), 5 nodes, 200 pods and 20
    /// custom resources (BENCHMARKS.md, "At 1,000 clusters").
    Default,
    /// The RFC's shape: 300 clusters × 2,000 namespaces, each namespace with a Flux
    /// Kustomization, a HelmRelease and two pods (4,000 pods a cluster, on 40 nodes: about 110
    /// pods a node, Kubernetes' default limit), every cluster running Flux.
    Rfc,
}

/// The knobs a profile sets (explicit flags override each) and its own target.
#[derive(Debug, Clone)]
pub struct ProfileKnobs {
    /// The simulated fleet's shape.
    pub fleet: FleetSpec,
    /// Pods deleted and as many added in every cluster before each refresh.
    pub churn: usize,
    /// Pods refreshes with churn in all (the first is the full refresh).
    pub pod_refreshes: usize,
    /// Seconds from the start of one pods refresh to the next.
    pub pod_interval_s: u64,
    /// The longest full refresh after churn that meets the target, seconds.
    pub refresh_target_s: f64,
}

impl Profile {
    /// The profile's knobs. The RFC's: 1 % of the pods churned before each refresh, one paced
    /// pods refresh after the full one, 5 minutes apart (the pods' schedule): about 35 minutes
    /// in all with `bench-release` binaries, most of it the load, the refresh and the wait.
    pub fn knobs(self) -> ProfileKnobs {
        match self {
            Self::Default => ProfileKnobs {
                fleet: FleetSpec {
                    clusters: 1000,
                    namespaces: 20,
                    nodes: 5,
                    pods: 200,
                    custom_resources: 20,
                    namespace_objects: NamespaceObjects::Workloads,
                    ..FleetSpec::default()
                },
                churn: 10,
                pod_refreshes: 20,
                pod_interval_s: 60,
                refresh_target_s: 600.0,
            },
            Self::Rfc => ProfileKnobs {
                fleet: FleetSpec {
                    clusters: 300,
                    namespaces: 2000,
                    nodes: 40,
                    pods: 4000,
                    custom_resources: 0,
                    namespace_objects: NamespaceObjects::Flux,
                    ..FleetSpec::default()
                },
                churn: 40,
                pod_refreshes: 2,
                pod_interval_s: 300,
                refresh_target_s: 300.0,
            },
        }
    }
}

/// The longest first load that meets the target (both profiles), seconds.
const FIRST_LOAD_TARGET_S: f64 = 600.0;
/// The longest median of a `fleet_unhealthy_objects` page that meets the target, ms.
const UNHEALTHY_PAGE_TARGET_MS: f64 = 10.0;

/// Everything measured.
#[derive(Debug, Serialize)]
pub struct ScaleReport {
    pub command: String,
    pub profile: Profile,
    /// The full refresh's target for the profile, seconds.
    pub refresh_target_s: f64,
    pub postgres: String,
    pub first_load: RoundResult,
    pub first_load_throughput: Throughput,
    pub after_first_load: Footprint,
    pub refresh: RoundResult,
    pub refresh_throughput: Throughput,
    pub after_refresh: Footprint,
    /// Pods table and index bytes after each pods refresh (the first is the full refresh).
    pub pod_refreshes: Vec<Footprint>,
    /// Seconds waited for autovacuum before the queries.
    pub autovacuum_wait_s: f64,
    pub queries: Vec<QueryFigures>,
    /// Keyset pages of unhealthy objects, from `fleet_unhealthy_objects` and `fleet_objects`.
    pub pages: Vec<QueryTiming>,
    /// The explorer's API as an unrestricted user and as a viewer of one cluster, then the
    /// queries as viewers of a tenth of the clusters and of one namespace in each.
    pub viewers: Vec<QueryTiming>,
    pub readers: ConcurrentReaders,
    /// With `--standby`: replay lag and the standby's readers over the first load and refresh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standby: Option<StandbyFigures>,
    /// With `--nats-cluster`: the first load through the stream leader's kill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_cluster: Option<FailoverFigures>,
    /// Every target and how the run did ([`verdicts`]).
    pub verdicts: Vec<Verdict>,
    pub total_s: f64,
}

/// The targets: the first load in 10 minutes, the full refresh in the profile's time, the
/// design example and history queries in 100 ms, a deep `fleet_unhealthy_objects` page in 10 ms
/// (its first page is judged among the viewers', [`access::verdicts`]), the explorer's and the
/// viewers' targets, and with `--nats-cluster` the failover's ([`nats_failover::verdicts`]).
pub fn verdicts(report: &ScaleReport) -> Vec<Verdict> {
    let mut verdicts = vec![
        Verdict {
            target: format!("first load <= {:.0} min", FIRST_LOAD_TARGET_S / 60.0),
            measured: format!("{:.0} s", report.first_load.wall_s),
            met: report.first_load.wall_s <= FIRST_LOAD_TARGET_S,
        },
        Verdict {
            target: format!("full refresh after churn <= {:.0} min", report.refresh_target_s / 60.0),
            measured: format!("{:.0} s", report.refresh.wall_s),
            met: report.refresh.wall_s <= report.refresh_target_s,
        },
    ];
    let queries = report.queries.iter().filter(|q| q.name.contains("design example") || q.name.contains("chang"));
    verdicts.extend(queries.map(|q| Verdict {
        target: format!("{} <= 100 ms", q.name),
        measured: format!("{:.1} ms median", q.median_ms),
        met: q.median_ms <= 100.0,
    }));
    let deep_pages = report.pages.iter().filter(|p| p.name.starts_with("fleet_unhealthy_objects: the page after"));
    verdicts.extend(deep_pages.map(|page| Verdict {
        target: format!("{}: <= {UNHEALTHY_PAGE_TARGET_MS:.0} ms", page.name),
        measured: format!("{:.1} ms median", page.median_ms),
        met: page.median_ms <= UNHEALTHY_PAGE_TARGET_MS,
    }));
    verdicts.extend(explorer::verdicts(&report.viewers));
    verdicts.extend(access::verdicts(&report.viewers));
    verdicts.extend(report.nats_cluster.iter().flat_map(nats_failover::verdicts));
    verdicts
}

/// The report, as Markdown.
pub fn markdown(report: &ScaleReport) -> String {
    let mut out = format!("# bench-scale\n\n`{}`\n\n{}\n\n", report.command, report.postgres);
    out.push_str("| round | jobs | statuses | wall s | jobs/s | jobs/s first → last tenth | change | database MiB | relations |\n|---|---|---|---|---|---|---|---|---|\n");
    for (round, throughput, footprint) in [
        (&report.first_load, &report.first_load_throughput, &report.after_first_load),
        (&report.refresh, &report.refresh_throughput, &report.after_refresh),
    ] {
        out.push_str(&format!(
            "| {} | {} | {:?} | {:.1} | {:.1} | {:.1} → {:.1} | {:+.0} % | {:.0} | {} |\n",
            round.label,
            round.jobs,
            round.statuses,
            round.wall_s,
            round.jobs_per_s,
            throughput.tenths.first().copied().unwrap_or_default(),
            throughput.tenths.last().copied().unwrap_or_default(),
            throughput.change_percent(),
            mib(footprint.database_bytes as u64),
            footprint.relations
        ));
    }
    if let Some(failover) = &report.nats_cluster {
        out.push_str(&nats_failover::markdown(failover));
    }
    out.push_str("\n`kubernetes_pods` after each pods refresh with churn (heap + TOAST, indexes):\n\n| refresh | rows | table MiB | index MiB |\n|---|---|---|---|\n");
    out.push_str(&format!(
        "| first load | {} | {:.1} | {:.1} |\n",
        report.after_first_load.pods_rows,
        mib(report.after_first_load.pods_table_bytes as u64),
        mib(report.after_first_load.pods_index_bytes as u64)
    ));
    for (n, footprint) in report.pod_refreshes.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} |\n",
            n + 1,
            footprint.pods_rows,
            mib(footprint.pods_table_bytes as u64),
            mib(footprint.pods_index_bytes as u64)
        ));
    }
    out.push_str(&format!("\nQueries after waiting {:.0} s for autovacuum to catch up:\n", report.autovacuum_wait_s));
    out.push_str("\n| query | median ms | max ms | planning ms | execution ms | fresh connection ms |\n|---|---|---|---|---|---|\n");
    for query in &report.queries {
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} |\n",
            query.name, query.median_ms, query.max_ms, query.planning_ms, query.execution_ms, query.fresh_connection_ms
        ));
    }
    out.push_str("\nTargets:\n\n| target | measured | met |\n|---|---|---|\n");
    for v in &report.verdicts {
        out.push_str(&format!("{}\n", v.markdown_row()));
    }
    out.push_str(
        "\nPages of unhealthy objects, the explorer's API (round trips on loopback) and the queries as viewers \
         (access control):\n",
    );
    out.push_str("\n| request or query | rows | median ms | max ms |\n|---|---|---|---|\n");
    for timing in report.pages.iter().chain(&report.viewers) {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} |\n",
            timing.name, timing.rows_returned, timing.median_ms, timing.max_ms
        ));
    }
    let readers = &report.readers;
    out.push_str(&format!(
        "\n{} concurrent fleet-wide readers for {:.0} s: {} queries, {} errors{}, p50 {:.0} ms, p95 {:.0} ms.\n\nTotal {:.0} s.\n",
        readers.readers,
        readers.seconds,
        readers.queries,
        readers.errors,
        readers.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
        readers.p50_ms,
        readers.p95_ms,
        report.total_s
    ));
    if let Some(standby) = &report.standby {
        out.push_str(&format!(
            "\nWith a hot standby attached for the first load and the refresh: replay lag p50 {:.0} ms, p99 {:.0} ms, \
             max {:.0} ms ({} samples); {} readers on it ({} ms between reads), {} reads, {} torn, {} errors{}, {} conflicts (cancelled queries); \
             the primary's walsender used {:.1} CPU s of the machine's {:.0} busy CPU s ({:.2} %).\n",
            standby.lag_p50_ms,
            standby.lag_p99_ms,
            standby.lag_max_ms,
            standby.lag_samples,
            standby.readers,
            standby.reader_pause_ms,
            standby.reads,
            standby.torn,
            standby.errors,
            standby.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
            standby.conflicts,
            standby.walsender_cpu_s,
            standby.machine_busy_cpu_s,
            100.0 * standby.walsender_cpu_s / standby.machine_busy_cpu_s.max(f64::EPSILON)
        ));
    }
    out
}
