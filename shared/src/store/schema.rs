//! The data tables: their shape, their creation, their upgrade, and the conversion of a database
//! from the earlier layout.
//!
//! Each catalog table is one table in `public`, hash-partitioned by `cluster_name` into a fixed
//! number of partitions ([`HASH_PARTITIONS`], in the `kubecensus_partitions` schema), whatever
//! the number of clusters: a fleet-wide query plans and locks the same few relations at 10
//! clusters or at 1,000, and a new cluster creates no table. Every row carries `row_hash`, a
//! 128-bit hash of its content, unique per cluster (the primary key is `(cluster_name,
//! row_hash)`): a refresh replaces only the rows that changed (see [`super::replace`]).
//!
//! At start-up [`ensure_tables`] compares each table with the catalog and the registry
//! (`information_schema.columns`): a missing table is created, a missing column added, a missing
//! index built; a column whose type changed is an error that says what to do. A column is added
//! without a default, which PostgreSQL records in its catalog without rewriting any row, and no
//! row is updated: a row's hash covers its table's column set ([`super::replace`]), so every row
//! from before the column differs from its object's next listing and is rewritten by its own
//! cluster's next refresh. Every DDL transaction waits at most [`DdlLocks::lock_timeout`] for its
//! locks, so readers never queue behind it for longer, and is tried again a bounded number of
//! times ([`DdlLocks`]). A table in the
//! earlier layout (LIST-partitioned, a partition per cluster) is converted in place, in one
//! transaction: readers see its old rows until the commit, then the same rows in the new table.

use std::{collections::HashMap, time::Duration};

use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};

use super::{
    PARTITIONS_SCHEMA, execute,
    session_lock::SessionLock,
    sql::{Ident, Qualified, list},
};
use crate::{
    Error, Result,
    model::catalog::{CLUSTER_COLUMN, Catalog, Table},
    model::flatten::Layout,
};

/// Partitions per data table. Fixed when a table is created: it bounds how many relations a
/// fleet-wide query plans (a partition and its indexes each), and splits each table's vacuum
/// work into parts of about 1/16 of the fleet.
pub const HASH_PARTITIONS: u32 = 16;

/// The column holding each row's content hash (a `uuid` of 128 bits, see [`super::replace`]).
pub const ROW_HASH_COLUMN: &str = "row_hash";

/// The schema a table of the earlier layout is moved into while it is converted.
const LEGACY_SCHEMA: &str = "kubecensus_legacy";

/// Autovacuum settings of every partition: a refresh deletes the rows that changed and inserts
/// their new versions, at every poll. Vacuum once 1 % of a partition (plus 100 rows) is dead or
/// newly inserted (PostgreSQL's defaults: 20 % plus 50 dead, 20 % plus 1,000 inserted), so a
/// partition is vacuumed after about every refresh that changed it: tables stay near their live
/// size, and the visibility map stays set, which the index-only scans of fleet-wide queries need
/// (BENCHMARKS.md measures both). A vacuum of a partition that is mostly all-visible skips those
/// pages, so it costs about what the refresh changed.
pub(super) const PARTITION_STORAGE: &str = "autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 100, \
                                 autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_vacuum_insert_threshold = 100, \
                                 autovacuum_analyze_scale_factor = 0.05";

/// How DDL waits for its locks: an `ALTER TABLE` needs `ACCESS EXCLUSIVE`, and while it waits
/// for one every reader that comes after queues behind it (PostgreSQL's lock queue). So each DDL
/// transaction sets `lock_timeout` and, when a lock was not granted in time (SQLSTATE `55P03`,
/// `lock_not_available`), rolls back, waits, and tries again, the wait doubling up to a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DdlLocks {
    /// The longest one statement waits for a lock (`SET LOCAL lock_timeout`).
    pub lock_timeout: Duration,
    /// Tries in all before the DDL fails.
    pub attempts: u32,
    /// The wait before the second try; it doubles for each further one.
    pub backoff: Duration,
    /// The longest wait between tries.
    pub backoff_cap: Duration,
}

/// How the processes' DDL waits for locks: 2 s at most at a time (a refresh's transaction takes
/// about that), 10 tries over about 3 minutes.
pub const DDL_LOCKS: DdlLocks = DdlLocks {
    lock_timeout: Duration::from_secs(2),
    attempts: 10,
    backoff: Duration::from_secs(1),
    backoff_cap: Duration::from_secs(30),
};

