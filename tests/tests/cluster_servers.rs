//! `clusters.server` says where each cluster is (issue 20, item 10), on the real services: a
//! cluster from each source (a registry file `server:` entry, a `kubeconfig:` entry, an Argo CD
//! Secret, a Cluster API Secret) gets its API server's URL normalized the same way.

use std::time::Duration;

use kubecensus_tests::{
    fleet::{Fleet, FleetSpec, home::HomeCluster},
    harness::TestEnv,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_fills_clusters_server_normalized_the_same_way() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 4, pods: 3, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let clusters = fleet.clusters();
    let home = HomeCluster::start(&env.dir).unwrap();
    // sim-03's Argo CD Secret writes its server with a trailing slash and an upper-case scheme.
    let mut argocd = HomeCluster::argocd_secret("argocd", &clusters[2], &[]);
    let server = format!("{}/", clusters[2].url.replace("https://", "HTTPS://"));
    argocd["data"]["server"] = json!(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, server));
    home.put(argocd);
    home.put(HomeCluster::capi_secret("capi", &clusters[3], &[]));
    // sim-01 by `server:` with a trailing slash, sim-02 through the fleet's kubeconfig.
    let registry = env.dir.join("sources.yaml");
    std::fs::write(
        &registry,
        format!(
            "clusters:\n\
             - name: sim-01\n  server: {}/\n  ca_file: sim-01.ca.crt\n  token_file: sim-01.token\n\
             - name: sim-02\n  kubeconfig: kubeconfig\n  context: sim-02\n",
            clusters[0].url
        ),
    )
    .unwrap();
    let kubeconfig = home.kubeconfig.display().to_string();
    let home_flags = ["--home-kubeconfig", &kubeconfig, "--argocd-namespace", "argocd", "--capi-namespace", "capi"];
    env.spawn_worker("worker", &registry, &home_flags).unwrap();
    let refresh = [&["refresh", "--wait", "--table", "kubernetes_namespaces"][..], &home_flags].concat();
    env.scheduler(&registry, &refresh).await.unwrap();
    env.wait_until(
        "every cluster's job to succeed",
        "SELECT count(DISTINCT cluster_name) = 4 FROM runs WHERE status = 'succeeded'",
        Duration::from_secs(60),
    )
    .await
    .unwrap();

    let servers: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT name, server FROM clusters ORDER BY name").fetch_all(&env.pool).await.unwrap();
    let expected: Vec<(String, Option<String>)> =
        clusters.iter().map(|c| (c.name.clone(), Some(c.url.trim_end_matches('/').to_owned()))).collect();
    assert_eq!(servers, expected, "the same normalized URL from every source");
}
