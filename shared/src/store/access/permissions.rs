//! Effective permissions, replayed in SQL from a cluster's RBAC tables as Kubernetes' RBAC
//! authorizer decides a `list` request, and what each PostgreSQL role may therefore see.
//!
//! The rules, each from Kubernetes' source (release 1.33) and its documentation
//! (<https://kubernetes.io/docs/reference/access-authn-authz/rbac/>):
//!
//! - which bindings apply where: `plugin/pkg/auth/authorizer/rbac/rbac.go` and
//!   `pkg/registry/rbac/validation/rule.go` (`VisitRulesFor`): every ClusterRoleBinding, with its
//!   ClusterRole's rules, in every namespace and for cluster-scoped resources; a RoleBinding only
//!   in its own namespace, with the rules of a Role of that namespace or of a ClusterRole
//!   (`GetRoleReferenceRules`). A ClusterRoleBinding to a Role grants nothing.
//! - who a subject is: `appliesToUser` (rule.go): a User by name, a Group by membership, a
//!   ServiceAccount as the user `system:serviceaccount:<namespace>:<name>`, its namespace
//!   defaulting to the RoleBinding's (none in a ClusterRoleBinding: it applies to no one).
//! - what a rule allows (`RuleAllows`, `pkg/apis/rbac/v1/evaluation_helpers.go`): the verb `list`
//!   or `*`; the API group or `*`; the resource or `*`, where `pods/log` names a subresource and
//!   does not match a request for `pods`; `resourceNames` empty, since a list request names no
//!   object (`ResourceNameMatches`: an empty name matches only an empty entry).
//! - aggregated ClusterRoles: the API server's aggregation controller writes the aggregated
//!   rules into the ClusterRole it serves (`pkg/controller/clusterroleaggregation`), so the
//!   collected rules are already the aggregated ones.
//! - the groups every request carries (`k8s.io/apiserver/pkg/authentication`):
//!   `system:authenticated` for every authenticated user, and for a service account
//!   `system:serviceaccounts` and `system:serviceaccounts:<namespace>`
//!   (`serviceaccount.MakeGroupNames`).
//!
//! The permissions are kept in two parts (the view `access_permissions` joins them):
//! `access_bindings` (who, where, which role) and `access_role_rules` (what each role lets list,
//! `*` as the rules say), so a ClusterRole bound in 3,000 namespaces costs 3,000 rows, not 3,000
//! times its rules. `access_grant_kinds` matches each role's rules to the (API group, kind)
//! pairs the cluster serves: the catalog's own resources and the cluster's discovery
//! (`kubernetes_api_resources`, so a custom resource is known by its group and plural, never by
//! its kind alone). `access_visible_namespaces` says where each PostgreSQL role's grants apply
//! and which kinds each shows there; the policies read it (the view `access_visible` lists it
//! one kind a row).

use std::sync::LazyLock;

use sqlx::PgConnection;

use super::lookups;
use crate::{Result, model::catalog::Catalog, model::catalog::ResourceSource, store::sql::Ident};

/// The catalog's listed resources, as the universe of every cluster (with its discovery):
/// API groups, plurals, kinds, and whether each is namespaced.
struct Natives {
    groups: Vec<String>,
    plurals: Vec<String>,
    kinds: Vec<String>,
    namespaced: Vec<bool>,
}

/// The built-in catalog's listed resources (custom kinds are found in discovery).
static NATIVES: LazyLock<Natives> = LazyLock::new(|| {
    let catalog = Catalog::builtin();
    let apis: Vec<_> = catalog.resources.iter().filter(|r| r.source == ResourceSource::List).map(|r| &r.api).collect();
    Natives {
        groups: apis.iter().map(|a| a.group.clone()).collect(),
        plurals: apis.iter().map(|a| a.plural.clone()).collect(),
        kinds: apis.iter().map(|a| a.kind.clone()).collect(),
        namespaced: apis.iter().map(|a| a.namespaced).collect(),
    }
});

/// The RBAC tables whose replace rewrites the cluster's permissions.
pub const RBAC_TABLES: [&str; 4] = [
    "kubernetes_cluster_role_binding_subjects",
    "kubernetes_cluster_role_policy_rules",
    "kubernetes_role_binding_subjects",
    "kubernetes_role_policy_rules",
];

