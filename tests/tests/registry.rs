//! Clusters from where platform teams keep them (issue 14), on the real services: Argo CD and
//! Cluster API Secrets in a simulated home cluster together with the registry file, every
//! credential kind, a registry read again while the services run, and pruning.

use std::{path::Path, time::Duration};

use kubecensus::{model::catalog::Catalog, source::registry::Registry};
use kubecensus_tests::{
    fleet::{Faults, Fleet, FleetSpec, SimCluster, home::HomeCluster},
    harness::TestEnv,
};
use serde_json::json;

/// The flags that make the home cluster's Secrets a registry source.
fn home_flags(home: &HomeCluster) -> Vec<String> {
    let kubeconfig = home.kubeconfig.display().to_string();
    ["--home-kubeconfig", &kubeconfig, "--argocd-namespace", "argocd", "--capi-namespace", "capi"]
        .map(str::to_owned)
        .to_vec()
}

/// A registry file with only the named clusters of the fleet's `clusters.yaml`.
fn file_with(dir: &Path, names: &[&str]) -> std::path::PathBuf {
    let mut registry = Registry::load(&dir.join("clusters.yaml"), &Catalog::builtin()).unwrap();
    registry.clusters.retain(|c| names.contains(&c.name.as_str()));
    let path = dir.join("file-part.yaml");
    std::fs::write(&path, serde_norway::to_string(&registry).unwrap()).unwrap();
    path
}

