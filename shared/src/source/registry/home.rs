//! The home cluster: where platform teams keep every cluster's credentials as Secrets (Argo CD's
//! cluster Secrets, [`super::argocd`]; Cluster API's kubeconfig Secrets, [`super::capi`]).
//!
//! kubecensus lists those Secrets in the namespaces it is given, with label selectors, and makes
//! one cluster of each. It reaches the home cluster with its pod's service account when it runs
//! in one, else with `--home-kubeconfig` (and `--home-context`); it needs `list` on `secrets` in
//! those namespaces. A Secret's labels and annotations `fields.kubecensus.io/<field>: <value>`
//! become the cluster's registry fields (`region`, `team`, ...; an annotation wins over a label).
//! A malformed Secret is reported by namespace and name and costs no other cluster.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
};
use tokio::sync::Mutex;

use super::{ClusterConfig, argocd, capi};
pub use crate::ops::args::HomeArgs;
use crate::{Error, Result};

/// How long to wait for the home cluster to accept a connection, and for one listing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What one reading of the home cluster gave: the clusters of the good Secrets, and why each
/// bad one was left out (`Secret <namespace>/<name>: <why>`).
#[derive(Debug, Default)]
pub struct HomeClusters {
    pub clusters: Vec<ClusterConfig>,
    pub bad: Vec<String>,
}

/// The home cluster's Secrets as a registry source.
pub struct HomeSource {
    args: HomeArgs,
    /// Kept between readings; dropped after an error so the next reading connects afresh.
    client: Mutex<Option<kube::Client>>,
}

/// The two Secret formats.
#[derive(Clone, Copy)]
enum Format {
    ArgoCd,
    ClusterApi,
}

impl HomeSource {
    /// The source, when `args` names a namespace to read.
    pub fn new(args: &HomeArgs) -> Option<Self> {
        let configured = !args.argocd_namespaces.is_empty() || !args.capi_namespaces.is_empty();
        configured.then(|| Self { args: args.clone(), client: Mutex::default() })
    }

    /// Lists the Secrets and makes a cluster of each good one. Fails as a whole only when the
    /// home cluster cannot be reached or refuses a listing.
    pub async fn load(&self) -> Result<HomeClusters> {
        let client = self.client().await?;
        let result = self.load_with(&client).await;
        if result.is_err() {
            *self.client.lock().await = None;
        }
        result
    }

    async fn load_with(&self, client: &kube::Client) -> Result<HomeClusters> {
        let mut loaded = HomeClusters::default();
        let argocd = (
            Format::ArgoCd,
            &self.args.argocd_namespaces,
            selector(argocd::SECRET_TYPE_SELECTOR, &self.args.argocd_selector),
        );
        let capi = (
            Format::ClusterApi,
            &self.args.capi_namespaces,
            selector(capi::CLUSTER_NAME_LABEL, &self.args.capi_selector),
        );
        for (format, namespaces, selector) in [argocd, capi] {
            for namespace in namespaces {
                let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
                let secrets = api.list(&ListParams::default().labels(&selector)).await.map_err(|err| {
                    Error::Registry(format!("home cluster: cannot list Secrets in namespace {namespace}: {err}"))
                })?;
                for secret in &secrets.items {
                    add(&mut loaded, secret, format);
                }
            }
        }
        Ok(loaded)
    }

    async fn client(&self) -> Result<kube::Client> {
        let mut cached = self.client.lock().await;
        if let Some(client) = &*cached {
            return Ok(client.clone());
        }
        let mut config = match &self.args.home_kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|err| {
                    Error::Registry(format!("home cluster: cannot read kubeconfig {}: {err}", path.display()))
                })?;
                let options = KubeConfigOptions { context: self.args.home_context.clone(), ..Default::default() };
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|err| Error::Registry(format!("home cluster: kubeconfig {}: {err}", path.display())))?
            }
            None => kube::Config::incluster().map_err(|err| {
                Error::Registry(format!("home cluster: not in a pod ({err}) and no --home-kubeconfig"))
            })?,
        };
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(READ_TIMEOUT);
        let client = kube::Client::try_from(config)
            .map_err(|err| Error::Registry(format!("home cluster: cannot build a client: {err}")))?;
        *cached = Some(client.clone());
        Ok(client)
    }
}

/// `required` and the user's extra selector, both to match.
fn selector(required: &str, extra: &Option<String>) -> String {
    match extra.as_deref().map(str::trim).filter(|extra| !extra.is_empty()) {
        Some(extra) => format!("{required},{extra}"),
        None => required.to_owned(),
    }
}

/// Makes a cluster of one Secret, or says why not; a name taken by an earlier Secret is an error
/// of the later one.
fn add(loaded: &mut HomeClusters, secret: &Secret, format: Format) {
    let what = format!(
        "Secret {}/{}",
        secret.metadata.namespace.as_deref().unwrap_or_default(),
        secret.metadata.name.as_deref().unwrap_or_default()
    );
    let cluster = match format {
        Format::ClusterApi if !capi::is_kubeconfig(secret) => return,
        Format::ClusterApi => capi::cluster(secret),
        Format::ArgoCd => argocd::cluster(secret),
    };
    let checked = cluster.and_then(|cluster| {
        cluster.check().map_err(|err| err.to_string())?;
        if loaded.clusters.iter().any(|c| c.name == cluster.name) {
            return Err(format!("cluster {} comes from another Secret too", cluster.name));
        }
        Ok(cluster)
    });
    match checked {
        Ok(cluster) => loaded.clusters.push(cluster),
        Err(why) => loaded.bad.push(format!("{what}: {why}")),
    }
}