/// The table whose replace changes which kinds a cluster serves.
pub const DISCOVERY_TABLE: &str = "kubernetes_api_resources";

/// The rules of cluster `$1` that let list, as (role kind, role namespace, role name, API
/// group, resource).
const LISTING: &str = r#"
rules AS (
  SELECT 'ClusterRole' AS role_kind, NULL::text AS role_namespace, r.name AS role_name,
         r.verbs, r.api_groups, r.resources, r.resource_names
  FROM kubernetes_cluster_role_policy_rules r WHERE r.cluster_name = $1
  UNION ALL
  SELECT 'Role', r.namespace, r.name, r.verbs, r.api_groups, r.resources, r.resource_names
  FROM kubernetes_role_policy_rules r WHERE r.cluster_name = $1
),
listing AS (
  SELECT DISTINCT r.role_kind, r.role_namespace, r.role_name, g.api_group, s.resource
  FROM rules r
  CROSS JOIN LATERAL jsonb_array_elements_text(CASE jsonb_typeof(r.api_groups) WHEN 'array' THEN r.api_groups ELSE '[]' END) AS g(api_group)
  CROSS JOIN LATERAL jsonb_array_elements_text(CASE jsonb_typeof(r.resources) WHEN 'array' THEN r.resources ELSE '[]' END) AS s(resource)
  WHERE jsonb_typeof(r.verbs) = 'array' AND (r.verbs ? 'list' OR r.verbs ? '*')
    AND (jsonb_typeof(r.resource_names) IS DISTINCT FROM 'array' OR jsonb_array_length(r.resource_names) = 0
         OR r.resource_names ? '')
    AND s.resource NOT LIKE '%/%'
)"#;

/// A role's key in `access_role_rules`: `ClusterRole/<name>`, `Role/<namespace>/<name>`.
const GRANT_KEY: &str = "CASE role_kind WHEN 'ClusterRole' THEN 'ClusterRole/' || role_name
                         ELSE 'Role/' || role_namespace || '/' || role_name END";

/// Rewrites `access_role_rules` of cluster `$1` (after its rows were deleted).
fn rules_sql() -> String {
    format!(
        "INSERT INTO access_role_rules (cluster_name, grant_key, api_group, resource)
         WITH {LISTING} SELECT $1, {GRANT_KEY}, api_group, resource FROM listing"
    )
}

/// Rewrites `access_bindings` of cluster `$1` from its binding tables (after its rows were
/// deleted): who each binding names, where, and the key of its role's rules.
fn bindings_sql() -> String {
    format!(
        r#"
INSERT INTO access_bindings (cluster_name, subject_kind, subject_name, namespace, binding_kind, binding_namespace,
                             binding_name, role_kind, role_name, grant_key)
WITH bindings AS (
  SELECT 'ClusterRoleBinding' AS binding_kind, NULL::text AS binding_namespace, b.name AS binding_name,
         b.role_kind, b.role_name, b.subject_kind, b.subject_name, b.subject_namespace
  FROM kubernetes_cluster_role_binding_subjects b WHERE b.cluster_name = $1 AND b.role_kind = 'ClusterRole'
  UNION ALL
  SELECT 'RoleBinding', b.namespace, b.name, b.role_kind, b.role_name, b.subject_kind, b.subject_name, b.subject_namespace
  FROM kubernetes_role_binding_subjects b WHERE b.cluster_name = $1 AND b.role_kind IN ('Role', 'ClusterRole')
),
subjects AS (
  SELECT b.*, b.binding_namespace AS role_namespace,
         CASE b.subject_kind
           WHEN 'ServiceAccount' THEN 'system:serviceaccount:' || coalesce(nullif(b.subject_namespace, ''), b.binding_namespace)
                                      || ':' || b.subject_name
           WHEN 'User' THEN b.subject_name
           WHEN 'Group' THEN b.subject_name
         END AS principal
  FROM bindings b
)
SELECT DISTINCT $1, subject_kind, principal, binding_namespace, binding_kind, binding_namespace, binding_name,
       role_kind, role_name, {GRANT_KEY}
FROM subjects WHERE principal IS NOT NULL
"#
    )
}