impl DdlLocks {
    /// Begins a DDL transaction on `conn` under `lock_timeout`.
    pub(super) async fn begin<'c>(&self, conn: &'c mut PgConnection) -> Result<Transaction<'c, Postgres>> {
        let mut tx = conn.begin().await?;
        execute(&mut tx, format!("SET LOCAL lock_timeout = {}", self.lock_timeout.as_millis())).await?;
        Ok(tx)
    }

    /// What follows try `attempt` (from 1) of the DDL transaction `what`, which ended in `result`
    /// (committed, or rolled back when dropped): `Ok(true)` it is done; `Ok(false)` a lock was
    /// not granted in time and there are tries left: logged, waited for, counted in `attempt`.
    ///
    /// # Errors
    /// `result`'s error; after the last try, [`Error::LockTimeout`] naming `what`.
    pub(super) async fn settle(&self, what: &str, attempt: &mut u32, result: Result<()>) -> Result<bool> {
        match result {
            Err(Error::Sql(err)) if is_lock_timeout(&err) && *attempt < self.attempts => {
                let wait = self.backoff.saturating_mul(1 << (*attempt - 1).min(16)).min(self.backoff_cap);
                tracing::warn!(what, attempt, ?wait, %err, "a lock was not granted in time; trying again");
                tokio::time::sleep(wait).await;
                *attempt += 1;
                Ok(false)
            }
            Err(Error::Sql(source)) if is_lock_timeout(&source) => Err(Error::LockTimeout {
                what: what.to_owned(),
                lock_timeout: self.lock_timeout,
                tries: *attempt,
                source,
            }),
            result => result.map(|()| true),
        }
    }
}

/// Whether a statement failed for a lock not granted within `lock_timeout`.
fn is_lock_timeout(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"))
}

/// A data table as stored: its name, its columns with their PostgreSQL types in storage order
/// (the catalog's, the registry's fields, then `row_hash`), and its indexes.
pub struct TableShape<'a> {
    pub table: &'a Table,
    pub name: Qualified,
    pub columns: Vec<(Ident, &'static str)>,
    /// The registry's cluster fields and namespace fields, as in the table's [`Layout`].
    pub fields: &'a [String],
    pub namespace_fields: &'a [String],
}

impl<'a> TableShape<'a> {
    /// The shape of `layout`'s table.
    ///
    /// # Errors
    /// A column name that is not a valid identifier (the catalog and registry check names first).
    pub fn new(layout: &Layout<'a>) -> Result<Self> {
        let mut columns = Vec::new();
        for name in layout.column_names() {
            columns.push((Ident::new(name)?, layout.sql_type(name)));
        }
        columns.push((Ident::new(ROW_HASH_COLUMN)?, "uuid"));
        Ok(Self {
            table: layout.table,
            name: Qualified { schema: Ident::new("public")?, name: Ident::new(&layout.table.name)? },
            columns,
            fields: layout.fields,
            namespace_fields: layout.namespace_fields,
        })
    }

    /// The column list of a COPY or INSERT, in storage order: `"uid", "cluster_name", ...`.
    pub fn column_list(&self) -> String {
        list(self.columns.iter().map(|(name, _)| name))
    }

    /// The name of partition `remainder` of this table.
    fn partition(&self, remainder: u32) -> Qualified {
        Qualified {
            schema: Ident::derived(&[PARTITIONS_SCHEMA]),
            name: Ident::derived(&[&self.table.name, &format!("p{remainder:02}")]),
        }
    }

