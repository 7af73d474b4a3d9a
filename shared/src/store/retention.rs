//! Retention of the history tables (`object_changes`, `event_history` when it exists, `runs`):
//! each is partitioned by day (`kubecensus_history.<table>_pYYYYMMDD`, UTC days) with a DEFAULT
//! partition, and [`upkeep`], run by the scheduler, keeps it that way without a long `DELETE`
//! and without making readers wait:
//!
//! - **Ahead**: today's and the next [`DAYS_AHEAD`] days' partitions are created as tables of
//!   their own (`CREATE TABLE ... (LIKE ...)`, which locks nothing readers use) and attached
//!   (`ATTACH PARTITION` takes only `SHARE UPDATE EXCLUSIVE` on the parent; PostgreSQL docs,
//!   ALTER TABLE). Attaching also checks that the DEFAULT partition holds no row of the new day,
//!   under an `ACCESS EXCLUSIVE` lock on the DEFAULT partition; a `CHECK` constraint excluding
//!   the day, validated first (`VALIDATE CONSTRAINT` takes only `SHARE UPDATE EXCLUSIVE`), lets it
//!   skip that scan (PostgreSQL docs, "Partition Maintenance"). A day the DEFAULT partition
//!   already has rows of (today, right after the upgrade) gets no partition: those rows stay in
//!   DEFAULT until their retention ends.
//! - **Past**: a partition whose whole day is older than the retention is detached, then dropped.
//!   `DETACH PARTITION ... CONCURRENTLY` is used where the parent has no DEFAULT partition;
//!   PostgreSQL refuses it where it has one ("cannot detach partitions concurrently when a
//!   default partition exists"), as every history table here does, so there a plain `DETACH`
//!   runs: a catalog change that scans nothing, holding `ACCESS EXCLUSIVE` on the parent for an
//!   instant, once a day per table. The detached table is then dropped, locking only itself.
//! - **DEFAULT**: its rows older than the retention are deleted [`BATCH_PAGES`] heap pages at a
//!   time (a TID range scan, PostgreSQL 14+), each batch its own short transaction, with no index
//!   on the time column: such an index would tempt the planner into walking it to find one
//!   (cluster, table)'s latest run (`scheduler report`).
//!
//! Every DDL transaction waits for its locks as [`DDL_LOCKS`] says (`lock_timeout`, retried), so
//! readers never queue behind it for long. One scheduler at a time does the upkeep (an advisory
//! lock); another finds it taken and skips.

use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, Utc};
use sqlx::{Connection, PgConnection, PgPool};

use super::{
    execute,
    schema::{DDL_LOCKS, table_exists},
    sql::{Ident, Qualified, literal},
};
use crate::{Error, Result};

/// The schema of the history tables' partitions.
pub const HISTORY_SCHEMA: &str = "kubecensus_history";

/// Days after today whose partitions exist ahead of their rows.
pub const DAYS_AHEAD: u64 = 3;

/// Heap pages of a DEFAULT partition one deleting statement reads (8 MiB of 8 kB pages).
pub const BATCH_PAGES: i64 = 1_000;

/// How long rows are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// `object_changes` and `event_history` (`--history-retention`).
    pub history: Duration,
    /// `runs` (`--runs-retention`).
    pub runs: Duration,
}

/// A history table: its name and the time column it is partitioned by.
struct HistoryTable {
    name: &'static str,
    column: &'static str,
    runs: bool,
}

/// Every history table, by the contracts of their writers.
const TABLES: [HistoryTable; 3] = [
    HistoryTable { name: "object_changes", column: "changed_at", runs: false },
    HistoryTable { name: "event_history", column: "created", runs: false },
    HistoryTable { name: "runs", column: "started_at", runs: true },
];

/// What one upkeep did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableUpkeep {
    pub table: &'static str,
    /// Partitions created, by name.
    pub created: Vec<String>,
    /// Partitions dropped, by name.
    pub dropped: Vec<String>,
    /// Rows deleted from the DEFAULT partition.
    pub deleted: u64,
    /// The oldest time kept: the start of the oldest daily partition, or the oldest row of the
    /// DEFAULT partition if older; `None` when the table keeps nothing.
    pub oldest_kept: Option<DateTime<Utc>>,
}

