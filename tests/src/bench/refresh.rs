//! One refresh round: start W worker processes, publish a refresh of everything (`scheduler
//! refresh`, exactly as an operator would), wait until the stream is empty and no run is
//! running, then read the figures from `runs` and each worker's peak RSS from `/proc`. Something
//! may run beside the wait ([`run_round_with`]: a node of a JetStream cluster killed).

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::env::BenchEnv;

/// How one refresh round is run.
#[derive(Debug, Clone)]
pub struct RoundSpec<'a> {
    /// Names the workers (`<label>-w1`, …) and the round in the report.
    pub label: String,
    pub registry: &'a Path,
    pub workers: usize,
    pub concurrency: usize,
    pub page_size: u32,
    /// Gives up waiting for the runs after this long.
    pub timeout: Duration,
    /// Refresh only these tables (`scheduler refresh --table`); every table when empty.
    pub tables: Vec<String>,
    /// More worker arguments (`--change-history false`).
    pub worker_args: Vec<String>,
}

/// Per-table figures of a round, from `runs`.
#[derive(Debug, Clone, Serialize)]
pub struct TableStats {
    pub table: String,
    pub jobs: i64,
    pub rows: i64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

/// What a round measured.
#[derive(Debug, Clone, Serialize)]
pub struct RoundResult {
    pub label: String,
    pub workers: usize,
    pub concurrency: usize,
    pub page_size: u32,
    /// Jobs the refresh queued.
    pub jobs: usize,
    /// Runs by status (a retried job has several).
    pub statuses: BTreeMap<String, i64>,
    /// Rows written by the succeeded runs, across every table.
    pub rows: i64,
    /// From starting `scheduler refresh` to the last job acked.
    pub wall_s: f64,
    pub rows_per_s: f64,
    pub jobs_per_s: f64,
    /// `runs.duration` (start of the run to the start of its swap transaction) per table.
    pub tables: Vec<TableStats>,
    /// All jobs together.
    pub all_p50_ms: f64,
    pub all_p95_ms: f64,
    /// The median time between one run's end and the next one's: with one job at a time, the
    /// wall time of a job, queue and bookkeeping included.
    pub finish_gap_p50_ms: f64,
    /// Peak RSS (VmHWM) of each worker process, bytes.
    pub worker_peak_rss: Vec<(String, u64)>,
}

/// A round's refresh, just published: what runs beside the round's wait is given.
#[derive(Debug, Clone)]
pub struct PublishedRound {
    /// The database's clock before the refresh was published: the round's runs start after it.
    pub since: DateTime<Utc>,
    /// The ids of the jobs queued, one per (cluster, table).
    pub jobs: Vec<Uuid>,
}

/// Runs one round; the workers are stopped at the end.
pub async fn run_round(
    env: &mut BenchEnv,
    js: &async_nats::jetstream::Context,
    spec: &RoundSpec<'_>,
) -> anyhow::Result<RoundResult> {
    Ok(run_round_with(env, js, spec, |_| async { Ok(()) }).await?.0)
}

/// Runs one round as [`run_round`] does, with `during` beside the wait for its runs from the
/// moment its refresh is published; the round ends when both have. Returns what `during` did.
/// While it runs, NATS may not answer (the round's wait asks again until `spec.timeout`).
pub async fn run_round_with<T, Fut>(
    env: &mut BenchEnv,
    js: &async_nats::jetstream::Context,
    spec: &RoundSpec<'_>,
    during: impl FnOnce(PublishedRound) -> Fut,
) -> anyhow::Result<(RoundResult, T)>
where
    Fut: Future<Output = anyhow::Result<T>>,
{
    let extra = vec![
        "--concurrency".to_owned(),
        spec.concurrency.to_string(),
        "--page-size".to_owned(),
        spec.page_size.to_string(),
    ]
    .into_iter()
    .chain(spec.worker_args.iter().cloned())
    .collect::<Vec<_>>();
    env.start_workers(&spec.label, spec.workers, spec.registry, &extra).await?;
    let result = measure(env, js, spec, during).await;
    let peaks = env.worker_peaks();
    env.stop_workers().await?;
    let (mut result, during) = result?;
    result.worker_peak_rss = peaks;
    Ok((result, during))
}

/// Refreshes everything with the workers already running, and measures.
async fn measure<T, Fut>(
    env: &BenchEnv,
    js: &async_nats::jetstream::Context,
    spec: &RoundSpec<'_>,
    during: impl FnOnce(PublishedRound) -> Fut,
) -> anyhow::Result<(RoundResult, T)>
where
    Fut: Future<Output = anyhow::Result<T>>,
{
    let t0: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(&env.pool).await?;
    let started = Instant::now();
    let mut args = vec!["refresh", "--output", "json"];
    for table in &spec.tables {
        args.extend(["--table", table.as_str()]);
    }
    let out: serde_json::Value = serde_json::from_str(&env.scheduler(spec.registry, &args).await?)?;
    let published = out["published"].as_array().context("`scheduler refresh --output json` without `published`")?;
    let queued: Vec<Uuid> = published
        .iter()
        .filter(|p| p["result"] == "queued")
        .filter_map(|p| p["job_id"].as_str()?.parse().ok())
        .collect();
    let jobs = queued.len();
    if jobs < published.len() {
        tracing::warn!(not_queued = published.len() - jobs, "some jobs were not queued (already pending or duplicate)");
    }
    tracing::info!(
        round = spec.label,
        jobs,
        publish_s = started.elapsed().as_secs_f64(),
        "refresh published; waiting for the runs"
    );
    let beside = during(PublishedRound { since: t0, jobs: queued });
    let (wall, beside) = tokio::try_join!(wait_for_runs(env, js, spec, t0, started), beside)?;
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM runs WHERE started_at >= $1 GROUP BY 1 ORDER BY 1")
            .bind(t0)
            .fetch_all(&env.pool)
            .await?;
    let statuses: BTreeMap<String, i64> = statuses.into_iter().collect();
    for (status, count) in &statuses {
        if status != "succeeded" {
            tracing::warn!(round = spec.label, status, count, "runs that did not succeed");
        }
    }
    let tables: Vec<(String, i64, i64, f64, f64, f64)> = sqlx::query_as(
        "SELECT table_name, count(*), coalesce(sum(rows_written), 0)::bigint,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM duration))::float8 * 1000,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM duration))::float8 * 1000,
                max(extract(epoch FROM duration))::float8 * 1000
         FROM runs WHERE started_at >= $1 AND status = 'succeeded' GROUP BY 1 ORDER BY 3 DESC, 1",
    )
    .bind(t0)
    .fetch_all(&env.pool)
    .await
    .context("reading the round's runs")?;
    let (all_p50_ms, all_p95_ms): (Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM duration))::float8 * 1000,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM duration))::float8 * 1000
         FROM runs WHERE started_at >= $1 AND status = 'succeeded'",
    )
    .bind(t0)
    .fetch_one(&env.pool)
    .await?;
    let finish_gap_p50_ms: Option<f64> = sqlx::query_scalar(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY gap) FROM (
           SELECT extract(epoch FROM finished_at - lag(finished_at) OVER (ORDER BY finished_at))::float8 * 1000 AS gap
           FROM runs WHERE started_at >= $1) gaps
         WHERE gap IS NOT NULL",
    )
    .bind(t0)
    .fetch_one(&env.pool)
    .await?;
    let rows: i64 = tables.iter().map(|t| t.2).sum();
    let wall_s = wall.as_secs_f64();
    let result = RoundResult {
        label: spec.label.clone(),
        workers: spec.workers,
        concurrency: spec.concurrency,
        page_size: spec.page_size,
        jobs,
        statuses,
        rows,
        wall_s,
        rows_per_s: rows as f64 / wall_s,
        jobs_per_s: jobs as f64 / wall_s,
        tables: tables
            .into_iter()
            .map(|(table, jobs, rows, p50_ms, p95_ms, max_ms)| TableStats { table, jobs, rows, p50_ms, p95_ms, max_ms })
            .collect(),
        all_p50_ms: all_p50_ms.unwrap_or_default(),
        all_p95_ms: all_p95_ms.unwrap_or_default(),
        finish_gap_p50_ms: finish_gap_p50_ms.unwrap_or_default(),
        worker_peak_rss: Vec::new(),
    };
    Ok((result, beside))
}