    /// The table's indexes, each a name and what follows `ON <table>`: lookups by namespace and
    /// name, GIN on labels, the catalog's own, and one per registry field with `cluster_name` and
    /// the namespace after it, for fleet-wide queries that filter or group by a field (region,
    /// ...): they read that small index instead of every row.
    fn indexes(&self) -> Vec<(Ident, String)> {
        let table = self.table;
        let column = |name: &str| Ident::derived(&[name]);
        let lookups: Vec<Vec<&str>> = match (table.has_column("namespace"), table.has_column("name")) {
            (true, _) => vec![vec!["namespace", "name"]],
            (false, true) => vec![vec!["name"]],
            (false, false) => vec![],
        };
        let index = |columns: &[&str]| {
            let idents: Vec<Ident> = columns.iter().map(|c| column(c)).collect();
            (index_name(&table.name, columns), format!("({})", list(&idents)))
        };
        let mut indexes: Vec<(Ident, String)> = lookups.iter().map(|columns| index(columns)).collect();
        // The catalog's own indexes serve fleet-wide questions (most popular images) from the
        // index alone; their keys end with the columns row-level security reads, so that a
        // viewer's query stays an index-only scan too (`super::access::policies`). Keys, not
        // `INCLUDE`: a B-tree with included columns keeps no deduplicated entries, and the image
        // index grew ninefold (1.8 to 17 MB at 100 clusters, BENCHMARKS.md), twice as slow to scan.
        let mut secured = vec![CLUSTER_COLUMN];
        secured.extend(table.namespace_column.as_ref().map(|(name, _)| name.as_str()));
        for columns in &table.indexes {
            let mut columns: Vec<&str> = columns.iter().map(String::as_str).collect();
            let missing: Vec<&str> = secured.iter().copied().filter(|c| !columns.contains(c)).collect();
            columns.extend(missing);
            indexes.push(index(&columns));
        }
        if table.has_column("labels") {
            indexes.push((Ident::derived(&[&table.name, "labels"]), "USING gin (labels)".into()));
        }
        let namespace = table.namespace_column.as_ref().map(|(name, _)| format!(", {}", column(name)));
        for field in self.fields {
            let definition =
                format!("({}, {}{})", column(field), column(CLUSTER_COLUMN), namespace.as_deref().unwrap_or_default());
            indexes.push((Ident::derived(&[&table.name, "field", field]), definition));
        }
        indexes
    }
}

/// Creates, converts or upgrades every table of `catalog` for the registry's `fields` (columns after
/// `cluster_name`) and `namespace_fields` (after the namespace column). Safe to run from many
/// processes at once: they take turns on an advisory lock.
///
/// # Errors
/// A column whose type differs from the catalog's ([`Error::Schema`], naming the table and
/// column), or any SQL error.
pub async fn ensure_tables(
    pool: &PgPool,
    catalog: &Catalog,
    fields: &[String],
    namespace_fields: &[String],
) -> Result<()> {
    ensure_tables_with(pool, catalog, fields, namespace_fields, &DDL_LOCKS).await
}

/// [`ensure_tables`], its DDL waiting for locks as `locks` says.
pub(super) async fn ensure_tables_with(
    pool: &PgPool,
    catalog: &Catalog,
    fields: &[String],
    namespace_fields: &[String],
    locks: &DdlLocks,
) -> Result<()> {
    // A session lock on a connection of its own, and a transaction per table: one transaction
    // for every table would hold a lock on each of their thousands of partitions and indexes at
    // once, past PostgreSQL's shared lock table (`max_locks_per_transaction`).
    let mut lock = SessionLock::acquire(pool, "kubecensus ensure_tables").await?;
    let result = ensure_each(lock.conn(), catalog, fields, namespace_fields, locks).await;
    lock.release().await;
    result
}

