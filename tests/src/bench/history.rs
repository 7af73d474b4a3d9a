//! Change history's cost: a full refresh of the fleet after churn (5 % of every cluster's pods
//! replaced, 2 % of its deployments given a new image), with change history and without it
//! (`--change-history false`), the change rows it wrote, a refresh of the unchanged fleet (no
//! change row), and the README's History queries, verbatim.

use std::fmt::Write;

use serde::Serialize;

use super::{
    env::BenchEnv,
    queries::{self, QueryTiming},
    refresh::{self, RoundResult, RoundSpec},
};
use crate::fleet::{Fleet, WorkloadChurn};

/// The SQL statements of the README's "History" section before its events subsection, each
/// with its leading comment line.
pub fn readme_history_queries() -> Vec<String> {
    crate::readme::sql_statements("## History")
}

/// The README's History queries named by their comment line, with its example names
/// (`'sim-01'`, `'team-c-search'`, `'web'`) replaced by the deployment with the most recorded
/// changes and its cluster, so that they find rows at any fleet size (the bench's clusters are
/// `sim-001` or `sim-0001` past 99).
///
/// # Errors
/// From PostgreSQL; none recorded for a deployment leaves the names as they are.
pub async fn readme_history_queries_on(pool: &sqlx::PgPool) -> anyhow::Result<Vec<(String, String)>> {
    let busiest: Option<(String, String, String)> = sqlx::query_as(
        "SELECT cluster_name, namespace, name FROM object_changes WHERE table_name = 'kubernetes_deployments'
         GROUP BY 1, 2, 3 ORDER BY count(*) DESC, 1, 2, 3 LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(readme_history_queries()
        .into_iter()
        .map(|sql| {
            let sql = match &busiest {
                Some((cluster, namespace, name)) => sql
                    .replace("'sim-01'", &kubecensus::store::sql::literal(cluster))
                    .replace("'team-c-search'", &kubecensus::store::sql::literal(namespace))
                    .replace("'web'", &kubecensus::store::sql::literal(name)),
                None => sql,
            };
            (sql.lines().next().unwrap_or_default().trim_start_matches("-- ").to_owned(), sql)
        })
        .collect())
}

/// What history costs.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryCost {
    /// Pods replaced and deployments changed per cluster before each churned round.
    pub pods_churned: usize,
    pub deployments_churned: usize,
    /// The churned rounds with change history and without, in the order on, off, off, on (each
    /// kind once early and once late, so the drift of a run falls on both alike).
    pub with_history: Vec<RoundResult>,
    pub without_history: Vec<RoundResult>,
    /// `object_changes` rows the first round with history wrote.
    pub changes_written: i64,
    /// `object_changes` rows a refresh of the unchanged fleet wrote (0 is the target).
    pub changes_unchanged: i64,
    pub queries: Vec<QueryTiming>,
}

/// Churns every cluster (5 % of `pods`, 2 % of its deployments, at least one of each) before
/// each of four full refreshes, with history, without, without, with; then refreshes once more
/// unchanged.
pub async fn measure(
    env: &mut BenchEnv,
    js: &async_nats::jetstream::Context,
    fleet: &Fleet,
    spec: RoundSpec<'_>,
    pods: usize,
    query_runs: usize,
) -> anyhow::Result<HistoryCost> {
    let pods_churned = (pods / 20).max(1);
    let mut deployments_churned = 0;
    let churn = |deployments_churned: &mut usize| {
        for cluster in fleet.clusters() {
            let deployments = (fleet.count(&cluster.name, "deployments") / 50).max(1);
            *deployments_churned = deployments;
            let churn = WorkloadChurn {
                deployments,
                pods_deleted: pods_churned,
                pods_added: pods_churned,
                ..WorkloadChurn::default()
            };
            fleet.churn_workloads(&cluster.name, &churn);
        }
    };
    let pool = env.pool.clone();
    let changes =
        || async { sqlx::query_scalar::<_, i64>("SELECT count(*) FROM object_changes").fetch_one(&pool).await };
    let (mut with_history, mut without_history, mut changes_written) = (Vec::new(), Vec::new(), 0);
    for (n, history) in [true, false, false, true].into_iter().enumerate() {
        churn(&mut deployments_churned);
        let before = changes().await?;
        let (label, worker_args) = match history {
            true => (format!("history-on-{n}"), Vec::new()),
            false => (format!("history-off-{n}"), vec!["--change-history".to_owned(), "false".to_owned()]),
        };
        let round = refresh::run_round(env, js, &RoundSpec { label, worker_args, ..spec.clone() }).await?;
        if n == 0 {
            changes_written = changes().await? - before;
        }
        if history {
            with_history.push(round);
        } else {
            without_history.push(round);
        }
    }
    let before = changes().await?;
    refresh::run_round(env, js, &RoundSpec { label: "history-unchanged".into(), ..spec }).await?;
    let changes_unchanged = changes().await? - before;
    let named = readme_history_queries_on(&env.pool).await?;
    let queries =
        queries::time_queries(env, named.iter().map(|(name, sql)| (name.as_str(), sql.as_str())), query_runs).await?;
    Ok(HistoryCost {
        pods_churned,
        deployments_churned,
        with_history,
        without_history,
        changes_written,
        changes_unchanged,
        queries,
    })
}

