//! Object change history: what each replace changed, per object, in `object_changes`, written
//! in the replace's own transaction ([`super::derived`]), so history and snapshot never disagree
//! and a failed, rolled-back or superseded job records nothing.
//!
//! It is computed inside PostgreSQL from the rows the replace deletes and inserts, for the job
//! table of a resource (one row per object, by `uid`): the deleted rows are moved, as they are
//! deleted, into a temporary table of the session that is emptied at every commit
//! ([`keeping_removed`]; `ON COMMIT DELETE ROWS`), and the inserted rows are read back by their
//! `row_hash`. Paired by uid, an object only deleted is `deleted`, only inserted `created`, and
//! both `updated` unless the two rows compare equal once the noise is left out:
//!
//! - `resource_version` and `row_hash` (a bumped version alone does not even rewrite a row: it is
//!   not hashed, [`super::replace`]); `metadata.managedFields` is in no column;
//! - the status heartbeats of [`HEARTBEATS`], removed from each condition before comparing;
//! - the columns of [`CLOCK_DERIVED`], which change with the clock (a Pending Pod's health).
//!
//! A row written before `resource_version` existed (before this history) pairs with nothing: its
//! object's first rewrite (every row is rewritten once after an upgrade adds columns) is not an
//! `updated`. For the tables of [`DIFFED`], `changed_columns` holds each changed column's old and
//! new value. A scope's first load is a baseline, not a storm of `created`: one row in
//! `change_baselines` per (cluster, job target), replaced by a later first load (a cluster
//! pruned and back).

use sqlx::PgConnection;

use super::{
    derived::{Swap, TableWrite},
    execute,
    schema::TableShape,
    sql::{Ident, literal},
};
use crate::{
    Result,
    model::catalog::{CLUSTER_COLUMN, RESOURCE_VERSION_COLUMN},
    store::schema::ROW_HASH_COLUMN,
};

/// The session's temporary table of the rows a replace deleted, as `jsonb`, emptied at commit.
const REMOVED: &str = "pg_temp.kubecensus_removed";

/// Condition fields that change without anything happening, left out of the comparison:
/// (table, JSON column holding a list of conditions, key removed from each element).
///
/// - `NodeCondition.lastHeartbeatTime`, "Last time we got an update on a given condition": the
///   kubelet rewrites it at every node status report (`nodeStatusReportFrequency`, 5 min by
///   default, sooner on any change) (k8s.io/api `core/v1/types.go`; kubelet's
///   `KubeletConfiguration`).
/// - `PodCondition.lastProbeTime`, "Last time we probed the condition" (same file).
pub const HEARTBEATS: &[(&str, &str, &str)] =
    &[("kubernetes_nodes", "conditions", "lastHeartbeatTime"), ("kubernetes_pods", "conditions", "lastProbeTime")];

/// Columns whose value follows the clock, not the object, left out of the comparison: (table,
/// columns). kstatus decides an unschedulable Pending Pod's health by its age (`InProgress`
/// within `ScheduleWindow`, 15 s, of its creation, `Failed` after: [`crate::model::health`]), so
/// its health columns change between two listings of the same object; its phase and conditions,
/// which decide the health, are compared.
pub const CLOCK_DERIVED: &[(&str, &[&str])] = &[("kubernetes_pods", &["health", "health_message", "health_since"])];

/// The tables whose `updated` rows say which columns changed (`changed_columns`), with the
/// columns compared (`None`: every column).
pub const DIFFED: &[(&str, Option<&[&str]>)] = &[
    ("kubernetes_deployments", None),
    ("kubernetes_stateful_sets", None),
    ("kubernetes_daemon_sets", None),
    ("kubernetes_config_maps", None),
    ("kubernetes_nodes", None),
    ("kubernetes_services", None),
    ("kubernetes_ingresses", None),
    ("kubernetes_custom_resources", Some(&["spec"])),
    ("kubernetes_pods", Some(&["container_images"])),
];

/// Whether changes of `shape`'s table are recorded: it has a `uid` and a `resource_version`.
pub(super) fn records(shape: &TableShape<'_>) -> bool {
    shape.table.has_column("uid") && shape.table.has_column(RESOURCE_VERSION_COLUMN)
}

/// Makes the session's table of deleted rows, in the replace's transaction (once per session;
/// its rows go at every commit or rollback). Its rows stay uncompressed in the table up to 8 KB
/// (`toast_tuple_target`, <https://www.postgresql.org/docs/15/sql-createtable.html>): a pod's row
/// as `jsonb` is about 4 KB, and compressing each one into TOAST doubled the cost of keeping it
/// (200 pods: 16 to 20 ms, 9 ms without).
pub(super) async fn prepare(tx: &mut PgConnection) -> Result<()> {
    execute(
        tx,
        format!(
            "SET LOCAL client_min_messages = warning;
             CREATE TEMP TABLE IF NOT EXISTS {} (row jsonb NOT NULL) WITH (toast_tuple_target = 8160)
               ON COMMIT DELETE ROWS",
            REMOVED.trim_start_matches("pg_temp.")
        ),
    )
    .await
}

/// `delete` (a `DELETE FROM <table> WHERE ...`, without `RETURNING`) keeping each deleted row in
/// the session's table of deleted rows ([`prepare`] first).
pub(super) fn keeping_removed(delete: &str) -> String {
    format!("WITH gone AS ({delete} RETURNING *) INSERT INTO {REMOVED} (row) SELECT to_jsonb(gone) FROM gone")
}

