//! `fleet-sim`: runs a simulated fleet of Kubernetes clusters until SIGINT/SIGTERM.
//!
//! It writes `clusters.yaml`, `kubeconfig` and per-cluster CA and token files into `--out`, then
//! an empty `ready` file once every server listens. Optionally it churns pods on a timer, and
//! serves a loopback admin API (`GET /counts`, `POST /churn?cluster=&delete=&add=`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;
use kubecensus_tests::fleet::{Fleet, FleetSpec};
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
    /// How long continue tokens stay valid, in seconds.
    #[arg(long, env = "FLEET_CONTINUE_TTL", default_value_t = 300)]
    continue_ttl: u64,
    /// Serve the admin API (plain HTTP) on this address, e.g. 127.0.0.1:8099.
    #[arg(long, env = "FLEET_ADMIN")]
    admin: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kubecensus::ops::telemetry::init(kubecensus::ops::telemetry::LogFormat::Plain, "info");
    let args = Args::parse();
    let spec = FleetSpec {
        clusters: args.clusters,
        namespaces: args.namespaces,
        nodes: args.nodes,
        pods: args.pods,
        custom_resources: args.custom_resources,
        seed: args.seed,
        objects: args.objects,
        name_prefix: args.name_prefix,
        continue_ttl: Duration::from_secs(args.continue_ttl),
    };
    let ready_file = args.out.join("ready");
    // A stale `ready` from an earlier run would tell scripts to go ahead too early.
    let _ = std::fs::remove_file(&ready_file);
    let fleet = Arc::new(Fleet::start(spec, &args.out).await?);
    let counts = fleet.counts();
    for cluster in fleet.clusters() {
        let objects: Vec<String> = counts[&cluster.name].iter().map(|(plural, n)| format!("{plural}={n}")).collect();
        tracing::info!(cluster = cluster.name, url = cluster.url, "{}", objects.join(" "));
    }

    if let Some(every) = args.churn_every {
        let fleet = Arc::clone(&fleet);
        let pods = args.churn_pods;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(every.max(1)));
            ticks.tick().await;
            loop {
                ticks.tick().await;
                for cluster in fleet.clusters() {
                    fleet.churn(&cluster.name, pods, pods);
                }
                tracing::info!(pods, "churned every cluster");
            }
        });
    }
    if let Some(address) = args.admin {
        let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("binding {address}"))?;
        tracing::info!(%address, "admin API listening");
        let admin = Router::new()
            .route("/counts", get(counts_handler))
            .route("/churn", post(churn_handler))
            .with_state(Arc::clone(&fleet));
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

async fn counts_handler(State(fleet): State<Arc<Fleet>>) -> axum::Json<BTreeMap<String, BTreeMap<String, usize>>> {
    axum::Json(fleet.counts())
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

async fn churn_handler(State(fleet): State<Arc<Fleet>>, Query(query): Query<ChurnQuery>) -> Response {
    let names: Vec<String> = fleet.clusters().into_iter().map(|c| c.name).collect();
    let targets: Vec<&String> = match &query.cluster {
        Some(cluster) if !names.contains(cluster) => {
            return (StatusCode::NOT_FOUND, format!("no cluster named {cluster}\n")).into_response();
        }
        Some(cluster) => vec![cluster],
        None => names.iter().collect(),
    };
    for cluster in &targets {
        fleet.churn(cluster, query.delete, query.add);
    }
    axum::Json(fleet.counts()).into_response()
}
