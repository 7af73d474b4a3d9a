//! The simulated fleet: N Kubernetes API servers on loopback, each with its own CA, bearer token
//! and content, good enough for the real `kubectl` and the `kube` crate.
//!
//! [`Fleet::start`] generates (or loads, with [`FleetSpec::objects`]) every cluster's objects,
//! starts one HTTPS server per cluster on an ephemeral port, and writes what clients need into an
//! output folder: `clusters.yaml` (the kubecensus registry), `kubeconfig` (one context per
//! cluster), and `<cluster>.ca.crt` / `<cluster>.token`. Tests then read the fleet's state
//! ([`Fleet::objects`]), change it ([`Fleet::churn`], [`Fleet::step_events`], [`Fleet::put_rbac`])
//! or make it misbehave ([`Fleet::set_faults`]). Generated clusters serve the default ClusterRoles
//! and a few bindings ([`rbac`]).

mod access;
mod churn;
mod content;
mod custom;
mod events;
pub mod home;
mod objects;
pub mod rbac;
mod server;
mod spec;
mod store;
mod tls;
mod workloads;

pub use churn::{Changed, ChurnLog, WorkloadChurn};
pub use spec::{FleetSpec, NamespaceObjects};

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kubecensus::model::catalog::{ApiRef, Catalog, Resource, ResourceSource};
use serde::Serialize;
use serde_json::{Value, json};

pub use access::{Grant, Throttle, ThrottleBody};
pub use events::{EventChange, EventChanges};
pub use server::{Breakage, BrokenList, FailResource, Faults, RequestCounts};

use content::{PodFactory, Rng};
use server::ClusterServer;
use store::ClusterStore;

/// The Kubernetes minor version the simulated API servers report (`/version`): they serve every
/// listed catalog resource except those removed by then (PodSecurityPolicy).
pub const SIMULATED_MINOR: u32 = 33;

/// The resources of `catalog` a simulated cluster serves: listed ones (not discovery or
/// `/version`) that Kubernetes 1.[`SIMULATED_MINOR`] still serves.
pub fn served_resources(catalog: &Catalog) -> impl Iterator<Item = &Resource> {
    catalog.resources.iter().filter(|r| {
        let removed =
            r.removed_in.as_deref().and_then(|v| v.strip_prefix("1.")).and_then(|minor| minor.parse::<u32>().ok());
        r.source == ResourceSource::List && removed.is_none_or(|minor| minor > SIMULATED_MINOR)
    })
}

/// The APIs the cluster at `index` (0-based) serves: [`served_resources`] of `catalog`, and the
/// custom kinds when [`cluster_runs_custom_resources`].
pub fn served_apis(catalog: &Catalog, index: usize) -> Vec<ApiRef> {
    apis_served(catalog, custom::runs_custom_resources(index))
}

/// [`served_resources`] of `catalog`, and with `custom`, the custom kinds.
fn apis_served(catalog: &Catalog, custom: bool) -> Vec<ApiRef> {
    let mut apis: Vec<ApiRef> = served_resources(catalog).map(|r| r.api.clone()).collect();
    if custom {
        apis.extend(custom::apis());
    }
    apis
}

/// Whether the cluster at `index` (0-based) runs Flux, Argo CD and cert-manager: serves their
/// CRDs and objects. The others answer 404 for them, as a cluster without Flux does.
pub fn cluster_runs_custom_resources(index: usize) -> bool {
    custom::runs_custom_resources(index)
}

/// Regions given to clusters in turn, in the registry's `fields` and the nodes' labels.
const REGIONS: &[&str] = &["us-east", "eu-west", "ap-south"];

/// How a client reaches one simulated cluster.
#[derive(Debug, Clone)]
pub struct SimCluster {
    pub name: String,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    pub token: String,
    /// The cluster's CA certificate, PEM-encoded.
    pub ca_pem: String,
    pub region: String,
    /// The uid of its `kube-system` namespace.
    pub uid: String,
    /// For a cluster that takes client certificates: one it accepts and its key, both PEM.
    pub client_certificate: Option<(String, String)>,
}

struct RunningCluster {
    info: SimCluster,
    server: Arc<ClusterServer>,
    handle: Handle<SocketAddr>,
}

/// A running simulated fleet. Dropping it stops the servers.
pub struct Fleet {
    /// The embedded catalog: its listed resources are what every cluster serves.
    catalog: Catalog,
    clusters: Vec<RunningCluster>,
    /// [`FleetSpec::event_lifetime`].
    event_lifetime: Duration,
}

/// The content every cluster of a fleet starts from, before its own kube-system namespace.
enum Source {
    Generated,
    Files(Vec<Value>),
}

