//! How fresh the fleet's copy is: per table, the oldest snapshot among the registry's clusters,
//! and how many of them are older than a table's limit (`snapshots.swapped_at`, set by every
//! successful replace).

use std::time::Duration;

use sqlx::PgPool;

use crate::Result;

/// One table's freshness across the registry's clusters.
#[derive(Debug, Clone, PartialEq)]
pub struct TableFreshness {
    pub table: String,
    /// Seconds since the oldest snapshot of the table was replaced; `None` while no cluster
    /// has one.
    pub oldest_age_seconds: Option<f64>,
    /// Clusters whose snapshot of the table is older than the table's limit.
    pub stale: i64,
}

/// The freshness of each of `tables` (a table's name and the age past which its snapshot is
/// stale) among the snapshots of `clusters`. A cluster that never loaded the table has no
/// snapshot and is not counted: its failed runs say why (`runs`).
pub async fn freshness(
    pool: &PgPool,
    clusters: &[String],
    tables: &[(String, Duration)],
) -> Result<Vec<TableFreshness>> {
    let names: Vec<&str> = tables.iter().map(|(name, _)| name.as_str()).collect();
    let limits: Vec<f64> = tables.iter().map(|(_, limit)| limit.as_secs_f64()).collect();
    let rows: Vec<(String, Option<f64>, i64)> = sqlx::query_as(
        "SELECT t.table_name,
                extract(epoch FROM now() - min(s.swapped_at))::float8,
                count(*) FILTER (WHERE s.swapped_at < now() - make_interval(secs => t.limit_seconds))
         FROM unnest($1::text[], $2::float8[]) AS t(table_name, limit_seconds)
         LEFT JOIN snapshots s ON s.table_name = t.table_name AND s.cluster_name = ANY($3)
         GROUP BY t.table_name
         ORDER BY t.table_name",
    )
    .bind(&names)
    .bind(&limits)
    .bind(clusters)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(table, oldest_age_seconds, stale)| TableFreshness { table, oldest_age_seconds, stale })
        .collect())
}