/// Rewrites `access_grant_kinds` of cluster `$1` (after its rows were deleted): each grant's
/// rules matched to the resources the cluster serves, `$2`..`$5` the catalog's ([`Natives`]).
const GRANT_KINDS: &str = r#"
INSERT INTO access_grant_kinds (cluster_name, grant_key, api_group, kind, namespaced)
WITH universe AS (
  SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::bool[]) AS n(api_group, resource, kind, namespaced)
  UNION
  SELECT r."group", r.name, r.kind, r.namespaced = 1
  FROM kubernetes_api_resources r
  WHERE r.cluster_name = $1 AND r.name NOT LIKE '%/%' AND r."group" IS NOT NULL AND r.kind IS NOT NULL
)
SELECT DISTINCT $1, g.grant_key, u.api_group, u.kind, u.namespaced
FROM access_role_rules g
JOIN universe u ON (g.api_group = '*' OR g.api_group = u.api_group) AND (g.resource = '*' OR g.resource = u.resource)
WHERE g.cluster_name = $1
"#;

/// Each role's identity in each cluster (`$1` one cluster or NULL for every one, `$2` one role
/// or NULL): the identity given for the cluster, else the fleet-wide one (not on a cluster whose
/// authorization is `webhook`), with the groups Kubernetes adds to every request.
pub(super) const IDENTITIES: &str = r#"
identities AS (
  SELECT DISTINCT ON (i.role_name, c.name) i.role_name, c.name AS cluster_name, i.k8s_user,
         i.k8s_groups || ARRAY['system:authenticated']
           || CASE WHEN i.k8s_user LIKE 'system:serviceaccount:%:%'
                   THEN ARRAY['system:serviceaccounts', 'system:serviceaccounts:' || split_part(i.k8s_user, ':', 3)]
                   ELSE ARRAY[]::text[] END AS k8s_groups
  FROM access_identities i
  JOIN clusters c ON c.name = i.cluster_name OR (i.cluster_name IS NULL AND c.authorization_mode = 'rbac')
  WHERE ($1::text IS NULL OR c.name = $1) AND ($2::text IS NULL OR i.role_name = $2)
  ORDER BY i.role_name, c.name, i.cluster_name NULLS LAST
)"#;

/// Whether permission (or binding) `p` names identity `i`'s user or one of its groups.
pub(super) const APPLIES: &str = "((p.subject_kind = 'Group' AND p.subject_name = ANY (i.k8s_groups))
   OR (p.subject_kind <> 'Group' AND p.subject_name = i.k8s_user))";

/// Rewrites where each role's grants apply, for `$1` (a cluster or NULL) and `$2` (a role or
/// NULL): each row with the kinds it shows (`<api group>/<Kind>`, sorted: all of the grant's
/// where it applies cluster-wide, its namespaced ones in a namespace) and their md5
/// (`kind_set`); a grant that shows no kind there has no row. Only rows that differ are deleted
/// or inserted (every part of the statement sees the rows as they were before it), found by
/// `EXCEPT` (hashed or sorted, never a row-by-row search); returns the roles whose rows changed,
/// once each.
fn visible_sql() -> String {
    format!(
        "WITH {IDENTITIES},
         grants AS (
           SELECT DISTINCT i.role_name, i.cluster_name, p.grant_key, coalesce(p.namespace, '*') AS namespace
           FROM identities i JOIN access_bindings p ON p.cluster_name = i.cluster_name AND {APPLIES}
         ),
         kinds AS (
           SELECT g.cluster_name, g.grant_key,
                  array_agg(g.api_group || '/' || g.kind ORDER BY g.api_group || '/' || g.kind) AS everywhere,
                  array_agg(g.api_group || '/' || g.kind ORDER BY g.api_group || '/' || g.kind)
                    FILTER (WHERE g.namespaced) AS in_namespace
           FROM access_grant_kinds g WHERE $1::text IS NULL OR g.cluster_name = $1
           GROUP BY 1, 2
         ),
         shown AS (
           SELECT g.role_name, g.cluster_name, g.grant_key, g.namespace,
                  CASE g.namespace WHEN '*' THEN k.everywhere ELSE k.in_namespace END AS kinds
           FROM grants g JOIN kinds k USING (cluster_name, grant_key)
         ),
         new AS (
           SELECT role_name, cluster_name, grant_key, namespace, kinds FROM shown WHERE kinds IS NOT NULL
         ),
         old AS (
           SELECT role_name, cluster_name, grant_key, namespace, kinds FROM access_visible_namespaces
           WHERE ($1::text IS NULL OR cluster_name = $1) AND ($2::text IS NULL OR role_name = $2)
         ),
         gone AS (
           DELETE FROM access_visible_namespaces o USING (SELECT * FROM old EXCEPT SELECT * FROM new) g
           WHERE (o.role_name, o.cluster_name, o.grant_key, o.namespace, o.kinds)
               = (g.role_name, g.cluster_name, g.grant_key, g.namespace, g.kinds)
           RETURNING o.role_name
         ),
         added AS (
           INSERT INTO access_visible_namespaces (role_name, cluster_name, grant_key, namespace, kinds, kind_set)
           SELECT a.*, md5(array_to_string(a.kinds, ',')) FROM (SELECT * FROM new EXCEPT SELECT * FROM old) a
           RETURNING role_name
         )
         SELECT role_name FROM gone UNION SELECT role_name FROM added"
    )
}

