//! The simulated fleet against real clients: the `kubectl` binary and the `kube` crate list what
//! the fleet holds, page with `limit`/`continue`, get a consistent snapshot across churn, and see
//! 401 and 410 where a real API server would give them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kubecensus_tests::{
    fleet::{Fleet, FleetSpec, home::HomeCluster},
    programs,
};
use serde_json::Value;

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("kubecensus-fleet-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Installs ring as rustls' process-wide provider (once; later calls are no-ops).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `(namespace, name, uid)` of each object, from `metadata`.
fn identities<'a>(objects: impl IntoIterator<Item = &'a Value>) -> BTreeSet<(String, String, String)> {
    let field = |object: &Value, name: &str| object["metadata"][name].as_str().unwrap_or_default().to_owned();
    objects.into_iter().map(|o| (field(o, "namespace"), field(o, "name"), field(o, "uid"))).collect()
}

/// Runs kubectl against one context of the fleet's kubeconfig; returns (success, stdout, stderr).
async fn kubectl(out: &Path, context: &str, args: &[&str]) -> (bool, String, String) {
    let cache = TempDir::new();
    let output = tokio::process::Command::new(programs::kubectl())
        .arg("--kubeconfig")
        .arg(out.join("kubeconfig"))
        .args(["--context", context, "--cache-dir"])
        .arg(&cache.0)
        .args(args)
        .output()
        .await
        .expect("run kubectl");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

async fn kube_client(out: &Path, context: &str) -> kube::Client {
    install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(out.join("kubeconfig")).expect("read kubeconfig");
    let options = KubeConfigOptions { context: Some(context.to_owned()), ..KubeConfigOptions::default() };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.expect("kube config");
    kube::Client::try_from(config).expect("kube client")
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

#[tokio::test]
async fn kubectl_pages_through_every_resource_of_every_cluster() {
    let out = TempDir::new();
    let spec = FleetSpec { clusters: 2, pods: 40, ..FleetSpec::default() };
    let fleet = Fleet::start(spec, &out.0).await.unwrap();
    for cluster in fleet.clusters() {
        for plural in ["pods", "nodes", "namespaces"] {
            let (ok, stdout, stderr) =
                kubectl(&out.0, &cluster.name, &["get", plural, "-A", "--chunk-size=7", "-o", "json"]).await;
            assert!(ok, "kubectl get {plural} on {}: {stderr}", cluster.name);
            let listed: Value = serde_json::from_str(&stdout).unwrap();
            let items = listed["items"].as_array().unwrap();
            let held = fleet.objects(&cluster.name, plural);
            assert!(!held.is_empty());
            assert_eq!(identities(items), identities(&held), "{plural} of {}", cluster.name);
        }
        assert!(fleet.requests(&cluster.name).continued > 0, "kubectl never asked for a second page");
    }
    let [first, second] = &fleet.clusters()[..] else { panic!("two clusters") };
    assert_ne!(first.uid, second.uid);
}

#[tokio::test]
async fn kubectl_with_a_wrong_token_is_told_to_log_in() {
    let out = TempDir::new();
    let fleet = Fleet::start(FleetSpec { clusters: 1, ..FleetSpec::default() }, &out.0).await.unwrap();
    let cluster = &fleet.clusters()[0];
    let (ok, _, stderr) = kubectl(&out.0, &cluster.name, &["--token", "wrong", "get", "pods", "-A"]).await;
    assert!(!ok);
    // kubectl's wording for a 401 from discovery, as against a real API server.
    assert!(stderr.contains("You must be logged in to the server"), "{stderr}");
}

#[tokio::test]
async fn kubectl_with_a_namespace_token_reads_its_namespace_and_is_refused_elsewhere_in_the_api_servers_words() {
    let out = TempDir::new();
    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 30, ..FleetSpec::default() }, &out.0).await.unwrap();
    let cluster = &fleet.clusters()[0];
    let grant = fleet.grant(&cluster.name, "ci:reader", &["team-a-payments"]);
    let as_reader = |args: &'static [&'static str]| {
        let token = grant.token.clone();
        let out = out.0.clone();
        let name = cluster.name.clone();
        async move { kubectl(&out, &name, &[&["--token", token.as_str()][..], args].concat()).await }
    };
    let (ok, stdout, stderr) = as_reader(&["get", "pods", "-n", "team-a-payments", "-o", "json"]).await;
    assert!(ok, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    let held: Vec<Value> = fleet
        .objects(&cluster.name, "pods")
        .into_iter()
        .filter(|pod| pod["metadata"]["namespace"] == "team-a-payments")
        .collect();
    assert!(!held.is_empty());
    assert_eq!(identities(listed["items"].as_array().unwrap()), identities(&held));
    let (ok, _, _) = as_reader(&["get", "namespace", "team-a-payments"]).await;
    assert!(ok, "its own namespace can be read by name");

    let refused = [
        (
            &["get", "pods", "-A"][..],
            r#"pods is forbidden: User "system:serviceaccount:ci:reader" cannot list resource "pods" in API group "" at the cluster scope"#,
        ),
        (
            &["get", "pods", "-n", "default"][..],
            r#"pods is forbidden: User "system:serviceaccount:ci:reader" cannot list resource "pods" in API group "" in the namespace "default""#,
        ),
        (
            &["get", "namespace", "kube-system"][..],
            r#"namespaces "kube-system" is forbidden: User "system:serviceaccount:ci:reader" cannot get resource "namespaces" in API group "" in the namespace "kube-system""#,
        ),
    ];
    for (args, message) in refused {
        let (ok, _, stderr) = as_reader(args).await;
        assert!(!ok, "{args:?}");
        assert_eq!(stderr.trim(), format!("Error from server (Forbidden): {message}"), "{args:?}");
    }
}

