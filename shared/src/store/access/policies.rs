//! The row-level security policies: which of `access_visible`'s rows let a viewer see a row of
//! each table, one [`Rule`] per table, decided from the catalog (data tables) or listed here
//! ([`EXTRA_TABLES`]: the registry, runs, derived and history tables).
//!
//! Every policy reads `access_visible` for `current_user` through uncorrelated `IN (SELECT ...)`
//! subqueries, which PostgreSQL runs once per query and probes as a hash table per row
//! (a "hashed SubPlan"): the cost of a policy is one small index scan and a hash probe per row,
//! whatever the fleet's size. Policies are `AS RESTRICTIVE ... TO kubecensus_viewer`, beside a
//! permissive `USING (true)`: a role outside `kubecensus_viewer` with `SELECT` sees what it saw
//! before; a viewer sees only what its policy lets through
//! (<https://www.postgresql.org/docs/15/sql-createpolicy.html>).

use crate::model::catalog::{CLUSTER_COLUMN, Catalog, GROUP_COLUMN, KIND_COLUMN, ResourceSource};
use crate::store::sql::{Ident, literal};

/// How a table's rows are matched to what a viewer may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Rows of one resource (`api_group`, `kind` from the catalog): in `namespace`'s namespace
    /// (`None`: a cluster-scoped resource, or one whose rows hold no namespace: only a
    /// cluster-wide grant shows it).
    Resource { api_group: String, kind: String, namespace: Option<&'static str> },
    /// Rows naming their own `api_group` and `kind` (custom resources, `fleet_unhealthy_objects`),
    /// and their namespace in `namespace`.
    KindColumns,
    /// Rows naming the catalog table they come from in `table_name`, and their namespace in
    /// `namespace` (`object_changes`): `access_tables` maps the table to its group and kind.
    TableName,
    /// Rows of a cluster (named in the column), shown when the viewer sees anything there.
    Cluster(&'static str),
}

/// A table and its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    pub table: String,
    pub rule: Rule,
}

/// The tables beyond the catalog's, each with its rule. A table not there yet (the history
/// tables of other releases) is skipped until it exists; adding one is adding a line.
/// `event_history` follows `kubernetes_events` (same resource, same namespace column).
pub const EXTRA_TABLES: &[(&str, Extra)] = &[
    ("clusters", Extra::Rule(Rule::Cluster("name"))),
    ("snapshots", Extra::Rule(Rule::Cluster(CLUSTER_COLUMN))),
    ("runs", Extra::Rule(Rule::Cluster(CLUSTER_COLUMN))),
    ("fleet_unhealthy_objects", Extra::Rule(Rule::KindColumns)),
    ("event_history", Extra::SameAs("kubernetes_events")),
    ("object_changes", Extra::Rule(Rule::TableName)),
    ("event_gaps", Extra::Rule(Rule::Cluster(CLUSTER_COLUMN))),
    ("change_baselines", Extra::Rule(Rule::Cluster(CLUSTER_COLUMN))),
];

/// How an extra table's rule is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extra {
    Rule(Rule),
    /// The rule of this catalog table.
    SameAs(&'static str),
}

/// The rule of a catalog table: its resource's (a child table, such as containers, follows the
/// resource its rows come from); custom resources by their columns; discovery and `/version` as
/// the cluster.
fn catalog_rule(catalog: &Catalog, table: &str) -> Option<Rule> {
    let resource = catalog.resource_of(table)?;
    let table = resource.tables.iter().find(|t| t.name == table)?;
    Some(match resource.source {
        ResourceSource::List => Rule::Resource {
            api_group: resource.api.group.clone(),
            kind: resource.api.kind.clone(),
            namespace: (resource.api.namespaced && table.has_column("namespace")).then_some("namespace"),
        },
        ResourceSource::Custom => Rule::KindColumns,
        ResourceSource::Discovery | ResourceSource::Version => Rule::Cluster(CLUSTER_COLUMN),
    })
}

