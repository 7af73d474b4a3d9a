//! The fleet's summaries: `fleet_counts` and `fleet_images`, a few rows per cluster that answer
//! the fleet-wide counting questions ("pods by region", "the most popular images") without
//! reading every object, kept by the swap so they agree with the data tables at every commit.
//!
//! - `fleet_counts`: one row per (cluster, catalog table, API group and kind) with rows:
//!   `row_count` (the rows the cluster has in the table, of that kind) and `namespace_count` (in
//!   how many of the cluster's namespaces; NULL for a table without namespaces).
//! - `fleet_images`: one row per (cluster, containers table, API group and kind, `image`) with
//!   `image_repo` and `container_count` (the table's rows of that image).
//!
//! Both have `table_name`, `cluster_name`, the registry's cluster fields (`region`, ...),
//! `api_group` and `kind` (the catalog's for a native resource, the row's for custom resources).
//! A cluster with 5,000 pods has one row of pods in `fleet_counts` and one per image in
//! `fleet_images`: a fleet-wide aggregate reads thousands of rows, not millions (BENCHMARKS.md,
//! "Summaries kept by the swap": the RFC's 1.2 M pods, pods by region 1.2 s from the pods, 0.5 ms
//! from `fleet_counts`).
//!
//! A replace that changed a cluster's rows of a table rewrites that cluster's (and scope's)
//! summary rows of the table from the table itself, in its transaction ([`rewrite`]): a
//! `DELETE` and an `INSERT ... SELECT ... GROUP BY` in one statement, an index scan of the
//! cluster's rows. A viewer sees a summary row only where a grant shows its kind cluster-wide (a
//! count of a whole cluster would tell a viewer of one namespace about the others; see
//! `access::policies`).

use sqlx::{PgConnection, PgPool};

use super::{
    execute, fleet_view,
    schema::{DDL_LOCKS, PARTITION_STORAGE, TableShape, add_text_columns, table_exists},
    sql::{Ident, literal},
};
use crate::{
    Error, Result,
    model::catalog::{CLUSTER_COLUMN, Catalog, GROUP_COLUMN, KIND_COLUMN, Resource, ResourceSource, Table},
};

/// Rows per (cluster, table, kind).
pub const COUNTS_TABLE: &str = "fleet_counts";

/// Containers per (cluster, table, kind, image).
pub const IMAGES_TABLE: &str = "fleet_images";

/// Both summary tables.
pub const TABLES: [&str; 2] = [COUNTS_TABLE, IMAGES_TABLE];

/// The column naming the catalog table a summary row counts.
const TABLE_NAME_COLUMN: &str = "table_name";

/// One summary: its table, which catalog tables it counts, and what it keeps of each.
struct Summary {
    table: &'static str,
    /// The columns (of the counted table, `text`) it groups by after the cluster, its fields and
    /// the kind; a table without them is not counted.
    keys: &'static [&'static str],
    /// The aggregates it keeps, each in a column of its name.
    values: &'static [(&'static str, Aggregate)],
}

/// What a summary keeps of a group of rows.
#[derive(Clone, Copy)]
enum Aggregate {
    /// How many rows (`bigint NOT NULL`).
    Rows,
    /// In how many namespaces (`bigint`, NULL for a table without a `namespace` column).
    Namespaces,
}

impl Aggregate {
    fn sql_type(self) -> &'static str {
        match self {
            Aggregate::Rows => "bigint NOT NULL",
            Aggregate::Namespaces => "bigint",
        }
    }

    /// Its expression over the rows of `table`.
    fn expression(self, table: &Table) -> String {
        match self {
            Aggregate::Rows => "count(*)".to_owned(),
            Aggregate::Namespaces if table.has_column("namespace") => {
                format!("count(DISTINCT {})", Ident::derived(&["namespace"]))
            }
            Aggregate::Namespaces => "NULL::bigint".to_owned(),
        }
    }
}

const SUMMARIES: [Summary; 2] = [
    Summary {
        table: COUNTS_TABLE,
        keys: &[],
        values: &[("row_count", Aggregate::Rows), ("namespace_count", Aggregate::Namespaces)],
    },
    Summary { table: IMAGES_TABLE, keys: &["image", "image_repo"], values: &[("container_count", Aggregate::Rows)] },
];

impl Summary {
    /// Whether it counts `table`'s rows: every table of a listed or custom resource
    /// (`fleet_counts`), those with the keys as columns (`fleet_images`: the containers tables).
    fn counts(&self, resource: &Resource, table: &Table) -> bool {
        resource.source != ResourceSource::Discovery
            && resource.source != ResourceSource::Version
            && self.keys.iter().all(|key| table.has_column(key))
    }

