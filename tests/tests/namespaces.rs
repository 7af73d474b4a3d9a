//! Clusters kubecensus may read only in some namespaces (issue 20, item 2), on the real services:
//! a simulated cluster's token allowed only there (403 with the API server's message anywhere
//! else), declared in the registry file or by an Argo CD cluster Secret with `namespaces` and
//! `clusterResources: "false"`.

use kubecensus::source::registry::Registry;
use kubecensus_tests::{
    checks::{postgres_pods, simulator_objects},
    fleet::{Fleet, FleetSpec, home::HomeCluster},
    harness::TestEnv,
};
use serde_json::json;

/// The namespaces the tests' tokens may read (two of a generated cluster's five).
const READ_IN: [&str; 2] = ["default", "team-a-payments"];

/// The status and error of the latest run of each of a cluster's tables, by table.
async fn outcomes(env: &TestEnv, cluster: &str) -> Vec<(String, String, i32, Option<String>)> {
    sqlx::query_as(
        "SELECT DISTINCT ON (table_name) table_name, status, attempt, error FROM runs
         WHERE cluster_name = $1 ORDER BY table_name, started_at DESC",
    )
    .bind(cluster)
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

fn uid_of_namespace(fleet: &Fleet, cluster: &str, namespace: &str) -> String {
    let namespaces = fleet.objects(cluster, "namespaces");
    let found = namespaces.iter().find(|object| object["metadata"]["name"] == namespace).unwrap();
    found["metadata"]["uid"].as_str().unwrap().to_owned()
}

async fn cluster_uid(env: &TestEnv, cluster: &str) -> String {
    sqlx::query_scalar("SELECT cluster_uid FROM clusters WHERE name = $1")
        .bind(cluster)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_scoped_cluster_loads_its_namespaces_and_a_403_names_the_missing_permission() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 60, ..FleetSpec::default() }, &env.dir).await.unwrap();
    // sim-01 is declared with its namespaces; sim-02's token is as narrow, but its entry says
    // nothing of it: every cluster-wide list is refused.
    let mut registry = Registry::load(&env.dir.join("clusters.yaml")).unwrap();
    for (cluster, namespaces) in [("sim-01", &READ_IN[..]), ("sim-02", &["team-b-checkout"][..])] {
        let grant = fleet.grant(cluster, "ci:reader", namespaces);
        let token_file = env.dir.join(format!("{cluster}.narrow.token"));
        std::fs::write(&token_file, &grant.token).unwrap();
        let entry = registry.clusters.iter_mut().find(|c| c.name == cluster).unwrap();
        entry.token_file = Some(token_file);
    }
    registry.clusters[0].namespaces = READ_IN.map(str::to_owned).to_vec();
    let file = env.dir.join("narrow.yaml");
    std::fs::write(&file, serde_norway::to_string(&registry).unwrap()).unwrap();
    env.spawn_worker("worker", &file, &["--page-size", "7", "--max-attempts", "3", "--retry-delay", "1s"]).unwrap();
    let helm_releases = "kubernetes_custom_resources/helm.toolkit.fluxcd.io/HelmRelease";
    let tables = [
        "kubernetes_pods",
        "kubernetes_namespaces",
        "kubernetes_nodes",
        "kubernetes_custom_resource_definitions",
        helm_releases,
    ];
    let mut refresh = vec!["refresh", "--wait"];
    for table in tables {
        refresh.extend(["--table", table]);
    }
    env.scheduler(&file, &refresh).await.unwrap();

    // sim-01: the pods and HelmReleases of its two namespaces (listed in each, paged), those two
    // namespaces, and the cluster-scoped tables skipped, saying why.
    let outcomes_01 = outcomes(&env, "sim-01").await;
    let status = |table: &str| outcomes_01.iter().find(|o| o.0 == table).map(|o| (o.1.clone(), o.3.clone())).unwrap();
    for table in ["kubernetes_pods", "kubernetes_namespaces", helm_releases] {
        assert_eq!(status(table).0, "succeeded", "{table}: {outcomes_01:#?}");
    }
    let expected = simulator_objects(&fleet, "sim-01", "pods", Some(&READ_IN));
    assert!(expected.len() > 7, "more than a page: {}", expected.len());
    assert_eq!(postgres_pods(&env.pool, "sim-01").await, expected, "the pods of the two namespaces, no other");
    let namespaces: Vec<String> =
        sqlx::query_scalar("SELECT name FROM kubernetes_namespaces WHERE cluster_name = 'sim-01' ORDER BY 1")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(namespaces, READ_IN);
    let releases: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM kubernetes_custom_resources WHERE cluster_name = 'sim-01' AND kind = 'HelmRelease'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(releases as usize, simulator_objects(&fleet, "sim-01", "helmreleases", Some(&READ_IN)).len());
    for table in ["kubernetes_nodes", "kubernetes_custom_resource_definitions"] {
        let (status, error) = status(table);
        assert_eq!(status, "skipped", "{table}");
        let error = error.unwrap_or_default();
        assert!(
            error.contains(
                "cluster sim-01 is read only in namespaces default, team-a-payments (cluster_resources: false)"
            ),
            "{table}: {error}"
        );
    }
    assert_eq!(
        cluster_uid(&env, "sim-01").await,
        uid_of_namespace(&fleet, "sim-01", "default"),
        "kube-system is not readable"
    );

    // sim-02: a 403 on the cluster-wide list fails the job at once, naming verb, resource and scope.
    let outcomes_02 = outcomes(&env, "sim-02").await;
    let pods = outcomes_02.iter().find(|o| o.0 == "kubernetes_pods").unwrap();
    assert_eq!((pods.1.as_str(), pods.2), ("failed", 1), "a missing permission is not retried: {outcomes_02:#?}");
    let error = pods.3.clone().unwrap_or_default();
    assert!(
        error.contains(r#"pods is forbidden: User "system:serviceaccount:ci:reader" cannot list resource "pods" in API group "" at the cluster scope"#),
        "{error}"
    );
    let attempts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM runs WHERE cluster_name = 'sim-02' AND table_name = 'kubernetes_pods'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 1);
    assert_eq!(cluster_uid(&env, "sim-02").await, "sim-02", "neither kube-system nor default: the registry's name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_argocd_secret_with_namespaces_and_cluster_resources_false_is_read_in_those_namespaces() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 40, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let mut cluster = fleet.clusters().remove(0);
    cluster.token = fleet.grant("sim-01", "argocd:argocd-manager", &READ_IN).token;
    let home = HomeCluster::start(&env.dir).unwrap();
    let mut secret = HomeCluster::argocd_secret("argocd", &cluster, &[]);
    let encode = |text: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, text);
    secret["data"]["namespaces"] = json!(encode(&READ_IN.join(",")));
    secret["data"]["clusterResources"] = json!(encode("false"));
    home.put(secret);
    let kubeconfig = home.kubeconfig.display().to_string();
    let home_flags = ["--home-kubeconfig", kubeconfig.as_str(), "--argocd-namespace", "argocd"];
    let no_file = env.dir.join("no-such-registry.yaml");
    env.spawn_worker("worker", &no_file, &[&home_flags[..], &["--page-size", "5", "--max-attempts", "1"]].concat())
        .unwrap();
    let refresh = ["refresh", "--wait", "--table", "kubernetes_pods", "--table", "kubernetes_nodes"];
    env.scheduler(&no_file, &[&refresh[..], &home_flags[..]].concat()).await.unwrap();

    let outcomes = outcomes(&env, "sim-01").await;
    let statuses: Vec<(&str, &str)> = outcomes.iter().map(|o| (o.0.as_str(), o.1.as_str())).collect();
    assert_eq!(statuses, [("kubernetes_nodes", "skipped"), ("kubernetes_pods", "succeeded")], "{outcomes:#?}");
    assert!(outcomes[0].3.as_deref().unwrap_or_default().contains("read only in namespaces default, team-a-payments"));
    assert_eq!(postgres_pods(&env.pool, "sim-01").await, simulator_objects(&fleet, "sim-01", "pods", Some(&READ_IN)));
}
