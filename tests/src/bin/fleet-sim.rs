//! `fleet-sim`: runs a simulated fleet of Kubernetes clusters until SIGINT/SIGTERM.
//!
//! It writes `clusters.yaml`, `kubeconfig` and per-cluster CA and token files into `--out`, then
//! an empty `ready` file once every server listens. Optionally it churns pods on a timer, and
//! serves a loopback admin API (`GET /counts`, `POST /churn?cluster=&delete=&add=`,
//! `POST /churn/workloads?cluster=&deployments=&config_maps_updated=&config_maps_created=&config_maps_deleted=&nodes=&heartbeats=&pods_deleted=&pods_added=`
//! answering exactly which uids it created, updated and deleted per resource of each cluster,
//! `POST /throttle?cluster=&plural=&pages=[&body=status]` to answer that many continued pages of
//! a resource with 429 and `Retry-After: 1` (API Priority and Fairness's plain text, or a
//! `Status`), `POST /grants?cluster=&service_account=<ns>:<name>&namespaces=a,b` to issue a token
//! allowed only in those namespaces (answers `{"token", "user"}`), and with `--home`
//! `POST /clusters` to start one more cluster with its Secret, `POST /secrets` and
//! `DELETE /secrets/{namespace}/{name}` to change the home cluster's Secrets); `POST /events?[cluster=]&add=&bump=`
//! for one step of events (expired after `--event-lifetime`, `bump` repeated, `add` new ones; also
//! every `--events-every` seconds), answering what it did per cluster (`{"sim-01": {"added": [{uid,
//! namespace, name, count, regarding_uid}], "bumped": [...], "expired": [uid, ...]}}`); `POST /rbac?cluster=`
//! with a Role, ClusterRole, RoleBinding or ClusterRoleBinding as the body adds or replaces it, and
//! `DELETE /rbac?cluster=&kind=&namespace=&name=` removes one (`namespace` empty or absent for a
//! cluster-scoped object).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use clap::Parser;
use kubecensus_tests::fleet::{
    ChurnLog, Fleet, FleetSpec, NamespaceObjects, ThrottleBody, WorkloadChurn, home::HomeCluster,
};
use serde::Deserialize;