/// Records `swap`'s changes: its baseline on a first load, else the changed objects of its job
/// table. Nothing when the swap keeps no history.
///
/// # Errors
/// Any SQL error (the replace then rolls back).
pub async fn write(tx: &mut PgConnection, swap: &Swap<'_>) -> Result<()> {
    if !swap.history {
        return Ok(());
    }
    let Some(table) = swap.tables.first() else { return Ok(()) };
    if swap.first_load {
        return write_baseline(tx, swap, table).await;
    }
    if !table.history || table.counts.inserted + table.counts.deleted == 0 {
        return Ok(());
    }
    sqlx::query(&changes_sql(table))
        .bind(swap.cluster)
        .bind(&table.inserted)
        .bind(swap.listed_at)
        .bind(&table.shape.table.name)
        .bind(swap.job.id)
        .bind(swap.run_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Records that the scope's rows as of this swap are where its history starts.
async fn write_baseline(tx: &mut PgConnection, swap: &Swap<'_>, table: &TableWrite<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO change_baselines (cluster_name, table_name, baseline_at, job_id, run_id, objects)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (cluster_name, table_name) DO UPDATE SET baseline_at = EXCLUDED.baseline_at,
           job_id = EXCLUDED.job_id, run_id = EXCLUDED.run_id, objects = EXCLUDED.objects",
    )
    .bind(swap.cluster)
    .bind(&swap.job.table)
    .bind(swap.listed_at)
    .bind(swap.job.id)
    .bind(swap.run_id)
    .bind(table.counts.total as i64)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The statement recording a table's changes: `$1` cluster, `$2` the inserted rows' hashes, `$3`
/// the listing's time, `$4` the table's name, `$5` the job, `$6` the run.
fn changes_sql(table: &TableWrite<'_>) -> String {
    let name = table.shape.table.name.as_str();
    let old = match table.counts.deleted {
        0 => "SELECT NULL::text AS uid, NULL::jsonb AS v WHERE false".to_owned(),
        _ => format!("SELECT row->>'uid' AS uid, row AS v FROM {REMOVED}"),
    };
    let diff = match DIFFED.iter().find(|(diffed, _)| *diffed == name) {
        None => "NULL::jsonb".to_owned(),
        Some((_, columns)) => {
            let only = match columns {
                None => String::new(),
                Some(columns) => {
                    let names: Vec<String> = columns.iter().map(|c| literal(c)).collect();
                    format!(" AND k IN ({})", names.join(", "))
                }
            };
            format!(
                "CASE WHEN ov IS NOT NULL AND nv IS NOT NULL THEN (SELECT coalesce(jsonb_object_agg(k, \
                 jsonb_build_object('old', oc->k, 'new', nc->k)), '{{}}') FROM jsonb_object_keys(nc) k \
                 WHERE (oc->k) IS DISTINCT FROM (nc->k){only}) END"
            )
        }
    };
    format!(
        "WITH old AS ({old}),
              new AS (SELECT t.uid, to_jsonb(t) AS v FROM {table} t WHERE t.{cluster_ident} = $1 AND t.{hash_ident} = ANY($2)),
              pairs AS (SELECT coalesce(n.uid, o.uid) AS uid, o.v AS ov, n.v AS nv, {oc} AS oc, {nc} AS nc
                        FROM old o FULL JOIN new n ON o.uid = n.uid)
         INSERT INTO object_changes (changed_at, cluster_name, table_name, namespace, name, uid, change,
                                     old_resource_version, new_resource_version, job_id, run_id, changed_columns)
         SELECT $3, $1, $4, coalesce(nv, ov)->>'namespace', coalesce(nv, ov)->>'name', uid,
                CASE WHEN ov IS NULL THEN 'created' WHEN nv IS NULL THEN 'deleted' ELSE 'updated' END,
                ov->>{rv}, nv->>{rv}, $5, $6, {diff}
         FROM pairs
         WHERE uid IS NOT NULL
           AND (ov IS NULL OR nv IS NULL OR (oc IS DISTINCT FROM nc AND ov->>{rv} IS NOT NULL))",
        table = table.shape.name,
        cluster_ident = Ident::derived(&[CLUSTER_COLUMN]),
        hash_ident = Ident::derived(&[ROW_HASH_COLUMN]),
        oc = compared(name, "o.v"),
        nc = compared(name, "n.v"),
        rv = literal(RESOURCE_VERSION_COLUMN),
    )
}

/// SQL of the value a row (`row`, its `jsonb`) is compared by: without `row_hash`,
/// `resource_version` and its table's [`CLOCK_DERIVED`] columns, and without its table's
/// [`HEARTBEATS`].
fn compared(table: &str, row: &str) -> String {
    let clock = CLOCK_DERIVED.iter().filter(|(name, _)| *name == table).flat_map(|(_, columns)| columns.iter());
    let left_out: Vec<String> =
        [ROW_HASH_COLUMN, RESOURCE_VERSION_COLUMN].iter().chain(clock).map(|c| literal(c)).collect();
    let mut value = format!("({row} - ARRAY[{}])", left_out.join(", "));
    for (_, column, key) in HEARTBEATS.iter().filter(|(name, _, _)| *name == table) {
        let (column, key) = (literal(column), literal(key));
        value = format!(
            "({value} || jsonb_build_object({column}, (SELECT jsonb_agg(e.value - {key} ORDER BY e.ordinality) \
             FROM jsonb_array_elements(CASE jsonb_typeof({row}->{column}) WHEN 'array' THEN {row}->{column} \
             ELSE '[]' END) WITH ORDINALITY e)))"
        );
    }
    value
}
