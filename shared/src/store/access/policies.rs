//! The row-level security policies: which of `access_visible_namespaces`' rows let a viewer see
//! a row of each table, one [`Rule`] per table, decided from the catalog (data tables) or listed
//! here ([`EXTRA_TABLES`]: the registry, runs, derived and history tables).
//!
//! Every policy reads `access_visible_namespaces` for `current_user` through uncorrelated scalar
//! subqueries (InitPlans), which PostgreSQL runs once per query however many partitions it
//! scans, each a `jsonb` object probed per row by key (BENCHMARKS.md, "Access control": a hashed
//! `IN (SELECT ...)` is built again for every partition, 16 times a table, and an array's
//! `= ANY` compares a row with each element). Policies are `AS RESTRICTIVE ...
//! TO kubecensus_viewer`, beside a
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

/// `access_visible_namespaces`' rows of the current role (its own policy shows a viewer no
/// other).
const MINE: &str = "FROM access_visible_namespaces v WHERE v.role_name = current_user::text";

/// The key of a row's place in `jsonb` lookups: `<namespace>/<cluster>`, and `/<cluster>` for
/// where a grant applies cluster-wide (namespaces are DNS labels: no `/`, never empty).
fn place(namespace: &str, cluster: &str) -> String {
    format!("{namespace} || '/' || {cluster}")
}

/// `jsonb`: an object whose keys are `key` (SQL over `v`) of the current role's rows meeting
/// `condition` (` AND ...`), for `?` (key exists: a binary search of the sorted keys), NULL when
/// there is none. An uncorrelated scalar subquery, which PostgreSQL plans as an InitPlan: run
/// once per query and shared by every partition's scan (a hashed `IN (SELECT ...)` is built again
/// for each partition, and an array's `= ANY` compares each element in turn).
fn keys_of(key: &str, condition: &str) -> String {
    format!("(SELECT jsonb_object_agg({key}, true) {MINE}{condition})")
}

/// The kind sets of a group of the current role's rows (those at one place), joined by `+`: a
/// "combination".
const COMBINATION: &str = "string_agg(DISTINCT v.kind_set, '+' ORDER BY v.kind_set)";

/// `jsonb`: each place the current role sees something at (its [`place`] key) mapped to the
/// [`COMBINATION`] of the rows that apply there.
fn places() -> String {
    let key = place("CASE v.namespace WHEN '*' THEN '' ELSE v.namespace END", "v.cluster_name");
    format!(
        "(SELECT jsonb_object_agg(p.place, p.combination) FROM \
         (SELECT {key} AS place, {COMBINATION} AS combination {MINE} GROUP BY 1) p)"
    )
}

/// `jsonb`: every `<combination>/<key>` of [`places`]' combinations, `key` an expression over
/// `k` (one `<api group>/<Kind>` of a kind set) and `join` (more tables to join, `k` in scope).
fn combinations(key: &str, join: &str) -> String {
    format!(
        "(SELECT jsonb_object_agg(c.combination || '/' || {key}, true) FROM \
         (SELECT DISTINCT {COMBINATION} AS combination {MINE} GROUP BY v.cluster_name, v.namespace) c \
         JOIN (SELECT DISTINCT ON (v.kind_set) v.kind_set, v.kinds {MINE}) s \
         ON s.kind_set = ANY (string_to_array(c.combination, '+')) \
         CROSS JOIN LATERAL unnest(s.kinds) AS k{join})"
    )
}

impl Rule {
    /// The policy's `USING` expression.
    ///
    /// Every subquery in it is uncorrelated ([`keys_of`]): what the role sees is read once per
    /// query, and a row costs a few `jsonb` key lookups. A resource's rows are those of the
    /// clusters where a grant of it applies cluster-wide, or of a (namespace, cluster) where one
    /// applies. Rows naming their kind (or table) look up the kind sets at their place and
    /// cluster-wide, then the kind in them.
    pub fn using(&self) -> String {
        let column = |name: &str| Ident::derived(&[name]).to_string();
        let (cluster, group, kind_column) = (column(CLUSTER_COLUMN), column(GROUP_COLUMN), column(KIND_COLUMN));
        let namespace_column = column("namespace");
        // Through the kind sets at the row's place and cluster-wide: `key` the row's key in them.
        // First whether the role has a grant in the row's cluster cluster-wide or in a namespace
        // of its name anywhere (two lookups, no string built), which most rows of a role that
        // sees a few namespaces or clusters fail.
        let near = format!(
            "({} ? {cluster} OR {} ? {namespace_column})",
            keys_of("v.cluster_name", " AND v.namespace = '*'"),
            keys_of("v.namespace", " AND v.namespace <> '*'")
        );
        let by_kind_sets = |key: String, combinations: String| {
            let at = |place: String| format!("({} ->> ({place})) || '/' || {key}", places());
            format!(
                "{near} AND {combinations} ?| ARRAY[{}, {}]",
                at(place(&format!("coalesce({namespace_column}, '')"), &cluster)),
                at(place("''", &cluster))
            )
        };
        match self {
            Rule::Resource { api_group, kind, namespace } => {
                let shows = format!(" AND {} = ANY (v.kinds)", literal(&format!("{api_group}/{kind}")));
                let everywhere =
                    format!("{} ? {cluster}", keys_of("v.cluster_name", &format!("{shows} AND v.namespace = '*'")));
                let Some(name) = namespace else { return everywhere };
                let namespace = column(name);
                let in_namespace = format!("{shows} AND v.namespace <> '*'");
                // A namespace's name first: most rows of a role that sees some namespaces are in
                // none of them, and this check needs no string built.
                format!(
                    "{everywhere} OR ({} ? {namespace} AND {} ? ({}))",
                    keys_of("v.namespace", &in_namespace),
                    keys_of(&place("v.namespace", "v.cluster_name"), &in_namespace),
                    place(&namespace, &cluster)
                )
            }
            Rule::KindColumns => by_kind_sets(format!("{group} || '/' || {kind_column}"), combinations("k", "")),
            Rule::TableName => by_kind_sets(
                column("table_name"),
                combinations("t.table_name", " JOIN access_tables t ON t.api_group || '/' || t.kind = k"),
            ),
            Rule::Cluster(name) => format!("{} ? {}", keys_of("v.cluster_name", ""), column(name)),
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
