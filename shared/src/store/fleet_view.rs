//! `fleet_objects`: one view of every object with a health, across clusters and kinds (the
//! multi-cluster RFC's single pane of glass), and `fleet_unhealthy_objects`: the rows of that
//! view that are not Current, as a table, for paging through what needs attention.
//!
//! The view is the `UNION ALL` of every catalog table with a `health` column and one row per
//! object: custom resources (their `api_group` and `kind` columns) and the native kinds (their
//! catalog group and kind as constants): Deployments, StatefulSets, DaemonSets, ReplicaSets,
//! Jobs, Pods, Nodes, PersistentVolumeClaims, Services, CustomResourceDefinitions. Columns:
//! `cluster_name`, the registry's cluster fields, `namespace` (`''` for cluster-scoped objects,
//! so keyset pagination compares no NULLs), the namespace fields, `api_group`, `kind`, `name`,
//! `uid`, `health`, `message`, `since` (`timestamptz`), `labels` (`jsonb`).
//!
//! Planning the view means planning every partition of each of its tables (11 × 16, with their
//! indexes): 30 to 130 ms per query as SQL text, whatever the rows (BENCHMARKS.md). The RFC's
//! question, "every object not Current, 50 at a time", is answered from the table instead: the
//! same columns plus `table_name`, one small unpartitioned table with an index in keyset order,
//! planned in well under a millisecond. A replace that changed a cluster's rows of a table in the
//! view rewrites that cluster's (and scope's) rows of the table in the same transaction
//! ([`unhealthy_rewrite`]), so the two agree at every commit. Each data table keeps a partial
//! index of its rows not Current, which that rewrite reads. The view is `security_invoker`: a
//! viewer reads its tables under its own row-level security ([`super::access`]).

use sqlx::{PgConnection, PgPool};

use super::{
    access::VIEWER_ROLE,
    execute,
    schema::{DDL_LOCKS, PARTITION_STORAGE, TableShape, add_text_columns, column_names, table_exists},
    sql::{Ident, literal},
};
use crate::{
    Error, Result,
    model::catalog::{CLUSTER_COLUMN, Catalog, GROUP_COLUMN, KIND_COLUMN, Resource, ResourceSource, Table},
};

/// The view's name.
pub const VIEW: &str = "fleet_objects";

/// The table of the view's rows that are not Current.
pub const UNHEALTHY_TABLE: &str = "fleet_unhealthy_objects";

/// The column a table needs to be part of the view.
const HEALTH_COLUMN: &str = "health";

/// The objects' labels (`jsonb`, as every object table has them), for label selectors.
pub const LABELS_COLUMN: &str = "labels";

/// The table's column naming the catalog table a row comes from.
const TABLE_NAME_COLUMN: &str = "table_name";

/// Whether `table` is one of the view's: it has a health and one row per object.
fn in_view(table: &Table) -> bool {
    table.has_column(HEALTH_COLUMN) && table.rows.is_empty()
}

/// The SQL expressions of a row's API group and kind in a table of `resource`: its own columns
/// for custom resources, the catalog's group and kind as constants for a native resource.
pub(super) fn group_and_kind(resource: &Resource) -> (String, String) {
    if resource.source == ResourceSource::Custom {
        (Ident::derived(&[GROUP_COLUMN]).to_string(), Ident::derived(&[KIND_COLUMN]).to_string())
    } else {
        (literal(&resource.api.group), literal(&resource.api.kind))
    }
}

