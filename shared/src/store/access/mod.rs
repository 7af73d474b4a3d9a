//! Access control enforced inside PostgreSQL: a viewer sees a row only if the Kubernetes user
//! and groups its PostgreSQL role stands for may `list` that object's resource there, by the
//! cluster's own RBAC (issue 22).
//!
//! - [`permissions`]: `access_permissions`, replayed in SQL from the cluster's RBAC tables as
//!   the RBAC authorizer decides, and `access_visible_namespaces`, what each role may see; both
//!   rewritten for a cluster inside the transaction of every replace of its RBAC or discovery tables
//!   ([`on_swap`], called by `store::derived`), so they agree with the RBAC rows at every commit.
//! - [`identities`]: `access_identities`, which PostgreSQL role is which Kubernetes user and
//!   groups (fleet-wide or per cluster), and `scheduler access grant|revoke|list|explain`.
//! - [`policies`]: the row-level security policy of every table.
//!
//! Roles: `kubecensus_viewer` (NOLOGIN; its members are subject to the policies) and
//! `kubecensus_explorer` (NOLOGIN; given every granted role, so a service can `SET ROLE`),
//! created by migration 0008. The service's own role owns the tables and is not subject to row
//! security, nor are superusers and roles with BYPASSRLS. Policies read `current_user` only,
//! never a setting. Viewers may read the data tables, the views (`security_invoker`) and the
//! registry tables, never the partitions (`kubecensus_partitions`, `kubecensus_history`: no
//! privilege on those schemas).

pub mod identities;
pub mod lookups;
pub mod permissions;
pub mod policies;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod tests;

use sqlx::{PgConnection, PgPool};

use super::{
    derived::Swap,
    execute,
    fleet_view::VIEW,
    schema::DDL_LOCKS,
    session_lock::SessionLock,
    sql::{Ident, literal},
};
use crate::{Error, Result, model::catalog::Catalog, model::catalog::ResourceSource};

/// The group role whose members row security applies to.
pub const VIEWER_ROLE: &str = "kubecensus_viewer";
/// The group role a service that acts for viewers is a member of (`SET ROLE <viewer>`).
pub const EXPLORER_ROLE: &str = "kubecensus_explorer";

/// The name of the permissive policy every protected table has (`USING (true)`).
const ALL_POLICY: &str = "kubecensus_all";
/// The name of the restrictive policy for viewers.
const VIEWER_POLICY: &str = "kubecensus_viewer";
/// Tables viewers read besides the protected ones: the policies' own.
const POLICY_TABLES: [&str; 4] = ["access_visible", "access_visible_namespaces", "access_lookups", "access_tables"];

/// Rewrites the permissions of `swap`'s cluster when it replaced RBAC rows (or what roles see,
/// when it replaced the cluster's discovery), in the replace's transaction.
///
/// # Errors
/// Any SQL error.
pub async fn on_swap(tx: &mut PgConnection, swap: &Swap<'_>) -> Result<()> {
    let job_table = swap.resource.job_table();
    let rbac = permissions::RBAC_TABLES.contains(&job_table);
    let changed = swap.first_load || swap.tables.iter().any(|t| t.counts.inserted + t.counts.deleted > 0);
    if changed && (rbac || job_table == permissions::DISCOVERY_TABLE) {
        permissions::recompute_cluster(tx, swap.cluster, rbac).await?;
    }
    Ok(())
}