impl HistoryCost {
    /// What history adds to the wall time, in percent: the on rounds' total against the off
    /// rounds'.
    pub fn extra_percent(&self) -> f64 {
        let wall = |rounds: &[RoundResult]| rounds.iter().map(|r| r.wall_s).sum::<f64>();
        (wall(&self.with_history) / wall(&self.without_history).max(f64::EPSILON) - 1.0) * 100.0
    }

    /// The targets: history adds at most 10 % to the refresh's wall time, writes no change
    /// row for an unchanged fleet, and each README History query takes at most 100 ms.
    pub fn verdicts(&self) -> Vec<super::report::Verdict> {
        let extra = self.extra_percent();
        let mut verdicts = vec![
            super::report::Verdict {
                target: "change history adds <= 10 % to a churned full refresh's wall time".into(),
                measured: format!("{extra:+.1} % (two rounds each)"),
                met: extra <= 10.0,
            },
            super::report::Verdict {
                target: "no change row for a refresh of unchanged clusters".into(),
                measured: format!("{} rows", self.changes_unchanged),
                met: self.changes_unchanged == 0,
            },
        ];
        verdicts.extend(self.queries.iter().map(|q| super::report::Verdict {
            target: format!("README history query \"{}\" <= 100 ms", q.name),
            measured: format!("{:.1} ms median, {} rows", q.median_ms, q.rows_returned),
            met: q.median_ms <= 100.0,
        }));
        verdicts
    }

    /// The report's "History" section.
    pub fn write_markdown(&self, md: &mut String) -> std::fmt::Result {
        writeln!(md, "## History\n")?;
        writeln!(
            md,
            "Full refresh after churning every cluster ({} pods replaced, {} deployments given a new image):\n",
            self.pods_churned, self.deployments_churned
        )?;
        writeln!(md, "| change history | wall s | rows/s | jobs p50 ms | jobs p95 ms |\n|---|---|---|---|---|")?;
        // In the order they ran: on, off, off, on.
        let (on, off) = (&self.with_history, &self.without_history);
        let rounds = on.first().map(|r| ("on", r)).into_iter().chain(off.iter().map(|r| ("off", r)));
        for (label, round) in rounds.chain(on.get(1).map(|r| ("on", r))) {
            writeln!(
                md,
                "| {label} | {:.1} | {:.0} | {:.0} | {:.0} |",
                round.wall_s, round.rows_per_s, round.all_p50_ms, round.all_p95_ms
            )?;
        }
        let extra = self.extra_percent();
        writeln!(
            md,
            "\nHistory adds {extra:+.1} % wall time (the on rounds' total against the off rounds'); the first round \
             with it wrote {} change rows; a refresh of the unchanged fleet wrote {}.\n",
            self.changes_written, self.changes_unchanged
        )?;
        writeln!(md, "| README history query | rows | median ms | max ms |\n|---|---|---|---|")?;
        for q in &self.queries {
            writeln!(md, "| {} | {} | {:.1} | {:.1} |", q.name, q.rows_returned, q.median_ms, q.max_ms)?;
        }
        writeln!(md)
    }
}
