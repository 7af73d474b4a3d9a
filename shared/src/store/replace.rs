//! Replacing one cluster's rows of a resource's tables, atomically, writing only what changed.
//!
//! Every row carries `row_hash`, a 128-bit hash (XXH3) of its COPY text (its content, cluster
//! fields included) seeded with its table's column list as the job writes it: a row written
//! before a column was added (a registry field, a catalog column of a later release) never has
//! the hash of its object's next listing, whatever the new column's value (NULL too), so the
//! cluster's next refresh rewrites it and no upgrade has to. A job first reads the hashes of the cluster's rows (one index scan per
//! table, in one snapshot), then, while it lists, keeps each new row whose hash is not among them
//! and counts the others as unchanged. At the end, one transaction deletes the rows whose hash
//! the listing did not yield, inserts the new ones, and records the snapshot and the run's
//! outcome. A reader sees the cluster's old rows or its new rows, never a mix and never none
//! (MVCC: a statement sees what was committed when it started), and never waits: no table lock
//! is taken, only the changed rows are touched, and other clusters' rows not at all. A failed
//! job rolls back and leaves the last good rows. Dead rows are only those of changed objects,
//! left to autovacuum (see [`super::schema`] for its settings).
//!
//! New rows are held in memory up to a limit; past it they are streamed with COPY into a
//! temporary table of the job's session (no WAL, dropped with the session if the worker dies)
//! and moved with `INSERT ... SELECT` in the final transaction. A job runs on a
//! [`JobConnection`](super::JobConnection), which goes back to the pool only when the job ended with its staging
//! dropped: a job cancelled mid-way (its timeout, a shutdown) closes the session, and its
//! staging with it, so the next job on that connection never sees it.
//!
//! A job replaces a [`Scope`] of the cluster's rows: all of them for a catalog resource, only
//! those of one custom resource kind (`api_group` and `kind`), or those of every custom kind
//! without a job of its own; refreshing one kind never touches another kind's rows.
//!
//! A job whose listing began before another job of the same (cluster, table) committed cannot
//! trust the hashes it read: it fails with a retryable error, or is `superseded` when the other
//! job was scheduled later. Nor can one whose tables changed shape since it read them (a column
//! added, a table converted: [`super::schema`]): it fails with the same retryable error.
//!
//! A `common: object` table's last column, `resource_version`, is not hashed: a row's hash is
//! that of its COPY line up to its last tab, so a version bumped alone (a status heartbeat, a
//! no-op update) rewrites no row. For [`super::changes`], the job table's new rows are inserted
//! before its old ones are deleted, and its changes recorded in between; the inserted rows'
//! hashes are handed to [`derived::write`].

use std::{
    collections::HashSet,
    hash::{BuildHasherDefault, Hasher},
};

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use super::{
    changes, copy_in,
    derived::{self, Swap, TableWrite},
    execute,
    schema::{ROW_HASH_COLUMN, TableShape, column_set},
    scope::Scope,
    sql::{Ident, Qualified},
};
use crate::{
    Error, Result,
    model::catalog::{CLUSTER_COLUMN, RESOURCE_VERSION_COLUMN, Resource},
    model::flatten::Layout,
    ops::metrics,
    queue::job::Job,
    store::runs::{self, Outcome, RowCounts},
};

/// What the replace did.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplaceOutcome {
    /// The new rows are in.
    Replaced(RowCounts),
    /// A job scheduled later had already replaced the rows; this job changed nothing.
    Superseded { current: DateTime<Utc> },
    /// This very job's rows are in already: an earlier delivery committed them and its ack was
    /// lost (a JetStream consumer leader lost with it), so the queue delivered the job again.
    AlreadyIn,
}

