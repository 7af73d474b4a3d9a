//! Custom resources end to end: each kind its own job and its own replace, clusters without Flux
//! `skipped`, and `fleet_objects` paged through with keyset pagination.

use std::collections::BTreeSet;

use kubecensus::model::catalog::catalog;
use kubecensus_tests::{
    fleet::{Fleet, FleetSpec, cluster_runs_custom_resources},
    harness::TestEnv,
};

/// The custom kinds' job targets.
fn custom_targets() -> Vec<String> {
    catalog().targets.iter().filter(|t| t.kind.is_some()).map(|t| t.name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_kinds_refresh_leaves_other_kinds_rows_untouched_and_a_cluster_without_flux_is_skipped() {
    let mut env = TestEnv::new().await.unwrap();
    let spec = FleetSpec { clusters: 3, pods: 5, custom_resources: 45, ..FleetSpec::default() };
    let _fleet = Fleet::start(spec, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &registry, &[]).unwrap();
    env.scheduler(&registry, &["refresh", "--table", "kubernetes_custom_resources", "--wait"]).await.unwrap();

    let runs: Vec<(String, String, String, Option<String>)> =
        sqlx::query_as("SELECT cluster_name, table_name, status, error FROM runs ORDER BY 1, 2")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(runs.len(), 3 * custom_targets().len(), "one job per cluster and kind: {runs:#?}");
    for (cluster, target, status, error) in &runs {
        let index = cluster.trim_start_matches("sim-").parse::<usize>().unwrap() - 1;
        if cluster_runs_custom_resources(index) {
            assert_eq!(status, "succeeded", "{cluster} {target}: {error:?}");
        } else {
            assert_eq!(status, "skipped", "{cluster} {target}");
            assert!(error.as_deref().is_some_and(|e| e.contains("404")), "{cluster} {target}: {error:?}");
        }
    }
    let rows_of = |cluster: &'static str| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_as::<_, (String, String, String, String)>(
                "SELECT kind, name, row_hash::text, xmin::text FROM kubernetes_custom_resources
                 WHERE cluster_name = $1 ORDER BY 1, 2",
            )
            .bind(cluster)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    assert!(rows_of("sim-03").await.is_empty(), "a cluster without Flux has no custom resources");
    let before = rows_of("sim-01").await;
    assert_eq!(before.len(), 45);

    // Make every Kustomization row of sim-01 look stale: its next refresh replaces all of them,
    // by the path that deletes every row of its scope.
    sqlx::query(
        "UPDATE kubernetes_custom_resources SET row_hash = gen_random_uuid()
         WHERE cluster_name = 'sim-01' AND kind = 'Kustomization'",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let kustomizations = "kubernetes_custom_resources/kustomize.toolkit.fluxcd.io/Kustomization";
    let report = env
        .scheduler(&registry, &["refresh", "--cluster", "sim-01", "--table", kustomizations, "--wait"])
        .await
        .unwrap();
    assert!(report.contains("succeeded"), "{report}");
    let after = rows_of("sim-01").await;
    let others = |rows: &[(String, String, String, String)]| -> Vec<(String, String, String, String)> {
        rows.iter().filter(|row| row.0 != "Kustomization").cloned().collect()
    };
    assert_eq!(others(&after), others(&before), "other kinds' rows are untouched: same rows, same versions");
    let (old, new): (Vec<_>, Vec<_>) = (
        before.iter().filter(|r| r.0 == "Kustomization").map(|r| (&r.1, &r.2)).collect(),
        after.iter().filter(|r| r.0 == "Kustomization").map(|r| (&r.1, &r.2)).collect(),
    );
    assert_eq!(old, new, "the Kustomizations are back with their own hashes");
    assert!(!old.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_objects_pages_through_every_unhealthy_object_exactly_once() {
    let mut env = TestEnv::new().await.unwrap();
    let spec = FleetSpec { clusters: 3, pods: 40, custom_resources: 60, ..FleetSpec::default() };
    let _fleet = Fleet::start(spec, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &registry, &[]).unwrap();
    let mut args = vec!["refresh", "--wait"];
    for table in ["kubernetes_custom_resources", "kubernetes_pods", "kubernetes_deployments", "kubernetes_nodes"] {
        args.extend(["--table", table]);
    }
    env.scheduler(&registry, &args).await.unwrap();

    type Key = (String, String, String, String, String, String);
    let every: Vec<Key> = sqlx::query_as(
        "SELECT cluster_name, namespace, api_group, kind, name, uid FROM fleet_objects WHERE health <> 'Current'",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let healths: BTreeSet<String> = sqlx::query_scalar(
        "SELECT DISTINCT health FROM fleet_objects WHERE kind = 'Kustomization' OR kind = 'HelmRelease'",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let expected: BTreeSet<String> =
        ["Current", "Failed", "InProgress", "Suspended", "Terminating"].map(String::from).into();
    assert_eq!(healths, expected, "the simulated Flux objects hold every outcome");

    // Keyset pagination, 7 per page: the README's query.
    let mut paged: Vec<Key> = Vec::new();
    let mut after: (String, String, String, String) = Default::default();
    loop {
        let page: Vec<Key> = sqlx::query_as(
            "SELECT cluster_name, namespace, api_group, kind, name, uid FROM fleet_objects
             WHERE health <> 'Current' AND (cluster_name, namespace, name, uid) > ($1, $2, $3, $4)
             ORDER BY cluster_name, namespace, name, uid LIMIT 7",
        )
        .bind(&after.0)
        .bind(&after.1)
        .bind(&after.2)
        .bind(&after.3)
        .fetch_all(&env.pool)
        .await
        .unwrap();
        let Some(last) = page.last() else { break };
        after = (last.0.clone(), last.1.clone(), last.4.clone(), last.5.clone());
        paged.extend(page);
    }
    let distinct: BTreeSet<&Key> = paged.iter().collect();
    assert_eq!(distinct.len(), paged.len(), "no object twice");
    assert_eq!(distinct, every.iter().collect(), "every unhealthy object");
    assert!(paged.len() > 7 * 3, "several pages: {}", paged.len());
    assert!(paged.iter().all(|k| k.0 != "sim-03" || k.3 != "Kustomization"), "sim-03 runs no Flux");
}
