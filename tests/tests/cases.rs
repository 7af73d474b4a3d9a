//! The real-world cases of issue 12, each on the real services: the input (under
//! `tests/fixtures/cases/`, see its SOURCES.md) served by the simulated fleet, loaded by the real
//! scheduler and worker, and the right outcome checked in PostgreSQL.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use kubecensus_tests::{
    fleet::{Fleet, FleetSpec},
    harness::TestEnv,
};

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cases").join(name)
}

/// A container's name, type, `ready`, `restart_count` and `image_id`.
type ContainerRow = (String, String, Option<i32>, Option<i32>, Option<String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_statuses_are_matched_by_name_never_by_position() {
    let mut env = TestEnv::new().await.unwrap();
    let spec = FleetSpec { clusters: 1, objects: Some(case("container-status-order")), ..FleetSpec::default() };
    let _fleet = Fleet::start(spec, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &registry, &[]).unwrap();
    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();
    let rows: Vec<ContainerRow> = sqlx::query_as(
        "SELECT name, container_type, ready, restart_count, image_id FROM kubernetes_pod_containers ORDER BY container_type, name",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        rows,
        [
            ("app".into(), "container".into(), Some(0), Some(5), some("registry.example.com/shop/checkout@sha256:app")),
            ("istio-proxy".into(), "container".into(), Some(1), Some(0), some("docker.io/istio/proxyv2@sha256:proxy")),
            ("log-shipper".into(), "container".into(), None, None, None),
            (
                "migrate".into(),
                "init".into(),
                Some(1),
                Some(2),
                some("registry.example.com/shop/migrate@sha256:migrate")
            ),
            ("wait-db".into(), "init".into(), Some(1), Some(0), some("docker.io/library/busybox@sha256:wait")),
        ],
        "each container has its own status, and one without a status has none"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_names_as_cloud_clis_write_them_give_four_distinct_clusters() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 4, pods: 3, ..FleetSpec::default() }, &env.dir).await.unwrap();
    // The fleet's kubeconfig, its contexts renamed as `aws eks update-kubeconfig` and `gcloud
    // container clusters get-credentials` name them.
    let names = [
        "arn:aws:eks:eu-west-1:123456789012:cluster/payments-eu-1",
        "arn:aws:eks:eu-west-1:123456789012:cluster/payments-eu-2",
        "gke_shop-prod-123456_europe-west1-b_checkout-canary-1",
        "gke_shop-prod-123456_europe-west1-b_checkout-canary-2",
    ];
    let mut kubeconfig: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(env.dir.join("kubeconfig")).unwrap()).unwrap();
    for (context, name) in kubeconfig["contexts"].as_sequence_mut().unwrap().iter_mut().zip(names) {
        context["name"] = name.into();
    }
    kubeconfig["current-context"] = names[0].into();
    let renamed = env.dir.join("cloud-kubeconfig");
    std::fs::write(&renamed, serde_norway::to_string(&kubeconfig).unwrap()).unwrap();

    let registry_yaml =
        env.scheduler(&env.dir.join("unused.yaml"), &["import-kubeconfig", renamed.to_str().unwrap()]).await.unwrap();
    let registry = env.dir.join("imported.yaml");
    std::fs::write(&registry, &registry_yaml).unwrap();
    env.spawn_worker("worker", &registry, &[]).unwrap();
    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();
    let loaded: Vec<(String, i64)> =
        sqlx::query_as("SELECT cluster_name, count(*) FROM kubernetes_pods GROUP BY 1 ORDER BY 1")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    let expected: Vec<(String, i64)> = ["checkout-canary-1", "checkout-canary-2", "payments-eu-1", "payments-eu-2"]
        .iter()
        .map(|name| ((*name).to_owned(), 3))
        .collect();
    assert_eq!(loaded, expected, "{registry_yaml}");
    drop(fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_ending_in_a_newline_works_and_a_rewritten_one_is_read_again() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 3, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let cluster = &fleet.clusters()[0];
    // A kubeconfig as people write one: the CA and the token in files next to it, by relative
    // paths; the token file first holds a stale token, as after a rotation.
    let dir = env.dir.join("kube");
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    std::fs::write(dir.join("ca.crt"), &cluster.ca_pem).unwrap();
    let token_file = dir.join("tokens/sa.token");
    std::fs::write(&token_file, "stale-token\n").unwrap();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: sim\n\
         clusters: [{{name: sim, cluster: {{server: '{}', certificate-authority: ca.crt}}}}]\n\
         users: [{{name: sa, user: {{tokenFile: tokens/sa.token}}}}]\n\
         contexts: [{{name: sim, context: {{cluster: sim, user: sa}}}}]\n",
        cluster.url
    );
    std::fs::write(dir.join("config"), kubeconfig).unwrap();
    let registry = env.dir.join("from-kubeconfig.yaml");
    std::fs::write(&registry, format!("clusters:\n  - name: sim\n    kubeconfig: {}\n", dir.join("config").display()))
        .unwrap();
    env.spawn_worker("worker", &registry, &["--retry-delay", "1s"]).unwrap();
    env.scheduler(&registry, &["refresh", "--table", "kubernetes_pods"]).await.unwrap();
    env.wait_until(
        "the stale token to be refused",
        "SELECT count(*) > 0 FROM runs WHERE status = 'retrying'",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    // The token rotated: the file now holds the right one, with the newline `echo` writes.
    std::fs::write(&token_file, format!("{}\n", cluster.token)).unwrap();
    env.wait_until(
        "the retried job to read the new token and succeed",
        "SELECT count(*) = 1 FROM runs WHERE status = 'succeeded'",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let pods: i64 = sqlx::query_scalar("SELECT count(*) FROM kubernetes_pods").fetch_one(&env.pool).await.unwrap();
    assert_eq!(pods, 3);
    let errors: Vec<String> =
        sqlx::query_scalar("SELECT error FROM runs WHERE error IS NOT NULL").fetch_all(&env.pool).await.unwrap();
    assert!(errors.iter().all(|e| !e.contains("stale-token") && !e.contains(&cluster.token)), "{errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_value_of_a_secrets_data_reaches_any_column_in_any_form() {
    let mut env = TestEnv::new().await.unwrap();
    let folder = case("secret-data-in-annotations");
    let spec = FleetSpec { clusters: 1, objects: Some(folder.clone()), ..FleetSpec::default() };
    let _fleet = Fleet::start(spec, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &registry, &[]).unwrap();
    env.scheduler(&registry, &["refresh", "--wait"]).await.unwrap();
    // Every data value of the case's Secrets and ConfigMaps, as stored and decoded, and the
    // older values the tools' copies hold.
    let mut needles = vec!["older-dsn-password".to_owned(), "s3cr3t-dsn-value".to_owned()];
    for file in ["secrets.json", "own-secrets.json", "configmaps.json"] {
        let list: serde_json::Value = serde_json::from_slice(&std::fs::read(folder.join(file)).unwrap()).unwrap();
        for item in list["items"].as_array().unwrap() {
            for value in item["data"].as_object().unwrap().values() {
                let value = value.as_str().unwrap();
                needles.push(value.to_owned());
                if file != "configmaps.json" {
                    let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, value).unwrap();
                    needles.push(String::from_utf8(decoded).unwrap());
                }
            }
        }
    }
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_name LIKE 'kubernetes\\_%'",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert!(tables.len() >= 51);
    for table in &tables {
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT t::text FROM {table} t")).fetch_all(&env.pool).await.unwrap();
        for row in &rows {
            for needle in &needles {
                assert!(!row.contains(needle.as_str()), "{table} holds a data value ({needle}): {row}");
            }
        }
    }
    // What names things is kept.
    let helm: Option<String> = sqlx::query_scalar(
        "SELECT annotations->>'meta.helm.sh/release-name' FROM kubernetes_secrets WHERE name = 'db-credentials'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(helm.as_deref(), Some("payments"));
}