/// One job's refresh of a cluster's rows of a resource: the rows there now (as hashes), the rows
/// listed so far, and the new ones to insert.
pub struct Refresh<'a> {
    cluster: String,
    scope: Scope,
    /// The resource whose tables these are.
    resource: &'a Resource,
    /// The run whose rows the hashes were read from (`snapshots.run_id`), `None` before the
    /// cluster's first load.
    base: Option<Uuid>,
    /// When the listing began: the time of its changes ([`super::changes`]).
    listed_at: DateTime<Utc>,
    /// Whether the replace records object changes ([`Self::set_history`]).
    history: bool,
    tables: Vec<TableChanges<'a>>,
}

/// A hasher for keys that are already hashes.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

type HashSet128 = HashSet<u128, BuildHasherDefault<PreHashed>>;

struct TableChanges<'a> {
    shape: TableShape<'a>,
    /// The table's oid and columns when the hashes were read ([`column_set`]).
    columns: Option<String>,
    /// The seed of the rows' hashes: a hash of the column list the job writes.
    seed: u64,
    /// The last column is `resource_version`, left out of the hash.
    versioned: bool,
    /// Hashes of the cluster's rows in the table before this job.
    current: HashSet128,
    /// Hashes of every row listed so far.
    listed: HashSet128,
    /// COPY text of new rows not yet written to staging, each line ending in its hash.
    held: Vec<u8>,
    /// New rows so far, held or in staging.
    inserted: u64,
    /// The session's temporary table holding new rows past the memory limit.
    staging: Option<Qualified>,
}