impl Fleet {
    /// Starts the fleet and writes its client files into `out_dir` (created if missing).
    /// Building the content blocks the calling thread (a few seconds for 100 x 1000 pods).
    pub async fn start(spec: FleetSpec, out_dir: &Path) -> anyhow::Result<Fleet> {
        std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
        let out_dir = out_dir.canonicalize()?;
        let source = match &spec.objects {
            Some(dir) => Source::Files(objects::load_dir(dir)?),
            None => Source::Generated,
        };
        let catalog = Catalog::builtin();
        // Building content is the slow part (100 clusters x 1000 pods): use every core.
        let prepared = parallel_map(spec.clusters, |index| {
            prepare_cluster(&spec, &source, &apis_served(&catalog, spec.runs_custom_resources(index)), index)
        });
        if let Some(first) = prepared.first() {
            for (kind, count) in &first.skipped {
                tracing::warn!(kind, count, "skipped objects of a kind the catalog does not list");
            }
            if first.duplicates > 0 {
                tracing::warn!(
                    duplicates = first.duplicates,
                    "dropped objects with the same kind, namespace and name as an earlier one"
                );
            }
        }
        let clusters = prepared
            .into_iter()
            .map(|cluster| start_cluster(cluster, spec.continue_ttl))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let fleet = Fleet { catalog, clusters, event_lifetime: spec.event_lifetime };
        fleet.write_files(&out_dir)?;
        Ok(fleet)
    }

    /// Every cluster, in order.
    pub fn clusters(&self) -> Vec<SimCluster> {
        self.clusters.iter().map(|c| c.info.clone()).collect()
    }

    fn cluster(&self, name: &str) -> &RunningCluster {
        self.clusters
            .iter()
            .find(|c| c.info.name == name)
            .unwrap_or_else(|| panic!("no simulated cluster named {name}"))
    }

    /// How many objects of a resource (by plural) a cluster holds now. Panics on an unknown cluster.
    pub fn count(&self, cluster: &str, plural: &str) -> usize {
        self.cluster(cluster).server.current().list(plural, None).len()
    }

    /// The objects of a resource a cluster holds now, sorted by namespace/name. Panics on an
    /// unknown cluster.
    pub fn objects(&self, cluster: &str, plural: &str) -> Vec<Value> {
        let snapshot = self.cluster(cluster).server.current();
        snapshot
            .list(plural, None)
            .iter()
            .map(|object| serde_json::from_slice(&object.json).expect("stored objects are JSON"))
            .collect()
    }

    /// Object counts per cluster and resource plural.
    pub fn counts(&self) -> BTreeMap<String, BTreeMap<String, usize>> {
        self.clusters
            .iter()
            .map(|cluster| {
                let snapshot = cluster.server.current();
                let counts = served_resources(&self.catalog)
                    .map(|r| (r.api.plural.clone(), snapshot.list(&r.api.plural, None).len()))
                    .collect();
                (cluster.info.name.clone(), counts)
            })
            .collect()
    }

    /// Deletes `delete` random pods of a cluster and adds `add` new ones, with a new
    /// resourceVersion. Lists already being paged keep their snapshot. Panics on an unknown cluster.
    pub fn churn(&self, cluster: &str, delete: usize, add: usize) {
        let cluster = self.cluster(cluster);
        cluster.server.store.lock().expect("store lock").churn(delete, add);
        tracing::debug!(cluster = cluster.info.name, delete, add, "churned pods");
    }

    /// Changes a cluster's deployments, config maps, nodes and pods as `churn` says, in one new
    /// snapshot; returns exactly what changed ([`ChurnLog`]). Panics on an unknown cluster.
    pub fn churn_workloads(&self, cluster: &str, churn: &WorkloadChurn) -> ChurnLog {
        let cluster = self.cluster(cluster);
        let log = cluster.server.store.lock().expect("store lock").churn_workloads(churn);
        tracing::debug!(cluster = cluster.info.name, ?churn, "churned workloads");
        log
    }

    /// Replaces a cluster's injected faults. Panics on an unknown cluster.
    pub fn set_faults(&self, cluster: &str, faults: Faults) {
        *self.cluster(cluster).server.faults.lock().expect("faults lock") = faults;
    }

    /// Answers the next `pages` continued page requests of the resource `plural` of a cluster
    /// with 429 and `Retry-After: 1` (a [`Throttle`]), replacing any throttle before. Panics on
    /// an unknown cluster.
    pub fn throttle(&self, cluster: &str, plural: &str, pages: u32, body: ThrottleBody) {
        let throttle = Throttle { plural: plural.to_owned(), pages, body };
        self.cluster(cluster).server.faults.lock().expect("faults lock").throttle = Some(throttle);
    }