/// The view's columns as one catalog table fills them: each a name and the SQL expression
/// over the table's columns.
fn columns(
    resource: &Resource,
    table: &Table,
    fields: &[String],
    namespace_fields: &[String],
) -> Vec<(String, String)> {
    let column = |name: &str| Ident::derived(&[name]).to_string();
    let namespaced = table.has_column("namespace");
    let (group, kind) = group_and_kind(resource);
    let mut columns = vec![(CLUSTER_COLUMN.to_owned(), column(CLUSTER_COLUMN))];
    columns.extend(fields.iter().map(|field| (field.clone(), column(field))));
    let namespace = if namespaced { format!("coalesce({}, '')", column("namespace")) } else { "''".to_owned() };
    columns.push(("namespace".to_owned(), namespace));
    for field in namespace_fields {
        columns.push((field.clone(), if namespaced { column(field) } else { "NULL::text".to_owned() }));
    }
    columns.extend([
        (GROUP_COLUMN.to_owned(), group),
        (KIND_COLUMN.to_owned(), kind),
        ("name".to_owned(), column("name")),
        ("uid".to_owned(), column("uid")),
        (HEALTH_COLUMN.to_owned(), column(HEALTH_COLUMN)),
        ("message".to_owned(), column("health_message")),
        ("since".to_owned(), format!("to_timestamp({})", column("health_since"))),
        (LABELS_COLUMN.to_owned(), column(LABELS_COLUMN)),
    ]);
    columns
}

/// `INSERT INTO fleet_unhealthy_objects (...) SELECT ... FROM <table> WHERE health <> 'Current'`
/// for one catalog table, followed by `condition` (` AND ...`).
fn insert_unhealthy(
    resource: &Resource,
    table: &Table,
    fields: &[String],
    namespace_fields: &[String],
    condition: &str,
) -> String {
    let mut names = vec![Ident::derived(&[TABLE_NAME_COLUMN]).to_string()];
    let mut values = vec![literal(&table.name)];
    for (name, value) in columns(resource, table, fields, namespace_fields) {
        names.push(Ident::derived(&[&name]).to_string());
        values.push(value);
    }
    format!(
        "INSERT INTO {} ({}) SELECT {} FROM {} WHERE {} <> 'Current'{condition}",
        Ident::derived(&[UNHEALTHY_TABLE]),
        names.join(", "),
        values.join(", "),
        Ident::derived(&[&table.name]),
        Ident::derived(&[HEALTH_COLUMN]),
    )
}

/// The two statements that rewrite one cluster's rows of `shape`'s table in
/// `fleet_unhealthy_objects` from the table's rows not Current, in the replace's transaction:
/// a `DELETE` and an `INSERT ... SELECT`, both limited by `cluster_name = $1` followed by
/// `scope` (` AND "api_group" = $2 ...`, the replace's scope). `None` for a table not in the view.
/// `resource` is the one that fills the table.
pub(super) fn unhealthy_rewrite(resource: &Resource, shape: &TableShape<'_>, scope: &str) -> Option<[String; 2]> {
    let table = shape.table;
    if !in_view(table) {
        return None;
    }
    let cluster = Ident::derived(&[CLUSTER_COLUMN]);
    let condition = format!(" AND {cluster} = $1{scope}");
    let delete = format!(
        "DELETE FROM {} WHERE {} = {}{condition}",
        Ident::derived(&[UNHEALTHY_TABLE]),
        Ident::derived(&[TABLE_NAME_COLUMN]),
        literal(&table.name)
    );
    Some([delete, insert_unhealthy(resource, table, shape.fields, shape.namespace_fields, &condition)])
}

/// Creates (or recreates, for the registry's current fields) the view, the tables' partial
/// indexes of unhealthy objects, and `fleet_unhealthy_objects` with a column per field; a new
/// `fleet_unhealthy_objects` is filled from the tables in the same transaction. The view's tables
/// are those of `catalog` with a health.
pub async fn ensure(pool: &PgPool, catalog: &Catalog, fields: &[String], namespace_fields: &[String]) -> Result<()> {
    let column = |name: &str| Ident::derived(&[name]);
    let mut branches = Vec::new();
    let mut indexes = Vec::new();
    let mut fills = Vec::new();
    for (resource, table) in catalog.tables() {
        if !in_view(table) {
            continue;
        }
        let select: Vec<String> = columns(resource, table, fields, namespace_fields)
            .into_iter()
            .map(|(name, value)| format!("{value} AS {}", column(&name)))
            .collect();
        let name = column(&table.name);
        branches.push(format!("SELECT {} FROM {name}", select.join(", ")));
        let key = if table.has_column("namespace") {
            format!("(coalesce({}, '')), ", column("namespace"))
        } else {
            String::new()
        };
        indexes.push(format!(
            "CREATE INDEX IF NOT EXISTS {} ON {name} ({}, {key}{}, {}) WHERE {} <> 'Current'",
            Ident::derived(&[&table.name, "unhealthy"]),
            column(CLUSTER_COLUMN),
            column("name"),
            column("uid"),
            column(HEALTH_COLUMN)
        ));
        fills.push(insert_unhealthy(resource, table, fields, namespace_fields, ""));
    }
    let mut conn = pool.acquire().await?;
    let mut attempt = 1;
    loop {
        let mut tx = DDL_LOCKS.begin(&mut conn).await?;
        let result = match write(&mut tx, fields, namespace_fields, &indexes, &branches, &fills).await {
            Ok(()) => tx.commit().await.map_err(Error::from),
            Err(err) => Err(err),
        };
        if DDL_LOCKS.settle(VIEW, &mut attempt, result).await? {
            return Ok(());
        }
    }
}

