//! Clusters behind an HTTP proxy, as kubectl reaches them (issue 12, case 2): a kubeconfig
//! cluster's `proxy-url`, a registry entry's `proxy_url`, and `HTTPS_PROXY`/`NO_PROXY` in the
//! worker's environment, each through a real `CONNECT` proxy on loopback to the simulated fleet.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use kubecensus_tests::{
    connect_proxy::{ConnectProxy, PROXIED_DOMAIN},
    fleet::{Fleet, FleetSpec, SimCluster},
    harness::TestEnv,
};

/// The proxy password in the tests' proxy URLs: it must reach the proxy and nothing else.
const PASSWORD: &str = "pr0xy-s3cret";

/// `host:port` of a cluster's API server.
fn address(cluster: &SimCluster) -> String {
    cluster.url.trim_start_matches("https://").to_owned()
}

/// The fleet's kubeconfig, as YAML to edit.
fn fleet_kubeconfig(dir: &Path) -> serde_norway::Value {
    serde_norway::from_str(&std::fs::read_to_string(dir.join("kubeconfig")).unwrap()).unwrap()
}

/// A registry entry for a fleet cluster by `server`, with extra YAML lines.
fn server_entry(dir: &Path, name: &str, cluster: &SimCluster, extra: &str) -> String {
    format!(
        "  - name: {name}\n    server: {}\n    ca_file: {}\n    token_file: {}\n{extra}",
        cluster.url,
        dir.join(format!("{}.ca.crt", cluster.name)).display(),
        dir.join(format!("{}.token", cluster.name)).display(),
    )
}

/// Pods loaded per cluster, by cluster name.
async fn pods_per_cluster(env: &TestEnv) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT cluster_name, count(*) FROM kubernetes_pods GROUP BY 1 ORDER BY 1")
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