    /// `INSERT INTO <summary> (...) SELECT ... FROM <table> WHERE true{condition} GROUP BY ...`:
    /// the summary's rows of `table`, for the rows `condition` (` AND ...`) selects.
    fn insert(&self, resource: &Resource, table: &Table, fields: &[String], condition: &str) -> String {
        let column = |name: &str| Ident::derived(&[name]).to_string();
        let (group, kind) = fleet_view::group_and_kind(resource);
        let mut keys = vec![(column(CLUSTER_COLUMN), column(CLUSTER_COLUMN))];
        keys.extend(fields.iter().map(|field| (column(field), column(field))));
        keys.extend([(column(GROUP_COLUMN), group), (column(KIND_COLUMN), kind)]);
        keys.extend(self.keys.iter().map(|key| (column(key), column(key))));
        // The select list's positions of the keys: after the table's name, before the aggregates.
        let groups: Vec<String> = (2..keys.len() + 2).map(|position| position.to_string()).collect();
        let aggregates = self.values.iter().map(|(name, aggregate)| (column(name), aggregate.expression(table)));
        let (names, values): (Vec<String>, Vec<String>) = keys.into_iter().chain(aggregates).unzip();
        format!(
            "INSERT INTO {} ({}, {}) SELECT {}, {} FROM {} WHERE true{condition} GROUP BY {}",
            column(self.table),
            column(TABLE_NAME_COLUMN),
            names.join(", "),
            literal(&table.name),
            values.join(", "),
            column(&table.name),
            groups.join(", ")
        )
    }

    /// `CREATE TABLE` of the summary (without the fields: [`add_text_columns`] adds them) and
    /// its index, which the swap's `DELETE` and a query of one table read.
    fn create(&self) -> String {
        let column = |name: &str| Ident::derived(&[name]).to_string();
        let mut columns = vec![
            format!("{} text NOT NULL", column(TABLE_NAME_COLUMN)),
            format!("{} text NOT NULL", column(CLUSTER_COLUMN)),
            format!("{} text NOT NULL", column(GROUP_COLUMN)),
            format!("{} text NOT NULL", column(KIND_COLUMN)),
        ];
        columns.extend(self.keys.iter().map(|key| format!("{} text", column(key))));
        columns
            .extend(self.values.iter().map(|(name, aggregate)| format!("{} {}", column(name), aggregate.sql_type())));
        format!(
            "CREATE TABLE {table} ({}) WITH ({PARTITION_STORAGE}); CREATE INDEX {} ON {table} ({}, {})",
            columns.join(", "),
            Ident::derived(&[self.table, "table_cluster"]),
            column(TABLE_NAME_COLUMN),
            column(CLUSTER_COLUMN),
            table = column(self.table),
        )
    }
}

/// The statements that rewrite one cluster's summary rows of `shape`'s table, in the replace's
/// transaction: for each summary that counts the table, one `WITH gone AS (DELETE ...) INSERT
/// ... SELECT` (one round trip, one plan; both parts see the statement's snapshot, so the
/// `INSERT` writes the new rows beside the old ones it deletes), limited to `cluster_name = $1`
/// followed by `scope` (` AND "api_group" = $2 ...`, the replace's scope). `resource` is the
/// one that fills the table.
pub(super) fn rewrite(resource: &Resource, shape: &TableShape<'_>, scope: &str) -> Vec<String> {
    let table = shape.table;
    let condition = format!(" AND {} = $1{scope}", Ident::derived(&[CLUSTER_COLUMN]));
    SUMMARIES
        .iter()
        .filter(|summary| summary.counts(resource, table))
        .map(|summary| {
            format!(
                "WITH gone AS (DELETE FROM {} WHERE {} = {}{condition}) {}",
                Ident::derived(&[summary.table]),
                Ident::derived(&[TABLE_NAME_COLUMN]),
                literal(&table.name),
                summary.insert(resource, table, shape.fields, &condition)
            )
        })
        .collect()
}

/// Creates the summary tables when missing, filled from every data table in the same
/// transaction, and gives them a column per registry cluster field in `fields`.
///
/// # Errors
/// Any SQL error; [`Error::LockTimeout`] when a lock is not granted in the tries of
/// [`DDL_LOCKS`].
pub async fn ensure(pool: &PgPool, catalog: &Catalog, fields: &[String]) -> Result<()> {
    let mut conn = pool.acquire().await?;
    for summary in &SUMMARIES {
        let mut attempt = 1;
        loop {
            let mut tx = DDL_LOCKS.begin(&mut conn).await?;
            let result = match write(&mut tx, catalog, summary, fields).await {
                Ok(()) => tx.commit().await.map_err(Error::from),
                Err(err) => Err(err),
            };
            if DDL_LOCKS.settle(summary.table, &mut attempt, result).await? {
                break;
            }
        }
    }
    Ok(())
}

/// The DDL of [`ensure`] for one summary, in its transaction `tx`.
async fn write(tx: &mut PgConnection, catalog: &Catalog, summary: &Summary, fields: &[String]) -> Result<()> {
    let exists = table_exists(tx, &format!("public.{}", Ident::derived(&[summary.table]))).await?;
    if !exists {
        execute(tx, summary.create()).await?;
    }
    add_text_columns(tx, summary.table, fields).await?;
    if !exists {
        let fills: Vec<String> = catalog
            .tables()
            .filter(|(resource, table)| summary.counts(resource, table))
            .map(|(resource, table)| summary.insert(resource, table, fields, ""))
            .collect();
        execute(tx, fills.join("; ")).await?;
    }
    Ok(())
}