/// Simulated Kubernetes clusters on loopback, for kubecensus demos, tests and benchmarks.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// How many clusters.
    #[arg(long, env = "FLEET_CLUSTERS", default_value_t = 3)]
    clusters: usize,
    /// Namespaces per cluster.
    #[arg(long, env = "FLEET_NAMESPACES", default_value_t = 5)]
    namespaces: usize,
    /// Nodes per cluster.
    #[arg(long, env = "FLEET_NODES", default_value_t = 3)]
    nodes: usize,
    /// Pods per cluster.
    #[arg(long, env = "FLEET_PODS", default_value_t = 50)]
    pods: usize,
    /// Custom resources (Flux, Argo CD, cert-manager) per cluster; every third cluster has none.
    #[arg(long, env = "FLEET_CUSTOM_RESOURCES", default_value_t = 20)]
    custom_resources: usize,
    /// What each namespace holds besides pods: a few workloads, or one Flux Kustomization and one
    /// HelmRelease (the RFC's shape; every cluster then runs Flux).
    #[arg(long, env = "FLEET_NAMESPACE_OBJECTS", value_enum, default_value_t)]
    namespace_objects: NamespaceObjects,
    /// Seed of the generated content.
    #[arg(long, env = "FLEET_SEED", default_value_t = 1)]
    seed: u64,
    /// Serve the objects of the JSON files in this folder instead of generated ones.
    #[arg(long, env = "FLEET_OBJECTS")]
    objects: Option<PathBuf>,
    /// Cluster name prefix: clusters are `<prefix>-01`, `<prefix>-02`, …
    #[arg(long, env = "FLEET_NAME_PREFIX", default_value = "sim")]
    name_prefix: String,
    /// Folder for clusters.yaml, kubeconfig, CA and token files, and `ready`.
    #[arg(long, env = "FLEET_OUT")]
    out: PathBuf,
    /// Churn every cluster's pods every this many seconds.
    #[arg(long, env = "FLEET_CHURN_EVERY")]
    churn_every: Option<u64>,
    /// Pods deleted and added per cluster at each churn.
    #[arg(long, env = "FLEET_CHURN_PODS", default_value_t = 5)]
    churn_pods: usize,
    /// How long an event lasts after its last update (the API server's --event-ttl).
    #[arg(long, env = "FLEET_EVENT_LIFETIME", default_value = "1h", value_parser = humantime::parse_duration)]
    event_lifetime: Duration,
    /// Step every cluster's events every this many seconds (see `POST /events`).
    #[arg(long, env = "FLEET_EVENTS_EVERY")]
    events_every: Option<u64>,
    /// Events added per cluster at each timed step.
    #[arg(long, env = "FLEET_EVENTS_ADD", default_value_t = 2)]
    events_add: usize,
    /// Events repeated per cluster at each timed step.
    #[arg(long, env = "FLEET_EVENTS_BUMP", default_value_t = 2)]
    events_bump: usize,
    /// How long continue tokens stay valid, in seconds.
    #[arg(long, env = "FLEET_CONTINUE_TTL", default_value_t = 300)]
    continue_ttl: u64,
    /// Serve the admin API (plain HTTP) on this address, e.g. 127.0.0.1:8099.
    #[arg(long, env = "FLEET_ADMIN")]
    admin: Option<SocketAddr>,
    /// The first this many clusters take a client certificate instead of a bearer token.
    #[arg(long, env = "FLEET_CLIENT_CERTIFICATE_CLUSTERS", default_value_t = 0)]
    client_certificate_clusters: usize,
    /// Also serve a home cluster (`home.kubeconfig`) holding every cluster's Secret: odd
    /// clusters as Argo CD cluster Secrets in namespace `argocd`, even ones as Cluster API
    /// kubeconfig Secrets in namespace `capi`.
    #[arg(long, env = "FLEET_HOME")]
    home: bool,
}

/// What the admin API changes.
struct Admin {
    fleet: Arc<Fleet>,
    home: Option<HomeCluster>,
    /// The fleet's settings and folder, for clusters added at runtime (`POST /clusters`).
    spec: FleetSpec,
    out: PathBuf,
    /// Clusters added at runtime, each its own one-cluster fleet.
    added: tokio::sync::Mutex<Vec<Fleet>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kubecensus::ops::telemetry::init(kubecensus::ops::telemetry::LogFormat::Plain, "info");
    let args = Args::parse();
    let spec_template = FleetSpec {
        clusters: args.clusters,
        namespaces: args.namespaces,
        nodes: args.nodes,
        pods: args.pods,
        custom_resources: args.custom_resources,
        namespace_objects: args.namespace_objects,
        seed: args.seed,
        objects: args.objects,
        name_prefix: args.name_prefix,
        continue_ttl: Duration::from_secs(args.continue_ttl),
        client_certificate_clusters: args.client_certificate_clusters,
        event_lifetime: args.event_lifetime,
    };
    let spec = spec_template.clone();
    let ready_file = args.out.join("ready");
    // A stale `ready` from an earlier run would tell scripts to go ahead too early.
    let _ = std::fs::remove_file(&ready_file);
    let fleet = Arc::new(Fleet::start(spec, &args.out).await?);
    let counts = fleet.counts();
    for cluster in fleet.clusters() {
        let objects: Vec<String> = counts[&cluster.name].iter().map(|(plural, n)| format!("{plural}={n}")).collect();
        tracing::info!(cluster = cluster.name, url = cluster.url, "{}", objects.join(" "));
    }