async fn ensure_each(
    conn: &mut PgConnection,
    catalog: &Catalog,
    fields: &[String],
    namespace_fields: &[String],
    locks: &DdlLocks,
) -> Result<()> {
    for (_, table) in catalog.tables() {
        let shape = TableShape::new(&Layout { table, fields, namespace_fields })?;
        let mut attempt = 1;
        loop {
            let mut tx = locks.begin(conn).await?;
            let result = match ensure_table(&mut tx, &shape).await {
                Ok(()) => tx.commit().await.map_err(Error::from),
                Err(err) => Err(err),
            };
            if locks.settle(&table.name, &mut attempt, result).await? {
                break;
            }
        }
    }
    let mut tx = locks.begin(conn).await?;
    drop_earlier_staging(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Creates, converts or upgrades one table, and builds its missing indexes.
async fn ensure_table(tx: &mut PgConnection, shape: &TableShape<'_>) -> Result<()> {
    match partition_strategy(tx, shape).await? {
        None => create(tx, shape).await?,
        Some(strategy) if strategy == "l" => convert(tx, shape).await?,
        Some(_) => upgrade(tx, shape).await?,
    }
    let indexes = shape.indexes();
    for (name, definition) in &indexes {
        execute(tx, format!("CREATE INDEX IF NOT EXISTS {name} ON {} {definition}", shape.name)).await?;
    }
    // The catalog's indexes as earlier releases made them, without the columns row security reads.
    for columns in &shape.table.indexes {
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        let earlier = Qualified { schema: shape.name.schema.clone(), name: index_name(&shape.table.name, &columns) };
        if !indexes.iter().any(|(index, _)| *index == earlier.name) {
            execute(tx, format!("DROP INDEX IF EXISTS {earlier}")).await?;
        }
    }
    Ok(())
}

/// The name of `table`'s index on `columns`: `<table>_<column>_...` ([`Ident::derived`]).
fn index_name(table: &str, columns: &[&str]) -> Ident {
    let mut name = vec![table];
    name.extend(columns);
    Ident::derived(&name)
}

/// How the table is partitioned now (`h` hash, `l` list: the earlier layout); `None` when it
/// does not exist.
async fn partition_strategy(conn: &mut PgConnection, shape: &TableShape<'_>) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(p.partstrat::text, 'none') FROM pg_class c LEFT JOIN pg_partitioned_table p ON p.partrelid = c.oid
         WHERE c.oid = to_regclass($1)",
    )
    .bind(shape.name.to_string())
    .fetch_optional(&mut *conn)
    .await?)
}

/// Creates the table, its partitions (with their autovacuum settings), its primary key, and no
/// statistics on `jsonb` columns: those of whole documents serve hardly any query and cost two
/// thirds of ANALYZE's time.
async fn create(conn: &mut PgConnection, shape: &TableShape<'_>) -> Result<()> {
    let columns: Vec<String> = shape
        .columns
        .iter()
        .map(|(name, ty)| {
            let not_null = if [CLUSTER_COLUMN, ROW_HASH_COLUMN].contains(&name.as_str()) { " NOT NULL" } else { "" };
            format!("{name} {ty}{not_null}")
        })
        .collect();
    let (cluster, hash) = (Ident::derived(&[CLUSTER_COLUMN]), Ident::derived(&[ROW_HASH_COLUMN]));
    let mut ddl = format!(
        "CREATE TABLE {} ({}, PRIMARY KEY ({cluster}, {hash})) PARTITION BY HASH ({cluster});",
        shape.name,
        columns.join(", ")
    );
    for remainder in 0..HASH_PARTITIONS {
        ddl.push_str(&format!(
            "CREATE TABLE {} PARTITION OF {} FOR VALUES WITH (MODULUS {HASH_PARTITIONS}, REMAINDER {remainder}) WITH ({PARTITION_STORAGE});",
            shape.partition(remainder),
            shape.name
        ));
    }
    let unanalyzed: Vec<String> = shape
        .columns
        .iter()
        .filter(|(_, ty)| *ty == "jsonb")
        .map(|(name, _)| format!("ALTER COLUMN {name} SET STATISTICS 0"))
        .collect();
    if !unanalyzed.is_empty() {
        ddl.push_str(&format!("ALTER TABLE {} {};", shape.name, unanalyzed.join(", ")));
    }
    execute(conn, ddl).await
}

/// Adds the columns the table lacks (a registry field, a catalog column of a later release),
/// without a default and without touching a row: each cluster's next refresh rewrites its rows
/// (see the module's doc); fails on a column whose type is not the catalog's.
async fn upgrade(conn: &mut PgConnection, shape: &TableShape<'_>) -> Result<()> {
    let existing: HashMap<String, String> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = $1",
    )
    .bind(shape.name.name.as_str())
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let mut added = Vec::new();
    for (name, ty) in &shape.columns {
        match existing.get(name.as_str()) {
            None => added.push(format!("ADD COLUMN {name} {ty}")),
            Some(found) if found != ty => {
                return Err(Error::Schema(format!(
                    "{}.{} is {found} in the database but {ty} in this release's catalog; \
                     convert it by hand (ALTER TABLE {} ALTER COLUMN {name} TYPE {ty} USING ...) or drop the table \
                     to have it created and reloaded on the next refresh",
                    shape.name.name.as_str(),
                    name.as_str(),
                    shape.name
                )));
            }
            Some(_) => {}
        }
    }
    if added.is_empty() {
        return Ok(());
    }
    tracing::info!(table = shape.name.name.as_str(), columns = ?added, "adding columns");
    execute(conn, format!("ALTER TABLE {} {}", shape.name, added.join(", "))).await
}

