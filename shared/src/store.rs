//! PostgreSQL: the data tables, staging, and the atomic swap of one cluster's rows.
//!
//! Every data table is LIST-partitioned by `cluster_name`. Its partition for a cluster is the
//! cluster's own table, itself partitioned, holding one table of rows: all kept in the
//! `kubecensus_partitions` schema. A job loads a fresh table (staging) with COPY, builds its
//! indexes and the partition CHECK outside any lock, then swaps it in with one short
//! transaction: DETACH the old rows from the cluster's table, ATTACH the new ones, record the
//! snapshot and the run, COMMIT. A reader sees the old rows or the new rows, never a mix and
//! never none. The swap takes a brief ACCESS EXCLUSIVE lock on that cluster's tables only, so
//! readers of other clusters never wait for it; the lock wait is bounded by `lock_timeout` and
//! retried, so a long-running reader delays a swap rather than stalling every other reader.
//! Staging tables are logged tables: attached rows must survive a PostgreSQL crash.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, PgPool, postgres::PgPoolOptions};
use uuid::Uuid;

use crate::{
    Error, Result,
    catalog::{CLUSTER_COLUMN, Table, catalog},
    flatten::{self, Layout},
    job::Job,
    registry::Registry,
    runs::{self, Outcome},
};

/// The migrations in `migrations/`, embedded.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The schema holding every partition and staging table.
pub const PARTITIONS_SCHEMA: &str = "kubecensus_partitions";

/// How long a swap first waits for its table locks before it gives up and retries.
const SWAP_LOCK_TIMEOUT: Duration = Duration::from_millis(20);
/// The longest lock wait of a retried swap (the timeout doubles on every retry).
const SWAP_LOCK_TIMEOUT_MAX: Duration = Duration::from_secs(2);
/// The pause between tries, for readers queued behind the failed one to get through.
const SWAP_RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How many times a swap is tried when it cannot get its locks in time (about half a minute
/// of waiting in all).
const SWAP_TRIES: u32 = 20;
/// PostgreSQL 15 (`server_version_num`): the seal flushes statistics with
/// `pg_stat_force_next_flush()`, new in 15.
const MIN_SERVER_VERSION: i32 = 150_000;
/// COPY data goes out in messages of at most this many bytes: a connection's write buffer grows
/// to its largest message and keeps that size for the pool's lifetime.
const COPY_MESSAGE_BYTES: usize = 128 * 1024;

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
    let (version, shown): (i32, String) =
        sqlx::query_as("SELECT current_setting('server_version_num')::int, current_setting('server_version')")
            .fetch_one(pool)
            .await?;
    if version < MIN_SERVER_VERSION {
        return Err(Error::Database(format!("kubecensus needs PostgreSQL 15 or later; this server is {shown}")));
    }
    MIGRATOR.run(pool).await.map_err(|err| Error::Database(format!("migrations: {err}")))?;
    ensure_tables(pool, &registry.field_names(), &registry.namespace_field_names()).await
}

