//! `access_lookups`: what each role sees, kept as the `jsonb` objects the policies probe, so a
//! policy's subquery is one primary-key probe however many clusters and namespaces the role
//! sees (BENCHMARKS.md, "Viewers at a primary-key probe": built from `access_visible_namespaces`
//! in every query, the objects cost a viewer of one namespace in each of 1,000 clusters about
//! 1 ms a subquery, most of a point lookup). The policies read them decompressed once per query
//! (`policies::lookup`).
//!
//! A role has one row per kind (`<api group>/<Kind>`) it is shown somewhere:
//! - `clusters`: the clusters where a grant shows the kind cluster-wide;
//! - `namespaces`: the names of the namespaces where one shows it, in any cluster;
//! - `places`: those namespaces as `<namespace>/<cluster>`;
//!
//! and one row with `kind` = '' for the tables whose rows name their kind or table:
//! - `clusters` and `namespaces` as above for any kind;
//! - `places`: each place the role sees something at (`<namespace>/<cluster>`, `/<cluster>` where
//!   a grant applies cluster-wide) mapped to its *combination*: the `kind_set`s of the rows that
//!   apply there, sorted, joined by `+`;
//! - `seen`: every cluster the role sees something in;
//! - `combinations` and `table_combinations`: `<combination>/<api group>/<Kind>` and
//!   `<combination>/<table>` for every kind (and catalog table, by `access_tables`) that each
//!   combination shows.
//!
//! The rows of a role are rebuilt ([`rebuild`]) in the transaction that changed its rows of
//! `access_visible_namespaces`, under the role's advisory lock: two clusters' recomputations
//! that change one role's rows rebuild one after the other, the second seeing the first's
//! commit (READ COMMITTED), so the last rebuild holds every change.

use sqlx::{PgConnection, PgPool};

use crate::Result;

/// Rebuilds the rows of the roles in `$1` (after their old rows were deleted). A role's rows of
/// one `kind_set` show the same kinds: their objects are built once per set, and a kind's are
/// the union of its sets' (`jsonb_merge_agg`, migration 0012), never one row per (row, kind).
const REBUILD: &str = r#"
INSERT INTO access_lookups (role_name, kind, clusters, namespaces, places, seen, combinations, table_combinations)
WITH mine AS (
  SELECT v.role_name, v.cluster_name, v.namespace, v.kinds, v.kind_set,
         CASE v.namespace WHEN '*' THEN '' ELSE v.namespace END || '/' || v.cluster_name AS place
  FROM access_visible_namespaces v WHERE v.role_name = ANY ($1)
),
at_place AS (
  SELECT role_name, place, string_agg(DISTINCT kind_set, '+' ORDER BY kind_set) AS combination
  FROM mine GROUP BY 1, 2
),
kind_sets AS (
  SELECT role_name, kind_set, kinds,
         jsonb_object_agg(cluster_name, true) FILTER (WHERE namespace = '*') AS clusters,
         jsonb_object_agg(namespace, true) FILTER (WHERE namespace <> '*') AS namespaces,
         jsonb_object_agg(place, true) FILTER (WHERE namespace <> '*') AS places
  FROM mine GROUP BY role_name, kind_set, kinds
),
combined AS (
  SELECT DISTINCT c.role_name, c.combination, k.kind
  FROM (SELECT DISTINCT role_name, combination FROM at_place) c
  JOIN kind_sets s ON s.role_name = c.role_name AND s.kind_set = ANY (string_to_array(c.combination, '+'))
  CROSS JOIN LATERAL unnest(s.kinds) AS k(kind)
)
SELECT s.role_name, k.kind, jsonb_merge_agg(s.clusters), jsonb_merge_agg(s.namespaces), jsonb_merge_agg(s.places),
       NULL::jsonb, NULL::jsonb, NULL::jsonb
FROM kind_sets s CROSS JOIN LATERAL unnest(s.kinds) AS k(kind)
GROUP BY 1, 2
UNION ALL
SELECT m.role_name, '',
       jsonb_object_agg(m.cluster_name, true) FILTER (WHERE m.namespace = '*'),
       jsonb_object_agg(m.namespace, true) FILTER (WHERE m.namespace <> '*'),
       (SELECT jsonb_object_agg(a.place, a.combination) FROM at_place a WHERE a.role_name = m.role_name),
       jsonb_object_agg(m.cluster_name, true),
       (SELECT jsonb_object_agg(c.combination || '/' || c.kind, true) FROM combined c WHERE c.role_name = m.role_name),
       (SELECT jsonb_object_agg(c.combination || '/' || t.table_name, true)
        FROM combined c JOIN access_tables t ON t.api_group || '/' || t.kind = c.kind
        WHERE c.role_name = m.role_name)
FROM mine m
GROUP BY m.role_name
"#;

