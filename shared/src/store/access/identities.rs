//! Which PostgreSQL role is which Kubernetes user and groups (`access_identities`), and the
//! four things `scheduler access` does with them: grant, revoke, list, explain.
//!
//! An identity is fleet-wide (`cluster_name` NULL) or for one cluster, where it takes
//! precedence (people's names differ between clusters). On a cluster whose registry entry says
//! `authorization: webhook` only an identity for that cluster applies: it is the explicit grant.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::{
    EXPLORER_ROLE, VIEWER_ROLE,
    permissions::{self, APPLIES, IDENTITIES},
};
use crate::{Error, Result, store::execute, store::sql::Ident};

/// One row of `access_identities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Identity {
    pub role_name: String,
    /// `None`: fleet-wide.
    pub cluster_name: Option<String>,
    pub k8s_user: String,
    pub k8s_groups: Vec<String>,
}

/// A binding that lets an identity list a resource, as `explain` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Grant {
    pub binding_kind: String,
    /// `None` for a ClusterRoleBinding.
    pub binding_namespace: Option<String>,
    pub binding_name: String,
    pub role_kind: String,
    pub role_name: String,
    pub subject_kind: String,
    pub subject_name: String,
    /// The rule's API group and resource (`*` as it says).
    pub api_group: String,
    pub resource: String,
}

/// What `explain` found: the identity that applies in the cluster (none: nothing is visible)
/// and every binding that grants the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub k8s_user: Option<String>,
    /// With the groups Kubernetes adds (`system:authenticated`, ...).
    pub k8s_groups: Vec<String>,
    pub grants: Vec<Grant>,
}

/// Creates `role` NOLOGIN if it does not exist (one an administrator made, a login role, is
/// used as it is); a role created meanwhile by another session is not an error.
async fn ensure_role(conn: &mut PgConnection, role: &Ident) -> Result<()> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role.as_str())
        .fetch_one(&mut *conn)
        .await?;
    if exists {
        return Ok(());
    }
    match execute(conn, format!("CREATE ROLE {role} NOLOGIN")).await {
        Err(Error::Sql(sqlx::Error::Database(db))) if matches!(db.code().as_deref(), Some("42710" | "23505")) => Ok(()),
        other => other,
    }
}

/// Makes `identity.role_name` the Kubernetes user and groups of `identity` (fleet-wide or in its
/// cluster), replacing what it was there: creates the role if missing, makes it a member of
/// `kubecensus_viewer` and grants it to `kubecensus_explorer`, then recomputes what it sees.
/// Returns how many (cluster, group, kind, namespace) rows it sees.
///
/// # Errors
/// [`Error::Schema`] for a role name that cannot be a PostgreSQL identifier,
/// [`Error::Registry`] for a cluster the database does not know, or any SQL error (the service
/// role needs CREATEROLE).
pub async fn grant(pool: &PgPool, identity: &Identity) -> Result<u64> {
    let role = Ident::new(&identity.role_name)?;
    let mut conn = pool.acquire().await?;
    if let Some(cluster) = &identity.cluster_name {
        let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM clusters WHERE name = $1)")
            .bind(cluster)
            .fetch_one(&mut *conn)
            .await?;
        if !known {
            return Err(Error::Registry(format!("cluster `{cluster}` is not in the database's registry")));
        }
    }
    ensure_role(&mut conn, &role).await?;
    let (viewer, explorer) = (Ident::new(VIEWER_ROLE)?, Ident::new(EXPLORER_ROLE)?);
    execute(&mut conn, format!("GRANT {viewer} TO {role}; GRANT {role} TO {explorer}")).await?;
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query(
        "INSERT INTO access_identities (role_name, cluster_name, k8s_user, k8s_groups) VALUES ($1, $2, $3, $4)
         ON CONFLICT (role_name, cluster_name) DO UPDATE SET k8s_user = EXCLUDED.k8s_user,
           k8s_groups = EXCLUDED.k8s_groups, granted_at = now()",
    )
    .bind(&identity.role_name)
    .bind(&identity.cluster_name)
    .bind(&identity.k8s_user)
    .bind(&identity.k8s_groups)
    .execute(&mut *tx)
    .await?;
    let visible = permissions::recompute_role(&mut tx, &identity.role_name).await?;
    tx.commit().await?;
    Ok(visible)
}

/// Removes `role`'s identity in `cluster` (`None`: its fleet-wide one) and recomputes what it
/// sees; the role and its memberships stay (a viewer without identities sees nothing). Returns
/// whether there was such an identity.
///
/// # Errors
/// Any SQL error.
pub async fn revoke(pool: &PgPool, role: &str, cluster: Option<&str>) -> Result<bool> {
    let mut tx = pool.begin().await?;
    let removed =
        sqlx::query("DELETE FROM access_identities WHERE role_name = $1 AND cluster_name IS NOT DISTINCT FROM $2")
            .bind(role)
            .bind(cluster)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    permissions::recompute_role(&mut tx, role).await?;
    tx.commit().await?;
    Ok(removed > 0)
}

/// Every identity, by role then cluster (fleet-wide first).
///
/// # Errors
/// Any SQL error.
pub async fn list(pool: &PgPool) -> Result<Vec<Identity>> {
    Ok(sqlx::query_as(
        "SELECT role_name, cluster_name, k8s_user, k8s_groups FROM access_identities
         ORDER BY role_name, cluster_name NULLS FIRST",
    )
    .fetch_all(pool)
    .await?)
}

/// Which bindings let `role` list `resource` of `api_group` in `namespace` of `cluster`
/// (`None`: cluster-wide, as cluster-scoped resources need), from the cluster's permissions.
///
/// # Errors
/// Any SQL error.
pub async fn explain(
    pool: &PgPool,
    role: &str,
    cluster: &str,
    namespace: Option<&str>,
    api_group: &str,
    resource: &str,
) -> Result<Explanation> {
    let identity: Option<(String, Vec<String>)> =
        sqlx::query_as(&format!("WITH {IDENTITIES} SELECT k8s_user, k8s_groups FROM identities"))
            .bind(cluster)
            .bind(role)
            .fetch_optional(pool)
            .await?;
    let Some((k8s_user, k8s_groups)) = identity else {
        return Ok(Explanation { k8s_user: None, k8s_groups: Vec::new(), grants: Vec::new() });
    };
    let grants = sqlx::query_as(&format!(
        "WITH {IDENTITIES}
         SELECT DISTINCT p.binding_kind, p.binding_namespace, p.binding_name, p.role_kind, p.role_name, p.subject_kind,
                p.subject_name, p.api_group, p.resource
         FROM identities i JOIN access_permissions p ON p.cluster_name = i.cluster_name AND {APPLIES}
         WHERE (p.api_group = '*' OR p.api_group = $4) AND (p.resource = '*' OR p.resource = $5)
           AND (p.namespace IS NULL OR p.namespace = $3)
         ORDER BY p.binding_kind, p.binding_namespace, p.binding_name, p.subject_name"
    ))
    .bind(cluster)
    .bind(role)
    .bind(namespace)
    .bind(api_group)
    .bind(resource)
    .fetch_all(pool)
    .await?;
    Ok(Explanation { k8s_user: Some(k8s_user), k8s_groups, grants })
}