/// Creates the coming days' partitions and drops what is older than `retention`, as of `now`,
/// for each history table that exists; `None` when another process holds the upkeep's lock.
///
/// # Errors
/// [`Error::LockTimeout`] when a lock was not granted in [`DDL_LOCKS`]' tries, or any SQL error.
pub async fn upkeep(pool: &PgPool, retention: &Retention, now: DateTime<Utc>) -> Result<Option<Vec<TableUpkeep>>> {
    let mut conn = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended('kubecensus retention', 0))")
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(None);
    }
    let mut done = Vec::new();
    let mut result = Ok(());
    for table in &TABLES {
        let keep = if table.runs { retention.runs } else { retention.history };
        match upkeep_table(&mut conn, table, keep, now).await {
            Ok(Some(upkeep)) => done.push(upkeep),
            Ok(None) => {}
            Err(err) => {
                result = Err(err);
                break;
            }
        }
    }
    let unlock = "SELECT pg_advisory_unlock(hashtextextended('kubecensus retention', 0))";
    if let Err(err) = sqlx::query(unlock).execute(&mut *conn).await {
        conn.close_on_drop();
        tracing::warn!(%err, "cannot release the retention lock; closing its connection");
    }
    result.map(|()| Some(done))
}

/// One table's upkeep; `None` when it does not exist or is not partitioned.
async fn upkeep_table(
    conn: &mut PgConnection,
    table: &HistoryTable,
    keep: Duration,
    now: DateTime<Utc>,
) -> Result<Option<TableUpkeep>> {
    let parent = Qualified { schema: Ident::new("public")?, name: Ident::new(table.name)? };
    let partitioned: Option<bool> =
        sqlx::query_scalar("SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass($1)")
            .bind(parent.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    if partitioned != Some(true) {
        return Ok(None);
    }
    let default = Qualified { schema: Ident::new(HISTORY_SCHEMA)?, name: Ident::derived(&[table.name, "default"]) };
    let default = table_exists(conn, &default.to_string()).await?.then_some(default);
    let column = Ident::new(table.column)?;
    let today = now.date_naive();
    let cutoff = chrono::Duration::from_std(keep)
        .ok()
        .and_then(|keep| now.checked_sub_signed(keep))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut upkeep =
        TableUpkeep { table: table.name, created: Vec::new(), dropped: Vec::new(), deleted: 0, oldest_kept: None };
    let existing = partitions(conn, table.name).await?;
    for ahead in 0..=DAYS_AHEAD {
        let day = today + Days::new(ahead);
        if existing.contains(&day) {
            continue;
        }
        if create(conn, &parent, default.as_ref(), &column, table.name, day).await? {
            upkeep.created.push(partition_name(table.name, day).name.as_str().to_owned());
        }
    }
    for day in existing.iter().filter(|day| start_of(**day + Days::new(1)) <= cutoff) {
        let partition = partition_name(table.name, *day);
        detach(conn, &parent, &partition, default.is_some()).await?;
        execute(conn, format!("DROP TABLE IF EXISTS {partition}")).await?;
        upkeep.dropped.push(partition.name.as_str().to_owned());
    }
    if let Some(default) = &default {
        upkeep.deleted = delete_old(conn, default, &column, cutoff).await?;
    }
    let kept = partitions(conn, table.name).await?;
    let oldest_row: Option<DateTime<Utc>> = match &default {
        Some(default) => {
            sqlx::query_scalar(&format!("SELECT min({column}) FROM {default}")).fetch_one(&mut *conn).await?
        }
        None => None,
    };
    upkeep.oldest_kept = kept.iter().map(|day| start_of(*day)).chain(oldest_row).min();
    Ok(Some(upkeep))
}

/// The partition of `table` for `day`.
fn partition_name(table: &str, day: NaiveDate) -> Qualified {
    Qualified {
        schema: Ident::derived(&[HISTORY_SCHEMA]),
        name: Ident::derived(&[table, &format!("p{}", day.format("%Y%m%d"))]),
    }
}

/// Midnight UTC starting `day`.
fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// The days of `table`'s daily partitions (by their names) that are attached.
async fn partitions(conn: &mut PgConnection, table: &str) -> Result<Vec<NaiveDate>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE i.inhparent = to_regclass($1) AND n.nspname = $2 ORDER BY 1",
    )
    .bind(format!("public.{table}"))
    .bind(HISTORY_SCHEMA)
    .fetch_all(&mut *conn)
    .await?;
    let prefix = format!("{table}_p");
    Ok(names.iter().filter_map(|name| NaiveDate::parse_from_str(name.strip_prefix(&prefix)?, "%Y%m%d").ok()).collect())
}