/// Rebuilds the lookups of `roles` (any order, repeats allowed) in `tx`, after taking each
/// role's transaction-level advisory lock, in the order of the locks' keys (so two
/// transactions never wait for each other in a cycle).
///
/// # Errors
/// Any SQL error (the caller's transaction then rolls back).
pub async fn rebuild(tx: &mut PgConnection, roles: &[String]) -> Result<()> {
    if roles.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_advisory_xact_lock(s.key) FROM
         (SELECT DISTINCT hashtextextended('kubecensus access role ' || r, 0) AS key
          FROM unnest($1::text[]) AS r ORDER BY 1 OFFSET 0) s",
    )
    .bind(roles)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM access_lookups WHERE role_name = ANY ($1)").bind(roles).execute(&mut *tx).await?;
    sqlx::query(REBUILD).bind(roles).execute(&mut *tx).await?;
    Ok(())
}

/// At start-up, in one transaction, builds the lookups of each role that has visible rows but
/// no lookups yet (the release that added them: 0012 leaves the table empty), or, when
/// `refill` (the catalog's tables changed, so `table_combinations` may have), rebuilds those of
/// every role that has visible rows.
///
/// # Errors
/// Any SQL error.
pub async fn fill(pool: &PgPool, refill: bool) -> Result<()> {
    let mut tx = pool.begin().await?;
    let roles: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT v.role_name FROM access_visible_namespaces v
         WHERE $1 OR NOT EXISTS (SELECT 1 FROM access_lookups l WHERE l.role_name = v.role_name AND l.kind = '')
         ORDER BY 1",
    )
    .bind(refill)
    .fetch_all(&mut *tx)
    .await?;
    rebuild(&mut tx, &roles).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sqlx::PgPool;

    use super::super::identities::{self, Identity};
    use super::super::permissions::recompute_cluster;
    use super::super::tests::{CATALOG, binding, load, role, user};
    use crate::store::ensure_schema;

    const ROLE: &str = "lookups_tests_viewer";

    /// Every lookups row of [`ROLE`], as text, with the transaction that wrote it.
    async fn rows(pool: &PgPool) -> Vec<(String, String)> {
        sqlx::query_as("SELECT to_jsonb(l)::text, xmin::text FROM access_lookups l WHERE role_name = $1 ORDER BY kind")
            .bind(ROLE)
            .fetch_all(pool)
            .await
            .unwrap()
    }

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn two_clusters_changing_one_role_at_once_leave_its_lookups_whole_and_start_up_fills_missing_ones(
        pool: PgPool,
    ) {
        ensure_schema(&pool, &CATALOG, &[], &[]).await.unwrap();
        let pods = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]);
        for (cluster, namespace) in [("a", "payments"), ("b", "shop")] {
            let objects = [
                role("pods", None, pods.clone()),
                binding("pods", Some(namespace), "ClusterRole", "pods", user("alice")),
                binding("pods", Some("common"), "ClusterRole", "pods", user("alice")),
            ];
            load(&pool, cluster, &objects).await;
        }
        let identity =
            Identity { role_name: ROLE.into(), cluster_name: None, k8s_user: "alice".into(), k8s_groups: vec![] };
        identities::grant(&pool, &identity).await.unwrap();
        let before = rows(&pool).await;
        assert!(before.iter().any(|(row, _)| row.contains("payments/a") && row.contains("shop/b")), "{before:?}");

        // The bindings in `payments` and `shop` go; each cluster's recomputation changes the role's rows, in
        // transactions open at once: the second waits for the first's lock on the role.
        sqlx::query("DELETE FROM kubernetes_role_binding_subjects WHERE namespace <> 'common'")
            .execute(&pool)
            .await
            .unwrap();
        let mut first = pool.begin().await.unwrap();
        recompute_cluster(&mut first, "a", true).await.unwrap();
        let second = tokio::spawn({
            let pool = pool.clone();
            async move {
                let mut tx = pool.begin().await.unwrap();
                recompute_cluster(&mut tx, "b", true).await.unwrap();
                tx.commit().await.unwrap();
            }
        });
        let waiting = "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                       WHERE datname = current_database() AND wait_event_type = 'Lock')";
        while !sqlx::query_scalar::<_, bool>(waiting).fetch_one(&pool).await.unwrap() {
            tokio::task::yield_now().await;
        }
        first.commit().await.unwrap();
        second.await.unwrap();
        let after = rows(&pool).await;
        let shown = |row: &String| row.contains("common/a") && row.contains("common/b");
        assert!(after.iter().any(|(row, _)| shown(row)), "{after:?}");
        assert!(after.iter().all(|(row, _)| !row.contains("payments") && !row.contains("shop")), "{after:?}");

        // A recomputation that changes nothing rewrites no row (the same transaction ids); the
        // start-up of a release after one without lookups builds the same ones from scratch.
        let mut tx = pool.begin().await.unwrap();
        recompute_cluster(&mut tx, "a", true).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(rows(&pool).await, after);
        sqlx::query("DELETE FROM access_lookups").execute(&pool).await.unwrap();
        super::super::ensure(&pool, &CATALOG).await.unwrap();
        let rebuilt: Vec<String> = rows(&pool).await.into_iter().map(|(row, _)| row).collect();
        assert_eq!(rebuilt, after.into_iter().map(|(row, _)| row).collect::<Vec<_>>());
    }
}