/// Takes the transaction-level lock of `cluster`'s permissions: recomputations of one cluster
/// (two RBAC tables replaced at once, a grant) run one after the other, each statement after it
/// seeing what the other committed (READ COMMITTED), so the last one sees every change.
async fn lock_cluster(tx: &mut PgConnection, cluster: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('kubecensus access ' || $1, 0))")
        .bind(cluster)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Rewrites the visible rows of `cluster` and/or `role` (`None`: all), then the lookups of the
/// roles whose rows changed ([`lookups::rebuild`]).
async fn write_visible(tx: &mut PgConnection, cluster: Option<&str>, role: Option<&str>) -> Result<()> {
    let changed: Vec<String> = sqlx::query_scalar(&visible_sql()).bind(cluster).bind(role).fetch_all(&mut *tx).await?;
    lookups::rebuild(tx, &changed).await
}

/// Recomputes `cluster`'s permissions (when `rbac_changed`: its RBAC tables were replaced), the
/// kinds its grants show, and where every role's grants apply there, in the caller's
/// transaction `tx`; returns the binding rows written, or `None` when the bindings were kept.
///
/// # Errors
/// Any SQL error (the caller's transaction then rolls back).
pub async fn recompute_cluster(tx: &mut PgConnection, cluster: &str, rbac_changed: bool) -> Result<Option<u64>> {
    lock_cluster(tx, cluster).await?;
    let mut bindings = None;
    if rbac_changed {
        for table in ["access_bindings", "access_role_rules"] {
            sqlx::query(&format!("DELETE FROM {} WHERE cluster_name = $1", Ident::new(table)?))
                .bind(cluster)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(&rules_sql()).bind(cluster).execute(&mut *tx).await?;
        bindings = Some(sqlx::query(&bindings_sql()).bind(cluster).execute(&mut *tx).await?.rows_affected());
    }
    sqlx::query("DELETE FROM access_grant_kinds WHERE cluster_name = $1").bind(cluster).execute(&mut *tx).await?;
    let natives = &*NATIVES;
    sqlx::query(GRANT_KINDS)
        .bind(cluster)
        .bind(&natives.groups)
        .bind(&natives.plurals)
        .bind(&natives.kinds)
        .bind(&natives.namespaced)
        .execute(&mut *tx)
        .await?;
    write_visible(tx, Some(cluster), None).await?;
    Ok(bindings)
}

/// Recomputes what `role` may see in every cluster (its identities changed), in `tx`, holding
/// every cluster's lock (in name order, so two grants never wait for each other in a cycle);
/// returns how many (cluster, API group, kind, namespace) it sees, as the view `access_visible`
/// lists them.
///
/// # Errors
/// Any SQL error.
pub async fn recompute_role(tx: &mut PgConnection, role: &str) -> Result<u64> {
    let clusters: Vec<String> =
        sqlx::query_scalar("SELECT name FROM clusters ORDER BY name").fetch_all(&mut *tx).await?;
    for cluster in &clusters {
        lock_cluster(tx, cluster).await?;
    }
    write_visible(tx, None, Some(role)).await?;
    let rows: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(cardinality(kinds)), 0)::int8 FROM access_visible_namespaces WHERE role_name = $1",
    )
    .bind(role)
    .fetch_one(&mut *tx)
    .await?;
    Ok(rows as u64)
}
