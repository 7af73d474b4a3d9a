//! Custom resources end to end: each kind its own job and its own replace, clusters without Flux
//! `skipped`, and every unhealthy object paged through with keyset pagination, from
//! `fleet_unhealthy_objects`, which agrees with `fleet_objects` after every refresh.

use std::{collections::BTreeSet, path::PathBuf};

use kubecensus::model::catalog::Catalog;
use kubecensus_tests::{
    fleet::{Faults, Fleet, FleetSpec, cluster_runs_custom_resources},
    harness::TestEnv,
};
use sqlx::PgPool;

/// The custom kinds' job targets.
fn custom_targets() -> Vec<String> {
    Catalog::builtin().targets.iter().filter(|t| t.kind.is_some()).map(|t| t.name.clone()).collect()
}

/// `fleet_unhealthy_objects`, every column, in keyset order, after checking that it holds
/// exactly the rows of `fleet_objects` that are not Current.
async fn unhealthy_objects(pool: &PgPool) -> Vec<Vec<Option<String>>> {
    let sql = |source: &str, filter: &str| {
        format!(
            "SELECT ARRAY[cluster_name, namespace, api_group, kind, name, uid, health, message, since::text]
             FROM {source} {filter} ORDER BY cluster_name, namespace, name, uid"
        )
    };
    let table: Vec<Vec<Option<String>>> =
        sqlx::query_scalar(&sql("fleet_unhealthy_objects", "")).fetch_all(pool).await.unwrap();
    let view: Vec<Vec<Option<String>>> =
        sqlx::query_scalar(&sql("fleet_objects", "WHERE health <> 'Current'")).fetch_all(pool).await.unwrap();
    assert_eq!(table, view, "fleet_unhealthy_objects holds fleet_objects' rows not Current");
    table
}