/// Every run's error text.
async fn run_errors(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar("SELECT error FROM runs WHERE error IS NOT NULL").fetch_all(&env.pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_url_in_a_kubeconfig_or_the_registry_tunnels_every_job_through_the_proxy() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 7, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let [first, second] = &fleet.clusters()[..] else { panic!("two clusters") };
    let proxy = ConnectProxy::start().await.unwrap();
    let proxy_url = format!("http://kubecensus:{PASSWORD}@{}", proxy.address);

    let mut kubeconfig = fleet_kubeconfig(&env.dir);
    kubeconfig["clusters"][0]["cluster"]["proxy-url"] = proxy_url.clone().into();
    let kubeconfig_path = env.dir.join("proxied-kubeconfig");
    std::fs::write(&kubeconfig_path, serde_norway::to_string(&kubeconfig).unwrap()).unwrap();
    let registry = env.dir.join("proxied.yaml");
    let entries = [
        format!(
            "  - name: via-kubeconfig\n    kubeconfig: {}\n    context: {}\n",
            kubeconfig_path.display(),
            first.name
        ),
        server_entry(&env.dir, "via-registry", second, &format!("    proxy_url: {proxy_url}\n")),
    ];
    std::fs::write(&registry, format!("clusters:\n{}", entries.concat())).unwrap();

    // The environment names another proxy (one that refuses connections) and exempts the
    // servers: an explicit proxy wins over both, as in kubectl.
    let unreachable = format!("http://{}", closed_port());
    let worker_env = [("HTTPS_PROXY", unreachable.as_str()), ("NO_PROXY", "127.0.0.0/8")];
    env.spawn_worker_with("worker", &registry, &[], &worker_env).unwrap();
    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();

    assert_eq!(pods_per_cluster(&env).await, [("via-kubeconfig".into(), 7), ("via-registry".into(), 7)]);
    let connects = proxy.connects();
    let login = base64::engine::general_purpose::STANDARD.encode(format!("kubecensus:{PASSWORD}"));
    for cluster in [first, second] {
        let to_cluster: Vec<_> = connects.iter().filter(|c| c.target == address(cluster)).collect();
        assert!(!to_cluster.is_empty(), "no CONNECT to {}: {connects:?}", cluster.name);
        for connect in to_cluster {
            assert_eq!(connect.authorization.as_deref(), Some(format!("Basic {login}").as_str()));
        }
    }
    assert_eq!(
        connects.len(),
        connects.iter().filter(|c| c.target == address(first) || c.target == address(second)).count()
    );
    let log = env.log("worker");
    assert!(!log.contains(PASSWORD), "the worker logged the proxy password:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_from_the_environment_is_used_unless_no_proxy_covers_the_server() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 4, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let [first, second] = &fleet.clusters()[..] else { panic!("two clusters") };
    let proxy = ConnectProxy::start().await.unwrap();

    // The first cluster by a name only the proxy resolves, as a remote API server behind a
    // corporate proxy; its certificate is for `localhost`.
    let remote = format!("{}{PROXIED_DOMAIN}:{}", first.name, first.url.rsplit(':').next().unwrap());
    let mut kubeconfig = fleet_kubeconfig(&env.dir);
    kubeconfig["clusters"][0]["cluster"]["server"] = format!("https://{remote}").into();
    kubeconfig["clusters"][0]["cluster"]["tls-server-name"] = "localhost".into();
    let kubeconfig_path = env.dir.join("remote-kubeconfig");
    std::fs::write(&kubeconfig_path, serde_norway::to_string(&kubeconfig).unwrap()).unwrap();
    let registry = env.dir.join("env-proxy.yaml");
    let entries = [
        format!("  - name: remote\n    kubeconfig: {}\n    context: {}\n", kubeconfig_path.display(), first.name),
        format!("  - name: exempt\n    kubeconfig: {}\n    context: {}\n", kubeconfig_path.display(), second.name),
        server_entry(&env.dir, "exempt-server", second, ""),
    ];
    std::fs::write(&registry, format!("clusters:\n{}", entries.concat())).unwrap();

    // The lower-case forms, as many shells set them; NO_PROXY covers the second cluster.
    let proxy_url = proxy.url();
    let no_proxy = format!(".corp.example,{},10.0.0.0/8", second.url.trim_start_matches("https://"));
    let worker_env = [("https_proxy", proxy_url.as_str()), ("no_proxy", no_proxy.as_str())];
    env.spawn_worker_with("worker", &registry, &[], &worker_env).unwrap();
    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();

    let loaded = pods_per_cluster(&env).await;
    assert_eq!(
        loaded,
        [("exempt".into(), 4), ("exempt-server".into(), 4), ("remote".into(), 4)],
        "{:?}",
        run_errors(&env).await
    );
    let targets: Vec<String> = proxy.connects().into_iter().map(|c| c.target).collect();
    assert!(!targets.is_empty());
    assert!(
        targets.iter().all(|target| *target == remote),
        "only the remote cluster goes through the proxy: {targets:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_proxy_fails_the_run_clearly_and_keeps_the_last_data() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 6, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let cluster = &fleet.clusters()[0];
    let direct = env.dir.join("direct.yaml");
    std::fs::write(&direct, format!("clusters:\n{}", server_entry(&env.dir, "payments", cluster, ""))).unwrap();
    let worker = env.spawn_worker("direct", &direct, &[]).unwrap();
    env.scheduler(&direct, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();
    assert_eq!(pods_per_cluster(&env).await, [("payments".into(), 6)]);
    env.kill(worker);

    // The same cluster, now behind a proxy that is down.
    let proxied = env.dir.join("proxied.yaml");
    let proxy_line = format!("    proxy_url: http://kubecensus:{PASSWORD}@{}\n", closed_port());
    std::fs::write(&proxied, format!("clusters:\n{}", server_entry(&env.dir, "payments", cluster, &proxy_line)))
        .unwrap();
    let worker = env.spawn_worker("proxied", &proxied, &["--max-attempts", "1"]).unwrap();
    let _ = env.scheduler(&proxied, &["refresh", "--wait", "--table", "kubernetes_pods"]).await;
    env.wait_until("the run to fail", "SELECT count(*) = 1 FROM runs WHERE status = 'failed'", Duration::from_secs(30))
        .await
        .unwrap();

    let errors = run_errors(&env).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("proxy"), "the error says the proxy failed: {}", errors[0]);
    assert!(!errors[0].contains(PASSWORD), "{}", errors[0]);
    assert_eq!(pods_per_cluster(&env).await, [("payments".into(), 6)], "the last good data stays");
    let log = env.log("proxied");
    assert!(!log.contains(PASSWORD), "the worker logged the proxy password:\n{log}");
    let exit = env.signal_and_wait(worker, "TERM", Duration::from_secs(30)).await.unwrap();
    assert_eq!(exit, Some(0), "the worker kept running and stopped cleanly:\n{log}");
}

/// A loopback `host:port` where nothing listens.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}