impl<'a> Refresh<'a> {
    /// Reads the hashes of `cluster`'s rows of `scope` in the tables of `layouts` (`resource`'s,
    /// job table first) and the run they came from, in one snapshot.
    pub async fn begin(
        conn: &mut PgConnection,
        cluster: &str,
        scope: Scope,
        resource: &'a Resource,
        layouts: &[Layout<'a>],
    ) -> Result<Self> {
        let mut tx = conn.begin().await?;
        execute(&mut tx, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY".into()).await?;
        let job_table = &layouts.first().ok_or_else(|| Error::Catalog("a resource without tables".into()))?.table.name;
        let base: Option<Uuid> =
            sqlx::query_scalar("SELECT run_id FROM snapshots WHERE cluster_name = $1 AND table_name = $2")
                .bind(cluster)
                .bind(scope.snapshot_name(job_table))
                .fetch_optional(&mut *tx)
                .await?;
        let mut tables = Vec::with_capacity(layouts.len());
        for layout in layouts {
            let shape = TableShape::new(layout)?;
            let sql = format!(
                "SELECT {} FROM {} WHERE {} = $1{}",
                Ident::derived(&[ROW_HASH_COLUMN]),
                shape.name,
                Ident::derived(&[CLUSTER_COLUMN]),
                scope.condition(2)
            );
            let hashes: Vec<Uuid> =
                sqlx::query_scalar_with(&sql, scope.arguments(cluster)?).fetch_all(&mut *tx).await?;
            let current = hashes.iter().map(Uuid::as_u128).collect();
            let columns = column_set(&mut tx, &shape).await?;
            let seed = xxhash_rust::xxh3::xxh3_64(shape.column_list().as_bytes());
            let versioned = layout.column_names().last() == Some(&RESOURCE_VERSION_COLUMN);
            tables.push(TableChanges {
                columns,
                seed,
                versioned,
                shape,
                current,
                listed: HashSet128::default(),
                held: Vec::new(),
                inserted: 0,
                staging: None,
            });
        }
        tx.commit().await?;
        Ok(Self { cluster: cluster.to_owned(), scope, resource, base, listed_at: Utc::now(), history: true, tables })
    }

    /// Whether the replace records object changes in `object_changes` (on by default; the
    /// worker's `--change-history`).
    pub fn set_history(&mut self, history: bool) {
        self.history = history;
    }

    /// Takes rows of table `index` in COPY text (lines ending in `\n`, as [`crate::model::flatten`]
    /// writes them): each is hashed (seeded with the table's column list); one the table already
    /// holds is only counted, a new one is held with its hash appended. Identical rows (two equal
    /// rules of one Role) get distinct hashes by their order. A versioned table's line is hashed
    /// without its last field (`resource_version`).
    pub fn add(&mut self, index: usize, rows: &[u8]) {
        let table = &mut self.tables[index];
        for line in rows.split_inclusive(|&byte| byte == b'\n') {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let hashed = match line.iter().rposition(|&byte| byte == b'\t') {
                Some(last) if table.versioned => &line[..last],
                _ => line,
            };
            let mut seed = table.seed;
            let mut hash = xxhash_rust::xxh3::xxh3_128_with_seed(hashed, seed);
            while !table.listed.insert(hash) {
                seed = seed.wrapping_add(1);
                hash = xxhash_rust::xxh3::xxh3_128_with_seed(hashed, seed);
            }
            if !table.current.contains(&hash) {
                table.held.extend_from_slice(line);
                table.held.push(b'\t');
                table.held.extend_from_slice(
                    Uuid::from_u128(hash).hyphenated().encode_lower(&mut Uuid::encode_buffer()).as_bytes(),
                );
                table.held.push(b'\n');
                table.inserted += 1;
            }
        }
    }

    /// Bytes of new rows held in memory.
    pub fn held_bytes(&self) -> usize {
        self.tables.iter().map(|table| table.held.len()).sum()
    }

    /// Rows listed so far, across the resource's tables.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|table| table.listed.len() as u64).sum()
    }

    /// Streams the held rows into the session's temporary staging tables (created on first use).
    pub async fn spill(&mut self, conn: &mut PgConnection) -> Result<()> {
        for table in &mut self.tables {
            if table.held.is_empty() {
                continue;
            }
            let staging = match &table.staging {
                Some(staging) => staging.clone(),
                None => {
                    let staging = Qualified {
                        schema: Ident::derived(&["pg_temp"]),
                        name: Ident::derived(&[&table.shape.table.name, "staging"]),
                    };
                    execute(
                        conn,
                        format!(
                            "DROP TABLE IF EXISTS {staging}; CREATE TEMP TABLE {} (LIKE {})",
                            staging.name, table.shape.name
                        ),
                    )
                    .await?;
                    table.staging = Some(staging.clone());
                    staging
                }
            };
            copy_in(conn, &format!("COPY {staging} ({}) FROM STDIN", table.shape.column_list()), &table.held).await?;
            table.held.clear();
        }
        Ok(())
    }

    /// Forgets the rows listed so far, for a listing that starts over.
    pub async fn restart(&mut self, conn: &mut PgConnection) -> Result<()> {
        self.discard(conn).await?;
        for table in &mut self.tables {
            table.listed.clear();
            table.held.clear();
            table.inserted = 0;
        }
        Ok(())
    }

    /// Drops the job's staging tables, if any (after a failure, or once the rows are in). A
    /// table that could not be dropped stays [`Self::staged`].
    pub async fn discard(&mut self, conn: &mut PgConnection) -> Result<()> {
        for table in &mut self.tables {
            if let Some(staging) = &table.staging {
                execute(conn, format!("DROP TABLE IF EXISTS {staging}")).await?;
                table.staging = None;
            }
        }
        Ok(())
    }

    /// Whether staging tables of this job may be left in the session: its connection must then
    /// not go back to the pool ([`JobConnection`](super::JobConnection)).
    pub fn staged(&self) -> bool {
        self.tables.iter().any(|table| table.staging.is_some())
    }

    /// Writes the changes in one transaction with the snapshot and the run's `outcome` (its row
    /// counts filled in), unless a later-scheduled job already replaced the rows.
    ///
    /// The staging is dropped afterwards; a failure to drop it is logged and leaves it
    /// [`Self::staged`], never changing the result: rows committed stay a success.
    ///
    /// # Errors
    /// [`Error::StaleBase`] when another job of the same (cluster, table) committed since
    /// [`Self::begin`] (retry: the next attempt diffs against its rows), [`Error::ClusterPruned`],
    /// or any SQL error.
    pub async fn commit(
        &mut self,
        conn: &mut PgConnection,
        job: &Job,
        run_id: Uuid,
        outcome: &Outcome,
    ) -> Result<ReplaceOutcome> {
        let result = self.write(conn, job, run_id, outcome).await;
        if let Err(err) = self.discard(conn).await {
            tracing::warn!(%err, "cannot drop the job's staging; it goes with the connection");
        }
        result
    }

    async fn write(
        &self,
        conn: &mut PgConnection,
        job: &Job,
        run_id: Uuid,
        outcome: &Outcome,
    ) -> Result<ReplaceOutcome> {
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("replace {} {}", self.cluster, job.table))
            .execute(&mut *tx)
            .await?;
        // A cluster pruned while this job listed keeps no rows: `store::prune` deletes them
        // holding the `clusters` row FOR UPDATE, so either the prune waits for this commit and
        // deletes its rows too, or this sees `removed_at`.
        let removed_at: Option<Option<DateTime<Utc>>> =
            sqlx::query_scalar("SELECT removed_at FROM clusters WHERE name = $1 FOR SHARE")
                .bind(&self.cluster)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(Some(removed_at)) = removed_at {
            return Err(Error::ClusterPruned { cluster: self.cluster.clone(), removed_at });
        }
        // A snapshot ranks by when its job was scheduled, but never by a time after its own
        // commit: a job from the future (a clock off, a hand-written message, recorded before
        // workers refused them) would otherwise supersede every later job until that time.
        let now: Option<(DateTime<Utc>, Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(
            "SELECT least(scheduled_at, swapped_at), run_id, job_id, swapped_at FROM snapshots
             WHERE cluster_name = $1 AND table_name = $2",
        )
        .bind(&self.cluster)
        .bind(&job.table)
        .fetch_optional(&mut *tx)
        .await?;
        if now.is_some_and(|(_, _, job_id, _)| job_id == job.id) {
            return Ok(ReplaceOutcome::AlreadyIn);
        }
        if let Some((current, ..)) = now.filter(|(current, ..)| *current > job.scheduled_at) {
            return Ok(ReplaceOutcome::Superseded { current });
        }
        if now.map(|(_, run, ..)| run) != self.base {
            self.count_conflict();
            return Err(Error::StaleBase {
                cluster: self.cluster.clone(),
                table: job.table.clone(),
                current: now.map(|(_, run, ..)| run),
                base: self.base,
            });
        }
        for table in &self.tables {
            // Locked first, so no column is added between this check and the writes.
            execute(&mut tx, format!("LOCK TABLE {} IN ROW EXCLUSIVE MODE", table.shape.name)).await?;
            if column_set(&mut tx, &table.shape).await? != table.columns {
                self.count_conflict();
                return Err(Error::ShapeChanged {
                    cluster: self.cluster.clone(),
                    table: table.shape.table.name.clone(),
                });
            }
        }
        let mut totals = RowCounts::default();
        let mut written = Vec::with_capacity(self.tables.len());
        let recorded = changes::Recorded { cluster: &self.cluster, listed_at: self.listed_at, job_id: job.id, run_id };
        for (index, table) in self.tables.iter().enumerate() {
            let history = index == 0 && self.history && self.base.is_some() && changes::records(&table.shape);
            let (counts, inserted) = self.write_table(&mut tx, table, history.then_some(&recorded)).await?;
            sqlx::query(
                "INSERT INTO snapshots (cluster_name, table_name, job_id, run_id, scheduled_at, row_count)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (cluster_name, table_name) DO UPDATE SET job_id = EXCLUDED.job_id, run_id = EXCLUDED.run_id,
                   scheduled_at = EXCLUDED.scheduled_at, row_count = EXCLUDED.row_count, swapped_at = now()",
            )
            .bind(&self.cluster)
            .bind(self.scope.snapshot_name(&table.shape.table.name))
            .bind(job.id)
            .bind(run_id)
            .bind(job.scheduled_at)
            .bind(counts.total as i64)
            .execute(&mut *tx)
            .await?;
            totals = totals + counts;
            written.push(TableWrite { shape: &table.shape, counts, inserted });
        }
        let swap = Swap {
            cluster: &self.cluster,
            scope: &self.scope,
            resource: self.resource,
            job,
            run_id,
            first_load: self.base.is_none(),
            previous_swap: now.map(|(.., swapped_at)| swapped_at),
            listed_at: self.listed_at,
            history: self.history,
            tables: written,
        };
        derived::write(&mut tx, &swap).await?;
        runs::finish(&mut tx, run_id, &Outcome { rows: Some(totals), ..outcome.clone() }).await?;
        tx.commit().await?;
        Ok(ReplaceOutcome::Replaced(totals))
    }

    /// Counts a job whose base (the hashes it read) went stale in
    /// `kubecensus_replace_conflicts_total`.
    fn count_conflict(&self) {
        // The first table is the resource's job table: the metrics' label of every target of it.
        let job_table = &self.tables[0].shape.table.name;
        metrics::worker().replace_conflicts.get_or_create(&metrics::TableLabel::new(job_table)).inc();
    }

    /// Deletes the table's rows the listing did not yield and inserts the new ones; returns the
    /// counts and the inserted rows' hashes. With `history` (the job table's changes recorded),
    /// the new rows go in first and the changes are recorded while both are in the table.
    async fn write_table(
        &self,
        tx: &mut PgConnection,
        table: &TableChanges<'_>,
        history: Option<&changes::Recorded<'_>>,
    ) -> Result<(RowCounts, Vec<Uuid>)> {
        let name = &table.shape.name;
        // The hashes of `of` that `other` lacks.
        let missing = |of: &HashSet128, other: &HashSet128| -> Vec<Uuid> {
            of.iter().filter(|hash| !other.contains(hash)).map(|hash| Uuid::from_u128(*hash)).collect()
        };
        let (removed, inserted) = (missing(&table.current, &table.listed), missing(&table.listed, &table.current));
        if history.is_none() {
            self.delete(tx, table, &removed).await?;
        }
        let columns = table.shape.column_list();
        if let Some(staging) = &table.staging {
            execute(tx, format!("INSERT INTO {name} ({columns}) SELECT {columns} FROM {staging}")).await?;
        }
        if !table.held.is_empty() {
            copy_in(tx, &format!("COPY {name} ({columns}) FROM STDIN"), &table.held).await?;
        }
        if let Some(recorded) = history {
            changes::record(tx, &table.shape, recorded, &removed, &inserted).await?;
            // The new rows are in: only the old ones go, by hash.
            self.delete_hashes(tx, table, &removed).await?;
        }
        let counts =
            RowCounts { total: table.listed.len() as u64, inserted: table.inserted, deleted: removed.len() as u64 };
        Ok((counts, inserted))
    }

    /// Deletes `removed` (hashes) of the table, before its new rows go in: all of the scope's
    /// rows at once when none stays.
    async fn delete(&self, tx: &mut PgConnection, table: &TableChanges<'_>, removed: &[Uuid]) -> Result<()> {
        if removed.len() == table.current.len() && !removed.is_empty() {
            let cluster = Ident::derived(&[CLUSTER_COLUMN]);
            let sql = format!("DELETE FROM {} WHERE {cluster} = $1{}", table.shape.name, self.scope.condition(2));
            sqlx::query_with(&sql, self.scope.arguments(&self.cluster)?).execute(&mut *tx).await?;
            return Ok(());
        }
        self.delete_hashes(tx, table, removed).await
    }

    /// Deletes the rows of the table whose hashes are `removed`.
    async fn delete_hashes(&self, tx: &mut PgConnection, table: &TableChanges<'_>, removed: &[Uuid]) -> Result<()> {
        if !removed.is_empty() {
            let (cluster, hash) = (Ident::derived(&[CLUSTER_COLUMN]), Ident::derived(&[ROW_HASH_COLUMN]));
            sqlx::query(&format!("DELETE FROM {} WHERE {cluster} = $1 AND {hash} = ANY($2)", table.shape.name))
                .bind(&self.cluster)
                .bind(removed)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }
}