/// Waits until the stream holds no job and no run of the round (started after `t0`) runs; returns
/// the time since `started`. A NATS that does not answer (an election) is asked again.
async fn wait_for_runs(
    env: &BenchEnv,
    js: &async_nats::jetstream::Context,
    spec: &RoundSpec<'_>,
    t0: DateTime<Utc>,
    started: Instant,
) -> anyhow::Result<Duration> {
    let mut last_log = Instant::now();
    loop {
        anyhow::ensure!(started.elapsed() < spec.timeout, "round {} did not finish in {:?}", spec.label, spec.timeout);
        let pending = match env.pending_jobs(js).await {
            Ok(pending) => pending,
            Err(err) => {
                if last_log.elapsed() > Duration::from_secs(5) {
                    tracing::warn!(round = spec.label, %err, "cannot read the stream's state; asking again");
                    last_log = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let running: i64 =
            sqlx::query_scalar("SELECT count(*) FROM runs WHERE started_at >= $1 AND status = 'running'")
                .bind(t0)
                .fetch_one(&env.pool)
                .await?;
        if pending == 0 && running == 0 {
            return Ok(started.elapsed());
        }
        if last_log.elapsed() > Duration::from_secs(5) {
            let done: i64 =
                sqlx::query_scalar("SELECT count(*) FROM runs WHERE started_at >= $1 AND status <> 'running'")
                    .bind(t0)
                    .fetch_one(&env.pool)
                    .await?;
            tracing::info!(
                round = spec.label,
                done,
                running,
                pending,
                elapsed_s = started.elapsed().as_secs(),
                "progress"
            );
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The database's size on disk, bytes.
pub async fn database_size(env: &BenchEnv) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(&env.pool).await?)
}

/// Rows per data table now, largest first.
pub async fn table_rows(env: &BenchEnv) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as("SELECT table_name, sum(row_count)::bigint FROM snapshots GROUP BY 1 ORDER BY 2 DESC, 1")
        .fetch_all(&env.pool)
        .await?)
}
