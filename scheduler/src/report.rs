//! The report: the latest run of every (cluster, table), and waiting for jobs to finish.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

/// Prints the latest run of every (cluster, table) with the rows its snapshot holds.
pub async fn print(pool: &PgPool) -> anyhow::Result<()> {
    let rows: Vec<(String, String, String, Option<i64>, Option<f64>, Option<String>)> = sqlx::query_as(
        "SELECT DISTINCT ON (r.cluster_name, r.table_name)
                r.cluster_name, r.table_name, r.status, r.rows_written,
                extract(epoch FROM r.duration)::float8 * 1000, r.error
         FROM runs r WHERE r.status <> 'running' AND r.cluster_name <> '?'
         ORDER BY r.cluster_name, r.table_name, r.started_at DESC",
    )
    .fetch_all(pool)
    .await?;
    println!("{:<20} {:<26} {:<11} {:>9} {:>10}  error", "cluster", "table", "status", "rows", "ms");
    for (cluster, table, status, rows, millis, error) in rows {
        let rows = rows.map_or_else(|| "-".to_owned(), |r| r.to_string());
        let millis = millis.map_or_else(|| "-".to_owned(), |m| format!("{m:.0}"));
        println!("{cluster:<20} {table:<26} {status:<11} {rows:>9} {millis:>10}  {}", error.unwrap_or_default());
    }
    let snapshots: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT cluster_name, table_name, row_count FROM snapshots ORDER BY 1, 2").fetch_all(pool).await?;
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
