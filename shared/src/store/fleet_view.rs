//! `fleet_objects`: one view of every object with a health, across clusters and kinds (the
//! multi-cluster RFC's single pane of glass).
//!
//! It is the `UNION ALL` of every catalog table with a `health` column and one row per object:
//! custom resources (their `api_group` and `kind` columns) and the native kinds (their catalog
//! group and kind as constants): Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, Pods,
//! Nodes, PersistentVolumeClaims, Services, CustomResourceDefinitions. Columns: `cluster_name`,
//! the registry's cluster fields, `namespace` (`''` for cluster-scoped objects, so keyset
//! pagination compares no NULLs), the namespace fields, `api_group`, `kind`, `name`, `uid`,
//! `health`, `message`, `since` (`timestamptz`).
//!
//! Each table has a partial index on `(cluster_name, namespace, name, uid) WHERE health <>
//! 'Current'`, so "every object not Current, in (cluster, namespace, name) order, 50 at a time"
//! with keyset pagination reads a merge of small index ranges, never the healthy rows.

use sqlx::{Connection, PgPool};

use super::{
    execute,
    sql::{Ident, literal},
};
use crate::{
    Result,
    model::catalog::{GROUP_COLUMN, KIND_COLUMN, ResourceSource, catalog},
};

/// The view's name.
pub const VIEW: &str = "fleet_objects";

/// The column a table needs to be part of the view.
const HEALTH_COLUMN: &str = "health";

/// Creates (or recreates, for the registry's current fields) the view and the tables' partial
/// indexes of unhealthy objects.
pub async fn ensure(pool: &PgPool, fields: &[String], namespace_fields: &[String]) -> Result<()> {
    let column = |name: &str| Ident::derived(&[name]);
    let mut branches = Vec::new();
    let mut indexes = Vec::new();
    for (resource, table) in catalog().tables() {
        if !table.has_column(HEALTH_COLUMN) || !table.rows.is_empty() {
            continue;
        }
        let name = column(&table.name);
        let namespaced = table.has_column("namespace");
        let namespace = if namespaced { format!("coalesce({}, '')", column("namespace")) } else { "''".to_owned() };
        let (group, kind) = if resource.source == ResourceSource::Custom {
            (column(GROUP_COLUMN).to_string(), column(KIND_COLUMN).to_string())
        } else {
            (literal(&resource.api.group), literal(&resource.api.kind))
        };
        let mut select = vec![column("cluster_name").to_string()];
        select.extend(fields.iter().map(|f| column(f).to_string()));
        select.push(format!("{namespace} AS {}", column("namespace")));
        for field in namespace_fields {
            select.push(if namespaced {
                column(field).to_string()
            } else {
                format!("NULL::text AS {}", column(field))
            });
        }
        select.extend([
            format!("{group} AS {}", column(GROUP_COLUMN)),
            format!("{kind} AS {}", column(KIND_COLUMN)),
            column("name").to_string(),
            column("uid").to_string(),
            column(HEALTH_COLUMN).to_string(),
            format!("{} AS {}", column("health_message"), column("message")),
            format!("to_timestamp({}) AS {}", column("health_since"), column("since")),
        ]);
        branches.push(format!("SELECT {} FROM {name}", select.join(", ")));
        let key = if namespaced { format!("({namespace}), ") } else { String::new() };
        indexes.push(format!(
            "CREATE INDEX IF NOT EXISTS {} ON {name} ({}, {key}{}, {}) WHERE {} <> 'Current'",
            Ident::derived(&[&table.name, "unhealthy"]),
            column("cluster_name"),
            column("name"),
            column("uid"),
            column(HEALTH_COLUMN)
        ));
    }
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('kubecensus fleet_objects', 0))")
        .execute(&mut *tx)
        .await?;
    execute(&mut tx, indexes.join("; ")).await?;
    let view = column(VIEW);
    execute(&mut tx, format!("DROP VIEW IF EXISTS {view}; CREATE VIEW {view} AS {}", branches.join(" UNION ALL ")))
        .await?;
    tx.commit().await?;
    Ok(())
}