async fn succeeded_clusters(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar("SELECT DISTINCT cluster_name FROM runs WHERE status = 'succeeded' ORDER BY 1")
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argocd_capi_and_file_clusters_load_together_and_a_malformed_secret_costs_no_other() {
    let mut env = TestEnv::new().await.unwrap();
    // sim-01 takes a client certificate (from its Argo CD Secret), sim-02 a token (from the
    // kubeconfig of its Cluster API Secret), sim-03 a client certificate from files, sim-04 a
    // token file.
    let spec = FleetSpec { clusters: 4, pods: 5, client_certificate_clusters: 1, ..FleetSpec::default() };
    let fleet = Fleet::start(spec, &env.dir).await.unwrap();
    let clusters = fleet.clusters();
    let home = HomeCluster::start(&env.dir).unwrap();
    home.put(HomeCluster::argocd_secret("argocd", &clusters[0], &[("region", "argo-land")]));
    home.put(HomeCluster::capi_secret("capi", &clusters[1], &[("region", "capi-land")]));
    // A file cluster with a client certificate too: sim-03 gets sim-01's files and address.
    let mut registry = Registry::load(&env.dir.join("clusters.yaml"), &Catalog::builtin()).unwrap();
    let file_cert = registry.get("sim-01").unwrap().clone();
    registry.clusters.retain(|c| c.name == "sim-04");
    registry.clusters.push(kubecensus::source::registry::ClusterConfig { name: "sim-03".into(), ..file_cert });
    let file = env.dir.join("file-part.yaml");
    std::fs::write(&file, serde_norway::to_string(&registry).unwrap()).unwrap();
    // Broken Secrets: config that is not JSON, a kubeconfig that is not one, and one whose name
    // another Secret took.
    let leaked_token = "broken-secret-token-7f3a";
    let mut broken = HomeCluster::argocd_secret("argocd", &clusters[3], &[]);
    broken["metadata"]["name"] = json!("cluster-broken");
    broken["data"]["name"] = json!(base64(b"broken"));
    broken["data"]["config"] = json!(base64(format!("{{\"bearerToken\": \"{leaked_token}\"").as_bytes()));
    home.put(broken);
    let mut bad_capi = HomeCluster::capi_secret("capi", &clusters[2], &[]);
    bad_capi["data"]["value"] = json!(base64(format!("users: [{leaked_token}").as_bytes()));
    home.put(bad_capi);
    let mut twin = HomeCluster::argocd_secret("argocd", &clusters[1], &[]);
    twin["metadata"]["name"] = json!("zz-twin");
    twin["data"]["name"] = json!(base64(b"sim-01"));
    home.put(twin);

    let flags = home_flags(&home);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut refresh = vec!["refresh", "--wait", "--table", "kubernetes_namespaces"];
    refresh.extend(&flags);
    let mut worker_args = flags.clone();
    worker_args.extend(["--max-attempts", "1"]);
    env.spawn_worker_with("worker", &file, &worker_args, &[("RUST_LOG", "trace")]).unwrap();
    env.scheduler(&file, &refresh).await.unwrap();

    assert_eq!(succeeded_clusters(&env).await, ["sim-01", "sim-02", "sim-03", "sim-04"]);
    let regions: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT DISTINCT cluster_name, region FROM kubernetes_namespaces WHERE cluster_name IN ('sim-01', 'sim-02') ORDER BY 1",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        regions,
        [("sim-01".to_owned(), Some("argo-land".to_owned())), ("sim-02".to_owned(), Some("capi-land".to_owned()))]
    );
    let log = env.log("worker");
    assert!(log.contains("Secret argocd/cluster-broken"), "the broken Secret is named: {log}");
    assert!(log.contains("Secret capi/sim-03-kubeconfig"), "the broken kubeconfig is named");
    assert!(log.contains("Secret argocd/zz-twin: cluster sim-01 comes from another Secret too"));
    // No credential from a Secret anywhere: logs, runs, clusters.
    let database: String = sqlx::query_scalar(
        "SELECT (SELECT string_agg(r::text, ' ') FROM runs r) || (SELECT string_agg(c::text, ' ') FROM clusters c)",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    for secret in
        [leaked_token, clusters[1].token.as_str(), clusters[0].client_certificate.as_ref().unwrap().1.as_str()]
    {
        assert!(!log.contains(secret) && !database.contains(secret), "a credential leaked");
    }
}

fn base64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

/// Waits for a condition, or fails with the scheduler's log.
async fn wait(env: &TestEnv, what: &str, query: &str, timeout: Duration) {
    if let Err(err) = env.wait_until(what, query, timeout).await {
        panic!("{err}\nscheduler log:\n{}\nworker log:\n{}", env.log("scheduler"), env.log("worker"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_secret_is_polled_without_a_restart_and_a_removed_one_is_pruned_after_the_grace() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 5, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let clusters: Vec<SimCluster> = fleet.clusters();
    let home = HomeCluster::start(&env.dir).unwrap();
    let file = file_with(&env.dir, &["sim-01"]);
    let flags = home_flags(&home);
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend(["--registry-refresh", "1s"]);
    env.spawn_worker("worker", &file, &args).unwrap();
    // Two scheduler replicas; ticks only once a year, so only new clusters get jobs.
    let mut scheduler_args = args.clone();
    scheduler_args.extend(["--table", "kubernetes_namespaces", "--schedule", "kubernetes_namespaces=0 0 0 1 1 *"]);
    scheduler_args.extend(["--prune-after", "6s"]);
    env.spawn_scheduler(&file, &scheduler_args).unwrap();
    env.spawn_scheduler_named("scheduler-2", &file, &scheduler_args).unwrap();
    for (name, started) in [("worker", "worker started"), ("scheduler", "schedule"), ("scheduler-2", "schedule")] {
        env.wait_for_log(name, started).await;
    }

    // A Secret appears: its cluster is polled within a refresh interval or so, no restart.
    home.put(HomeCluster::capi_secret("capi", &clusters[1], &[]));
    wait(
        &env,
        "sim-02's first job",
        "SELECT count(*) > 0 FROM runs WHERE cluster_name = 'sim-02' AND status = 'succeeded'",
        Duration::from_secs(20),
    )
    .await;
    let rows = "SELECT count(*) FROM kubernetes_namespaces WHERE cluster_name = 'sim-02'";
    let loaded: i64 = sqlx::query_scalar(rows).fetch_one(&env.pool).await.unwrap();
    assert!(loaded > 0);
    let registered_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT registered_at FROM clusters WHERE name = 'sim-02'")
            .fetch_one(&env.pool)
            .await
            .unwrap();

    // It goes: its rows stay until the grace is over, then are pruned, once.
    assert!(home.delete("capi", "sim-02-kubeconfig"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pruned = "SELECT count(*) FROM runs WHERE cluster_name = 'sim-02' AND status = 'pruned'";
    assert_eq!(sqlx::query_scalar::<_, i64>(pruned).fetch_one(&env.pool).await.unwrap(), 0, "not before the grace");
    assert_eq!(sqlx::query_scalar::<_, i64>(rows).fetch_one(&env.pool).await.unwrap(), loaded, "rows stay meanwhile");
    wait(&env, "sim-02 pruned", &format!("SELECT ({pruned}) > 0"), Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sqlx::query_scalar::<_, i64>(pruned).fetch_one(&env.pool).await.unwrap(),
        1,
        "one prune for two replicas"
    );
    assert_eq!(sqlx::query_scalar::<_, i64>(rows).fetch_one(&env.pool).await.unwrap(), 0);
    let (removed, snapshots): (bool, i64) = sqlx::query_as(
        "SELECT (SELECT removed_at IS NOT NULL FROM clusters WHERE name = 'sim-02'),
                (SELECT count(*) FROM snapshots WHERE cluster_name = 'sim-02')",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(removed && snapshots == 0);
    let deleted: i64 =
        sqlx::query_scalar("SELECT rows_deleted FROM runs WHERE cluster_name = 'sim-02' AND status = 'pruned'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(deleted, loaded);
    // sim-01, from the file, was never touched.
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM clusters WHERE name = 'sim-01' AND absent_since IS NULL")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(kept, 1);

    // It comes back: afresh, registered again, polled again.
    home.put(HomeCluster::argocd_secret("argocd", &clusters[1], &[]));
    wait(&env, "sim-02 back", &format!("SELECT ({rows}) > 0"), Duration::from_secs(20)).await;
    let (again, removed_at): (chrono::DateTime<chrono::Utc>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT registered_at, removed_at FROM clusters WHERE name = 'sim-02'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(again > registered_at && removed_at.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_plugin_token_is_cached_until_its_expiry_and_tls_server_name_is_checked() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 5, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let clusters = fleet.clusters();
    // A plugin as `aws eks get-token` is one: it prints an ExecCredential, valid for an hour,
    // and notes each run.
    let runs_file = env.dir.join("plugin-runs");
    let plugin = env.dir.join("plugin.sh");
    let expiry = (chrono::Utc::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\necho run >> '{}'\ncat <<EOF\n{{\"apiVersion\": \"client.authentication.k8s.io/v1\", \"kind\": \"ExecCredential\", \
             \"status\": {{\"token\": \"{}\", \"expirationTimestamp\": \"{expiry}\"}}}}\nEOF\n",
            runs_file.display(),
            clusters[0].token
        ),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let registry_yaml = format!(
        "clusters:\n\
         - name: sim-01\n  server: {}\n  ca_file: sim-01.ca.crt\n  exec: {{command: ./plugin.sh}}\n\
         - name: sim-02\n  server: {}\n  ca_file: sim-02.ca.crt\n  token_file: sim-02.token\n  tls_server_name: elsewhere.example\n",
        clusters[0].url, clusters[1].url
    );
    let registry = env.dir.join("exec.yaml");
    std::fs::write(&registry, registry_yaml).unwrap();
    env.spawn_worker("worker", &registry, &["--max-attempts", "1", "--concurrency", "1"]).unwrap();
    let tables = ["--table", "kubernetes_namespaces", "--table", "kubernetes_nodes", "--table", "kubernetes_pods"];
    env.scheduler(&registry, &[&["refresh", "--wait", "--cluster", "sim-01"][..], &tables].concat()).await.unwrap();
    assert_eq!(succeeded_clusters(&env).await, ["sim-01"]);
    let succeeded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE status = 'succeeded'").fetch_one(&env.pool).await.unwrap();
    assert_eq!(succeeded, 3);
    let runs = std::fs::read_to_string(&runs_file).unwrap();
    assert_eq!(runs.lines().count(), 1, "one plugin run for three jobs: the token is cached");
    // The cluster refuses the token (revoked before its expiry): the plugin runs again.
    fleet.set_faults("sim-01", Faults { reject_token: true, ..Faults::default() });
    let one_job = ["refresh", "--wait", "--cluster", "sim-01", "--table", "kubernetes_namespaces"];
    env.scheduler(&registry, &one_job).await.unwrap();
    fleet.set_faults("sim-01", Faults::default());
    env.scheduler(&registry, &one_job).await.unwrap();
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM runs WHERE table_name = 'kubernetes_namespaces' ORDER BY started_at")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(statuses, ["succeeded", "failed", "succeeded"]);
    assert_eq!(std::fs::read_to_string(&runs_file).unwrap().lines().count(), 2, "refused: run again");

    // sim-02's certificate names 127.0.0.1 and localhost, not the name the entry checks.
    env.scheduler(&registry, &["refresh", "--wait", "--cluster", "sim-02", "--table", "kubernetes_namespaces"])
        .await
        .unwrap();
    let error: String =
        sqlx::query_scalar("SELECT error FROM runs WHERE cluster_name = 'sim-02'").fetch_one(&env.pool).await.unwrap();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_for_a_cluster_the_worker_has_not_learned_yet_is_handed_back_not_rejected() {
    let mut env = TestEnv::new().await.unwrap();
    let _fleet = Fleet::start(FleetSpec { clusters: 2, pods: 5, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let file = file_with(&env.dir, &["sim-01"]);
    // The worker would read its registry again only in an hour, unless a job makes it.
    env.spawn_worker("worker", &file, &["--registry-refresh", "1h"]).unwrap();
    env.wait_for_log("worker", "worker started").await;
    let job = format!(
        r#"{{"id":"{}","cluster":"sim-02","table":"kubernetes_namespaces","trigger":"manual","scheduled_at":"{}"}}"#,
        uuid::Uuid::new_v4(),
        chrono::Utc::now().to_rfc3339()
    );
    env.publish_raw("sim-02.kubernetes_namespaces", job.into_bytes()).await.unwrap();
    env.wait_until(
        "the job handed back",
        "SELECT count(*) > 0 FROM runs WHERE cluster_name = 'sim-02' AND status = 'handed_back'",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    // sim-02 joins the file: the job comes back, the worker reads its sources, the job runs.
    std::fs::copy(env.dir.join("clusters.yaml"), &file).unwrap();
    env.wait_until(
        "the job to run",
        "SELECT count(*) = 1 FROM runs WHERE cluster_name = 'sim-02' AND status = 'succeeded'",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let (rejected, attempt): (i64, i32) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM runs WHERE status = 'rejected'),
                (SELECT attempt FROM runs WHERE status = 'succeeded')",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!((rejected, attempt), (0, 1), "never rejected, and the hand-backs cost no attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_entrys_rotated_token_file_is_read_again() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 3, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let token = fleet.clusters()[0].token.clone();
    // The fleet's registry is a `server:` entry with a token file: it first holds a stale token.
    let registry = env.dir.join("clusters.yaml");
    let token_file = env.dir.join("sim-01.token");
    std::fs::write(&token_file, "stale-token\n").unwrap();
    env.spawn_worker("worker", &registry, &["--retry-delay", "1s"]).unwrap();
    env.scheduler(&registry, &["refresh", "--table", "kubernetes_namespaces"]).await.unwrap();
    let wait = |what, query| env.wait_until(what, query, Duration::from_secs(60));
    wait("the stale token refused", "SELECT count(*) > 0 FROM runs WHERE status = 'retrying'").await.unwrap();
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    wait("the rotated token used", "SELECT count(*) = 1 FROM runs WHERE status = 'succeeded'").await.unwrap();
}

/// The worker's `kubecensus_registry_source_errors_total` once the home cluster has answered
/// `readings` more readings (two namespaces each) than `after`.
async fn source_errors_after(home: &HomeCluster, addr: std::net::SocketAddr, after: usize, readings: usize) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while home.lists() < after + 2 * readings {
        assert!(tokio::time::Instant::now() < deadline, "the worker stopped reading its sources");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = kubecensus_tests::probes::scrape(addr).await.unwrap();
    metrics.count("kubecensus_registry_source_errors_total", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlap_is_a_warning_counted_once_and_capas_user_kubeconfig_is_passed_over() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 5, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let clusters = fleet.clusters();
    let home = HomeCluster::start(&env.dir).unwrap();
    // sim-01 in the file and in an Argo CD Secret; sim-02 from Cluster API, with CAPA's kubeconfig
    // for people beside the controller's (labelled `<cluster>-user`, its user runs `aws`).
    home.put(HomeCluster::argocd_secret("argocd", &clusters[0], &[]));
    home.put(HomeCluster::capi_secret("capi", &clusters[1], &[]));
    let mut user_kubeconfig = HomeCluster::capi_secret("capi", &clusters[1], &[]);
    user_kubeconfig["metadata"]["name"] = json!("sim-02-user-kubeconfig");
    user_kubeconfig["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"] = json!("sim-02-user");
    home.put(user_kubeconfig);
    let file = file_with(&env.dir, &["sim-01"]);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], kubecensus_tests::servers::free_port().unwrap()));
    let mut args = home_flags(&home);
    args.extend(["--registry-refresh".into(), "1s".into(), format!("--admin-addr={addr}")]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.spawn_worker("worker", &file, &args).unwrap();
    kubecensus_tests::probes::wait_for(addr, "/readyz", 200, Duration::from_secs(120)).await.unwrap();

    // Readings after the first find the same overlap: it was counted once.
    assert_eq!(source_errors_after(&home, addr, 0, 4).await, 1.0);
    let log = env.log("worker");
    let overlap = "cluster sim-01 is declared in the registry file and by a Secret; the file's entry is used";
    assert_eq!(log.matches(overlap).count(), 1, "logged once: {log}");
    assert!(log.lines().any(|line| line.contains(overlap) && line.contains("WARN")), "as a warning: {log}");
    // A new overlap (a second Secret for sim-01) counts once more.
    let mut twin = HomeCluster::argocd_secret("argocd", &clusters[0], &[]);
    twin["metadata"]["name"] = json!("zz-twin");
    home.put(twin);
    let now = home.lists();
    assert_eq!(source_errors_after(&home, addr, now, 4).await, 2.0);

    // The registry is sim-01 (the file's) and sim-02 (the controller's kubeconfig): no `sim-02-user`.
    let mut refresh = vec!["refresh", "--wait", "--table", "kubernetes_namespaces"];
    let flags = home_flags(&home);
    refresh.extend(flags.iter().map(String::as_str));
    env.scheduler(&file, &refresh).await.unwrap();
    assert_eq!(succeeded_clusters(&env).await, ["sim-01", "sim-02"]);
    let registered: Vec<String> =
        sqlx::query_scalar("SELECT name FROM clusters ORDER BY 1").fetch_all(&env.pool).await.unwrap();
    assert_eq!(registered, ["sim-01", "sim-02"]);
}