    /// A new token of a cluster allowed only in `namespaces` (get, list and watch there, nothing
    /// cluster-wide), for the ServiceAccount `service_account` (`<namespace>:<name>`), whose
    /// user the 403 messages name (`system:serviceaccount:<namespace>:<name>`). Panics on an
    /// unknown cluster.
    pub fn grant(&self, cluster: &str, service_account: &str, namespaces: &[&str]) -> Grant {
        let grant = Grant {
            token: format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()),
            user: format!("system:serviceaccount:{service_account}"),
            namespaces: namespaces.iter().map(|namespace| (*namespace).to_owned()).collect(),
        };
        self.cluster(cluster).server.grants.lock().expect("grants lock").push(grant.clone());
        grant
    }

    /// How many requests a cluster has answered. Panics on an unknown cluster.
    pub fn requests(&self, cluster: &str) -> RequestCounts {
        self.cluster(cluster).server.request_counts()
    }

    /// Stops every server (also done on drop).
    pub fn shutdown(&self) {
        for cluster in &self.clusters {
            cluster.handle.shutdown();
        }
    }

    fn write_files(&self, out_dir: &Path) -> anyhow::Result<()> {
        let mut registry = Vec::new();
        for cluster in self.clusters() {
            let ca_file = out_dir.join(format!("{}.ca.crt", cluster.name));
            std::fs::write(&ca_file, &cluster.ca_pem).with_context(|| format!("writing {}", ca_file.display()))?;
            let fields = BTreeMap::from([("region", cluster.region.clone()), ("provider", "simulated".to_owned())]);
            let mut entry = RegistryEntry {
                name: cluster.name.clone(),
                server: cluster.url,
                ca_file,
                fields,
                ..Default::default()
            };
            match &cluster.client_certificate {
                Some((certificate, key)) => {
                    let (certificate_file, key_file) = (
                        out_dir.join(format!("{}.client.crt", cluster.name)),
                        out_dir.join(format!("{}.client.key", cluster.name)),
                    );
                    std::fs::write(&certificate_file, certificate)?;
                    write_private(&key_file, key)?;
                    (entry.client_certificate_file, entry.client_key_file) = (Some(certificate_file), Some(key_file));
                }
                None => {
                    let token_file = out_dir.join(format!("{}.token", cluster.name));
                    write_private(&token_file, &cluster.token)?;
                    entry.token_file = Some(token_file);
                }
            }
            registry.push(entry);
        }
        let registry_yaml = serde_norway::to_string(&BTreeMap::from([("clusters", registry)]))?;
        std::fs::write(out_dir.join("clusters.yaml"), registry_yaml)?;
        write_private(&out_dir.join("kubeconfig"), &serde_norway::to_string(&self.kubeconfig())?)
    }

    /// A kubeconfig with one context (and cluster and user) per cluster, all named as the cluster.
    fn kubeconfig(&self) -> Value {
        let clusters = self.clusters();
        json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": clusters.iter().map(|c| json!({
                "name": c.name,
                "cluster": {"server": c.url, "certificate-authority-data": STANDARD.encode(&c.ca_pem)},
            })).collect::<Vec<_>>(),
            "users": clusters.iter().map(|c| json!({"name": c.name, "user": kubeconfig_user(c)})).collect::<Vec<_>>(),
            "contexts": clusters.iter().map(|c| json!({
                "name": c.name,
                "context": {"cluster": c.name, "user": c.name},
            })).collect::<Vec<_>>(),
            "current-context": clusters.first().map(|c| c.name.as_str()).unwrap_or_default(),
        })
    }
}

/// A kubeconfig user reaching the cluster: its client certificate, else its token.
pub fn kubeconfig_user(cluster: &SimCluster) -> Value {
    match &cluster.client_certificate {
        Some((certificate, key)) => {
            json!({"client-certificate-data": STANDARD.encode(certificate), "client-key-data": STANDARD.encode(key)})
        }
        None => json!({"token": cluster.token}),
    }
}

