//! Event history: every event an events listing saw, kept after the cluster forgets it, and the
//! gaps in which events may have come and gone unseen.
//!
//! An API server keeps an event for its `--event-ttl` (1 hour by default) after the event's last
//! update, and `kubernetes_events` holds only what the last listing saw. `event_history` keeps one
//! row per event occurrence key (cluster, uid, `created`: the event's
//! `metadata.creationTimestamp`, which never changes for one uid), with every column of
//! `kubernetes_events` (the catalog's, not the registry's fields), plus:
//!
//! - `created` (`timestamptz`), the range partition key (daily partitions are kept by the
//!   retention code; rows land in `kubecensus_history.event_history_default` until then);
//! - `first_seen`: the listing (its commit) that first saw the event; `last_seen`: the listing
//!   that first saw its current occurrence (count and last time), which moves only with them;
//! - `regarding_labels`, `regarding_owner_kind`, `regarding_owner_name`: the labels and
//!   controlling owner of the object the event is about, from kubecensus's current rows of that
//!   object when the event is first seen ([`REGARDED_KINDS`]; owners where the table has
//!   `owner_kind`, as `kubernetes_pods` and `kubernetes_replica_sets` do).
//!
//! Both event APIs repeat an event on the same object (same uid, new resourceVersion): client-go's
//! correlator bumps `count` and `lastTimestamp` (served by `events.k8s.io/v1` as
//! `deprecatedCount`, `deprecatedLastTimestamp`), and `events.k8s.io/v1` recorders bump
//! `series.count` and `series.lastObservedTime` (KEP-383, the new Event API). An occurrence is
//! ranked by (count, last time): the count is `series.count`, else `deprecatedCount` (the
//! catalog's `count` column), else 1; the last time is `series.lastObservedTime`, else
//! `deprecatedLastTimestamp`. A listed event updates its row only when its occurrence ranks
//! higher than the row's: the same listing twice, two workers, a restart or a late job never
//! move a row backwards (`INSERT ... ON CONFLICT DO UPDATE ... WHERE`, [`upsert`]).
//!
//! The rows come from the rows the events swap has just inserted into `kubernetes_events` (new
//! or changed events, by `row_hash`), by SQL in the swap's own transaction ([`write`]): a failed,
//! rolled-back or superseded job writes no history, and no event passes through the worker's
//! memory. An unchanged event inserts no row, so costs nothing.
//!
//! A gap: when the swap comes longer than the cluster's event lifetime (`clusters.event_lifetime`,
//! from the registry's `event_lifetime`) after the previous events swap, one row of
//! `event_gaps` says so (from the previous swap to this one, and why: the runs that failed in
//! between, or that none ran), in the same transaction, and `kubecensus_event_gaps_total` counts it.

use std::sync::LazyLock;

use sqlx::{PgConnection, PgPool};

use super::{
    derived::Swap,
    schema::{DDL_LOCKS, column_names},
    sql::{Ident, Qualified, list, literal},
};
use crate::{
    Error, Result,
    model::catalog::{CLUSTER_COLUMN, Catalog, Table},
    ops::metrics,
};

/// The history table, in `public`.
pub const HISTORY_TABLE: &str = "event_history";

/// The gaps table (migration 0006).
pub const GAPS_TABLE: &str = "event_gaps";

/// The schema of the history's partitions (migration 0006).
pub const HISTORY_SCHEMA: &str = "kubecensus_history";

/// The catalog table whose rows the history keeps.
pub const EVENTS_TABLE: &str = "kubernetes_events";

/// The kinds an event's `regarding` object is looked up in, each in its catalog table: those
/// most events are about (the kubelet's and scheduler's about Pods, the node controller's about
/// Nodes, the workload controllers' about their objects, volume binding's about claims).
pub const REGARDED_KINDS: &[&str] =
    &["Pod", "Node", "ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job", "PersistentVolumeClaim"];

/// The history's columns beyond the events table's, with their types.
const HISTORY_COLUMNS: &[(&str, &str)] = &[
    ("created", "timestamptz NOT NULL"),
    ("first_seen", "timestamptz NOT NULL"),
    ("last_seen", "timestamptz NOT NULL"),
    ("regarding_labels", "jsonb"),
    ("regarding_owner_kind", "text"),
    ("regarding_owner_name", "text"),
];

/// The table of one of [`REGARDED_KINDS`], as the lookup needs it.
struct Regarded {
    kind: &'static str,
    table: String,
    namespaced: bool,
    /// It has `owner_kind` and `owner_name`.
    owned: bool,
}

/// The catalog tables of [`REGARDED_KINDS`] (one row per object), from the built-in catalog.
static REGARDED: LazyLock<Vec<Regarded>> = LazyLock::new(|| {
    let catalog = Catalog::builtin();
    REGARDED_KINDS
        .iter()
        .filter_map(|kind| {
            let (_, table) =
                catalog.tables().find(|(resource, table)| resource.api.kind == *kind && table.rows.is_empty())?;
            Some(Regarded {
                kind,
                table: table.name.clone(),
                namespaced: table.has_column("namespace"),
                owned: table.has_column("owner_kind"),
            })
        })
        .collect()
});

