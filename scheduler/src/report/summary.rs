//! The report in a few lines (`--summary`): per cluster, how many jobs succeeded, were skipped or
//! failed, the rows its tables hold and its slowest job; then why the others did not succeed,
//! one line per reason however many jobs share it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Report, align_right, shortened, table};

/// One cluster's runs in numbers.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct ClusterSummary {
    pub cluster: String,
    pub succeeded: usize,
    pub skipped: usize,
    /// Every other status (`failed`, `rejected`, `superseded`, …): [`Reason::status`] names it.
    pub failed: usize,
    /// Rows the cluster's tables hold now, over the report's snapshots.
    pub rows: i64,
    /// The run that took longest, whatever its status.
    pub slowest: Option<Slowest>,
}

/// The slowest run of a cluster.
#[derive(Debug, PartialEq, Serialize)]
pub struct Slowest {
    pub table: String,
    pub millis: f64,
}

/// The runs that did not succeed for one reason.
#[derive(Debug, PartialEq, Serialize)]
pub struct Reason {
    pub status: String,
    /// The runs' error with each request path cut to `GET …`: `kubeapi` names the request in
    /// its errors, and the path differs from table to table where the reason does not.
    pub reason: String,
    pub jobs: usize,
    pub clusters: BTreeSet<String>,
    pub tables: BTreeSet<String>,
}

/// Every cluster of a report, then the reasons, the most frequent first.
#[derive(Debug, PartialEq, Serialize)]
pub struct Summary {
    pub clusters: Vec<ClusterSummary>,
    pub not_succeeded: Vec<Reason>,
}

/// Cluster names listed in a cell before the rest is only counted.
const CLUSTERS_SHOWN: usize = 3;

/// Table names listed in a cell before the rest is only counted: custom kinds' names are long.
const TABLES_SHOWN: usize = 1;

impl Summary {
    /// Sums up the runs and snapshots of `report`.
    pub fn of(report: &Report) -> Self {
        let mut clusters: BTreeMap<&str, ClusterSummary> = BTreeMap::new();
        let mut reasons: BTreeMap<(&str, String), Reason> = BTreeMap::new();
        for run in &report.runs {
            let cluster = clusters
                .entry(&run.cluster)
                .or_insert_with(|| ClusterSummary { cluster: run.cluster.clone(), ..ClusterSummary::default() });
            match run.status.as_str() {
                "succeeded" => cluster.succeeded += 1,
                "skipped" => cluster.skipped += 1,
                _ => cluster.failed += 1,
            }
            if let Some(millis) = run.millis
                && cluster.slowest.as_ref().is_none_or(|slowest| millis > slowest.millis)
            {
                cluster.slowest = Some(Slowest { table: run.table.clone(), millis });
            }
            if run.status != "succeeded" {
                let reason = without_paths(run.error.as_deref().unwrap_or_default());
                let group = reasons.entry((&run.status, reason.clone())).or_insert_with(|| Reason {
                    status: run.status.clone(),
                    reason,
                    jobs: 0,
                    clusters: BTreeSet::new(),
                    tables: BTreeSet::new(),
                });
                group.jobs += 1;
                group.clusters.insert(run.cluster.clone());
                group.tables.insert(run.table.clone());
            }
        }
        for held in &report.snapshots {
            if let Some(cluster) = clusters.get_mut(held.cluster.as_str()) {
                cluster.rows += held.rows;
            }
        }
        let mut not_succeeded: Vec<Reason> = reasons.into_values().collect();
        not_succeeded.sort_by_key(|reason| std::cmp::Reverse(reason.jobs));
        Self { clusters: clusters.into_values().collect(), not_succeeded }
    }

    /// Prints the summary as two aligned tables (the second only when some job did not succeed).
    pub fn print(&self) {
        let mut clusters = table(&["cluster", "succeeded", "skipped", "failed", "rows", "slowest job"]);
        for c in &self.clusters {
            let slowest = c.slowest.as_ref().map(|s| format!("{} ({:.0} ms)", s.table, s.millis)).unwrap_or_default();
            clusters.add_row(vec![
                c.cluster.clone(),
                c.succeeded.to_string(),
                c.skipped.to_string(),
                c.failed.to_string(),
                c.rows.to_string(),
                slowest,
            ]);
        }
        align_right(&mut clusters, 1..5);
        println!("{clusters}");
        if self.not_succeeded.is_empty() {
            return;
        }
        let mut reasons = table(&["status", "jobs", "clusters", "tables", "reason"]);
        for r in &self.not_succeeded {
            reasons.add_row(vec![
                r.status.clone(),
                r.jobs.to_string(),
                few(&r.clusters, CLUSTERS_SHOWN),
                few(&r.tables, TABLES_SHOWN),
                shortened(&r.reason),
            ]);
        }
        align_right(&mut reasons, 1..2);
        println!("\nnot succeeded, by reason:\n{reasons}");
    }
}