/// The table's identity and column set as stored (its oid, then its columns' names in order):
/// what a job's base hashes were computed against (see [`super::replace`]); `None` when the
/// table does not exist.
pub(super) async fn column_set(conn: &mut PgConnection, shape: &TableShape<'_>) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT attrelid::oid::text || ':' || string_agg(attname::text, ',' ORDER BY attnum) FROM pg_attribute
         WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped GROUP BY attrelid",
    )
    .bind(shape.name.to_string())
    .fetch_optional(&mut *conn)
    .await?)
}

/// Adds to `public.<table>` a `text` column for each of `names` it lacks (the registry's fields,
/// on a table derived from the data tables).
pub(super) async fn add_text_columns(conn: &mut PgConnection, table: &str, names: &[String]) -> Result<()> {
    let existing = column_names(conn, "public", table).await?;
    let added: Vec<String> = names
        .iter()
        .filter(|name| !existing.contains(name))
        .map(|name| format!("ADD COLUMN {} text", Ident::derived(&[name])))
        .collect();
    if !added.is_empty() {
        execute(conn, format!("ALTER TABLE {} {}", Ident::derived(&[table]), added.join(", "))).await?;
    }
    Ok(())
}

/// Whether the relation `name` exists (schema-qualified, or found in the search path;
/// `to_regclass`, NULL for none).
pub(super) async fn table_exists(conn: &mut PgConnection, name: &str) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(name).fetch_one(conn).await?)
}

/// The names of the columns of table `schema.table` (none when it does not exist).
pub(super) async fn column_names(conn: &mut PgConnection, schema: &str, table: &str) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(&mut *conn)
    .await?)
}

/// Converts a table of the earlier layout (a LIST partition per cluster, each itself
/// partitioned) in one transaction: the old table moves aside, the new one is created and
/// filled with its rows, the old one and every partition under it are dropped. Each moved row
/// gets a random `row_hash`, so the cluster's next refresh replaces all of its rows at once.
async fn convert(conn: &mut PgConnection, shape: &TableShape<'_>) -> Result<()> {
    tracing::info!(table = shape.name.name.as_str(), "converting a table of the earlier layout");
    let legacy = Qualified { schema: Ident::derived(&[LEGACY_SCHEMA]), name: shape.name.name.clone() };
    execute(
        conn,
        format!(
            "CREATE SCHEMA IF NOT EXISTS {}; ALTER TABLE {} SET SCHEMA {};",
            legacy.schema, shape.name, legacy.schema
        ),
    )
    .await?;
    let kept = column_names(conn, LEGACY_SCHEMA, shape.name.name.as_str()).await?;
    create(conn, shape).await?;
    let common: Vec<&Ident> =
        shape.columns.iter().map(|(name, _)| name).filter(|name| kept.iter().any(|k| k == name.as_str())).collect();
    execute(
        conn,
        format!(
            "INSERT INTO {} ({}, {}) SELECT {}, gen_random_uuid() FROM {legacy}; DROP TABLE {legacy} CASCADE",
            shape.name,
            list(common.iter().copied()),
            Ident::derived(&[ROW_HASH_COLUMN]),
            list(common.iter().copied()),
        ),
    )
    .await
}

/// Drops what jobs of the earlier layout left in the partitions schema: staging tables that were
/// never attached.
async fn drop_earlier_staging(conn: &mut PgConnection) -> Result<()> {
    let orphans: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
    )
    .bind(PARTITIONS_SCHEMA)
    .fetch_all(&mut *conn)
    .await?;
    if orphans.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = orphans
        .iter()
        .map(|name| Ok(Qualified { schema: Ident::new(PARTITIONS_SCHEMA)?, name: Ident::new(name)? }.to_string()))
        .collect::<Result<_>>()?;
    tracing::info!(tables = orphans.len(), "dropping staging tables of the earlier layout");
    execute(conn, format!("DROP TABLE IF EXISTS {}", names.join(", "))).await
}