fn column(name: &str) -> Ident {
    Ident::derived(&[name])
}

fn history() -> Qualified {
    Qualified { schema: column("public"), name: column(HISTORY_TABLE) }
}

/// Creates `event_history` (range-partitioned by `created`, with its DEFAULT partition and its
/// indexes) when missing, and adds the columns `catalog`'s events table has and it lacks;
/// nothing for a catalog without an events table. Safe from many processes at once (an
/// advisory lock), under [`DDL_LOCKS`].
///
/// # Errors
/// Any SQL error.
pub async fn ensure(pool: &PgPool, catalog: &Catalog) -> Result<()> {
    let Some((_, events)) = catalog.tables().find(|(_, table)| table.name == EVENTS_TABLE) else {
        return Ok(());
    };
    let mut conn = pool.acquire().await?;
    let mut attempt = 1;
    loop {
        let mut tx = DDL_LOCKS.begin(&mut conn).await?;
        let result = match ensure_in(&mut tx, events).await {
            Ok(()) => tx.commit().await.map_err(Error::from),
            Err(err) => Err(err),
        };
        if DDL_LOCKS.settle(HISTORY_TABLE, &mut attempt, result).await? {
            return Ok(());
        }
    }
}

/// The DDL of [`ensure`] in its transaction.
async fn ensure_in(tx: &mut PgConnection, events: &Table) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('kubecensus event_history', 0))")
        .execute(&mut *tx)
        .await?;
    let table = history();
    let columns: Vec<(String, String)> = events
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.ty.sql_type().to_owned()))
        .chain(HISTORY_COLUMNS.iter().map(|(name, ty)| ((*name).to_owned(), (*ty).to_owned())))
        .collect();
    let definitions: Vec<String> = columns.iter().map(|(name, ty)| format!("{} {ty}", column(name))).collect();
    let default = Qualified { schema: column(HISTORY_SCHEMA), name: Ident::derived(&[HISTORY_TABLE, "default"]) };
    super::execute(
        tx,
        format!(
            "CREATE TABLE IF NOT EXISTS {table} ({}, PRIMARY KEY ({}, uid, created)) PARTITION BY RANGE (created);
             CREATE TABLE IF NOT EXISTS {default} PARTITION OF {table} DEFAULT;
             CREATE INDEX IF NOT EXISTS {} ON {table} (last_seen);
             CREATE INDEX IF NOT EXISTS {} ON {table} ({}, regarding_namespace, regarding_owner_name)",
            definitions.join(", "),
            column(CLUSTER_COLUMN),
            Ident::derived(&[HISTORY_TABLE, "last_seen"]),
            Ident::derived(&[HISTORY_TABLE, "owner"]),
            column(CLUSTER_COLUMN),
        ),
    )
    .await?;
    let existing = column_names(tx, "public", HISTORY_TABLE).await?;
    let added: Vec<String> = columns
        .iter()
        .filter(|(name, _)| !existing.contains(name))
        .map(|(name, ty)| format!("ADD COLUMN {} {ty}", column(name)))
        .collect();
    if !added.is_empty() {
        super::execute(tx, format!("ALTER TABLE {table} {}", added.join(", "))).await?;
    }
    Ok(())
}

/// Keeps the events `swap` inserted into `kubernetes_events` in the history and records a gap
/// since the previous events swap; nothing for a swap of another table.
///
/// # Errors
/// Any SQL error (the swap's transaction then rolls back).
pub(super) async fn write(tx: &mut PgConnection, swap: &Swap<'_>) -> Result<()> {
    let Some(events) = swap.tables.first().filter(|table| table.shape.table.name == EVENTS_TABLE) else {
        return Ok(());
    };
    if !events.inserted.is_empty() {
        // Only the kinds these events are about are joined: planning each joined table (its
        // partition and indexes) costs more than the join itself.
        let kinds: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT DISTINCT regarding_kind FROM {} WHERE {} = $1 AND row_hash = ANY($2) AND regarding_kind IS NOT NULL",
            column(EVENTS_TABLE),
            column(CLUSTER_COLUMN)
        ))
        .bind(swap.cluster)
        .bind(&events.inserted)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(&upsert(events.shape.table, &kinds))
            .bind(swap.cluster)
            .bind(&events.inserted)
            // Planned with the cluster's name at hand, so only its partitions are planned.
            .persistent(false)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(previous) = swap.previous_swap {
        let recorded = sqlx::query(GAP)
            .bind(swap.cluster)
            .bind(previous)
            .bind(swap.run_id)
            .bind(EVENTS_TABLE)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        metrics::worker().event_gaps.inc_by(recorded);
    }
    Ok(())
}