#[tokio::test]
async fn kube_client_pages_through_every_pod() {
    let out = TempDir::new();
    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 23, ..FleetSpec::default() }, &out.0).await.unwrap();
    let cluster = &fleet.clusters()[0];
    let pods: Api<Pod> = Api::all(kube_client(&out.0, &cluster.name).await);
    let mut uids = BTreeSet::new();
    let mut params = ListParams::default().limit(5);
    loop {
        let page = pods.list(&params).await.unwrap();
        uids.extend(page.items.iter().map(uid));
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let held: BTreeSet<String> =
        identities(&fleet.objects(&cluster.name, "pods")).into_iter().map(|(_, _, uid)| uid).collect();
    assert_eq!(uids, held);
    assert_eq!(fleet.requests(&cluster.name).continued, 4);
}

#[tokio::test]
async fn a_continued_list_reads_the_snapshot_of_its_first_page_despite_churn() {
    let out = TempDir::new();
    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 30, ..FleetSpec::default() }, &out.0).await.unwrap();
    let cluster = &fleet.clusters()[0];
    let pods: Api<Pod> = Api::all(kube_client(&out.0, &cluster.name).await);
    let before: BTreeSet<String> =
        identities(&fleet.objects(&cluster.name, "pods")).into_iter().map(|(_, _, uid)| uid).collect();

    let first = pods.list(&ListParams::default().limit(10)).await.unwrap();
    fleet.churn(&cluster.name, 5, 8);
    assert_eq!(fleet.count(&cluster.name, "pods"), 33);
    let token = first.metadata.continue_.clone().unwrap();
    let rest = pods.list(&ListParams::default().continue_token(&token)).await.unwrap();
    assert!(rest.metadata.continue_.is_none());
    let listed: BTreeSet<String> = first.items.iter().chain(&rest.items).map(uid).collect();
    assert_eq!(listed, before);
    assert_eq!(rest.metadata.resource_version, first.metadata.resource_version);

    let fresh = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(fresh.items.len(), 33);
    assert_ne!(fresh.metadata.resource_version, first.metadata.resource_version);
}

#[tokio::test]
async fn an_expired_continue_token_gets_410_gone() {
    let out = TempDir::new();
    let spec = FleetSpec { clusters: 1, continue_ttl: Duration::from_millis(200), ..FleetSpec::default() };
    let fleet = Fleet::start(spec, &out.0).await.unwrap();
    let cluster = &fleet.clusters()[0];
    let pods: Api<Pod> = Api::all(kube_client(&out.0, &cluster.name).await);
    let first = pods.list(&ListParams::default().limit(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let token = first.metadata.continue_.unwrap();
    match pods.list(&ListParams::default().limit(5).continue_token(&token)).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reaches_a_client_certificate_cluster_and_lists_the_home_clusters_secrets_by_label() {
    let out = TempDir::new();
    let spec = FleetSpec { clusters: 2, pods: 4, client_certificate_clusters: 1, ..FleetSpec::default() };
    let fleet = Fleet::start(spec, &out.0).await.unwrap();
    let (ok, stdout, stderr) = kubectl(&out.0, "sim-01", &["get", "pods", "-A", "-o", "name"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 4);

    let home = HomeCluster::start(&out.0).unwrap();
    let clusters = fleet.clusters();
    home.put(HomeCluster::argocd_secret("argocd", &clusters[0], &[]));
    home.put(HomeCluster::capi_secret("argocd", &clusters[1], &[]));
    std::fs::copy(&home.kubeconfig, out.0.join("kubeconfig")).unwrap();
    let list = |selector: &'static str| {
        let out = out.0.clone();
        async move { kubectl(&out, "home", &["get", "secrets", "-n", "argocd", "-l", selector, "-o", "name"]).await }
    };
    let (ok, stdout, stderr) = list("argocd.argoproj.io/secret-type=cluster").await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "secret/cluster-sim-01");
    let (_, stdout, _) = list("cluster.x-k8s.io/cluster-name").await;
    assert_eq!(stdout.trim(), "secret/sim-02-kubeconfig");
    assert!(home.delete("argocd", "cluster-sim-01"));
    let (_, stdout, _) = list("argocd.argoproj.io/secret-type=cluster").await;
    assert_eq!(stdout.trim(), "");
}

#[tokio::test]
async fn kubectl_lists_flux_kustomizations_where_flux_runs_and_not_elsewhere() {
    let out = TempDir::new();
    let spec = FleetSpec { clusters: 3, pods: 5, custom_resources: 30, ..FleetSpec::default() };
    let fleet = Fleet::start(spec, &out.0).await.unwrap();
    let clusters = fleet.clusters();
    let kind = "kustomizations.kustomize.toolkit.fluxcd.io";
    let (ok, stdout, stderr) = kubectl(&out.0, &clusters[0].name, &["get", kind, "-A", "-o", "json"]).await;
    assert!(ok, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(identities(items), identities(&fleet.objects(&clusters[0].name, "kustomizations")));
    assert!(!items.is_empty() && items.iter().all(|k| k["kind"] == "Kustomization"));
    // The third cluster runs no Flux: kubectl finds no such resource type in its discovery.
    let (ok, _, stderr) = kubectl(&out.0, &clusters[2].name, &["get", kind, "-A"]).await;
    assert!(!ok);
    assert!(stderr.contains("the server doesn't have a resource type"), "{stderr}");
}
