//! PostgreSQL: the data tables, staging, and the atomic swap of one cluster's rows.
//!
//! Every data table is LIST-partitioned by `cluster_name`; a cluster's rows are one partition,
//! kept in the `kubecensus_partitions` schema. A job loads a fresh table (staging) with COPY,
//! builds its indexes and the partition CHECK outside any lock, then swaps it in with one short
//! transaction: DETACH the old partition, ATTACH the new one, record the snapshot and the run,
//! COMMIT. A reader sees the old rows or the new rows, never a mix and never none. The swap
//! takes a brief ACCESS EXCLUSIVE lock on the parent, bounded by `lock_timeout` and retried,
//! so a long-running reader delays a swap rather than stalling every other reader. Staging
//! tables are logged tables: an attached partition must survive a PostgreSQL crash.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, postgres::PgPoolOptions};
use uuid::Uuid;

use crate::{
    Error, Result,
    catalog::{CLUSTER_COLUMN, Resource, Table, catalog},
    flatten::Layout,
    job::Job,
    registry::Registry,
    runs::{self, Outcome},
};

/// The migrations in `migrations/`, embedded.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The schema holding every partition and staging table.
pub const PARTITIONS_SCHEMA: &str = "kubecensus_partitions";

/// How long a swap may wait for a table lock before it gives up and retries.
const SWAP_LOCK_TIMEOUT: &str = "200ms";
/// How many times a swap is tried when it cannot get its lock in time.
const SWAP_TRIES: u32 = 20;

/// Opens a pool; `max_connections` should cover a worker's concurrency plus one.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await
        .map_err(|err| Error::Database(format!("cannot connect to PostgreSQL: {err}")))
}

/// Applies the migrations and creates (or extends) every catalog table for the registry's fields.
pub async fn prepare(pool: &PgPool, registry: &Registry) -> Result<()> {
    MIGRATOR.run(pool).await.map_err(|err| Error::Database(format!("migrations: {err}")))?;
    ensure_tables(pool, &registry.field_names()).await
}

