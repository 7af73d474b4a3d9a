//! The cluster registry: which clusters exist, how to reach them, and their extra fields.
//!
//! Users declare clusters in a YAML file (see the README): a name, the API server URL, a CA, a
//! credential (token file, token from an environment variable, client certificate, exec plugin,
//! or a kubeconfig context; [`credentials`]), and free-form fields such as `region: us-east` that
//! become columns of every table. Clusters also come from Secrets of a home cluster ([`home`]:
//! Argo CD's in [`argocd`], Cluster API's in [`capi`]); [`sources`] combines them and re-reads
//! them while the services run. Credentials
//! stay here: job messages carry only the cluster name, and the `clusters` table only what is
//! safe to show (see [`crate::store::sync_clusters`]).
//!
//! Namespace fields (`team: payments`) are columns too, right after `namespace` in every
//! namespaced table: rules map a namespace (by name or glob, fleet-wide or per cluster, or by
//! copying one of the namespace's labels) to a value. [`NamespaceFields`] resolves them.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use kube::config::{KubeConfigOptions, Kubeconfig};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::{
    Error, Result,
    model::catalog::Catalog,
    source::proxy::{self, ProxyEnv, ProxyUrl},
};

pub mod argocd;
pub mod capi;
mod context_names;
pub mod credentials;
mod exec;
pub mod home;
mod secret;
pub mod server;
pub mod sources;

pub use credentials::{ExecPlugin, SecretCredentials};

use crate::model::namespace_fields::{NamespaceFields, NamespaceRule, check_field_name, check_namespace_fields};

/// The registry file: a list of clusters.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// Fleet-wide namespace fields: for each field, rules tried in order after the cluster's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespace_fields: BTreeMap<String, Vec<NamespaceRule>>,
    pub clusters: Vec<ClusterConfig>,
}

/// One cluster and how to reach it. Either `kubeconfig` (+ optional `context`), or `server`
/// with a CA (`ca_file` or `ca_data`) and credentials (a token from `token_file` or `token_env`,
/// a client certificate, an `exec` plugin; see [`credentials`]).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// PEM file of the CA that signed the API server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The same, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_data: Option<String>,
    /// File holding the bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// A kubeconfig file to take the server, CA and credentials from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// The context in `kubeconfig`; its current context when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// PEM file of a client certificate (mutual TLS), with `client_key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    /// An exec credential plugin printing an ExecCredential (`aws eks get-token`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecPlugin>,
    /// The name the server's certificate is checked against (and sent as SNI) instead of the
    /// URL's host, as kubeconfig's `tls-server-name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// An HTTP(S) proxy to reach `server` through (`http://[user:password@]host:port`), as a
    /// kubeconfig cluster's `proxy-url`: used whatever `HTTPS_PROXY` and `NO_PROXY` say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<ProxyUrl>,
    /// Skip TLS verification. Off by default; turning it on logs a warning at every connection.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_tls_verify: bool,
    /// Free-form fields (`region: us-east`) stored as columns after `cluster_name`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
    /// This cluster's namespace field rules, tried before the fleet-wide ones.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespace_fields: BTreeMap<String, Vec<NamespaceRule>>,
    /// The only namespaces the cluster is read in (its credential may read nothing else, as an
    /// Argo CD cluster Secret's `namespaces`): namespaced resources are listed in each, the
    /// namespaces fetched by name, cluster-scoped resources skipped unless `cluster_resources`.
    /// Empty: every namespace, listed cluster-wide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// With `namespaces`: cluster-scoped resources (nodes, CRDs, ...) are read too, as an Argo CD
    /// cluster Secret's `clusterResources: "true"`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_resources: bool,
    /// How the cluster authorizes requests: `rbac` (the default: its RBAC objects say who may
    /// list what, and kubecensus replays them) or `webhook` (EKS access entries, GKE IAM, AKS
    /// Azure RBAC grant besides RBAC: only identities given for this cluster apply, see
    /// `store::access`).
    #[serde(default, skip_serializing_if = "Authorization::is_rbac")]
    pub authorization: Authorization,
    /// Credentials from a Secret of the home cluster; never from the file, never serialized.
    #[serde(skip)]
    pub secret: SecretCredentials,
}

/// How a cluster authorizes requests, as far as kubecensus can replay it (`clusters.authorization_mode`).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Authorization {
    /// Kubernetes RBAC alone: the cluster's Roles, ClusterRoles and bindings say everything.
    #[default]
    Rbac,
    /// A webhook authorizer grants too (EKS access entries, GKE IAM, AKS Azure RBAC): the
    /// cluster's RBAC is not the whole truth.
    Webhook,
}

