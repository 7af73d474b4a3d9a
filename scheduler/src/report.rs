//! The report: the latest run of every (cluster, table), and waiting for jobs to finish.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

/// One line of the report.
#[derive(sqlx::FromRow)]
struct LatestRun {
    cluster_name: String,
    table_name: String,
    status: String,
    rows_written: Option<i64>,
    millis: Option<f64>,
    error: Option<String>,
}

/// Prints the latest run of every (cluster, table) with the rows its snapshot holds.
pub async fn print(pool: &PgPool) -> anyhow::Result<()> {
    let runs: Vec<LatestRun> = sqlx::query_as(
        "SELECT DISTINCT ON (r.cluster_name, r.table_name)
                r.cluster_name, r.table_name, r.status, r.rows_written,
                extract(epoch FROM r.duration)::float8 * 1000 AS millis, r.error
         FROM runs r WHERE r.status <> 'running' AND r.cluster_name IS NOT NULL
         ORDER BY r.cluster_name, r.table_name, r.started_at DESC",
    )
    .fetch_all(pool)
    .await?;
    println!("{:<20} {:<26} {:<11} {:>9} {:>10}  error", "cluster", "table", "status", "rows", "ms");
    for run in runs {
        let rows = run.rows_written.map_or_else(|| "-".to_owned(), |r| r.to_string());
        let millis = run.millis.map_or_else(|| "-".to_owned(), |m| format!("{m:.0}"));
        let (cluster, table, status) = (run.cluster_name, run.table_name, run.status);
        println!("{cluster:<20} {table:<26} {status:<11} {rows:>9} {millis:>10}  {}", run.error.unwrap_or_default());
    }
    let snapshots: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT cluster_name, table_name, row_count FROM snapshots ORDER BY 1, 2")
            .fetch_all(pool)
            .await?;
    println!("\nrows held now per (cluster, table):");
    for (cluster, table, rows) in snapshots {
        println!("  {cluster:<20} {table:<26} {rows:>9}");
    }
    Ok(())
}

/// Waits until every job in `job_ids` has a finished run that will not be retried.
pub async fn wait_for(pool: &PgPool, job_ids: &[Uuid]) -> anyhow::Result<()> {
    let mut last_done = usize::MAX;
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT job_id) FROM runs WHERE job_id = ANY($1)
             AND status IN ('succeeded', 'failed', 'skipped', 'superseded', 'rejected')",
        )
        .bind(job_ids)
        .fetch_one(pool)
        .await?;
        let done = done as usize;
        if done != last_done {
            tracing::info!(done, total = job_ids.len(), "waiting for jobs");
            last_done = done;
        }
        if done >= job_ids.len() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