/// The first `shown` names, then how many more (`a, b and 7 more`); all when `shown` is all.
fn few(names: &BTreeSet<String>, shown: usize) -> String {
    let listed: Vec<&str> = names.iter().take(shown).map(String::as_str).collect();
    match names.len() - listed.len() {
        0 => listed.join(", "),
        more => format!("{} and {more} more", listed.join(", ")),
    }
}

/// `error` with the path of every request it names cut: `GET /apis/x?limit=5: 404 …` becomes
/// `GET …: 404 …` (`kubeapi` writes requests as `GET <path>`, the path without spaces).
fn without_paths(error: &str) -> String {
    let mut out = String::with_capacity(error.len());
    let mut rest = error;
    while let Some(at) = rest.find("GET /") {
        out.push_str(&rest[..at]);
        out.push_str("GET …");
        let path = &rest[at + "GET ".len()..];
        let end = path.find(char::is_whitespace).unwrap_or(path.len());
        rest = &path[path[..end].strip_suffix(':').map_or(end, str::len)..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Held, LatestRun};

    fn run(cluster: &str, table: &str, status: &str, millis: f64, error: Option<&str>) -> LatestRun {
        LatestRun {
            cluster: cluster.into(),
            table: table.into(),
            status: status.into(),
            rows: None,
            inserted: None,
            deleted: None,
            throttled: 0,
            millis: Some(millis),
            error: error.map(Into::into),
        }
    }

    #[test]
    fn request_paths_are_cut_so_one_reason_is_one_line() {
        assert_eq!(
            without_paths("cluster does not serve this resource: GET /apis/argoproj.io?limit=5: 404 Not Found"),
            "cluster does not serve this resource: GET …: 404 Not Found"
        );
        assert_eq!(without_paths("GET /api/v1/pods reading the response: reset"), "GET … reading the response: reset");
        assert_eq!(without_paths("GET /a: x; GET /b"), "GET …: x; GET …");
        assert_eq!(without_paths("connection refused"), "connection refused");
    }

    #[test]
    fn each_cluster_is_counted_and_jobs_that_share_a_reason_are_grouped() {
        let not_served =
            |group: &str| format!("cluster does not serve this resource: GET /apis/{group}: 404 Not Found");
        let report = Report {
            runs: vec![
                run("a", "kubernetes_pods", "succeeded", 40.0, None),
                run("a", "kubernetes_nodes", "succeeded", 90.0, None),
                run("b", "kubernetes_pods", "failed", 10.0, Some("cluster: connection refused")),
                run("b", "kubernetes_nodes", "failed", 12.0, Some("cluster: connection refused")),
                run("b", "x/argoproj.io/Application", "skipped", 3.0, Some(&not_served("argoproj.io"))),
                run("b", "x/cert-manager.io/Certificate", "skipped", 4.0, Some(&not_served("cert-manager.io"))),
                run("a", "x/cert-manager.io/Certificate", "skipped", 5.0, Some(&not_served("cert-manager.io"))),
            ],
            snapshots: vec![
                Held { cluster: "a".into(), table: "kubernetes_pods".into(), rows: 200 },
                Held { cluster: "a".into(), table: "kubernetes_nodes".into(), rows: 5 },
            ],
            replay_lag_seconds: None,
        };
        let summary = Summary::of(&report);
        let counts: Vec<_> =
            summary.clusters.iter().map(|c| (c.cluster.as_str(), c.succeeded, c.skipped, c.failed, c.rows)).collect();
        assert_eq!(counts, [("a", 2, 1, 0, 205), ("b", 0, 2, 2, 0)]);
        assert_eq!(summary.clusters[0].slowest, Some(Slowest { table: "kubernetes_nodes".into(), millis: 90.0 }));
        let reasons: Vec<_> =
            summary.not_succeeded.iter().map(|r| (r.status.as_str(), r.jobs, few(&r.clusters, 1))).collect();
        assert_eq!(reasons, [("skipped", 3, "a and 1 more".to_owned()), ("failed", 2, "b".to_owned())]);
        assert_eq!(
            few(&summary.not_succeeded[0].tables, 2),
            "x/argoproj.io/Application, x/cert-manager.io/Certificate"
        );
    }

    #[test]
    fn a_long_list_of_names_is_counted() {
        let names: BTreeSet<String> = ["a", "b", "c", "d"].map(String::from).into();
        assert_eq!(few(&names, 2), "a, b and 2 more");
        assert_eq!(few(&names, 4), "a, b, c, d");
    }
}