/// `fleet_counts`' rows of custom resources (cluster, group, kind, rows, namespaces, and the
/// row's version), after checking that they count `kubernetes_custom_resources`' rows.
async fn custom_counts(pool: &PgPool) -> Vec<(String, String, String, i64, Option<i64>, String)> {
    let counted: Vec<(String, String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT cluster_name, api_group, kind, count(*), count(DISTINCT namespace) FROM kubernetes_custom_resources
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let rows: Vec<(String, String, String, i64, Option<i64>, String)> = sqlx::query_as(
        "SELECT cluster_name, api_group, kind, row_count, namespace_count, xmin::text FROM fleet_counts
         WHERE table_name = 'kubernetes_custom_resources' ORDER BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let summary: Vec<_> = rows.iter().map(|r| (r.0.clone(), r.1.clone(), r.2.clone(), r.3, r.4)).collect();
    assert_eq!(summary, counted, "fleet_counts counts each cluster's objects of each kind");
    rows
}

/// A private environment, a simulated fleet of `spec`, and the fleet's registry file.
async fn simulated_fleet(spec: FleetSpec) -> (TestEnv, Fleet, PathBuf) {
    let env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(spec, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    (env, fleet, registry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_kinds_refresh_leaves_other_kinds_rows_untouched_and_a_cluster_without_flux_is_skipped() {
    let (mut env, _fleet, registry) =
        simulated_fleet(FleetSpec { clusters: 3, pods: 5, custom_resources: 45, ..FleetSpec::default() }).await;
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
    let counts_before = custom_counts(&env.pool).await;
    assert!(counts_before.iter().any(|row| row.2 == "Kustomization"), "{counts_before:?}");

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
    assert!(report.contains(kustomizations) && !report.contains("sim-02"), "only the job it queued: {report}");
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
    let counts_after = custom_counts(&env.pool).await;
    let refreshed =
        |row: &&(String, String, String, i64, Option<i64>, String)| row.0 == "sim-01" && row.2 == "Kustomization";
    let (rewritten, kept): (Vec<_>, Vec<_>) = counts_after.iter().partition(refreshed);
    let untouched: Vec<_> = counts_before.iter().filter(|row| !refreshed(row)).collect();
    assert_eq!(kept, untouched, "other kinds' and clusters' counts are untouched: same versions");
    assert_eq!(rewritten.len(), 1);
    assert!(!counts_before.contains(rewritten[0]), "sim-01's Kustomizations are counted again");
    assert!(!old.is_empty());
    let unhealthy = unhealthy_objects(&env.pool).await;
    assert!(unhealthy.iter().any(|row| row[3].as_deref() == Some("Kustomization")), "{unhealthy:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_objects_pages_through_every_unhealthy_object_exactly_once() {
    let (mut env, fleet, registry) =
        simulated_fleet(FleetSpec { clusters: 3, pods: 40, custom_resources: 60, ..FleetSpec::default() }).await;
    env.spawn_worker("worker", &registry, &[]).unwrap();
    let mut args = vec!["refresh", "--wait"];
    for table in ["kubernetes_custom_resources", "kubernetes_pods", "kubernetes_deployments", "kubernetes_nodes"] {
        args.extend(["--table", table]);
    }
    env.scheduler(&registry, &args).await.unwrap();

    type Key = (String, String, String, String, String, String);
    let every: Vec<Key> = unhealthy_objects(&env.pool)
        .await
        .into_iter()
        .map(|row| {
            let text = |i: usize| row[i].clone().unwrap_or_default();
            (text(0), text(1), text(2), text(3), text(4), text(5))
        })
        .collect();
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
    let deployments: Vec<(String, String)> =
        sqlx::query_as("SELECT health, message FROM fleet_objects WHERE kind = 'Deployment' GROUP BY 1, 2")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(deployments, [("Current".into(), "Deployment is available. Replicas: 2".into())]);

    // Keyset pagination, 7 per page: the README's query.
    let mut paged: Vec<Key> = Vec::new();
    let mut after: (String, String, String, String) = Default::default();
    loop {
        let page: Vec<Key> = sqlx::query_as(
            "SELECT cluster_name, namespace, api_group, kind, name, uid FROM fleet_unhealthy_objects
             WHERE (cluster_name, namespace, name, uid) > ($1, $2, $3, $4)
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

    // Half of sim-01's pods go and new ones come (some Pending): the table follows the refresh.
    let pods_of = |rows: &[Vec<Option<String>>]| -> BTreeSet<String> {
        rows.iter()
            .filter(|row| row[0].as_deref() == Some("sim-01") && row[3].as_deref() == Some("Pod"))
            .map(|row| format!("{row:?}"))
            .collect()
    };
    let before = pods_of(&unhealthy_objects(&env.pool).await);
    fleet.churn("sim-01", 20, 200);
    let report = env
        .scheduler(&registry, &["refresh", "--cluster", "sim-01", "--table", "kubernetes_pods", "--wait"])
        .await
        .unwrap();
    assert!(report.contains("succeeded"), "{report}");
    let after = pods_of(&unhealthy_objects(&env.pool).await);
    assert_ne!(before, after, "new Pending pods are in, deleted ones out");
    assert!(!after.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_from_a_custom_resources_file_are_collected_and_a_malformed_file_is_refused() {
    let (mut env, fleet, registry) =
        simulated_fleet(FleetSpec { clusters: 3, pods: 2, custom_resources: 18, ..FleetSpec::default() }).await;
    // StorageClass: any kind a cluster serves; Kafka: served by none; Certificate: the catalog's,
    // pinned to a version.
    let file = env.dir.join("custom-resources.yaml");
    std::fs::write(
        &file,
        "- {group: storage.k8s.io, kind: StorageClass}\n\
         - {group: kafka.strimzi.io, kind: Kafka, schedule: '0 0 * * * *'}\n\
         - {group: cert-manager.io, kind: Certificate, version: v1}\n",
    )
    .unwrap();
    let flag = ["--custom-resources", file.to_str().unwrap()];
    env.spawn_worker("worker", &registry, &flag).unwrap();
    let mut args = flag.to_vec();
    args.extend(["refresh", "--table", "kubernetes_custom_resources", "--wait"]);
    env.scheduler(&registry, &args).await.unwrap();

    let runs: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT cluster_name, table_name, status FROM runs
         WHERE table_name LIKE '%/StorageClass' OR table_name LIKE '%/Kafka' OR table_name LIKE '%/Certificate'
         ORDER BY 1, 2",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let expected: Vec<(String, String, String)> = ["sim-01", "sim-02", "sim-03"]
        .iter()
        .enumerate()
        .flat_map(|(index, cluster)| {
            let flux = cluster_runs_custom_resources(index);
            [
                ("cert-manager.io/Certificate", if flux { "succeeded" } else { "skipped" }),
                ("kafka.strimzi.io/Kafka", "skipped"),
                ("storage.k8s.io/StorageClass", "succeeded"),
            ]
            .map(|(kind, status)| (cluster.to_string(), format!("kubernetes_custom_resources/{kind}"), status.into()))
        })
        .collect();
    assert_eq!(runs, expected);
    for cluster in ["sim-01", "sim-03"] {
        let (rows, versions): (i64, Vec<String>) = sqlx::query_as(
            "SELECT count(*), array_agg(DISTINCT version) FROM kubernetes_custom_resources
             WHERE cluster_name = $1 AND api_group = 'storage.k8s.io' AND kind = 'StorageClass'",
        )
        .bind(cluster)
        .fetch_one(&env.pool)
        .await
        .unwrap();
        assert_eq!(rows as usize, fleet.count(cluster, "storageclasses"), "{cluster}");
        assert_eq!(versions, ["v1"]);
    }

    // A malformed file stops the process before it does anything, naming the file and the kind.
    let bad = env.dir.join("bad-custom-resources.yaml");
    std::fs::write(&bad, "- {group: Example_Group, kind: Widget}\n").unwrap();
    let err = env.scheduler(&registry, &["--custom-resources", bad.to_str().unwrap(), "report"]).await.unwrap_err();
    let err = err.to_string();
    assert!(["bad-custom-resources.yaml", "Example_Group", "DNS subdomain"].iter().all(|w| err.contains(w)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_other_kind_is_listed_up_to_its_limit_and_kept_apart_from_the_named_kinds() {
    // 60 custom resources of the catalog's kinds, and 3 ServiceMonitors (outside the catalog) on
    // each cluster that runs them.
    let spec = FleetSpec { clusters: 3, pods: 2, custom_resources: 60, ..FleetSpec::default() };
    let (mut env, fleet, registry) = simulated_fleet(spec).await;
    let file = env.dir.join("custom-resources.yaml");
    std::fs::write(&file, "- {group: '*', kind: '*', limit: 2}\n").unwrap();
    let flag = ["--custom-resources", file.to_str().unwrap()];
    env.spawn_worker("worker", &registry, &flag).unwrap();
    // sim-01 ignores `limit` for ServiceMonitors, as some aggregated APIs do: one more item than
    // asked on the first page.
    let extra = br#"{"metadata": {"name": "extra", "namespace": "default", "uid": "extra-uid"}}"#.to_vec();
    fleet.set_faults("sim-01", Faults { extra_items: vec![("servicemonitors".into(), extra)], ..Faults::default() });
    let refresh = |tables: &'static [&'static str]| {
        let mut args = flag.to_vec();
        args.push("refresh");
        for table in tables {
            args.extend(["--table", table]);
        }
        args.push("--wait");
        let (env, registry) = (&env, &registry);
        async move { env.scheduler(registry, &args).await.unwrap() }
    };
    refresh(&["kubernetes_custom_resources"]).await;

    let discovered = "kubernetes_custom_resources/discovered";
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT cluster_name, status FROM runs WHERE table_name = $1 ORDER BY 1")
            .bind(discovered)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    let succeeded = ["sim-01", "sim-02", "sim-03"].map(|c| (c.to_owned(), "succeeded".to_owned()));
    assert_eq!(statuses, succeeded, "sim-03 defines no CRD of them: nothing to list, nothing to skip");
    // sim-01's rows of the ServiceMonitors (true) or of the named kinds (false).
    let rows = |service_monitors: bool| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_as::<_, (String, String, String)>(
                "SELECT name, row_hash::text, xmin::text FROM kubernetes_custom_resources
                 WHERE cluster_name = 'sim-01' AND (kind = 'ServiceMonitor') = $1 ORDER BY 1",
            )
            .bind(service_monitors)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let monitors = rows(true).await;
    assert_eq!(fleet.count("sim-01", "servicemonitors"), 3);
    assert_eq!(monitors.len(), 2, "at most `limit` objects of a kind: {monitors:?}");
    let named = rows(false).await;
    assert_eq!(named.len(), 60, "the named kinds' objects, each once");

    // Each target replaces only its own rows: the discovered kinds' job leaves the named kinds'
    // rows as they were, and a named kind's job leaves the discovered ones.
    sqlx::query("UPDATE kubernetes_custom_resources SET row_hash = gen_random_uuid() WHERE kind = 'ServiceMonitor'")
        .execute(&env.pool)
        .await
        .unwrap();
    refresh(&["kubernetes_custom_resources/discovered"]).await;
    assert_eq!(rows(false).await, named);
    let rewritten = rows(true).await;
    assert_eq!(rewritten.iter().map(|r| &r.0).collect::<Vec<_>>(), monitors.iter().map(|r| &r.0).collect::<Vec<_>>());
    assert_ne!(rewritten, monitors, "rewritten with their own hashes");
    refresh(&["kubernetes_custom_resources/kustomize.toolkit.fluxcd.io/Kustomization"]).await;
    assert_eq!(rows(true).await, rewritten);
}
