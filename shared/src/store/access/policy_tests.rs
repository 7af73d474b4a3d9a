//! The policies of the tables whose rows name their own kind (`fleet_unhealthy_objects`, the
//! summaries) or table (`object_changes`), as a viewer reads them on a real PostgreSQL: a row
//! shows when a grant whose kinds include the row's applies at its namespace or cluster-wide
//! (the summaries: cluster-wide only), exactly.

use serde_json::json;
use sqlx::PgPool;

use super::identities::{self, Identity};
use super::tests::{CATALOG, binding, load, replace, role, user};
use crate::store::ensure_schema;

/// The viewer (roles are server-wide: a name of this test's own).
const VIEWER: &str = "policy_tests_viewer";

/// `names` of `relation` as [`VIEWER`] sees them, sorted.
async fn seen(pool: &PgPool, relation: &str) -> Vec<String> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('role', $1, true)").bind(VIEWER).execute(&mut *tx).await.unwrap();
    sqlx::query_scalar(&format!("SELECT name FROM {relation} ORDER BY name")).fetch_all(&mut *tx).await.unwrap()
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn rows_naming_their_kind_or_table_show_where_a_grant_of_that_kind_applies(pool: PgPool) {
    ensure_schema(&pool, &CATALOG, &[], &[]).await.unwrap();
    // In cluster a, alice may list pods, deployments and HelmReleases in `payments` only, and
    // config maps and nodes everywhere; in b, nothing.
    let apps = json!([{"apiGroups": ["", "apps", "helm.toolkit.fluxcd.io"], "resources": ["pods", "deployments", "helmreleases"], "verbs": ["list"]}]);
    let everywhere = json!([{"apiGroups": [""], "resources": ["configmaps", "nodes"], "verbs": ["list"]}]);
    load(
        &pool,
        "a",
        &[
            role("apps", None, apps),
            binding("apps", Some("payments"), "ClusterRole", "apps", user("alice")),
            role("everywhere", None, everywhere),
            binding("everywhere", None, "ClusterRole", "everywhere", user("alice")),
        ],
    )
    .await;
    let discovery = json!({"kind": "APIResourceList", "groupVersion": "helm.toolkit.fluxcd.io/v2", "group": "helm.toolkit.fluxcd.io", "version": "v2",
        "resources": [{"name": "helmreleases", "kind": "HelmRelease", "namespaced": true, "verbs": ["list"]}]});
    replace(&pool, "a", super::permissions::DISCOVERY_TABLE, &[discovery]).await;
    load(&pool, "b", &[]).await;
    let identity =
        Identity { role_name: VIEWER.into(), cluster_name: None, k8s_user: "alice".into(), k8s_groups: vec![] };
    identities::grant(&pool, &identity).await.unwrap();
    sqlx::query(&format!("GRANT {VIEWER} TO CURRENT_USER")).execute(&pool).await.unwrap();

    // (name, cluster, namespace, group, kind, table), `shown` in the name.
    let rows = [
        ("pod-shown", "a", "payments", "", "Pod", "kubernetes_pods"),
        ("deployment-shown", "a", "payments", "apps", "Deployment", "kubernetes_deployments"),
        ("helmrelease-shown", "a", "payments", "helm.toolkit.fluxcd.io", "HelmRelease", "kubernetes_custom_resources"),
        ("configmap-shown", "a", "other", "", "ConfigMap", "kubernetes_config_maps"),
        ("node-shown", "a", "", "", "Node", "kubernetes_nodes"),
        ("pod-elsewhere", "a", "other", "", "Pod", "kubernetes_pods"),
        ("secret", "a", "payments", "", "Secret", "kubernetes_secrets"),
        ("volume", "a", "", "", "PersistentVolume", "kubernetes_persistent_volumes"),
        ("pod-of-b", "b", "payments", "", "Pod", "kubernetes_pods"),
    ];
    for (name, cluster, namespace, group, kind, table) in rows {
        sqlx::query(
            "INSERT INTO fleet_unhealthy_objects (table_name, cluster_name, namespace, api_group, kind, name, uid, health)
             VALUES ($1, $2, $3, $4, $5, $6, $6, 'Failed')",
        )
        .bind(table)
        .bind(cluster)
        .bind(namespace)
        .bind(group)
        .bind(kind)
        .bind(name)
        .execute(&pool)
        .await
        .unwrap();
        for summary in ["fleet_counts", "fleet_images"] {
            let value = if summary == "fleet_counts" { "row_count" } else { "container_count" };
            sqlx::query(&format!(
                "INSERT INTO {summary} (table_name, cluster_name, api_group, kind, {value}) VALUES ($1, $2, $3, $4, 1)"
            ))
            .bind(table)
            .bind(cluster)
            .bind(group)
            .bind(kind)
            .execute(&pool)
            .await
            .unwrap();
        }
        sqlx::query(
            "INSERT INTO object_changes (changed_at, cluster_name, table_name, namespace, name, uid, change, job_id, run_id)
             VALUES (now(), $1, $2, nullif($3, ''), $4, $4, 'updated', gen_random_uuid(), gen_random_uuid())",
        )
        .bind(cluster)
        .bind(table)
        .bind(namespace)
        .bind(name)
        .execute(&pool)
        .await
        .unwrap();
    }
    let mut shown: Vec<String> =
        rows.iter().map(|r| r.0).filter(|n| n.ends_with("-shown")).map(str::to_owned).collect();
    shown.sort();
    assert_eq!(seen(&pool, "fleet_unhealthy_objects").await, shown, "by each row's group and kind");
    // The change history of custom resources is not shown (their table names no kind).
    let changes: Vec<String> = shown.iter().filter(|n| !n.starts_with("helmrelease")).cloned().collect();
    assert_eq!(seen(&pool, "object_changes").await, changes, "by each row's table");
    // A summary counts a whole cluster: only a grant of its kind cluster-wide shows it.
    for summary in ["fleet_counts", "fleet_images"] {
        assert_eq!(
            seen(&pool, &format!("(SELECT kind || '@' || cluster_name AS name FROM {summary}) s")).await,
            ["ConfigMap@a", "Node@a"]
        );
    }
}
