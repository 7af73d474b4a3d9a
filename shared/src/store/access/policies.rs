//! The row-level security policies: what of a role's `access_lookups` lets a viewer see a row of
//! each table, one [`Rule`] per table, decided from the catalog (data tables) or listed
//! here ([`EXTRA_TABLES`]: the registry, runs, derived and history tables).
//!
//! Every policy reads `current_user`'s rows of `access_lookups` ([`super::lookups`]) through
//! uncorrelated scalar subqueries (InitPlans), which PostgreSQL runs once per query however many
//! partitions it scans, each a `jsonb` object probed per row by key (BENCHMARKS.md, "Access
//! control and history made cheap": a hashed `IN (SELECT ...)` is built again for every
//! partition, 16 times a table, and an array's `= ANY` compares a row with each element).
//! Policies are `AS RESTRICTIVE ... TO kubecensus_viewer`, beside a permissive `USING (true)`: a
//! role outside `kubecensus_viewer` with `SELECT` sees what it saw before; a viewer sees only
//! what its policy lets through
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
    /// Rows of a whole cluster naming their own `api_group` and `kind` (the summaries
    /// `fleet_counts` and `fleet_images`): only a grant of the kind cluster-wide shows them, since
    /// a count of every namespace's objects tells of those a viewer of some may not list.
    KindColumnsClusterWide,
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
    ("fleet_counts", Extra::Rule(Rule::KindColumnsClusterWide)),
    ("fleet_images", Extra::Rule(Rule::KindColumnsClusterWide)),
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

/// The key of a row's place in `jsonb` lookups: `<namespace>/<cluster>`, and `/<cluster>` for
/// where a grant applies cluster-wide (namespaces are DNS labels: no `/`, never empty).
fn place(namespace: &str, cluster: &str) -> String {
    format!("{namespace} || '/' || {cluster}")
}

/// `jsonb`: column `column` of the current role's `access_lookups` row for `kind`
/// (`<api group>/<Kind>`, or '' for the role's row of every kind), NULL when there is none. An
/// uncorrelated scalar subquery, which PostgreSQL plans as an InitPlan: one primary-key probe
/// per query, shared by every partition's scan (a hashed `IN (SELECT ...)` is built again for
/// each partition, and an array's `= ANY` compares each element in turn). `|| '{}'` hands on a
/// decompressed copy made once: an object of more than 2 kB is stored compressed (TOAST), and
/// a parameter is decompressed again at every use, once per row (a 1,000-key object probed for
/// 13,000 rows: 158 ms, the copy 4 ms).
fn lookup(column: &str, kind: &str) -> String {
    format!(
        "(SELECT l.{column} || '{{}}' FROM access_lookups l WHERE l.role_name = current_user::text AND l.kind = {})",
        literal(kind)
    )
}

impl Rule {
    /// The policy's `USING` expression.
    ///
    /// Every subquery in it is uncorrelated ([`lookup`]): what the role sees is read once per
    /// query, and a row costs a few `jsonb` key lookups. A resource's rows are those of the
    /// clusters where a grant of it applies cluster-wide, or of a (namespace, cluster) where one
    /// applies. Rows naming their kind (or table) look up the combinations at their place and
    /// cluster-wide, then the kind (or table) in them.
    pub fn using(&self) -> String {
        let column = |name: &str| Ident::derived(&[name]).to_string();
        let (cluster, group, kind_column) = (column(CLUSTER_COLUMN), column(GROUP_COLUMN), column(KIND_COLUMN));
        let namespace_column = column("namespace");
        // Through the combinations at the row's place and cluster-wide: `key` the row's key in
        // them. First whether the role has a grant in the row's cluster cluster-wide or in a
        // namespace of its name anywhere (two lookups, no string built), which most rows of a
        // role that sees a few namespaces or clusters fail.
        let at = |place: String, key: &str| format!("({} ->> ({place})) || '/' || {key}", lookup("places", ""));
        let by_combinations = |key: String, combinations: &str| {
            let at = |place: String| at(place, &key);
            format!(
                "({} ? {cluster} OR {} ? {namespace_column}) AND {} ?| ARRAY[{}, {}]",
                lookup("clusters", ""),
                lookup("namespaces", ""),
                lookup(combinations, ""),
                at(place(&format!("coalesce({namespace_column}, '')"), &cluster)),
                at(place("''", &cluster))
            )
        };
        match self {
            Rule::Resource { api_group, kind, namespace } => {
                let kind = format!("{api_group}/{kind}");
                let everywhere = format!("{} ? {cluster}", lookup("clusters", &kind));
                let Some(name) = namespace else { return everywhere };
                let namespace = column(name);
                // A namespace's name first: most rows of a role that sees some namespaces are in
                // none of them, and this check needs no string built.
                format!(
                    "{everywhere} OR ({} ? {namespace} AND {} ? ({}))",
                    lookup("namespaces", &kind),
                    lookup("places", &kind),
                    place(&namespace, &cluster)
                )
            }
            Rule::KindColumns => by_combinations(format!("{group} || '/' || {kind_column}"), "combinations"),
            Rule::KindColumnsClusterWide => format!(
                "{} ? {cluster} AND {} ? ({})",
                lookup("clusters", ""),
                lookup("combinations", ""),
                at(place("''", &cluster), &format!("{group} || '/' || {kind_column}"))
            ),
            Rule::TableName => by_combinations(column("table_name"), "table_combinations"),
            Rule::Cluster(name) => format!("{} ? {}", lookup("seen", ""), column(name)),
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