    let home = if args.home { Some(HomeCluster::start(&args.out)?) } else { None };
    if let Some(home) = &home {
        for (index, cluster) in fleet.clusters().iter().enumerate() {
            let fields = [("region", cluster.region.as_str())];
            home.put(match index % 2 {
                0 => HomeCluster::argocd_secret("argocd", cluster, &fields),
                _ => HomeCluster::capi_secret("capi", cluster, &fields),
            });
        }
        tracing::info!(kubeconfig = %home.kubeconfig.display(), "home cluster ready");
    }
    let admin = Arc::new(Admin {
        fleet: Arc::clone(&fleet),
        home,
        spec: spec_template,
        out: args.out.clone(),
        added: Default::default(),
    });

    if let Some(every) = args.churn_every {
        let pods = args.churn_pods;
        every_cluster(&fleet, every, move |fleet, cluster| fleet.churn(cluster, pods, pods), "churned every cluster");
    }
    if let Some(every) = args.events_every {
        let (add, bump) = (args.events_add, args.events_bump);
        let step = move |fleet: &Fleet, cluster: &str| {
            fleet.step_events(cluster, add, bump);
        };
        every_cluster(&fleet, every, step, "stepped every cluster's events");
    }
    if let Some(address) = args.admin {
        let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("binding {address}"))?;
        tracing::info!(%address, "admin API listening");
        let admin = Router::new()
            .route("/counts", get(counts_handler))
            .route("/churn", post(churn_handler))
            .route("/events", post(events_handler))
            .route("/churn/workloads", post(churn_workloads_handler))
            .route("/throttle", post(throttle_handler))
            .route("/grants", post(grant_handler))
            .route("/clusters", post(add_cluster))
            .route("/secrets", post(put_secret))
            .route("/secrets/{namespace}/{name}", delete(delete_secret))
            .route("/rbac", post(put_rbac).delete(remove_rbac))
            .with_state(Arc::clone(&admin));
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, admin).await {
                tracing::error!(%err, "admin API stopped");
            }
        });
    }

    std::fs::write(&ready_file, "").with_context(|| format!("writing {}", ready_file.display()))?;
    tracing::info!(out = %args.out.display(), "fleet ready");
    shutdown_signal().await?;
    tracing::info!("shutting down");
    fleet.shutdown();
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

async fn counts_handler(State(admin): State<Arc<Admin>>) -> axum::Json<BTreeMap<String, BTreeMap<String, usize>>> {
    axum::Json(admin.fleet.counts())
}

