//! What fleet to simulate ([`FleetSpec`]): how many clusters, of what size and content.

use std::{path::PathBuf, time::Duration};

use super::custom;

/// What fleet to simulate.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub clusters: usize,
    /// Namespaces per cluster (at least `kube-system` and `default`).
    pub namespaces: usize,
    /// Nodes per cluster.
    pub nodes: usize,
    /// Pods per cluster.
    pub pods: usize,
    /// Custom resources (Flux, Argo CD, cert-manager) per cluster, with their CRDs; every third
    /// cluster runs none ([`super::cluster_runs_custom_resources`]), unless [`NamespaceObjects::Flux`].
    pub custom_resources: usize,
    /// What each namespace holds besides pods.
    pub namespace_objects: NamespaceObjects,
    /// Seeds the generated content: the same seed gives the same objects.
    pub seed: u64,
    /// Serve the objects of the JSON files in this folder instead of generated ones.
    pub objects: Option<PathBuf>,
    /// Clusters are named `<prefix>-01`, `<prefix>-02`, …
    pub name_prefix: String,
    /// How long a list's continue tokens stay valid, from its first page.
    pub continue_ttl: Duration,
    /// The first this many clusters take a client certificate instead of a bearer token.
    pub client_certificate_clusters: usize,
    /// How long an event lasts after its last update (the API server's `--event-ttl`), applied
    /// at each [`super::Fleet::step_events`].
    pub event_lifetime: Duration,
}

impl Default for FleetSpec {
    fn default() -> Self {
        Self {
            clusters: 3,
            namespaces: 5,
            nodes: 3,
            pods: 50,
            custom_resources: 20,
            namespace_objects: NamespaceObjects::default(),
            seed: 1,
            objects: None,
            name_prefix: "sim".to_owned(),
            continue_ttl: Duration::from_secs(5 * 60),
            client_certificate_clusters: 0,
            event_lifetime: Duration::from_secs(60 * 60),
        }
    }
}

/// What each namespace of a generated cluster holds besides its pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum NamespaceObjects {
    /// A few workloads and what goes with them: a Deployment and its ReplicaSet, a Service and
    /// its Endpoints, RBAC, policies, storage, jobs, an event (`workloads.rs`).
    #[default]
    Workloads,
    /// One Flux Kustomization and one HelmRelease, nothing else: the RFC's fleet shape (hundreds
    /// of clusters of thousands of namespaces, each an application Flux deploys). Every cluster
    /// then runs Flux (serves the custom kinds), not two in three.
    Flux,
}

impl FleetSpec {
    /// Whether the cluster at `index` (0-based) serves the custom kinds and holds their objects:
    /// every cluster with [`NamespaceObjects::Flux`], else [`super::cluster_runs_custom_resources`].
    pub fn runs_custom_resources(&self, index: usize) -> bool {
        self.namespace_objects == NamespaceObjects::Flux || custom::runs_custom_resources(index)
    }
}