/// Creates each catalog table that is missing, with `fields` as columns after `cluster_name` and
/// `namespace_fields` after the namespace column, and adds field columns that are missing to
/// existing tables. Safe to run from many processes.
pub async fn ensure_tables(pool: &PgPool, fields: &[String], namespace_fields: &[String]) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('kubecensus ensure_tables', 0))")
        .execute(&mut *tx)
        .await?;
    for (_, table) in catalog().tables() {
        let layout = Layout { table, fields, namespace_fields };
        let columns: Vec<String> = layout
            .column_names()
            .into_iter()
            .map(|name| {
                let ty = layout.sql_type(name);
                let not_null = if name == CLUSTER_COLUMN { " NOT NULL" } else { "" };
                format!("{} {ty}{not_null}", flatten::quoted(name))
            })
            .collect();
        let name = &table.name;
        execute(
            &mut tx,
            format!(
                "CREATE TABLE IF NOT EXISTS public.{name} ({}) PARTITION BY LIST ({CLUSTER_COLUMN})",
                columns.join(", ")
            ),
        )
        .await?;
        for field in layout.extra_column_names() {
            let field = flatten::quoted(field);
            execute(&mut tx, format!("ALTER TABLE public.{name} ADD COLUMN IF NOT EXISTS {field} text")).await?;
        }
        for index in index_definitions(table, fields) {
            execute(
                &mut tx,
                format!("CREATE INDEX IF NOT EXISTS {name}_{} ON public.{name} {}", index.name, index.definition),
            )
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
/// GIN on labels, the catalog's own, and one per registry field, with `cluster_name` and the
/// namespace after it, for fleet-wide queries that filter or group by a field (region, ...):
/// they read that small index instead of every row (an index-only scan).
fn index_definitions(table: &Table, fields: &[String]) -> Vec<IndexDefinition> {
    let mut lookups: Vec<Vec<&str>> = match (table.has_column("namespace"), table.has_column("name")) {
        (true, _) => vec![vec!["namespace", "name"]],
        (false, true) => vec![vec!["name"]],
        (false, false) => vec![],
    };
    lookups.extend(table.indexes.iter().map(|columns| columns.iter().map(String::as_str).collect()));
    let mut indexes: Vec<IndexDefinition> = lookups
        .into_iter()
        .map(|columns| IndexDefinition { name: columns.join("_"), definition: format!("({})", columns.join(", ")) })
        .collect();
    if table.has_column("labels") {
        indexes.push(IndexDefinition { name: "labels".into(), definition: "USING gin (labels)".into() });
    }
    let namespace = table.namespace_column.as_ref().map(|(column, _)| format!(", {}", flatten::quoted(column)));
    indexes.extend(fields.iter().map(|field| IndexDefinition {
        name: format!("field_{field}"),
        definition: format!(
            "({}, {CLUSTER_COLUMN}{})",
            flatten::quoted(field),
            namespace.as_deref().unwrap_or_default()
        ),
    }));
    indexes
}

/// Runs `statement` (a `COPY ... FROM STDIN`) with `rows` in COPY text format; returns the
/// number of rows copied.
async fn copy_in(conn: &mut PgConnection, statement: &str, rows: &[u8]) -> Result<u64> {
    let mut copy = conn.copy_in_raw(statement).await?;
    for message in rows.chunks(COPY_MESSAGE_BYTES) {
        copy.send(message).await?;
    }
    Ok(copy.finish().await?)
}

async fn execute(conn: &mut PgConnection, sql: String) -> Result<()> {
    sqlx::Executor::execute(&mut *conn, sqlx::raw_sql(&sql)).await?;
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

/// Notes a successful contact with a cluster and the uid of its `kube-system` namespace. The
/// time is kept to the second: the many jobs of one cluster that start together then write (and
/// wait for a commit to disk) once, not once each.
pub async fn record_contact(pool: &PgPool, cluster: &str, cluster_uid: &str) -> Result<()> {
    sqlx::query(
        "UPDATE clusters SET cluster_uid = $2, last_contact = now()
         WHERE name = $1
           AND (cluster_uid IS DISTINCT FROM $2 OR last_contact IS NULL OR last_contact < now() - interval '1 second')",
    )
    .bind(cluster)
    .bind(cluster_uid)
    .execute(pool)
    .await?;
    Ok(())
}

/// The staging tables of one job: one per table of the listed resource.
pub struct Staging<'a> {
    tables: Vec<StagedTable<'a>>,
}

struct StagedTable<'a> {
    table: &'a Table,
    /// The registry's field names, each with an index.
    fields: &'a [String],
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

impl<'a> Staging<'a> {
    /// Creates empty staging tables shaped like the resource's tables, one per layout (in the
    /// resource's table order), to be loaded with the layouts' columns.
    pub async fn create(conn: &mut PgConnection, layouts: &[Layout<'a>], run_id: Uuid) -> Result<Self> {
        let mut tables = Vec::new();
        for layout in layouts {
            let table = layout.table;
            let name = staging_name(table, run_id);
            let mut create =
                format!("CREATE TABLE {PARTITIONS_SCHEMA}.{name} (LIKE public.{} INCLUDING DEFAULTS);", table.name);
            // No statistics on jsonb columns: those of whole documents serve hardly any query
            // and cost two thirds of ANALYZE's time (ours and autovacuum's).
            let unanalyzed: Vec<String> = layout
                .column_names()
                .into_iter()
                .filter(|column| layout.sql_type(column) == "jsonb")
                .map(|column| format!("ALTER COLUMN {} SET STATISTICS 0", flatten::quoted(column)))
                .collect();
            if !unanalyzed.is_empty() {
                create.push_str(&format!("ALTER TABLE {PARTITIONS_SCHEMA}.{name} {};", unanalyzed.join(", ")));
            }
            execute(conn, create).await?;
            let copy_statement = format!("COPY {PARTITIONS_SCHEMA}.{name} ({}) FROM STDIN", layout.column_list());
            tables.push(StagedTable { table, fields: layout.fields, name, copy_statement, rows: 0 });
        }
        Ok(Self { tables })
    }

    /// Streams COPY text rows (see [`crate::flatten`]) into the staging table of `table_index`.
    pub async fn copy(&mut self, conn: &mut PgConnection, table_index: usize, rows: &[u8]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let staged = &mut self.tables[table_index];
        staged.rows += copy_in(conn, &staged.copy_statement, rows).await?;
        Ok(())
    }

    /// Streams one buffer of COPY text rows per table (in the resource's table order) and
    /// empties the buffers.
    pub async fn copy_all(&mut self, conn: &mut PgConnection, rows: &mut [Vec<u8>]) -> Result<()> {
        for (index, table_rows) in rows.iter_mut().enumerate() {
            self.copy(conn, index, table_rows).await?;
            table_rows.clear();
        }
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
    /// proves every row belongs to `cluster`. Then VACUUM (ANALYZE): the planner's statistics (of
    /// the columns other than `jsonb`), and a visibility map, without which the new partition
    /// could serve no index-only scan. The session's row counts are flushed to the statistics
    /// system first: counted after the VACUUM, they would send autovacuum to vacuum and analyze
    /// every new partition again.
    pub async fn seal(&self, conn: &mut PgConnection, cluster: &str) -> Result<()> {
        execute(conn, "SELECT pg_stat_force_next_flush()".into()).await?;
        for staged in &self.tables {
            let qualified = format!("{PARTITIONS_SCHEMA}.{}", staged.name);
            // One round trip and one commit for the indexes and the CHECK.
            let mut build = String::new();
            for index in index_definitions(staged.table, staged.fields) {
                build.push_str(&format!("CREATE INDEX ON {qualified} {};", index.definition));
            }
            build
                .push_str(&format!("ALTER TABLE {qualified} ADD CHECK ({CLUSTER_COLUMN} = {});", sql_literal(cluster)));
            execute(conn, build).await?;
            execute(conn, format!("VACUUM (ANALYZE) {qualified}")).await?;
        }
        Ok(())
    }

    /// Swaps the staging tables in as `cluster`'s partitions, in one transaction with the run's
    /// `outcome` (its row count filled in), unless a later-scheduled job already swapped.
    pub async fn swap(
        &self,
        conn: &mut PgConnection,
        cluster: &str,
        job: &Job,
        run_id: Uuid,
        outcome: &Outcome,
    ) -> Result<SwapOutcome> {
        let replaced = replace(conn, cluster, job, run_id, outcome, &Rows::Staged(self)).await?;
        Ok(replaced.expect("attaching staging needs no existing partition"))
    }

    /// Rows loaded so far across the staging tables.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// The new rows of one (cluster, resource) refresh.
enum Rows<'r, 'a> {
    /// In staging tables, to attach as the cluster's partitions.
    Staged(&'r Staging<'a>),
    /// In memory, as COPY text per table (one page at most), to write into the cluster's
    /// existing partitions in place.
    InMemory(&'r [(Layout<'a>, &'r [u8])]),
}

/// Replaces a cluster's rows of a resource's tables in one short transaction with the run's
/// `outcome`, unless a later-scheduled job already did. A swap that cannot get its table locks
/// within the lock timeout gives up, lets the readers queued behind it through, and tries again
/// with twice the timeout: readers wait for a short swap, not for a long one stuck in the queue.
/// Returns `None` when rows in memory have no partition to go to yet (the cluster's first load).
async fn replace(
    conn: &mut PgConnection,
    cluster: &str,
    job: &Job,
    run_id: Uuid,
    outcome: &Outcome,
    rows: &Rows<'_, '_>,
) -> Result<Option<SwapOutcome>> {
    let mut lock_timeout = SWAP_LOCK_TIMEOUT;
    let mut tries = 0;
    loop {
        tries += 1;
        match try_replace(conn, cluster, job, run_id, outcome, rows, lock_timeout).await {
            Err(Error::Sql(sqlx::Error::Database(err)))
                if err.code().as_deref() == Some("55P03") && tries < SWAP_TRIES =>
            {
                tracing::debug!(tries, ?lock_timeout, "table lock busy, retrying");
                tokio::time::sleep(SWAP_RETRY_PAUSE).await;
                lock_timeout = (lock_timeout * 2).min(SWAP_LOCK_TIMEOUT_MAX);
            }
            result => return result,
        }
    }
}

async fn try_replace(
    conn: &mut PgConnection,
    cluster: &str,
    job: &Job,
    run_id: Uuid,
    outcome: &Outcome,
    rows: &Rows<'_, '_>,
    lock_timeout: Duration,
) -> Result<Option<SwapOutcome>> {
    let mut tx = conn.begin().await?;
    execute(&mut tx, format!("SET LOCAL lock_timeout = '{}ms'", lock_timeout.as_millis())).await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("swap {cluster} {}", job.table))
        .execute(&mut *tx)
        .await?;
    let current: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT scheduled_at FROM snapshots WHERE cluster_name = $1 AND table_name = $2")
            .bind(cluster)
            .bind(&job.table)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(current) = current.filter(|current| *current > job.scheduled_at) {
        return Ok(Some(SwapOutcome::Superseded { current }));
    }
    let bound = format!("FOR VALUES IN ({})", sql_literal(cluster));
    let parents: Vec<String> = match rows {
        Rows::Staged(staging) => staging.tables.iter().map(|staged| staged.table.name.clone()).collect(),
        Rows::InMemory(tables) => tables.iter().map(|(layout, _)| layout.table.name.clone()).collect(),
    };
    let cluster_tables: Vec<String> = parents.iter().map(|parent| cluster_table_name(parent, cluster)).collect();
    // Where the cluster's rows are now; the advisory lock keeps other swaps of them away. Rows
    // attached straight to a catalog table are only looked for when there is no cluster table.
    let attached: Vec<Attached> = sqlx::query_as::<_, (bool, Option<String>, Option<String>)>(
        "SELECT ct.oid IS NOT NULL,
                (SELECT l.relname::text FROM pg_inherits li JOIN pg_class l ON l.oid = li.inhrelid
                 WHERE li.inhparent = ct.oid),
                CASE WHEN ct.oid IS NULL THEN
                  (SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                   WHERE i.inhparent = ('public.' || t.parent)::regclass AND pg_get_expr(c.relpartbound, c.oid) = $3)
                END
         FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(parent, cluster_table, n)
         LEFT JOIN pg_class ct ON ct.oid = to_regclass($4 || '.' || t.cluster_table)
         ORDER BY n",
    )
    .bind(&parents)
    .bind(&cluster_tables)
    .bind(&bound)
    .bind(PARTITIONS_SCHEMA)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .zip(&cluster_tables)
    .map(|(row, cluster_table)| match row {
        (_, _, Some(rows)) => Attached::Rows(rows),
        (true, rows, None) => Attached::ClusterTable { table: cluster_table.clone(), rows },
        (false, _, None) => Attached::Nothing,
    })
    .collect();
    let mut detached = Vec::new();
    let (mut partitions, mut counts) = (Vec::new(), Vec::new());
    match rows {
        Rows::Staged(staging) => {
            // Every lock DETACH needs, in one statement before any change: readers of this
            // cluster then wait only for the few catalog updates below and the commit.
            let cluster_tables: Vec<String> = attached
                .iter()
                .filter_map(|now| match now {
                    Attached::ClusterTable { table, rows: Some(_) } => Some(format!("{PARTITIONS_SCHEMA}.{table}")),
                    _ => None,
                })
                .collect();
            if !cluster_tables.is_empty() {
                execute(&mut tx, format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", cluster_tables.join(", "))).await?;
            }
            for ((parent, now), staged) in parents.iter().zip(attached).zip(&staging.tables) {
                let cluster_table = match now {
                    Attached::ClusterTable { table, rows } => {
                        if let Some(old) = rows {
                            execute(
                                &mut tx,
                                format!(
                                    "ALTER TABLE {PARTITIONS_SCHEMA}.{table} DETACH PARTITION {PARTITIONS_SCHEMA}.{old}"
                                ),
                            )
                            .await?;
                            detached.push(old);
                        }
                        table
                    }
                    Attached::Rows(old) => {
                        execute(
                            &mut tx,
                            format!("ALTER TABLE public.{parent} DETACH PARTITION {PARTITIONS_SCHEMA}.{old}"),
                        )
                        .await?;
                        detached.push(old);
                        create_cluster_table(&mut tx, parent, cluster, &bound).await?
                    }
                    Attached::Nothing => create_cluster_table(&mut tx, parent, cluster, &bound).await?,
                };
                execute(
                    &mut tx,
                    format!(
                        "ALTER TABLE {PARTITIONS_SCHEMA}.{cluster_table} ATTACH PARTITION {PARTITIONS_SCHEMA}.{} {bound}",
                        staged.name
                    ),
                )
                .await?;
                partitions.push(staged.name.clone());
                counts.push(staged.rows as i64);
            }
        }
        Rows::InMemory(tables) => {
            for ((layout, text), now) in tables.iter().zip(attached) {
                let target = match now {
                    Attached::ClusterTable { rows: Some(rows), .. } | Attached::Rows(rows) => rows,
                    // Dropping the transaction rolls back whatever earlier tables did.
                    Attached::ClusterTable { rows: None, .. } | Attached::Nothing => return Ok(None),
                };
                execute(&mut tx, format!("DELETE FROM {PARTITIONS_SCHEMA}.{target}")).await?;
                let statement = format!("COPY {PARTITIONS_SCHEMA}.{target} ({}) FROM STDIN", layout.column_list());
                counts.push(copy_in(&mut tx, &statement, text).await? as i64);
                partitions.push(target);
            }
        }
    }
    sqlx::query(
        "INSERT INTO snapshots (cluster_name, table_name, partition, job_id, run_id, scheduled_at, row_count)
         SELECT $1, t.table_name, t.partition, $4, $5, $6, t.row_count
         FROM unnest($2::text[], $3::text[], $7::bigint[]) AS t(table_name, partition, row_count)
         ON CONFLICT (cluster_name, table_name) DO UPDATE SET partition = EXCLUDED.partition,
           job_id = EXCLUDED.job_id, run_id = EXCLUDED.run_id, scheduled_at = EXCLUDED.scheduled_at,
           row_count = EXCLUDED.row_count, swapped_at = now()",
    )
    .bind(cluster)
    .bind(&parents)
    .bind(&partitions)
    .bind(job.id)
    .bind(run_id)
    .bind(job.scheduled_at)
    .bind(&counts)
    .execute(&mut *tx)
    .await?;
    let total = counts.iter().sum::<i64>() as u64;
    runs::finish(&mut tx, run_id, &Outcome { rows_written: Some(total), ..outcome.clone() }).await?;
    tx.commit().await?;
    // Dropping outside the swap keeps its lock short; a failure here only leaves garbage for
    // the sweep.
    if let Err(err) = drop_tables(conn, &detached).await {
        tracing::warn!(%err, partitions = ?detached, "could not drop detached partitions; the sweep will");
    }
    Ok(Some(SwapOutcome::Swapped { rows: total }))
}

/// Where a cluster's rows of one catalog table are, before a swap.
enum Attached {
    /// Nowhere: the cluster's first load of the table.
    Nothing,
    /// In the cluster's own partitioned table (a partition of the catalog table), which holds
    /// one table of rows at a time: the one `rows` names.
    ClusterTable { table: String, rows: Option<String> },
    /// In a table of rows attached straight to the catalog table, as before cluster tables
    /// existed; its first swap moves the cluster to a cluster table.
    Rows(String),
}

/// The name of `cluster`'s partitioned table of `parent`, in the partitions schema: fixed, so a
/// swap finds it by name (`<parent>__cluster_<12 hex digits of a hash of the cluster name>`).
fn cluster_table_name(parent: &str, cluster: &str) -> String {
    let hash = Uuid::new_v5(&Uuid::NAMESPACE_OID, cluster.as_bytes()).simple().to_string();
    format!("{parent}__cluster_{}", &hash[..12])
}

/// Creates `cluster`'s partitioned table of `parent` (the partition a swap attaches the
/// cluster's rows to) and returns its name. Once per cluster and table: the only swap step that
/// locks the catalog table itself.
async fn create_cluster_table(conn: &mut PgConnection, parent: &str, cluster: &str, bound: &str) -> Result<String> {
    let name = cluster_table_name(parent, cluster);
    execute(
        conn,
        format!(
            "CREATE TABLE {PARTITIONS_SCHEMA}.{name} PARTITION OF public.{parent} {bound} PARTITION BY LIST ({CLUSTER_COLUMN})"
        ),
    )
    .await?;
    Ok(name)
}

/// Replaces a cluster's rows in place when the whole listing fit in one page: DELETE its rows
/// and COPY the new ones into its existing partitions, in one transaction. No DDL and no table
/// lock that readers wait for; under MVCC they see the old rows until the commit. Returns
/// `None` when the cluster has no partitions yet: its first load goes through staging.
pub async fn replace_in_place(
    conn: &mut PgConnection,
    cluster: &str,
    job: &Job,
    run_id: Uuid,
    outcome: &Outcome,
    tables: &[(Layout<'_>, &[u8])],
) -> Result<Option<SwapOutcome>> {
    replace(conn, cluster, job, run_id, outcome, &Rows::InMemory(tables)).await
}

/// The suffix of a run's staging table names: `<table>__<suffix>`.
fn staging_suffix(run_id: Uuid) -> String {
    run_id.simple().to_string()[..16].to_owned()
}

/// The staging table of `table` for a run.
fn staging_name(table: &Table, run_id: Uuid) -> String {
    format!("{}__{}", table.name, staging_suffix(run_id))
}

/// Drops a run's staging tables that were not swapped in: after a failure, a timeout, a
/// shutdown or a superseded swap. Attached partitions are never touched.
pub async fn drop_staging(pool: &PgPool, run_id: Uuid, tables: &[Table]) -> Result<()> {
    let candidates: Vec<String> = tables.iter().map(|table| staging_name(table, run_id)).collect();
    // By exact name (an index lookup), and never a table that is attached: a swap that
    // committed but could not report it has made them partitions.
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = ANY($2) AND c.relkind = 'r' AND NOT c.relispartition",
    )
    .bind(PARTITIONS_SCHEMA)
    .bind(&candidates)
    .fetch_all(pool)
    .await?;
    drop_tables(&mut *pool.acquire().await?, &names).await
}

/// Drops tables of the partitions schema, in one statement (one commit).
async fn drop_tables(conn: &mut PgConnection, names: &[String]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = names.iter().map(|name| format!("{PARTITIONS_SCHEMA}.{name}")).collect();
    execute(conn, format!("DROP TABLE IF EXISTS {}", list.join(", "))).await
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
    drop_tables(&mut *pool.acquire().await?, &orphans).await?;
    Ok(orphans.len())
}

/// A SQL string literal. Only ever given checked cluster names, but quoted properly anyway.
fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use serde_json::json;

    use super::*;
    use crate::{
        catalog::Resource,
        flatten::ClusterContext,
        job::{Job, Trigger},
    };

    fn pods_resource() -> &'static Resource {
        catalog().resource_of("kubernetes_pods").unwrap()
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    const FIELDS: &[String] = &[];

    fn layouts(fields: &'static [String]) -> Vec<Layout<'static>> {
        pods_resource().tables.iter().map(|table| Layout { table, fields, namespace_fields: &[] }).collect()
    }

    /// Loads `pods` pod objects (each with one container) for `cluster` into fresh staging.
    async fn staged(conn: &mut PgConnection, cluster: &str, pods: usize) -> (Staging<'static>, Uuid) {
        static REGION: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| vec!["region".to_owned()]);
        let run_id = Uuid::new_v4();
        let fields = REGION.as_slice();
        let mut staging = Staging::create(conn, &layouts(fields), run_id).await.unwrap();
        let context = ClusterContext {
            name: cluster.into(),
            uid: format!("uid-{cluster}"),
            field_values: vec![Some("eu".into())],
        };
        for (index, table) in pods_resource().tables.iter().enumerate() {
            let mut rows = Vec::new();
            for i in 0..pods {
                let pod = json!({"metadata": {"name": format!("p{i}"), "namespace": "ns", "uid": format!("{cluster}-{i}")},
                                 "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}});
                Layout { table, fields, namespace_fields: &[] }.write_rows(&pod, &context, &mut rows);
            }
            staging.copy(conn, index, &rows).await.unwrap();
        }
        staging.seal(conn, cluster).await.unwrap();
        (staging, run_id)
    }

    /// Stages and swaps `pods` pods for `cluster`; drops the staging if it was not swapped in.
    async fn swap(pool: &PgPool, cluster: &str, pods: usize, scheduled: DateTime<Utc>) -> SwapOutcome {
        let mut conn = pool.acquire().await.unwrap();
        let (staging, run_id) = staged(&mut conn, cluster, pods).await;
        let job = Job::new(cluster, "kubernetes_pods", Trigger::Schedule, scheduled).unwrap();
        let outcome = staging.swap(&mut conn, cluster, &job, run_id, &Outcome::succeeded(0)).await.unwrap();
        if !matches!(outcome, SwapOutcome::Swapped { .. }) {
            drop_staging(pool, run_id, &pods_resource().tables).await.unwrap();
        }
        outcome
    }

    async fn pods_of(pool: &PgPool, cluster: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM kubernetes_pods WHERE cluster_name = $1")
            .bind(cluster)
            .fetch_one(pool)
            .await
            .unwrap()
    }

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn tables_are_created_once_with_fields_after_cluster_name_and_extended_later(pool: PgPool) {
        ensure_tables(&pool, &["region".into()], &[]).await.unwrap();
        ensure_tables(&pool, &["region".into()], &[]).await.unwrap();
        ensure_tables(&pool, &["region".into(), "team".into()], &[]).await.unwrap();
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'kubernetes_pods' ORDER BY ordinal_position",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(columns[..4], ["uid", "cluster_name", "region", "cluster_uid"]);
        assert_eq!(columns.last().unwrap(), "team", "a field added later goes last");
    }

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn a_swap_replaces_one_clusters_rows_and_an_older_job_is_superseded(pool: PgPool) {
        ensure_tables(&pool, &["region".into()], &[]).await.unwrap();
        assert_eq!(swap(&pool, "c1", 5, at(10)).await, SwapOutcome::Swapped { rows: 10 });
        assert_eq!(swap(&pool, "c2", 7, at(10)).await, SwapOutcome::Swapped { rows: 14 });
        assert_eq!(swap(&pool, "c1", 3, at(20)).await, SwapOutcome::Swapped { rows: 6 });
        assert_eq!((pods_of(&pool, "c1").await, pods_of(&pool, "c2").await), (3, 7));
        assert_eq!(swap(&pool, "c1", 9, at(15)).await, SwapOutcome::Superseded { current: at(20) });
        assert_eq!(pods_of(&pool, "c1").await, 3, "the older job changed nothing");
        let region: String =
            sqlx::query_scalar("SELECT DISTINCT region FROM kubernetes_pod_containers").fetch_one(&pool).await.unwrap();
        assert_eq!(region, "eu");
        // Old partitions were dropped; what is left is one partition per (cluster, table).
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'",
        )
        .bind(PARTITIONS_SCHEMA)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(tables as usize, 2 * pods_resource().tables.len());
    }

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn a_sealed_table_has_statistics_but_not_of_jsonb_and_leaves_autovacuum_nothing_to_redo(pool: PgPool) {
        ensure_tables(&pool, &["region".into()], &[]).await.unwrap();
        let mut conn = pool.acquire().await.unwrap().detach();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut conn).await.unwrap();
        let (staging, _) = staged(&mut conn, "c1", 300).await;
        let pods_table = staging.tables[0].name.clone();
        // A session's counts of written rows reach the statistics system when it ends, at the latest.
        conn.close().await.unwrap();
        while sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
            .bind(pid)
            .fetch_one(&pool)
            .await
            .unwrap()
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (live, inserted, modified): (i64, i64, i64) = sqlx::query_as(
            "SELECT n_live_tup, n_ins_since_vacuum, n_mod_since_analyze FROM pg_stat_user_tables
             WHERE schemaname = $1 AND relname = $2",
        )
        .bind(PARTITIONS_SCHEMA)
        .bind(&pods_table)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((live, inserted, modified), (300, 0, 0), "autovacuum would vacuum and analyze it again");
        let analyzed: Vec<String> =
            sqlx::query_scalar("SELECT attname::text FROM pg_stats WHERE schemaname = $1 AND tablename = $2")
                .bind(PARTITIONS_SCHEMA)
                .bind(&pods_table)
                .fetch_all(&pool)
                .await
                .unwrap();
        assert!(analyzed.iter().any(|column| column == "name") && analyzed.iter().any(|column| column == "region"));
        assert!(!analyzed.iter().any(|column| column == "labels"), "{analyzed:?}");
    }

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn concurrent_swaps_of_one_cluster_never_interleave(pool: PgPool) {
        ensure_tables(&pool, &["region".into()], &[]).await.unwrap();
        let (mut a, mut b) = (pool.acquire().await.unwrap(), pool.acquire().await.unwrap());
        let (staging_a, run_a) = staged(&mut a, "c1", 4).await;
        let (staging_b, run_b) = staged(&mut b, "c1", 6).await;
        let job_a = Job::new("c1", "kubernetes_pods", Trigger::Schedule, at(10)).unwrap();
        let job_b = Job::new("c1", "kubernetes_pods", Trigger::Schedule, at(20)).unwrap();
        let succeeded = Outcome::succeeded(0);
        let (outcome_a, outcome_b) = tokio::join!(
            staging_a.swap(&mut a, "c1", &job_a, run_a, &succeeded),
            staging_b.swap(&mut b, "c1", &job_b, run_b, &succeeded),
        );
        assert_eq!(outcome_b.unwrap(), SwapOutcome::Swapped { rows: 12 });
        assert!(matches!(outcome_a.unwrap(), SwapOutcome::Swapped { .. } | SwapOutcome::Superseded { .. }));
        assert_eq!(pods_of(&pool, "c1").await, 6, "the later-scheduled snapshot wins");
        let containers: i64 =
            sqlx::query_scalar("SELECT count(*) FROM kubernetes_pod_containers").fetch_one(&pool).await.unwrap();
        assert_eq!(containers, 6, "pods and their containers come from the same swap");
    }

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn a_swap_neither_waits_for_nor_blocks_readers_of_other_clusters(pool: PgPool) {
        ensure_tables(&pool, &["region".into()], &[]).await.unwrap();
        swap(&pool, "c1", 2, at(10)).await;
        swap(&pool, "c2", 2, at(10)).await;
        // A reader of c2 in the middle of a transaction holds its locks until it ends.
        let mut reader = pool.begin().await.unwrap();
        let read: i64 = sqlx::query_scalar("SELECT count(*) FROM kubernetes_pods WHERE cluster_name = 'c2'")
            .fetch_one(&mut *reader)
            .await
            .unwrap();
        assert_eq!(read, 2);
        // c1's swap must not queue behind it: its first lock wait would time out, and the
        // retries would take seconds.
        let started = std::time::Instant::now();
        assert_eq!(swap(&pool, "c1", 3, at(20)).await, SwapOutcome::Swapped { rows: 6 });
        assert!(started.elapsed() < SWAP_LOCK_TIMEOUT_MAX, "c1's swap waited for c2's reader: {:?}", started.elapsed());
        assert_eq!(pods_of(&pool, "c1").await, 3);
        reader.commit().await.unwrap();
    }

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn rows_attached_straight_to_the_catalog_table_move_to_a_cluster_table(pool: PgPool) {
        ensure_tables(&pool, &["region".into()], &[]).await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        // The layout before cluster tables: c1's rows attached to the catalog tables directly.
        let (staging, _) = staged(&mut conn, "c1", 4).await;
        for staged in &staging.tables {
            let (parent, name) = (&staged.table.name, &staged.name);
            execute(
                &mut conn,
                format!("ALTER TABLE public.{parent} ATTACH PARTITION {PARTITIONS_SCHEMA}.{name} FOR VALUES IN ('c1')"),
            )
            .await
            .unwrap();
        }
        assert_eq!(pods_of(&pool, "c1").await, 4);
        assert_eq!(swap(&pool, "c1", 3, at(20)).await, SwapOutcome::Swapped { rows: 6 });
        assert_eq!(pods_of(&pool, "c1").await, 3);
        let leaves_under_cluster_tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace
             WHERE n.nspname = $1 AND p.relkind = 'p'",
        )
        .bind(PARTITIONS_SCHEMA)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(leaves_under_cluster_tables as usize, pods_resource().tables.len());
    }

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn a_dead_runs_staging_is_swept_and_a_live_ones_is_kept(pool: PgPool) {
        ensure_tables(&pool, &["region".into()], &[]).await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        let job = Job::new("c1", "kubernetes_pods", Trigger::Manual, at(0)).unwrap();
        let live = runs::start(&pool, &job, 1, "w-live").await.unwrap();
        let dead = runs::start(&pool, &job, 1, "w-dead").await.unwrap();
        sqlx::query("UPDATE runs SET heartbeat_at = now() - interval '1 hour' WHERE run_id = $1")
            .bind(dead)
            .execute(&pool)
            .await
            .unwrap();
        Staging::create(&mut conn, &layouts(FIELDS), live).await.unwrap();
        Staging::create(&mut conn, &layouts(FIELDS), dead).await.unwrap();
        assert_eq!(
            sweep_staging(&pool, Duration::from_secs(60)).await.unwrap(),
            pods_resource().tables.len(),
            "the dead run's"
        );
        let status: String =
            sqlx::query_scalar("SELECT status FROM runs WHERE run_id = $1").bind(dead).fetch_one(&pool).await.unwrap();
        assert_eq!(status, "abandoned");
        drop_staging(&pool, live, &pods_resource().tables).await.unwrap();
        assert_eq!(sweep_staging(&pool, Duration::from_secs(60)).await.unwrap(), 0);
    }
}