impl Authorization {
    /// The value of `clusters.authorization_mode`: `rbac` or `webhook`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rbac => "rbac",
            Self::Webhook => "webhook",
        }
    }

    fn is_rbac(&self) -> bool {
        *self == Self::Rbac
    }
}

/// How long to wait for a cluster's API server to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for one response (one page of a listing).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

impl Registry {
    /// Reads and checks a registry file; its fields must not be named like a column of
    /// `catalog`'s tables.
    pub fn load(path: &Path, catalog: &Catalog) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            what: "registry file",
            path: path.to_owned(),
            source,
        })?;
        let mut registry: Self = serde_norway::from_str(&text)
            .map_err(|source| Error::Yaml { what: format!("registry file {}", path.display()), source })?;
        // Relative file paths are relative to the registry file.
        let base = path.parent().unwrap_or(Path::new("."));
        for cluster in &mut registry.clusters {
            let files = [
                &mut cluster.ca_file,
                &mut cluster.token_file,
                &mut cluster.kubeconfig,
                &mut cluster.client_certificate_file,
                &mut cluster.client_key_file,
            ];
            for file in files.into_iter().flatten() {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
            if let Some(exec) = &mut cluster.exec
                && exec.command.contains('/')
                && Path::new(&exec.command).is_relative()
            {
                exec.command = base.join(&exec.command).to_string_lossy().into_owned();
            }
        }
        registry.check(catalog)?;
        Ok(registry)
    }

    /// Checks names, credentials and fields (none named like a column of `catalog`'s tables);
    /// every error names the cluster.
    pub fn check(&self, catalog: &Catalog) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for cluster in &self.clusters {
            cluster.check(catalog)?;
            if !seen.insert(&cluster.name) {
                return Err(Error::Registry(format!("cluster {} is declared twice", cluster.name)));
            }
        }
        let cluster_fields = self.field_names();
        check_namespace_fields("namespace_fields", &self.namespace_fields, &cluster_fields, catalog)?;
        for cluster in &self.clusters {
            let place = format!("cluster {}", cluster.name);
            check_namespace_fields(&place, &cluster.namespace_fields, &cluster_fields, catalog)?;
        }
        Ok(())
    }

    /// Every namespace field the registry declares, fleet-wide or for any cluster, sorted: the
    /// columns after `namespace`.
    pub fn namespace_field_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .namespace_fields
            .keys()
            .chain(self.clusters.iter().flat_map(|c| c.namespace_fields.keys()))
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The namespace field rules that apply to `cluster`, in [`Self::namespace_field_names`] order.
    pub fn namespace_fields_of(&self, cluster: &ClusterConfig) -> NamespaceFields {
        let names = self.namespace_field_names();
        let rules = names
            .iter()
            .map(|name| {
                let own = cluster.namespace_fields.get(name).into_iter().flatten();
                own.chain(self.namespace_fields.get(name).into_iter().flatten()).cloned().collect()
            })
            .collect();
        NamespaceFields::new(names, rules)
    }

    /// The cluster of this name.
    pub fn get(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// Every extra field any cluster declares, sorted: the columns after `cluster_name`.
    pub fn field_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.clusters.iter().flat_map(|c| c.fields.keys().cloned()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// One cluster per context of a kubeconfig file, each pointing back at that file and context.
    pub fn from_kubeconfig(path: &Path, catalog: &Catalog) -> Result<Self> {
        let kubeconfig = Kubeconfig::read_from(path)
            .map_err(|err| Error::Registry(format!("cannot read kubeconfig {}: {err}", path.display())))?;
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let names = context_names::cluster_names(kubeconfig.contexts.iter().map(|context| context.name.as_str()));
        let clusters = kubeconfig
            .contexts
            .iter()
            .zip(names)
            .map(|(context, name)| ClusterConfig {
                name,
                kubeconfig: Some(path.clone()),
                context: Some(context.name.clone()),
                ..ClusterConfig::default()
            })
            .collect();
        let registry = Self { clusters, ..Self::default() };
        registry.check(catalog)?;
        Ok(registry)
    }
}

/// A bearer token from a file, without surrounding whitespace (as client-go's `TrimSpace`).
/// Read whenever a client is built: a worker rebuilds a cluster's client after an error from it
/// and at least every few minutes, so a rotated token (projected service-account tokens rotate
/// hourly) is picked up.
fn read_token(path: &Path) -> std::result::Result<SecretString, String> {
    let token =
        std::fs::read_to_string(path).map_err(|err| format!("cannot read token file {}: {err}", path.display()))?;
    Ok(SecretString::from(token.trim().to_owned()))
}

/// The longest cluster name.
const MAX_NAME_LEN: usize = 50;

/// Whether `name` can name a cluster: lower-case letters, digits and inner `-`, at most 50
/// characters. Such names are safe in NATS subjects, SQL literals and table names.
pub fn is_cluster_name(name: &str) -> bool {
    is_label(name, MAX_NAME_LEN)
}

/// The longest namespace name (an RFC 1123 label, Kubernetes's `IsDNS1123Label`).
const MAX_NAMESPACE_LEN: usize = 63;

/// Whether `name` is 1 to `max` lower-case letters, digits and inner `-`.
fn is_label(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

impl ClusterConfig {
    /// Checks the name, the way to reach the cluster, its credentials and its fields (none named
    /// like a column of `catalog`'s tables); the error names the cluster.
    pub fn check(&self, catalog: &Catalog) -> Result<()> {
        let bad = |why: String| Err(Error::Registry(format!("cluster {}: {why}", self.name)));
        if !is_cluster_name(&self.name) {
            return bad("the name must be 1-50 lower-case letters, digits and inner '-'".into());
        }
        let has_kubeconfig = self.kubeconfig.is_some() || self.secret.kubeconfig.is_some();
        match (has_kubeconfig, &self.server) {
            (true, Some(_)) => return bad("give either kubeconfig or server, not both".into()),
            (false, None) => return bad("give kubeconfig, or server with a CA and a credential".into()),
            (false, Some(server)) => {
                if self.ca_file.is_some() && self.ca_data.is_some() {
                    return bad("give ca_file or ca_data, not both".into());
                }
                credentials::check(self).or_else(bad)?;
                let Ok(url) = server.parse::<http::Uri>() else {
                    return bad(format!("server `{server}` is not a URL"));
                };
                if let Some(ProxyUrl(proxy_url)) = &self.proxy_url
                    && let Err(why) = proxy::choose(&url, Some(proxy_url), &ProxyEnv::default())
                {
                    return bad(why);
                }
            }
            (true, None) if self.proxy_url.is_some() => {
                return bad("proxy_url goes with server; a kubeconfig cluster sets its own proxy-url".into());
            }
            (true, None) => {}
        }
        for field in self.fields.keys() {
            check_field_name(field, catalog).or_else(|why| bad(format!("field `{field}` {why}")))?;
        }
        self.check_namespaces().or_else(bad)
    }

    /// `namespaces` are namespace names (RFC 1123 labels: 1-63 lower-case letters, digits and
    /// inner '-', as Kubernetes requires), each once; `cluster_resources` goes with them.
    fn check_namespaces(&self) -> std::result::Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for namespace in &self.namespaces {
            if !is_label(namespace, MAX_NAMESPACE_LEN) {
                return Err(format!(
                    "namespaces: `{namespace}` is not a namespace name (1-63 lower-case letters, digits and inner '-')"
                ));
            }
            if !seen.insert(namespace) {
                return Err(format!("namespaces: `{namespace}` is listed twice"));
            }
        }
        if self.cluster_resources && self.namespaces.is_empty() {
            return Err("cluster_resources goes with namespaces (without them every resource is read)".into());
        }
        Ok(())
    }

    /// Why a cluster-scoped resource is not read from this cluster (`None` when it is): the
    /// cluster is read only in its `namespaces`, without `cluster_resources`.
    pub fn cluster_scoped_skipped(&self) -> Option<String> {
        (!self.namespaces.is_empty() && !self.cluster_resources).then(|| {
            format!(
                "cluster {} is read only in namespaces {} (cluster_resources: false): a cluster-scoped resource is not read",
                self.name,
                self.namespaces.join(", ")
            )
        })
    }

    /// A Kubernetes client for this cluster. Reads credentials now, so a rotated token file is
    /// picked up by the next client; an exec plugin (of the entry or of its kubeconfig user) may
    /// run for `exec_timeout` at most.
    ///
    /// # Errors
    /// [`Error::Registry`] naming the cluster: its kubeconfig, CA or credentials cannot be read,
    /// or its exec plugin failed or timed out.
    pub async fn client(&self, exec_timeout: Duration) -> Result<kube::Client> {
        let config = self.kube_config(exec_timeout).await?;
        if config.accept_invalid_certs {
            tracing::warn!(cluster = %self.name, "TLS verification is off for this cluster (insecure_skip_tls_verify)");
        }
        if let Some(proxy_url) = &config.proxy_url {
            tracing::debug!(cluster = %self.name, proxy = %proxy::redacted(proxy_url), "reaching the API server through a proxy");
        }
        kube::Client::try_from(config).map_err(|err| self.error(format!("cannot build a client: {err}")))
    }

    async fn kube_config(&self, exec_timeout: Duration) -> Result<kube::Config> {
        let kubeconfig = match (&self.kubeconfig, &self.secret.kubeconfig) {
            (Some(path), _) => Some((
                Kubeconfig::read_from(path)
                    .map_err(|err| self.error(format!("cannot read kubeconfig {}: {err}", path.display())))?,
                path.display().to_string(),
            )),
            // Checked when the Secret was read; a parse error could quote a credential.
            (None, Some(text)) => Some((
                Kubeconfig::from_yaml(text.expose_secret())
                    .map_err(|_| self.error("the kubeconfig from its Secret is not valid".into()))?,
                "from its Secret".to_owned(),
            )),
            (None, None) => None,
        };
        let (mut config, proxy_url) = match (kubeconfig, &self.server) {
            (Some((mut kubeconfig, origin)), _) => {
                // The proxy is chosen below, as kubectl does; kube is not to apply `NO_PROXY` to it.
                let proxy_url = proxy::kubeconfig_proxy_url(&kubeconfig, self.context.as_deref());
                for cluster in kubeconfig.clusters.iter_mut().filter_map(|named| named.cluster.as_mut()) {
                    cluster.proxy_url = None;
                }
                let options = KubeConfigOptions { context: self.context.clone(), ..Default::default() };
                let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|err| self.error(format!("kubeconfig {origin}: {err}")))?;
                // kube reads `tokenFile` as it is; kubectl (client-go) trims surrounding
                // whitespace, and the files `echo` and Secret mounts write end in a newline.
                if config.auth_info.token.is_none()
                    && let Some(file) = config.auth_info.token_file.take()
                {
                    config.auth_info.token = Some(read_token(Path::new(&file)).map_err(|why| self.error(why))?);
                }
                credentials::run_kubeconfig_exec(&self.name, &mut config.auth_info, exec_timeout)
                    .await
                    .map_err(|why| self.error(why))?;
                (config, proxy_url)
            }
            (None, Some(server)) => {
                let url = server.parse().map_err(|_| self.error(format!("server `{server}` is not a URL")))?;
                let mut config = kube::Config::new(url);
                config.root_cert = self.ca_certificates()?;
                credentials::apply(self, &mut config.auth_info, exec_timeout).await.map_err(|why| self.error(why))?;
                (config, self.proxy_url.clone().map(|ProxyUrl(url)| url))
            }
            (None, None) => return Err(self.error("no server and no kubeconfig".into())),
        };
        config.proxy_url = proxy::choose(&config.cluster_url, proxy_url.as_deref(), &ProxyEnv::from_env())
            .map_err(|why| self.error(why))?;
        config.accept_invalid_certs |= self.insecure_skip_tls_verify;
        if self.tls_server_name.is_some() {
            config.tls_server_name.clone_from(&self.tls_server_name);
        }
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(READ_TIMEOUT);
        // Retries are the queue's business: a failed page fails the job, which is retried with backoff.
        config.default_retry = false;
        Ok(config)
    }

    /// The CA certificates as DER, from `ca_file` or `ca_data`; none means the system roots.
    fn ca_certificates(&self) -> Result<Option<Vec<Vec<u8>>>> {
        let pem_text = match (&self.ca_file, &self.ca_data) {
            (Some(path), _) => std::fs::read(path)
                .map_err(|err| self.error(format!("cannot read ca_file {}: {err}", path.display())))?,
            (None, Some(data)) => data.clone().into_bytes(),
            (None, None) => return Ok(None),
        };
        let certificates = pem::parse_many(&pem_text).map_err(|err| self.error(format!("CA is not PEM: {err}")))?;
        if certificates.is_empty() {
            return Err(self.error("the CA holds no certificate".into()));
        }
        Ok(Some(certificates.into_iter().map(pem::Pem::into_contents).collect()))
    }

    /// Forgets what this cluster's exec plugin (its own or its kubeconfig user's) printed, so
    /// the next client runs it again: after an error from the cluster (a token revoked before its
    /// expiry), as client-go does on 401.
    pub fn forget_kept_credentials(&self) {
        exec::forget(&self.name);
    }

    fn error(&self, why: String) -> Error {
        Error::Registry(format!("cluster {}: {why}", self.name))
    }
}

#[cfg(test)]
mod tests;
