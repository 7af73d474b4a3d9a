//! How complete the fleet's copy is, as the explorer's banner says it ("72 of 100 clusters
//! loaded; 3 failing: …; RBAC of 2 clusters older than 5 min"), and each cluster's last good
//! listing of each table.
//!
//! A cluster is *loaded* once it has a snapshot (`snapshots`, one per successful replace) and
//! no table it has none of is still being listed (a run `running` or `retrying`). It is
//! *failing* when the latest run of one of its tables in the last [`FAILING_WINDOW_SECONDS`]
//! failed. Its RBAC is as old as the oldest snapshot of its RBAC tables. Under row-level security
//! each count covers the clusters the role can see.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::Result;

/// The window of runs read for failures: long enough for every table's schedule to have run.
pub const FAILING_WINDOW_SECONDS: f64 = 3600.0;
/// RBAC older than this is named in the banner: permissions are as fresh as the last RBAC refresh.
pub const RBAC_STALE_SECONDS: f64 = 300.0;
/// The tables whose age is the age of a cluster's permissions.
pub const RBAC_TABLES: [&str; 4] = [
    "kubernetes_role_binding_subjects",
    "kubernetes_role_policy_rules",
    "kubernetes_cluster_role_binding_subjects",
    "kubernetes_cluster_role_policy_rules",
];
/// At most this many failing tables are listed (all are counted).
const FAILING_LISTED: i64 = 100;

/// A table whose latest run failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct Failing {
    pub cluster_name: String,
    pub table_name: String,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
}

/// The fleet's completeness.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Completeness {
    /// The registry's clusters (not pruned).
    pub clusters: i64,
    pub loaded: i64,
    /// The clusters not loaded yet, by name.
    pub loading: Vec<String>,
    /// How many clusters have a failing table.
    pub failing_clusters: i64,
    /// The failing tables, at most 100, by cluster and table.
    pub failing: Vec<Failing>,
    /// The clusters whose RBAC is older than [`RBAC_STALE_SECONDS`].
    pub rbac_stale: Vec<String>,
}

impl Completeness {
    /// Whether anything is missing or old.
    pub fn incomplete(&self) -> bool {
        self.loaded < self.clusters || self.failing_clusters > 0 || !self.rbac_stale.is_empty()
    }
}

/// The fleet's completeness, in three statements.
///
/// # Errors
/// [`crate::Error::Sql`] from PostgreSQL.
pub async fn completeness(conn: &mut PgConnection) -> Result<Completeness> {
    let (clusters, loading): (i64, Vec<String>) = sqlx::query_as(
        "SELECT count(*), coalesce(array_agg(c.name ORDER BY c.name) FILTER (WHERE NOT c.loaded), '{}')
         FROM (SELECT name, EXISTS (SELECT FROM snapshots s WHERE s.cluster_name = clusters.name)
                 AND NOT EXISTS (SELECT FROM runs r WHERE r.cluster_name = clusters.name
                                   AND r.status IN ('running', 'retrying')
                                   AND NOT EXISTS (SELECT FROM snapshots s WHERE s.cluster_name = r.cluster_name
                                                     AND s.table_name = r.table_name)) AS loaded
               FROM clusters WHERE removed_at IS NULL) c",
    )
    .fetch_one(&mut *conn)
    .await?;
    let failing: Vec<FailingRow> = sqlx::query_as(
        "WITH latest AS (
           SELECT DISTINCT ON (cluster_name, table_name) cluster_name, table_name, status, error, started_at
           FROM runs
           WHERE started_at > now() - make_interval(secs => $1)
             AND status NOT IN ('superseded', 'rejected', 'handed_back', 'running')
             AND cluster_name IN (SELECT name FROM clusters WHERE removed_at IS NULL)
           ORDER BY cluster_name, table_name, started_at DESC),
         failed AS (SELECT * FROM latest WHERE status = 'failed')
         SELECT cluster_name, table_name, error, started_at,
                (SELECT count(DISTINCT cluster_name) FROM failed) AS clusters
         FROM failed ORDER BY cluster_name, table_name LIMIT $2",
    )
    .bind(FAILING_WINDOW_SECONDS)
    .bind(FAILING_LISTED)
    .fetch_all(&mut *conn)
    .await?;
    let failing_clusters = failing.first().map_or(0, |row| row.clusters);
    let rbac_stale: Vec<String> = sqlx::query_scalar(
        "SELECT s.cluster_name FROM snapshots s JOIN clusters c ON c.name = s.cluster_name AND c.removed_at IS NULL
         WHERE s.table_name = ANY($1) GROUP BY 1
         HAVING min(s.swapped_at) < now() - make_interval(secs => $2) ORDER BY 1",
    )
    .bind(RBAC_TABLES.as_slice())
    .bind(RBAC_STALE_SECONDS)
    .fetch_all(&mut *conn)
    .await?;
    let loaded = clusters - i64::try_from(loading.len()).unwrap_or(i64::MAX);
    Ok(Completeness {
        clusters,
        loaded,
        loading,
        failing_clusters,
        failing: failing.into_iter().map(|row| row.failing).collect(),
        rbac_stale,
    })
}

#[derive(sqlx::FromRow)]
struct FailingRow {
    #[sqlx(flatten)]
    failing: Failing,
    clusters: i64,
}

/// One table of one cluster: its last good listing and its latest run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct TableState {
    pub cluster_name: String,
    pub table_name: String,
    /// When its rows were last replaced (the last good listing); `None` if never.
    pub swapped_at: Option<DateTime<Utc>>,
    pub row_count: Option<i64>,
    pub last_status: Option<String>,
    pub last_error: Option<String>,
}

/// Every table of each of `clusters` that has a snapshot or a run, by cluster and table.
///
/// # Errors
/// [`crate::Error::Sql`] from PostgreSQL.
pub async fn tables(conn: &mut PgConnection, clusters: &[String]) -> Result<Vec<TableState>> {
    Ok(sqlx::query_as(
        "WITH t AS (SELECT cluster_name, table_name FROM snapshots WHERE cluster_name = ANY($1)
                    UNION SELECT DISTINCT cluster_name, table_name FROM runs
                          WHERE cluster_name = ANY($1) AND table_name IS NOT NULL)
         SELECT t.cluster_name, t.table_name, s.swapped_at, s.row_count, r.status AS last_status, r.error AS last_error
         FROM t LEFT JOIN snapshots s USING (cluster_name, table_name)
         LEFT JOIN LATERAL (SELECT status, error FROM runs WHERE runs.cluster_name = t.cluster_name
                              AND runs.table_name = t.table_name ORDER BY started_at DESC LIMIT 1) r ON true
         ORDER BY 1, 2",
    )
    .bind(clusters)
    .fetch_all(conn)
    .await?)
}
