//! Decommissioned clusters: a cluster missing from every registry source for `--prune-after` is
//! pruned. Its rows in every table (`fleet_unhealthy_objects` and the summaries too) and its `snapshots` are deleted in one transaction, its
//! `clusters` row is marked `removed_at`, and a `runs` row with status `pruned` records it. Until
//! then its rows stay, and `snapshots` shows them ageing.
//!
//! Two scheduler replicas may prune at once: the `clusters` row is locked and checked again in
//! the transaction, so one prunes and the other finds nothing to do. A cluster that comes back
//! starts afresh ([`super::sync_clusters`]).

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::{
    fleet_view,
    sql::{Ident, Qualified},
    summaries,
};
use crate::{
    Result,
    model::catalog::{CLUSTER_COLUMN, Catalog},
    store::runs::Status,
};

/// A cluster pruned, and the rows deleted with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    pub cluster: String,
    pub rows_deleted: u64,
}

/// Notes since when each cluster missing from `present` (every cluster of a registry read from
/// every source) has been missing, and prunes those missing for longer than `prune_after`: their
/// rows of every table of `catalog`. `pruner` names the process in the `pruned` run
/// (`runs.worker_id`).
pub async fn prune_absent(
    pool: &PgPool,
    catalog: &Catalog,
    present: &[String],
    prune_after: Duration,
    pruner: &str,
) -> Result<Vec<Pruned>> {
    sqlx::query(
        "UPDATE clusters SET absent_since = now()
         WHERE removed_at IS NULL AND absent_since IS NULL AND NOT (name = ANY($1))",
    )
    .bind(present)
    .execute(pool)
    .await?;
    let due: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM clusters
         WHERE removed_at IS NULL AND absent_since < now() - $2::interval AND NOT (name = ANY($1)) ORDER BY name",
    )
    .bind(present)
    .bind(interval(prune_after))
    .fetch_all(pool)
    .await?;
    let mut pruned = Vec::new();
    for cluster in due {
        if let Some(rows_deleted) = prune(pool, catalog, &cluster, prune_after, pruner).await? {
            tracing::info!(cluster, rows_deleted, "pruned a cluster missing from every registry source");
            pruned.push(Pruned { cluster, rows_deleted });
        }
    }
    Ok(pruned)
}

/// Prunes one cluster in one transaction, if it is still due (not pruned by another replica,
/// not back); returns the rows deleted.
async fn prune(
    pool: &PgPool,
    catalog: &Catalog,
    cluster: &str,
    prune_after: Duration,
    pruner: &str,
) -> Result<Option<u64>> {
    let mut tx = pool.begin().await?;
    let absent_since: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT absent_since FROM clusters
         WHERE name = $1 AND removed_at IS NULL AND absent_since < now() - $2::interval FOR UPDATE",
    )
    .bind(cluster)
    .bind(interval(prune_after))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(absent_since) = absent_since else {
        return Ok(None);
    };
    let column = Ident::new(CLUSTER_COLUMN)?;
    let mut rows_deleted = 0;
    for (_, table) in catalog.tables() {
        let name = Qualified { schema: Ident::new("public")?, name: Ident::new(&table.name)? };
        let deleted =
            sqlx::query(&format!("DELETE FROM {name} WHERE {column} = $1")).bind(cluster).execute(&mut *tx).await?;
        rows_deleted += deleted.rows_affected();
    }
    for derived in std::iter::once(fleet_view::UNHEALTHY_TABLE).chain(summaries::TABLES) {
        let derived = Ident::new(derived)?;
        sqlx::query(&format!("DELETE FROM {derived} WHERE {column} = $1")).bind(cluster).execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM snapshots WHERE cluster_name = $1").bind(cluster).execute(&mut *tx).await?;
    super::access::permissions::recompute_cluster(&mut tx, cluster, true).await?;
    sqlx::query("UPDATE clusters SET removed_at = now() WHERE name = $1").bind(cluster).execute(&mut *tx).await?;
    sqlx::query(
        "INSERT INTO runs (run_id, cluster_name, attempt, worker_id, scheduled_at, finished_at, status, rows_deleted, error)
         VALUES ($1, $2, 1, $3, now(), now(), $4, $5, $6)",
    )
    .bind(Uuid::new_v4())
    .bind(cluster)
    .bind(pruner)
    .bind(Status::Pruned.as_str())
    .bind(rows_deleted as i64)
    .bind(format!("missing from every registry source since {absent_since}"))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(rows_deleted))
}

/// A duration as a PostgreSQL interval literal.
fn interval(duration: Duration) -> String {
    format!("{} milliseconds", duration.as_millis())
}