/// Runs the DDL `sql` in a transaction under [`DDL_LOCKS`], trying again when a lock was not
/// granted in time.
async fn ddl(conn: &mut PgConnection, what: &str, sql: &str) -> Result<()> {
    let mut attempt = 1;
    loop {
        let mut tx = DDL_LOCKS.begin(conn).await?;
        let result = match execute(&mut tx, sql.to_owned()).await {
            Ok(()) => tx.commit().await.map_err(Error::from),
            Err(err) => Err(err),
        };
        if DDL_LOCKS.settle(what, &mut attempt, result).await? {
            return Ok(());
        }
    }
}

/// Creates and attaches `table`'s partition for `day`; `false` when the DEFAULT partition
/// already holds rows of that day (they stay there).
async fn create(
    conn: &mut PgConnection,
    parent: &Qualified,
    default: Option<&Qualified>,
    column: &Ident,
    table: &str,
    day: NaiveDate,
) -> Result<bool> {
    let (from, to) = (start_of(day), start_of(day + Days::new(1)));
    let range = format!("{column} >= {} AND {column} < {}", bound(from), bound(to));
    if let Some(default) = default {
        let taken: bool = sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM {default} WHERE {range})"))
            .fetch_one(&mut *conn)
            .await?;
        if taken {
            return Ok(false);
        }
    }
    let partition = partition_name(table, day);
    let what = format!("partition {partition}");
    ddl(
        conn,
        &what,
        &format!(
            "CREATE TABLE IF NOT EXISTS {partition} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)"
        ),
    )
    .await?;
    let exclusion = Ident::derived(&[partition.name.as_str(), "excluded"]);
    if let Some(default) = default {
        ddl(
            conn,
            &what,
            &format!(
                "ALTER TABLE {default} DROP CONSTRAINT IF EXISTS {exclusion};
                 ALTER TABLE {default} ADD CONSTRAINT {exclusion} CHECK (({range}) IS FALSE) NOT VALID"
            ),
        )
        .await?;
        ddl(conn, &what, &format!("ALTER TABLE {default} VALIDATE CONSTRAINT {exclusion}")).await?;
    }
    let mut attach = format!(
        "ALTER TABLE {parent} ATTACH PARTITION {partition} FOR VALUES FROM ({}) TO ({})",
        bound(from),
        bound(to)
    );
    if let Some(default) = default {
        attach.push_str(&format!("; ALTER TABLE {default} DROP CONSTRAINT {exclusion}"));
    }
    ddl(conn, &what, &attach).await?;
    Ok(true)
}

/// A time as a SQL literal in UTC.
fn bound(time: DateTime<Utc>) -> String {
    format!("{}::timestamptz", literal(&time.format("%Y-%m-%d %H:%M:%S+00").to_string()))
}

/// Detaches `partition` from `parent`: concurrently where the parent has no DEFAULT partition,
/// else in a short DDL transaction (see the module docs).
async fn detach(conn: &mut PgConnection, parent: &Qualified, partition: &Qualified, has_default: bool) -> Result<()> {
    let what = format!("detaching {partition}");
    if has_default {
        return ddl(conn, &what, &format!("ALTER TABLE {parent} DETACH PARTITION {partition}")).await;
    }
    // CONCURRENTLY cannot run in a transaction block: the timeout is the session's, for it.
    execute(conn, format!("SET lock_timeout = {}", DDL_LOCKS.lock_timeout.as_millis())).await?;
    let result = execute(conn, format!("ALTER TABLE {parent} DETACH PARTITION {partition} CONCURRENTLY")).await;
    execute(conn, "RESET lock_timeout".to_owned()).await?;
    result
}

/// Deletes the DEFAULT partition's rows older than `cutoff`, [`BATCH_PAGES`] pages per statement
/// (each its own transaction); returns how many.
async fn delete_old(
    conn: &mut PgConnection,
    default: &Qualified,
    column: &Ident,
    cutoff: DateTime<Utc>,
) -> Result<u64> {
    let pages: i64 =
        sqlx::query_scalar("SELECT pg_relation_size($1::regclass) / current_setting('block_size')::bigint")
            .bind(default.to_string())
            .fetch_one(&mut *conn)
            .await?;
    let sql = format!(
        "DELETE FROM {default} WHERE ctid >= format('(%s,0)', $2::bigint)::tid
           AND ctid < format('(%s,0)', $2::bigint + $3)::tid AND {column} < $1"
    );
    let mut deleted = 0;
    for first in (0..pages).step_by(BATCH_PAGES as usize) {
        let mut tx = conn.begin().await?;
        deleted +=
            sqlx::query(&sql).bind(cutoff).bind(first).bind(BATCH_PAGES).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
    }
    Ok(deleted)
}