/// `POST /clusters`: starts one more cluster (`<prefix>-added-<n>-01`, its files in
/// `<out>/added-<n>/`) and puts its Argo CD cluster Secret in the home cluster; answers with its
/// name and URL.
async fn add_cluster(State(admin): State<Arc<Admin>>) -> Response {
    let Some(home) = &admin.home else {
        return (StatusCode::NOT_FOUND, "no home cluster (start with --home)\n").into_response();
    };
    let mut added = admin.added.lock().await;
    let number = added.len() + 1;
    let spec = FleetSpec {
        clusters: 1,
        client_certificate_clusters: 0,
        name_prefix: format!("{}-added-{number}", admin.spec.name_prefix),
        ..admin.spec.clone()
    };
    match Fleet::start(spec, &admin.out.join(format!("added-{number}"))).await {
        Ok(fleet) => {
            let cluster = fleet.clusters().remove(0);
            home.put(HomeCluster::argocd_secret("argocd", &cluster, &[("region", cluster.region.as_str())]));
            added.push(fleet);
            tracing::info!(cluster = cluster.name, url = cluster.url, "added a cluster and its Secret");
            axum::Json(serde_json::json!({"name": cluster.name, "url": cluster.url})).into_response()
        }
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot start a cluster: {err:#}\n")).into_response(),
    }
}

/// `POST /secrets` with a Secret as JSON: adds or replaces it in the home cluster.
async fn put_secret(State(admin): State<Arc<Admin>>, axum::Json(secret): axum::Json<serde_json::Value>) -> Response {
    match &admin.home {
        Some(home) => {
            home.put(secret);
            StatusCode::NO_CONTENT.into_response()
        }
        None => (StatusCode::NOT_FOUND, "no home cluster (start with --home)\n").into_response(),
    }
}

/// `DELETE /secrets/{namespace}/{name}`: removes a Secret from the home cluster.
async fn delete_secret(State(admin): State<Arc<Admin>>, Path((namespace, name)): Path<(String, String)>) -> Response {
    match &admin.home {
        Some(home) if home.delete(&namespace, &name) => StatusCode::NO_CONTENT.into_response(),
        Some(_) => (StatusCode::NOT_FOUND, format!("no Secret {namespace}/{name}\n")).into_response(),
        None => (StatusCode::NOT_FOUND, "no home cluster (start with --home)\n").into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct ChurnQuery {
    /// One cluster; all when absent.
    cluster: Option<String>,
    #[serde(default)]
    delete: usize,
    #[serde(default)]
    add: usize,
}

async fn churn_handler(State(admin): State<Arc<Admin>>, Query(query): Query<ChurnQuery>) -> Response {
    let fleet = &admin.fleet;
    let names: Vec<String> = fleet.clusters().into_iter().map(|c| c.name).collect();
    let targets: Vec<&String> = match &query.cluster {
        Some(cluster) => match unknown_cluster(fleet, cluster) {
            None => vec![cluster],
            Some(response) => return response,
        },
        None => names.iter().collect(),
    };
    for cluster in &targets {
        fleet.churn(cluster, query.delete, query.add);
    }
    axum::Json(fleet.counts()).into_response()
}

/// The query of a `POST /events` step.
#[derive(Debug, Deserialize)]
struct EventsQuery {
    /// One cluster; all when absent.
    cluster: Option<String>,
    /// New events to add.
    #[serde(default)]
    add: usize,
    /// Existing events to repeat (their count or series bumped).
    #[serde(default)]
    bump: usize,
}

/// `POST /events`: one step of the events of one cluster or all; answers what each step did.
async fn events_handler(State(admin): State<Arc<Admin>>, Query(query): Query<EventsQuery>) -> Response {
    each_cluster(&admin.fleet, query.cluster.as_deref(), |cluster| {
        admin.fleet.step_events(cluster, query.add, query.bump)
    })
}

/// The cluster of a `POST /churn/workloads` (its other parameters are a [`WorkloadChurn`]).
#[derive(Debug, Deserialize)]
struct ClusterQuery {
    /// One cluster; all when absent.
    cluster: Option<String>,
}

/// `POST /churn/workloads`: changes deployments, config maps, nodes and pods ([`WorkloadChurn`]);
/// answers `{cluster: {plural: {created, updated, deleted, noise}}}`, each a list of uids.
async fn churn_workloads_handler(
    State(admin): State<Arc<Admin>>,
    Query(query): Query<ClusterQuery>,
    Query(churn): Query<WorkloadChurn>,
) -> Response {
    each_cluster(&admin.fleet, query.cluster.as_deref(), |cluster| -> ChurnLog {
        admin.fleet.churn_workloads(cluster, &churn)
    })
}

/// Runs `change` on `cluster`, or on every cluster when `None`, and answers `{cluster: what
/// change returned}`; 404 for an unknown cluster.
fn each_cluster<T: serde::Serialize>(fleet: &Fleet, cluster: Option<&str>, change: impl Fn(&str) -> T) -> Response {
    if let Some(response) = cluster.and_then(|cluster| unknown_cluster(fleet, cluster)) {
        return response;
    }
    let done: BTreeMap<String, T> = fleet
        .clusters()
        .into_iter()
        .filter(|c| cluster.is_none_or(|name| name == c.name))
        .map(|c| {
            let done = change(&c.name);
            (c.name, done)
        })
        .collect();
    axum::Json(done).into_response()
}

/// Runs `change` on every cluster each `every` seconds (at least 1), from `every` seconds on,
/// logging `done` after each round.
fn every_cluster(fleet: &Arc<Fleet>, every: u64, change: impl Fn(&Fleet, &str) + Send + 'static, done: &'static str) {
    let fleet = Arc::clone(fleet);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(every.max(1)));
        ticks.tick().await;
        loop {
            ticks.tick().await;
            for cluster in fleet.clusters() {
                change(&fleet, &cluster.name);
            }
            tracing::info!("{done}");
        }
    });
}