/// Every protected table: the catalog's, then [`EXTRA_TABLES`].
pub fn protected(catalog: &Catalog) -> Vec<Protected> {
    let mut tables: Vec<Protected> = catalog
        .tables()
        .filter_map(|(_, table)| {
            catalog_rule(catalog, &table.name).map(|rule| Protected { table: table.name.clone(), rule })
        })
        .collect();
    for (table, extra) in EXTRA_TABLES {
        let rule = match extra {
            Extra::Rule(rule) => Some(rule.clone()),
            Extra::SameAs(other) => catalog_rule(catalog, other),
        };
        tables.extend(rule.map(|rule| Protected { table: (*table).to_owned(), rule }));
    }
    tables
}

/// `access_visible`'s rows of the current role.
const MINE: &str = "FROM access_visible v WHERE v.role_name = current_user::text";

impl Rule {
    /// The policy's `USING` expression.
    pub fn using(&self) -> String {
        let column = |name: &str| Ident::derived(&[name]).to_string();
        let (cluster, group, kind_column) = (column(CLUSTER_COLUMN), column(GROUP_COLUMN), column(KIND_COLUMN));
        let namespace_column = column("namespace");
        match self {
            Rule::Resource { api_group, kind, namespace } => {
                let of = format!("{MINE} AND v.api_group = {} AND v.kind = {}", literal(api_group), literal(kind));
                let everywhere = format!("{cluster} IN (SELECT v.cluster_name {of} AND v.namespace = '*')");
                match namespace {
                    Some(name) => format!(
                        "({cluster}, {}) IN (SELECT v.cluster_name, v.namespace {of}) OR {everywhere}",
                        column(name)
                    ),
                    None => everywhere,
                }
            }
            Rule::KindColumns => format!(
                "({cluster}, {group}, {kind_column}, {namespace_column}) IN \
                 (SELECT v.cluster_name, v.api_group, v.kind, v.namespace {MINE}) \
                 OR ({cluster}, {group}, {kind_column}) IN \
                 (SELECT v.cluster_name, v.api_group, v.kind {MINE} AND v.namespace = '*')"
            ),
            Rule::TableName => {
                let table_name = column("table_name");
                let mapped = "FROM access_visible v JOIN access_tables t USING (api_group, kind) \
                              WHERE v.role_name = current_user::text";
                format!(
                    "({cluster}, {table_name}, {namespace_column}) IN (SELECT v.cluster_name, t.table_name, v.namespace {mapped}) \
                     OR ({cluster}, {table_name}) IN (SELECT v.cluster_name, t.table_name {mapped} AND v.namespace = '*')"
                )
            }
            Rule::Cluster(name) => format!("{} IN (SELECT v.cluster_name {MINE})", column(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_tables_follow_their_resource_and_cluster_scoped_ones_need_a_cluster_wide_grant() {
        let catalog = Catalog::builtin();
        let rules = protected(&catalog);
        let rule = |table: &str| rules.iter().find(|p| p.table == table).map(|p| p.rule.clone()).unwrap();
        let pods = Rule::Resource { api_group: String::new(), kind: "Pod".into(), namespace: Some("namespace") };
        assert_eq!(rule("kubernetes_pods"), pods);
        assert_eq!(rule("kubernetes_pod_containers"), pods);
        assert_eq!(rule("kubernetes_pod_volumes"), pods);
        let nodes = Rule::Resource { api_group: String::new(), kind: "Node".into(), namespace: None };
        assert_eq!(rule("kubernetes_nodes"), nodes);
        assert!(matches!(rule("kubernetes_namespaces"), Rule::Resource { namespace: None, .. }));
        assert_eq!(rule("kubernetes_custom_resources"), Rule::KindColumns);
        assert_eq!(rule("kubernetes_api_resources"), Rule::Cluster(CLUSTER_COLUMN));
        assert_eq!(rule("event_history"), rule("kubernetes_events"));
        assert_eq!(rule("clusters"), Rule::Cluster("name"));
        assert!(!rule("kubernetes_secrets").using().contains("'Pod'"));
        assert_eq!(rules.iter().filter(|p| p.table.starts_with("kubernetes_")).count(), catalog.tables().count());
    }
}