/// An occurrence's rank as SQL over the history's columns of `row`: (count, last time), see the
/// module doc.
fn occurrence(row: &str) -> String {
    format!("(coalesce({row}.count, 1), coalesce({row}.series_last_observed, {row}.last_timestamp, 0))")
}

/// `INSERT INTO event_history ... SELECT` from the rows of `events` (the catalog's events table)
/// of cluster `$1` whose `row_hash` is in `$2`, each joined to its regarding object's row when
/// that object's kind is among `kinds` (and [`REGARDED_KINDS`]); a row already there is updated
/// only by a higher occurrence.
pub(super) fn upsert(events: &Table, kinds: &[String]) -> String {
    let names: Vec<Ident> = events.columns.iter().map(|c| column(&c.name)).collect();
    let mut joins = String::new();
    let (mut labels, mut owner_kinds, mut owner_names) = (Vec::new(), Vec::new(), Vec::new());
    let regarded_here = REGARDED.iter().filter(|regarded| kinds.iter().any(|kind| kind == regarded.kind));
    for (index, regarded) in regarded_here.enumerate() {
        let alias = format!("r{index}");
        let namespace =
            if regarded.namespaced { format!(" AND {alias}.namespace = e.regarding_namespace") } else { String::new() };
        joins.push_str(&format!(
            " LEFT JOIN {table} {alias} ON e.regarding_kind = {kind} AND {alias}.{cluster} = e.{cluster}{namespace} \
             AND {alias}.name = e.regarding_name AND (e.regarding_uid IS NULL OR {alias}.uid = e.regarding_uid)",
            table = column(&regarded.table),
            kind = literal(regarded.kind),
            cluster = column(CLUSTER_COLUMN),
        ));
        labels.push(format!("{alias}.labels"));
        if regarded.owned {
            owner_kinds.push(format!("{alias}.owner_kind"));
            owner_names.push(format!("{alias}.owner_name"));
        }
    }
    let any = |values: Vec<String>| {
        if values.is_empty() { "NULL".to_owned() } else { format!("coalesce({})", values.join(", ")) }
    };
    let selected: Vec<String> = names.iter().map(|name| format!("e.{name}")).collect();
    let updated: Vec<String> = names
        .iter()
        .filter(|name| ![CLUSTER_COLUMN, "uid"].contains(&name.as_str()))
        .map(|name| format!("{name} = EXCLUDED.{name}"))
        .collect();
    format!(
        "INSERT INTO {history} ({columns}, created, first_seen, last_seen, regarding_labels, regarding_owner_kind, \
         regarding_owner_name) \
         SELECT DISTINCT ON (e.uid, e.creation_timestamp) {selected}, to_timestamp(e.creation_timestamp), now(), now(), \
         {labels}, {owner_kinds}, {owner_names} \
         FROM {events} e{joins} \
         WHERE e.{cluster} = $1 AND e.row_hash = ANY($2) AND e.uid IS NOT NULL AND e.creation_timestamp IS NOT NULL \
         ORDER BY e.uid, e.creation_timestamp, {rank} DESC \
         ON CONFLICT ({cluster}, uid, created) DO UPDATE SET {updated}, last_seen = EXCLUDED.last_seen \
         WHERE {excluded} > {current}",
        history = history(),
        columns = list(&names),
        selected = selected.join(", "),
        labels = any(labels),
        owner_kinds = any(owner_kinds),
        owner_names = any(owner_names),
        events = column(&events.name),
        cluster = column(CLUSTER_COLUMN),
        rank = occurrence("e"),
        updated = updated.join(", "),
        excluded = occurrence("EXCLUDED"),
        current = occurrence(&column(HISTORY_TABLE).to_string()),
    )
}

/// Records a gap for cluster `$1` whose previous events swap was at `$2`, when this one (run
/// `$3`, of table `$4`) comes longer than its event lifetime after it (1 hour for a cluster not
/// in `clusters`). The reason names the runs of the table that did not succeed in between, or
/// says that none ran.
const GAP: &str = "
    INSERT INTO event_gaps (cluster_name, gap_from, gap_to, reason, run_id)
    SELECT $1, $2, now(),
        format('no events listing succeeded for %s, longer than the cluster''s event lifetime (%s): %s',
            date_trunc('second', now() - $2), lifetime,
            coalesce(
                (SELECT format('%s runs did not succeed, the last %s: %s', count(*),
                    (array_agg(status ORDER BY started_at DESC))[1],
                    coalesce((array_agg(error ORDER BY started_at DESC))[1], 'no error recorded'))
                 FROM runs
                 WHERE cluster_name = $1 AND table_name = $4 AND started_at > $2
                   AND status NOT IN ('running', 'succeeded')
                 HAVING count(*) > 0),
                'no events job ran in between (workers stopped, or jobs not published or lost)')),
        $3
    FROM (SELECT coalesce((SELECT event_lifetime FROM clusters WHERE name = $1), interval '1 hour') AS lifetime) l
    WHERE now() - $2 > lifetime";