/// One cluster in `clusters.yaml`, the registry kubecensus reads.
#[derive(Default, Serialize)]
struct RegistryEntry {
    name: String,
    server: String,
    ca_file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_certificate_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_key_file: Option<PathBuf>,
    fields: BTreeMap<&'static str, String>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A copy of the loaded objects where `kube-system` has the cluster's uid (and exists), and a pod
/// factory for churn built from the copy's namespaces and nodes.
fn with_own_kube_system(objects: &[Value], cluster_uid: &str) -> (Vec<Value>, PodFactory) {
    let is_namespace = |o: &Value| o["kind"] == "Namespace" && o["apiVersion"] == "v1";
    let mut objects = objects.to_vec();
    match objects.iter_mut().find(|o| is_namespace(o) && o["metadata"]["name"] == "kube-system") {
        Some(kube_system) => kube_system["metadata"]["uid"] = json!(cluster_uid),
        None => objects.push(content::namespace("kube-system", cluster_uid, chrono::Utc::now())),
    }
    let namespaces: Vec<Value> = objects.iter().filter(|o| is_namespace(o)).cloned().collect();
    let nodes: Vec<Value> =
        objects.iter().filter(|o| o["kind"] == "Node" && o["apiVersion"] == "v1").cloned().collect();
    let pod_factory = PodFactory::new(&namespaces, &nodes);
    (objects, pod_factory)
}

/// A cluster's content, ready to serve, and what its classification left out.
struct PreparedCluster {
    name: String,
    region: &'static str,
    uid: String,
    /// The APIs it serves: the catalog's, and the custom kinds where it runs them.
    resources: Vec<ApiRef>,
    store: ClusterStore,
    skipped: BTreeMap<String, usize>,
    duplicates: usize,
    client_auth: bool,
}

/// Generates (or copies from the files) the content of the cluster at `index`.
fn prepare_cluster(spec: &FleetSpec, source: &Source, resources: &[ApiRef], index: usize) -> PreparedCluster {
    let digits = spec.clusters.to_string().len().max(2);
    let name = format!("{}-{:0digits$}", spec.name_prefix, index + 1);
    let region = REGIONS[index % REGIONS.len()];
    let mut rng = Rng::new(spec.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (index as u64 + 1));
    let uid = rng.uuid();
    let (objects, pod_factory) = match source {
        Source::Generated => {
            let counts = (spec.namespaces, spec.nodes, spec.pods);
            let workloads = spec.namespace_objects == NamespaceObjects::Workloads;
            let mut generated = content::generate(&name, region, &uid, counts, workloads, &mut rng);
            generated.objects.extend(rbac::defaults(&name, &content::timestamp(content::epoch())));
            rbac::aggregate(&mut generated.objects);
            if spec.runs_custom_resources(index) {
                let namespaces: Vec<String> = generated
                    .objects
                    .iter()
                    .filter(|o| o["kind"] == "Namespace")
                    .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
                    .collect();
                generated.objects.extend(custom::definitions(&mut rng));
                generated.objects.extend(custom::objects(spec.custom_resources, &namespaces, &mut rng));
                if spec.namespace_objects == NamespaceObjects::Flux {
                    generated.objects.extend(custom::flux_per_namespace(&namespaces, &mut rng));
                }
            }
            (generated.objects, generated.pod_factory)
        }
        Source::Files(objects) => with_own_kube_system(objects, &uid),
    };
    let classified = store::classify(resources, objects, &mut rng);
    PreparedCluster {
        name,
        region,
        uid,
        resources: resources.to_vec(),
        store: ClusterStore::new(classified.objects, pod_factory, rng),
        skipped: classified.skipped,
        duplicates: classified.duplicates,
        client_auth: index < spec.client_certificate_clusters,
    }
}

/// `build(i)` for every `i` in `0..count`, spread over the machine's cores, in index order.
fn parallel_map<T: Send>(count: usize, build: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, count.max(1));
    let build = &build;
    let mut results: Vec<(usize, T)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                scope.spawn(move || (worker..count).step_by(workers).map(|i| (i, build(i))).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a content builder panicked")).collect()
    });
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

/// Binds a cluster's server on an ephemeral loopback port and starts serving.
fn start_cluster(cluster: PreparedCluster, continue_ttl: Duration) -> anyhow::Result<RunningCluster> {
    let PreparedCluster { name, region, uid, resources, store, client_auth, .. } = cluster;
    let tls = tls::cluster_tls(&name, client_auth)?;
    let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let mut server =
        ClusterServer::new(name.clone(), token.clone(), resources, address.to_string(), continue_ttl, store);
    server.client_certificates = client_auth;
    let server = Arc::new(server);
    let handle = Handle::new();
    let http =
        axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(tls.server_config))?.handle(handle.clone());
    let app = server::router(Arc::clone(&server));
    tokio::spawn(async move {
        if let Err(err) = http.serve(app.into_make_service()).await {
            tracing::error!(cluster = name, %err, "simulated API server stopped");
        }
    });
    let info = SimCluster {
        name: server.name.clone(),
        url: format!("https://{address}"),
        token,
        ca_pem: tls.ca_pem,
        region: region.to_owned(),
        uid,
        client_certificate: tls.client_certificate,
    };
    Ok(RunningCluster { info, server, handle })
}

/// Writes a file readable by its owner only (tokens, kubeconfig).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaded_objects_get_the_cluster_uid_on_kube_system() {
        let objects = vec![json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "default"}})];
        let (with_own, _) = with_own_kube_system(&objects, "uid-7");
        let kube_system = with_own.iter().find(|o| o["metadata"]["name"] == "kube-system").unwrap();
        assert_eq!(kube_system["metadata"]["uid"], "uid-7");
        assert_eq!(with_own.len(), 2);
    }
}
