//! Object change history: what each replace changed, per object, in `object_changes`, written
//! in the replace's own transaction ([`super::replace`]), so history and snapshot never disagree
//! and a failed, rolled-back or superseded job records nothing.
//!
//! It is computed inside PostgreSQL from the rows the replace deletes and inserts, for the job
//! table of a resource (one row per object, by `uid`), between the replace's insert of the new
//! rows and its delete of the old ones: both are in the table then, found by their `row_hash`
//! (the primary key), and compared as they are stored, column by column, with no copy of either.
//! Paired by uid, an object only deleted is `deleted`, only inserted `created`, and both
//! `updated` unless the two rows compare equal once the noise is left out:
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

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    derived::Swap,
    schema::TableShape,
    sql::{Ident, literal},
};
use crate::{
    Result,
    model::catalog::{CLUSTER_COLUMN, RESOURCE_VERSION_COLUMN},
    store::schema::ROW_HASH_COLUMN,
};

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

/// The job, run and listing a replace's changes are recorded for.
pub(super) struct Recorded<'a> {
    pub cluster: &'a str,
    pub listed_at: DateTime<Utc>,
    pub job_id: Uuid,
    pub run_id: Uuid,
}

/// Records the changes of `shape`'s table between its rows `removed` and `inserted` (hashes),
/// both in the table: after the replace inserted the new rows, before it deletes the old.
///
/// # Errors
/// Any SQL error (the replace then rolls back).
pub(super) async fn record(
    tx: &mut PgConnection,
    shape: &TableShape<'_>,
    at: &Recorded<'_>,
    removed: &[Uuid],
    inserted: &[Uuid],
) -> Result<()> {
    if removed.is_empty() && inserted.is_empty() {
        return Ok(());
    }
    sqlx::query(&changes_sql(shape))
        .bind(at.cluster)
        .bind(removed)
        .bind(inserted)
        .bind(at.listed_at)
        .bind(&shape.table.name)
        .bind(at.job_id)
        .bind(at.run_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Records that `swap`'s scope's rows as of this swap are where its history starts, on a first
/// load. Nothing when the swap keeps no history.
///
/// # Errors
/// Any SQL error (the replace then rolls back).
pub async fn write_baseline(tx: &mut PgConnection, swap: &Swap<'_>) -> Result<()> {
    let Some(table) = swap.tables.first() else { return Ok(()) };
    if !swap.history || !swap.first_load {
        return Ok(());
    }
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

/// The statement recording a table's changes: `$1` cluster, `$2` the deleted rows' hashes, `$3`
/// the inserted rows' hashes, `$4` the listing's time, `$5` the table's name, `$6` the job, `$7`
/// the run. `o` is an old row, `n` a new one; a side is missing where its `row_hash` is NULL.
fn changes_sql(shape: &TableShape<'_>) -> String {
    let table = shape.table;
    let column = |name: &str| Ident::derived(&[name]).to_string();
    let (cluster, hash, rv) = (column(CLUSTER_COLUMN), column(ROW_HASH_COLUMN), column(RESOURCE_VERSION_COLUMN));
    let compared = compared_columns(shape);
    let values = |side: &str| compared.iter().map(|c| c.value(side)).collect::<Vec<_>>().join(", ");
    let diff = match DIFFED.iter().find(|(diffed, _)| *diffed == table.name) {
        None => "NULL::jsonb".to_owned(),
        Some((_, only)) => {
            let parts: Vec<String> = compared
                .iter()
                .filter(|c| only.is_none_or(|only| only.contains(&c.name.as_str())))
                .map(|c| {
                    let (old, new) = (c.value("o"), c.value("n"));
                    format!(
                        "CASE WHEN {old} IS DISTINCT FROM {new} THEN jsonb_build_object({}, \
                         jsonb_build_object('old', to_jsonb({old}), 'new', to_jsonb({new}))) ELSE '{{}}'::jsonb END",
                        literal(&c.name)
                    )
                })
                .collect();
            if parts.is_empty() {
                "'{}'::jsonb".to_owned()
            } else {
                format!("CASE WHEN o.{hash} IS NOT NULL AND n.{hash} IS NOT NULL THEN {} END", parts.join(" || "))
            }
        }
    };
    let namespace = if table.has_column("namespace") {
        format!("coalesce(n.{0}, o.{0})", column("namespace"))
    } else {
        "NULL".to_owned()
    };
    let (name, uid) = (column("name"), column("uid"));
    format!(
        "WITH o AS (SELECT * FROM {table_name} WHERE {cluster} = $1 AND {hash} = ANY($2)),
              n AS (SELECT * FROM {table_name} WHERE {cluster} = $1 AND {hash} = ANY($3))
         INSERT INTO object_changes (changed_at, cluster_name, table_name, namespace, name, uid, change,
                                     old_resource_version, new_resource_version, job_id, run_id, changed_columns)
         SELECT $4, $1, $5, {namespace}, coalesce(n.{name}, o.{name}), coalesce(n.{uid}, o.{uid}),
                CASE WHEN o.{hash} IS NULL THEN 'created' WHEN n.{hash} IS NULL THEN 'deleted' ELSE 'updated' END,
                o.{rv}, n.{rv}, $6, $7, {diff}
         FROM o FULL JOIN n ON o.{uid} = n.{uid}
         WHERE coalesce(n.{uid}, o.{uid}) IS NOT NULL
           AND (o.{hash} IS NULL OR n.{hash} IS NULL OR (o.{rv} IS NOT NULL AND ({old}) IS DISTINCT FROM ({new})))",
        table_name = shape.name,
        old = values("o"),
        new = values("n"),
    )
}

/// A column two rows are compared by.
struct Compared {
    name: String,
    /// The heartbeat key left out of each of its conditions ([`HEARTBEATS`]).
    heartbeat: Option<&'static str>,
}

impl Compared {
    /// Its value in the row of `side` (`o` or `n`), as SQL.
    fn value(&self, side: &str) -> String {
        let column = format!("{side}.{}", Ident::derived(&[&self.name]));
        match self.heartbeat {
            None => column,
            Some(key) => format!(
                "(SELECT jsonb_agg(e.value - {} ORDER BY e.ordinality) FROM jsonb_array_elements(\
                 CASE jsonb_typeof({column}) WHEN 'array' THEN {column} ELSE '[]' END) WITH ORDINALITY e)",
                literal(key)
            ),
        }
    }
}

/// The columns two rows of `shape`'s table are compared by: every column but the cluster,
/// `row_hash`, `resource_version` and its table's [`CLOCK_DERIVED`] columns, the conditions of
/// its [`HEARTBEATS`] without their heartbeat.
fn compared_columns(shape: &TableShape<'_>) -> Vec<Compared> {
    let table = shape.table.name.as_str();
    let clock = CLOCK_DERIVED.iter().filter(|(name, _)| *name == table).flat_map(|(_, columns)| columns.iter());
    let left_out: Vec<&str> =
        [CLUSTER_COLUMN, ROW_HASH_COLUMN, RESOURCE_VERSION_COLUMN].into_iter().chain(clock.copied()).collect();
    shape
        .columns
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| !left_out.contains(name))
        .map(|name| Compared {
            name: name.to_owned(),
            heartbeat: HEARTBEATS.iter().find(|(t, c, _)| *t == table && *c == name).map(|(_, _, key)| *key),
        })
        .collect()
}