/// Records that `cluster` (already registered) authorizes with `mode` (`rbac` or `webhook`) and,
/// when that changed, recomputes what every role sees there, in one transaction: a cluster
/// becoming `webhook` stops showing rows to fleet-wide identities at once. A new cluster is left
/// to its insert.
///
/// # Errors
/// Any SQL error.
pub async fn set_authorization(pool: &PgPool, cluster: &str, mode: &str) -> Result<()> {
    let mut tx = pool.begin().await?;
    let changed = sqlx::query(
        "UPDATE clusters SET authorization_mode = $2, updated_at = now() WHERE name = $1 AND authorization_mode <> $2",
    )
    .bind(cluster)
    .bind(mode)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed > 0 {
        permissions::recompute_cluster(&mut tx, cluster, false).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Whether the group roles exist (migration 0008 creates them when the service's role may).
async fn roles_exist(pool: &PgPool) -> Result<bool> {
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = ANY ($1)")
        .bind([VIEWER_ROLE, EXPLORER_ROLE])
        .fetch_one(pool)
        .await?;
    Ok(found == 2)
}

/// Turns row security on and writes the viewers' policy of every protected table of `catalog`
/// (and of the extra tables that exist), grants viewers `SELECT` on them and on the views, and
/// fills `access_tables` and the roles' missing `access_lookups`. A table whose policy is
/// already the current one is not touched (no lock taken); one whose policy changed is altered
/// in one transaction, under [`DDL_LOCKS`].
/// Without the group roles (a service role that may not create roles) it logs a warning and
/// does nothing: nobody can be a viewer then.
///
/// # Errors
/// Any SQL error, or [`Error::LockTimeout`] after the last try.
pub async fn ensure(pool: &PgPool, catalog: &Catalog) -> Result<()> {
    if !roles_exist(pool).await? {
        tracing::warn!("roles {VIEWER_ROLE} and {EXPLORER_ROLE} do not exist: access control is off");
        return Ok(());
    }
    let tables_changed = fill_tables(pool, catalog).await?;
    lookups::fill(pool, tables_changed).await?;
    // Processes start together: concurrent GRANTs or policy changes of one table fail ("tuple
    // concurrently updated"), so they take turns on a session lock of a connection of their own.
    let mut lock = SessionLock::acquire(pool, "kubecensus access policies").await?;
    let result = ensure_policies(lock.conn(), catalog).await;
    lock.release().await;
    result
}

/// The policies and grants of [`ensure`], holding its lock on `conn`.
async fn ensure_policies(conn: &mut PgConnection, catalog: &Catalog) -> Result<()> {
    let viewer = Ident::new(VIEWER_ROLE)?;
    for protected in policies::protected(catalog) {
        let table = Ident::new(&protected.table)?;
        let using = protected.rule.using();
        let marker = format!("kubecensus {:032x}", xxhash_rust::xxh3::xxh3_128(using.as_bytes()));
        let current: Option<Option<String>> = sqlx::query_scalar(
            "SELECT (SELECT obj_description(p.oid, 'pg_policy') FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = $2)
             FROM pg_class c WHERE c.oid = to_regclass($1)",
        )
        .bind(table.to_string())
        .bind(VIEWER_POLICY)
        .fetch_optional(&mut *conn)
        .await?;
        match current {
            None => continue,
            Some(Some(found)) if found == marker => continue,
            Some(_) => {}
        }
        let (all, restricted) = (Ident::new(ALL_POLICY)?, Ident::new(VIEWER_POLICY)?);
        let ddl = format!(
            "SET LOCAL client_min_messages = warning; ALTER TABLE {table} ENABLE ROW LEVEL SECURITY; \
             DROP POLICY IF EXISTS {all} ON {table}; DROP POLICY IF EXISTS {restricted} ON {table}; \
             CREATE POLICY {all} ON {table} USING (true); \
             CREATE POLICY {restricted} ON {table} AS RESTRICTIVE FOR SELECT TO {viewer} USING ({using}); \
             COMMENT ON POLICY {restricted} ON {table} IS {}; GRANT SELECT ON {table} TO {viewer}",
            literal(&marker)
        );
        let mut attempt = 1;
        loop {
            let mut tx = DDL_LOCKS.begin(conn).await?;
            let result = match execute(&mut tx, ddl.clone()).await {
                Ok(()) => tx.commit().await.map_err(Error::from),
                Err(err) => Err(err),
            };
            if DDL_LOCKS.settle(&protected.table, &mut attempt, result).await? {
                break;
            }
        }
    }
    grant_readable(conn, &viewer).await
}

/// Grants viewers `SELECT` on the `fleet_objects` view (recreated with the registry's fields)
/// and the policies' own tables, where they lack it; those get policies of their own.
async fn grant_readable(conn: &mut PgConnection, viewer: &Ident) -> Result<()> {
    for name in std::iter::once(VIEW).chain(POLICY_TABLES) {
        let granted: bool = sqlx::query_scalar("SELECT has_table_privilege($1, $2, 'SELECT')")
            .bind(VIEWER_ROLE)
            .bind(Ident::new(name)?.to_string())
            .fetch_one(&mut *conn)
            .await?;
        if !granted {
            execute(conn, format!("GRANT SELECT ON {} TO {viewer}", Ident::new(name)?)).await?;
        }
    }
    // A viewer reads its own rows of where its grants apply and what they show.
    let own = ["access_visible_namespaces", "access_lookups"].map(|table| (table, "role_name = current_user::text"));
    let policy = Ident::new("kubecensus_own")?;
    for (table, using) in own {
        let has_policy: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_policies WHERE tablename = $1 AND policyname = $2)")
                .bind(table)
                .bind(policy.as_str())
                .fetch_one(&mut *conn)
                .await?;
        if !has_policy {
            let table = Ident::new(table)?;
            execute(
                conn,
                format!(
                    "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY; \
                     CREATE POLICY {policy} ON {table} FOR SELECT TO {viewer} USING ({using})"
                ),
            )
            .await?;
        }
    }
    Ok(())
}

/// Rewrites `access_tables`: the API group and kind of each catalog table of a listed resource;
/// returns whether a row changed.
async fn fill_tables(pool: &PgPool, catalog: &Catalog) -> Result<bool> {
    let (mut tables, mut groups, mut kinds) = (Vec::new(), Vec::new(), Vec::new());
    for (resource, table) in catalog.tables() {
        if resource.source == ResourceSource::List {
            tables.push(table.name.clone());
            groups.push(resource.api.group.clone());
            kinds.push(resource.api.kind.clone());
        }
    }
    let changed = sqlx::query(
        "INSERT INTO access_tables (table_name, api_group, kind) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
         ON CONFLICT (table_name) DO UPDATE SET api_group = EXCLUDED.api_group, kind = EXCLUDED.kind
         WHERE (access_tables.api_group, access_tables.kind) IS DISTINCT FROM (EXCLUDED.api_group, EXCLUDED.kind)",
    )
    .bind(&tables)
    .bind(&groups)
    .bind(&kinds)
    .execute(pool)
    .await?;
    Ok(changed.rows_affected() > 0)
}
