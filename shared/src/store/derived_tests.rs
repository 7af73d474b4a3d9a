//! The tables a replace derives from the rows it writes, against a real PostgreSQL:
//! `fleet_unhealthy_objects` holds `fleet_objects`' rows not Current, and the summaries
//! `fleet_counts` and `fleet_images` agree with the data tables, after every replace; an
//! unchanged listing rewrites none of their rows, a pruned cluster's leave with it, and a
//! database without the summaries gets them filled at start-up.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use super::{
    fleet_view,
    tests::{CATALOG, at, count, prepared, refresh},
};

/// Pod `name` of `cluster` in `namespace`, with one container of `image`.
fn pod(cluster: &str, name: &str, namespace: &str, image: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": namespace, "uid": format!("{cluster}-{namespace}-{name}")},
           "spec": {"containers": [{"name": "c", "image": image}]},
           "status": {"phase": "Running"}})
}

/// `fleet_counts`' rows: table, cluster, region, group, kind, rows, namespaces.
type CountRow = (String, String, Option<String>, String, String, i64, Option<i64>);

/// `fleet_images`' rows: cluster, table, image, repository, containers.
type ImageRow = (String, String, Option<String>, Option<String>, i64);

async fn counts(pool: &PgPool) -> Vec<CountRow> {
    sqlx::query_as(
        "SELECT table_name, cluster_name, region, api_group, kind, row_count, namespace_count
         FROM fleet_counts ORDER BY 2, 1, 4, 5",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn images(pool: &PgPool) -> Vec<ImageRow> {
    sqlx::query_as(
        "SELECT cluster_name, table_name, image, image_repo, container_count FROM fleet_images ORDER BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The design's "pods by region" from the pods and from `fleet_counts`, checked equal: region,
/// clusters, pods.
async fn pods_by_region(pool: &PgPool) -> Vec<(Option<String>, i64, i64)> {
    let from_pods = sqlx::query_as(
        "SELECT region, count(DISTINCT cluster_name), count(*) FROM kubernetes_pods GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let from_counts: Vec<(Option<String>, i64, i64)> = sqlx::query_as(
        "SELECT region, count(*), sum(row_count)::bigint FROM fleet_counts
         WHERE table_name = 'kubernetes_pods' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(from_counts, from_pods, "fleet_counts answers pods by region as the pods do");
    from_counts
}

/// A `fleet_counts` row of `cluster`'s pods-resource `table`.
fn pods_row(table: &str, cluster: &str, rows: i64, namespaces: i64) -> CountRow {
    (table.into(), cluster.into(), Some("eu".into()), String::new(), "Pod".into(), rows, Some(namespaces))
}

/// A `fleet_images` row of `cluster`'s pod containers.
fn image_row(cluster: &str, image: &str, repository: &str, containers: i64) -> ImageRow {
    (cluster.into(), "kubernetes_pod_containers".into(), Some(image.into()), Some(repository.into()), containers)
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn summaries_follow_each_replace_leave_with_a_pruned_cluster_and_are_filled_at_start_up(pool: PgPool) {
    prepared(&pool).await;
    sqlx::query("INSERT INTO clusters (name) VALUES ('c1'), ('c2')").execute(&pool).await.unwrap();
    let first =
        [pod("c1", "p0", "a", "nginx:1"), pod("c1", "p1", "a", "nginx:1"), pod("c1", "p2", "b", "docker.io/redis:7")];
    refresh(&pool, "c1", &first, at(1)).await;
    refresh(&pool, "c2", &[pod("c2", "p0", "a", "nginx:1")], at(1)).await;
    let containers = "kubernetes_pod_containers";
    assert_eq!(
        counts(&pool).await,
        [
            pods_row(containers, "c1", 3, 2),
            pods_row("kubernetes_pods", "c1", 3, 2),
            pods_row(containers, "c2", 1, 1),
            pods_row("kubernetes_pods", "c2", 1, 1),
        ],
        "no row for a table the cluster has no rows of (pod volumes)"
    );
    assert_eq!(
        images(&pool).await,
        [
            image_row("c1", "docker.io/redis:7", "docker.io/redis", 1),
            image_row("c1", "nginx:1", "nginx", 2),
            image_row("c2", "nginx:1", "nginx", 1),
        ]
    );
    assert_eq!(pods_by_region(&pool).await, [(Some("eu".to_owned()), 2, 4)]);

    // p0 goes, p1 changes its image, p3 is new in a third namespace; c2 is not touched.
    let second = [
        pod("c1", "p1", "a", "nginx:2"),
        pod("c1", "p2", "b", "docker.io/redis:7"),
        pod("c1", "p3", "c", "docker.io/redis:7"),
    ];
    let version = "SELECT max(xmin::text::bigint) FROM fleet_counts WHERE cluster_name = $1";
    let c2_version = count(&pool, version, "c2").await;
    refresh(&pool, "c1", &second, at(2)).await;
    assert_eq!(count(&pool, version, "c2").await, c2_version, "another cluster's rows are not rewritten");
    let after = counts(&pool).await;
    assert_eq!(after[..2], [pods_row(containers, "c1", 3, 3), pods_row("kubernetes_pods", "c1", 3, 3)]);
    assert_eq!(
        images(&pool).await[..2],
        [image_row("c1", "docker.io/redis:7", "docker.io/redis", 2), image_row("c1", "nginx:2", "nginx", 1)]
    );
    pods_by_region(&pool).await;

    // An unchanged listing rewrites nothing.
    let c1_version = count(&pool, version, "c1").await;
    refresh(&pool, "c1", &second, at(3)).await;
    assert_eq!(count(&pool, version, "c1").await, c1_version);

    // A database without the summaries (an upgrade) gets them at start-up, filled.
    let images_before = images(&pool).await;
    sqlx::query("DROP TABLE fleet_counts, fleet_images").execute(&pool).await.unwrap();
    prepared(&pool).await;
    assert_eq!(counts(&pool).await, after);
    assert_eq!(images(&pool).await, images_before);

    let live = ["c2".to_owned()];
    for _ in 0..2 {
        crate::store::prune::prune_absent(&pool, &CATALOG, &live, Duration::ZERO, "test").await.unwrap();
    }
    assert!(counts(&pool).await.iter().all(|row| row.1 == "c2"), "c1's rows left with it");
    assert!(images(&pool).await.iter().all(|row| row.0 == "c2"));
}

/// Pod `i` of `cluster` in `phase` (`Succeeded` is Current, `Pending` InProgress).
fn pod_in(cluster: &str, i: usize, phase: &str) -> Value {
    let mut pod = super::tests::pod(cluster, i, 0);
    pod["status"]["phase"] = json!(phase);
    // What the worker sets on each item of a list before it flattens it; health rules need it.
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    pod
}

/// A row of `fleet_unhealthy_objects`: cluster, region, name, health, message, since.
type UnhealthyRow = (String, String, String, String, String, Option<String>);

/// `fleet_unhealthy_objects`' rows, after checking that they are `fleet_objects`' rows not
/// Current: equal at every commit.
async fn unhealthy(pool: &PgPool) -> Vec<UnhealthyRow> {
    let sql = |source: &str, filter: &str| {
        format!(
            "SELECT cluster_name, region, name, health, coalesce(message, ''), since::text FROM {source} {filter}
             ORDER BY cluster_name, namespace, name, uid"
        )
    };
    let table = sqlx::query_as(&sql(fleet_view::UNHEALTHY_TABLE, "")).fetch_all(pool).await.unwrap();
    let view: Vec<_> =
        sqlx::query_as(&sql(fleet_view::VIEW, "WHERE health <> 'Current'")).fetch_all(pool).await.unwrap();
    assert_eq!(table, view, "the table holds the view's rows not Current");
    table
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn unhealthy_objects_follow_each_replace_and_leave_with_a_pruned_cluster(pool: PgPool) {
    prepared(&pool).await;
    sqlx::query("INSERT INTO clusters (name) VALUES ('c1'), ('c2')").execute(&pool).await.unwrap();
    let first = [pod_in("c1", 0, "Succeeded"), pod_in("c1", 1, "Pending"), pod_in("c1", 2, "Pending")];
    refresh(&pool, "c1", &first, at(1)).await;
    refresh(&pool, "c2", &[pod_in("c2", 0, "Pending")], at(1)).await;
    let names = |rows: &[UnhealthyRow]| -> Vec<String> {
        rows.iter().map(|row| format!("{}/{} {}", row.0, row.2, row.3)).collect()
    };
    let rows = unhealthy(&pool).await;
    assert_eq!(names(&rows), ["c1/p1 InProgress", "c1/p2 InProgress", "c2/p0 InProgress"]);
    assert!(rows.iter().all(|row| row.1 == "eu" && row.4 == "Pod is in the Pending phase"), "{rows:?}");

    // p1 completes, p2 stays, p3 is new and pending; c2 is not touched.
    let second = [pod_in("c1", 1, "Succeeded"), pod_in("c1", 2, "Pending"), pod_in("c1", 3, "Pending")];
    refresh(&pool, "c1", &second, at(2)).await;
    assert_eq!(names(&unhealthy(&pool).await), ["c1/p2 InProgress", "c1/p3 InProgress", "c2/p0 InProgress"]);

    // An unchanged listing rewrites nothing.
    let version = "SELECT max(xmin::text::bigint) FROM fleet_unhealthy_objects WHERE cluster_name = $1";
    let before = count(&pool, version, "c1").await;
    refresh(&pool, "c1", &second, at(3)).await;
    assert_eq!(count(&pool, version, "c1").await, before);

    crate::store::prune::prune_absent(&pool, &CATALOG, &["c2".to_owned()], Duration::ZERO, "test").await.unwrap();
    crate::store::prune::prune_absent(&pool, &CATALOG, &["c2".to_owned()], Duration::ZERO, "test").await.unwrap();
    assert_eq!(names(&unhealthy(&pool).await), ["c2/p0 InProgress"], "c1's rows left with it");
}