/// The DDL of [`ensure`], in its transaction `tx`: the indexes, the view from its `branches`,
/// `fleet_unhealthy_objects` (created and filled with `fills`, or given the fields' columns).
async fn write(
    tx: &mut PgConnection,
    fields: &[String],
    namespace_fields: &[String],
    indexes: &[String],
    branches: &[String],
    fills: &[String],
) -> Result<()> {
    let column = |name: &str| Ident::derived(&[name]);
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('kubecensus fleet_objects', 0))")
        .execute(&mut *tx)
        .await?;
    execute(tx, indexes.join("; ")).await?;
    let view = column(VIEW);
    // The view is made anew (its columns follow the registry's fields); the viewers' SELECT on
    // it goes with the old one, so it is given again in the same transaction: no reader ever
    // finds the view without it.
    let viewers_read: bool = sqlx::query_scalar(
        "SELECT to_regclass($1) IS NOT NULL AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2)
                AND has_table_privilege($2, $1, 'SELECT')",
    )
    .bind(view.to_string())
    .bind(VIEWER_ROLE)
    .fetch_one(&mut *tx)
    .await?;
    execute(
        tx,
        format!(
            "DROP VIEW IF EXISTS {view}; CREATE VIEW {view} WITH (security_invoker = true) AS {}",
            branches.join(" UNION ALL ")
        ),
    )
    .await?;
    if viewers_read {
        execute(tx, format!("GRANT SELECT ON {view} TO {}", Ident::new(VIEWER_ROLE)?)).await?;
    }
    let table = column(UNHEALTHY_TABLE);
    let exists = table_exists(tx, &format!("public.{table}")).await?;
    if !exists {
        execute(
            tx,
            format!(
                "CREATE TABLE {table} ({} text NOT NULL, {} text NOT NULL, namespace text NOT NULL, {} text NOT NULL, \
             {} text NOT NULL, name text, uid text, {} text NOT NULL, message text, since timestamptz, {} jsonb) \
             WITH ({PARTITION_STORAGE}); CREATE INDEX {} ON {table} ({}, namespace, name, uid)",
                column(TABLE_NAME_COLUMN),
                column(CLUSTER_COLUMN),
                column(GROUP_COLUMN),
                column(KIND_COLUMN),
                column(HEALTH_COLUMN),
                column(LABELS_COLUMN),
                Ident::derived(&[UNHEALTHY_TABLE, "keyset"]),
                column(CLUSTER_COLUMN),
            ),
        )
        .await?;
    }
    let existing = column_names(tx, "public", UNHEALTHY_TABLE).await?;
    let field_columns: Vec<String> = fields.iter().chain(namespace_fields).cloned().collect();
    add_text_columns(tx, UNHEALTHY_TABLE, &field_columns).await?;
    // A table made before it had labels gets them, and its rows again with their labels.
    let refill = exists && !existing.iter().any(|column| column == LABELS_COLUMN);
    if refill {
        execute(tx, format!("ALTER TABLE {table} ADD COLUMN {} jsonb; DELETE FROM {table}", column(LABELS_COLUMN)))
            .await?;
    }
    if !exists || refill {
        execute(tx, fills.join("; ")).await?;
    }
    Ok(())
}