/// Creates each catalog table that is missing, with `fields` as columns after `cluster_name`,
/// and adds field columns that are missing to existing tables. Safe to run from many processes.
pub async fn ensure_tables(pool: &PgPool, fields: &[String]) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('kubecensus ensure_tables', 0))")
        .execute(&mut *tx)
        .await?;
    for (_, table) in catalog().tables() {
        let layout = Layout { table, fields };
        let columns: Vec<String> = layout
            .column_names()
            .into_iter()
            .map(|name| {
                let ty = table.columns.iter().find(|c| c.name == name).map_or("text", |c| c.ty.sql_type());
                let not_null = if name == CLUSTER_COLUMN { " NOT NULL" } else { "" };
                format!("{name} {ty}{not_null}")
            })
            .collect();
        let name = &table.name;
        execute(
            &mut tx,
            format!("CREATE TABLE IF NOT EXISTS public.{name} ({}) PARTITION BY LIST ({CLUSTER_COLUMN})", columns.join(", ")),
        )
        .await?;
        for field in fields {
            execute(&mut tx, format!("ALTER TABLE public.{name} ADD COLUMN IF NOT EXISTS {field} text")).await?;
        }
        for index in index_definitions(table) {
            execute(&mut tx, format!("CREATE INDEX IF NOT EXISTS {name}_{} ON public.{name} {}", index.name, index.definition))
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// One index of a data table: a name suffix and what follows `ON <table>`.
struct IndexDefinition {
    name: String,
    definition: String,
}

/// The indexes of a table, created alike on the parent and on every staging table (so that
/// ATTACH adopts them instead of building them under its lock): lookups by namespace and name,
/// GIN on labels, and the catalog's own.
fn index_definitions(table: &Table) -> Vec<IndexDefinition> {
    let mut lookups: Vec<Vec<&str>> = vec![if table.has_column("namespace") { vec!["namespace", "name"] } else { vec!["name"] }];
    lookups.extend(table.indexes.iter().map(|columns| columns.iter().map(String::as_str).collect()));
    let mut indexes: Vec<IndexDefinition> = lookups
        .into_iter()
        .map(|columns| IndexDefinition { name: columns.join("_"), definition: format!("({})", columns.join(", ")) })
        .collect();
    if table.has_column("labels") {
        indexes.push(IndexDefinition { name: "labels".into(), definition: "USING gin (labels)".into() });
    }
    indexes
}

async fn execute(conn: &mut PgConnection, sql: String) -> Result<()> {
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await?;
    Ok(())
}

/// Records the registry in `clusters`: names, servers and fields, never credentials.
pub async fn sync_clusters(pool: &PgPool, registry: &Registry) -> Result<()> {
    for cluster in &registry.clusters {
        let fields = serde_json::to_value(&cluster.fields).unwrap_or_default();
        sqlx::query(
            "INSERT INTO clusters (name, server, fields) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET server = EXCLUDED.server, fields = EXCLUDED.fields, updated_at = now()
             WHERE (clusters.server, clusters.fields) IS DISTINCT FROM (EXCLUDED.server, EXCLUDED.fields)",
        )
        .bind(&cluster.name)
        .bind(&cluster.server)
        .bind(fields)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Notes a successful contact with a cluster and the uid of its `kube-system` namespace.
pub async fn record_contact(pool: &PgPool, cluster: &str, cluster_uid: &str) -> Result<()> {
    sqlx::query("UPDATE clusters SET cluster_uid = $2, last_contact = now() WHERE name = $1")
        .bind(cluster)
        .bind(cluster_uid)
        .execute(pool)
        .await?;
    Ok(())
}

/// The staging tables of one job: one per table of the listed resource.
pub struct Staging {
    tables: Vec<StagedTable>,
}

struct StagedTable {
    table: &'static Table,
    /// Unqualified name in [`PARTITIONS_SCHEMA`].
    name: String,
    copy_statement: String,
    rows: u64,
}

/// What the swap did.
#[derive(Debug, PartialEq, Eq)]
pub enum SwapOutcome {
    /// The new rows are in; `rows` across the resource's tables.
    Swapped { rows: u64 },
    /// A job scheduled later had already swapped in its rows; this job's rows were dropped.
    Superseded { current: DateTime<Utc> },
}

impl Staging {
    /// Creates empty staging tables shaped like the resource's tables.
    pub async fn create(conn: &mut PgConnection, resource: &'static Resource, fields: &[String], run_id: Uuid) -> Result<Self> {
        let suffix = &run_id.simple().to_string()[..16];
        let mut tables = Vec::new();
        for table in &resource.tables {
            let name = format!("{}__{suffix}", table.name);
            execute(
                conn,
                format!("CREATE TABLE {PARTITIONS_SCHEMA}.{name} (LIKE public.{} INCLUDING DEFAULTS)", table.name),
            )
            .await?;
            let columns = Layout { table, fields }.column_names().join(", ");
            let copy_statement = format!("COPY {PARTITIONS_SCHEMA}.{name} ({columns}) FROM STDIN");
            tables.push(StagedTable { table, name, copy_statement, rows: 0 });
        }
        Ok(Self { tables })
    }

    /// Streams COPY text rows (see [`crate::flatten`]) into the staging table of `table_index`.
    pub async fn copy(&mut self, conn: &mut PgConnection, table_index: usize, rows: &[u8]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let staged = &mut self.tables[table_index];
        let mut copy = conn.copy_in_raw(&staged.copy_statement).await?;
        copy.send(rows).await?;
        staged.rows += copy.finish().await?;
        Ok(())
    }

    /// Empties the staging tables, for a listing that starts over.
    pub async fn truncate(&mut self, conn: &mut PgConnection) -> Result<()> {
        for staged in &mut self.tables {
            execute(conn, format!("TRUNCATE {PARTITIONS_SCHEMA}.{}", staged.name)).await?;
            staged.rows = 0;
        }
        Ok(())
    }

    /// Builds what ATTACH would otherwise build under its lock: the indexes, and the CHECK that
    /// proves every row belongs to `cluster`. Then refreshes the planner's statistics.
    pub async fn seal(&self, conn: &mut PgConnection, cluster: &str) -> Result<()> {
        for staged in &self.tables {
            let qualified = format!("{PARTITIONS_SCHEMA}.{}", staged.name);
            for index in index_definitions(staged.table) {
                execute(conn, format!("CREATE INDEX ON {qualified} {}", index.definition)).await?;
            }
            execute(
                conn,
                format!("ALTER TABLE {qualified} ADD CHECK ({CLUSTER_COLUMN} = {})", sql_literal(cluster)),
            )
            .await?;
            execute(conn, format!("ANALYZE {qualified}")).await?;
        }
        Ok(())
    }

    /// Swaps the staging tables in as `cluster`'s partitions, in one transaction with the run's
    /// `outcome` (its row count filled in), unless a later-scheduled job already swapped.
    /// Retries while locks are busy.
    pub async fn swap(&self, conn: &mut PgConnection, cluster: &str, job: &Job, run_id: Uuid, outcome: &Outcome) -> Result<SwapOutcome> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.try_swap(conn, cluster, job, run_id, outcome).await {
                Err(Error::Sql(sqlx::Error::Database(err))) if err.code().as_deref() == Some("55P03") && tries < SWAP_TRIES => {
                    tracing::debug!(tries, "swap lock busy, retrying");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(tries))).await;
                }
                result => return result,
            }
        }
    }

    async fn try_swap(&self, conn: &mut PgConnection, cluster: &str, job: &Job, run_id: Uuid, outcome: &Outcome) -> Result<SwapOutcome> {
        let job_table = &self.tables[0].table.name;
        let mut tx = conn.begin().await?;
        execute(&mut tx, format!("SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")).await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("swap {cluster} {job_table}"))
            .execute(&mut *tx)
            .await?;
        let current: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT scheduled_at FROM snapshots WHERE cluster_name = $1 AND table_name = $2")
                .bind(cluster)
                .bind(job_table)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(current) = current.filter(|current| *current > job.scheduled_at) {
            return Ok(SwapOutcome::Superseded { current });
        }
        let mut old_partitions = Vec::new();
        for staged in &self.tables {
            let parent = &staged.table.name;
            let bound = format!("FOR VALUES IN ({})", sql_literal(cluster));
            let old: Option<String> = sqlx::query_scalar(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = $1::regclass AND pg_get_expr(c.relpartbound, c.oid) = $2",
            )
            .bind(format!("public.{parent}"))
            .bind(&bound)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(old) = old {
                execute(&mut tx, format!("ALTER TABLE public.{parent} DETACH PARTITION {PARTITIONS_SCHEMA}.{old}")).await?;
                old_partitions.push(old);
            }
            execute(&mut tx, format!("ALTER TABLE public.{parent} ATTACH PARTITION {PARTITIONS_SCHEMA}.{} {bound}", staged.name))
                .await?;
            sqlx::query(
                "INSERT INTO snapshots (cluster_name, table_name, partition, job_id, run_id, scheduled_at, row_count)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (cluster_name, table_name) DO UPDATE SET partition = EXCLUDED.partition,
                   job_id = EXCLUDED.job_id, run_id = EXCLUDED.run_id, scheduled_at = EXCLUDED.scheduled_at,
                   row_count = EXCLUDED.row_count, swapped_at = now()",
            )
            .bind(cluster)
            .bind(parent)
            .bind(&staged.name)
            .bind(job.id)
            .bind(run_id)
            .bind(job.scheduled_at)
            .bind(staged.rows as i64)
            .execute(&mut *tx)
            .await?;
        }
        let rows = self.tables.iter().map(|t| t.rows).sum();
        runs::finish(&mut tx, run_id, &Outcome { rows_written: Some(rows), ..outcome.clone() }).await?;
        tx.commit().await?;
        // Dropping outside the swap keeps its lock short; a failure here only leaves garbage
        // for the sweep.
        for old in old_partitions {
            if let Err(err) = execute(conn, format!("DROP TABLE IF EXISTS {PARTITIONS_SCHEMA}.{old}")).await {
                tracing::warn!(%err, partition = %old, "could not drop a detached partition; the sweep will");
            }
        }
        Ok(SwapOutcome::Swapped { rows })
    }

    /// Drops the staging tables (after a failure or a superseded swap).
    pub async fn drop_tables(&self, conn: &mut PgConnection) -> Result<()> {
        for staged in &self.tables {
            execute(conn, format!("DROP TABLE IF EXISTS {PARTITIONS_SCHEMA}.{}", staged.name)).await?;
        }
        Ok(())
    }

    /// Rows loaded so far across the staging tables.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Drops tables in the partitions schema that are not attached and whose run is over or whose
/// worker stopped heartbeating: what a killed worker left behind. Their runs become `abandoned`.
pub async fn sweep_staging(pool: &PgPool, stale_after: Duration) -> Result<usize> {
    sqlx::query(
        "UPDATE runs SET status = 'abandoned', finished_at = now(), error = 'the worker stopped heartbeating'
         WHERE status = 'running' AND heartbeat_at < now() - $1::interval",
    )
    .bind(format!("{} milliseconds", stale_after.as_millis()))
    .execute(pool)
    .await?;
    let orphans: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind = 'r' AND NOT c.relispartition
           AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.status = 'running'
                           AND c.relname LIKE '%\\_\\_' || left(replace(r.run_id::text, '-', ''), 16))",
    )
    .bind(PARTITIONS_SCHEMA)
    .fetch_all(pool)
    .await?;
    let mut conn = pool.acquire().await?;
    for orphan in &orphans {
        execute(&mut conn, format!("DROP TABLE IF EXISTS {PARTITIONS_SCHEMA}.{orphan}")).await?;
    }
    Ok(orphans.len())
}

/// A SQL string literal. Only ever given checked cluster names, but quoted properly anyway.
fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