/// The 404 to answer when the fleet has no cluster of this name.
fn unknown_cluster(fleet: &Fleet, cluster: &str) -> Option<Response> {
    let known = fleet.clusters().iter().any(|c| c.name == cluster);
    (!known).then(|| (StatusCode::NOT_FOUND, format!("no cluster named {cluster}\n")).into_response())
}

#[derive(Debug, Deserialize)]
struct ThrottleQuery {
    cluster: String,
    plural: String,
    pages: u32,
    /// `status` for a `Status` body; else API Priority and Fairness's plain text.
    body: Option<String>,
}

/// `POST /throttle`: the next `pages` continued page requests of `plural` get 429.
async fn throttle_handler(State(admin): State<Arc<Admin>>, Query(query): Query<ThrottleQuery>) -> Response {
    if let Some(response) = unknown_cluster(&admin.fleet, &query.cluster) {
        return response;
    }
    let body = match query.body.as_deref() {
        Some("status") => ThrottleBody::Status,
        _ => ThrottleBody::PriorityAndFairness,
    };
    admin.fleet.throttle(&query.cluster, &query.plural, query.pages, body);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Debug, Deserialize)]
struct GrantQuery {
    cluster: String,
    /// `<namespace>:<name>`.
    service_account: String,
    /// Comma-separated.
    namespaces: String,
}

/// `POST /grants`: a token of `cluster` allowed only in `namespaces`.
async fn grant_handler(State(admin): State<Arc<Admin>>, Query(query): Query<GrantQuery>) -> Response {
    if let Some(response) = unknown_cluster(&admin.fleet, &query.cluster) {
        return response;
    }
    let namespaces: Vec<&str> = query.namespaces.split(',').filter(|namespace| !namespace.is_empty()).collect();
    let grant = admin.fleet.grant(&query.cluster, &query.service_account, &namespaces);
    axum::Json(serde_json::json!({"token": grant.token, "user": grant.user})).into_response()
}

/// Which cluster `POST /rbac` changes.
#[derive(Deserialize)]
struct RbacCluster {
    cluster: String,
}

/// `POST /rbac?cluster=`: adds or replaces the RBAC object of the body.
async fn put_rbac(
    State(admin): State<Arc<Admin>>,
    Query(query): Query<RbacCluster>,
    axum::Json(object): axum::Json<serde_json::Value>,
) -> Response {
    if let Some(response) = unknown_cluster(&admin.fleet, &query.cluster) {
        return response;
    }
    match admin.fleet.put_rbac(&query.cluster, object) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response(),
    }
}

/// Which RBAC object `DELETE /rbac` removes.
#[derive(Deserialize)]
struct RbacObject {
    cluster: String,
    kind: String,
    #[serde(default)]
    namespace: String,
    name: String,
}

/// `DELETE /rbac?cluster=&kind=&namespace=&name=`: removes an RBAC object (404 if absent).
async fn remove_rbac(State(admin): State<Arc<Admin>>, Query(query): Query<RbacObject>) -> Response {
    if let Some(response) = unknown_cluster(&admin.fleet, &query.cluster) {
        return response;
    }
    match admin.fleet.remove_rbac(&query.cluster, &query.kind, &query.namespace, &query.name) {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => {
            (StatusCode::NOT_FOUND, format!("no {} {}/{}\n", query.kind, query.namespace, query.name)).into_response()
        }
        Err(err) => (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response(),
    }
}
