//! Credentials of a `server:` cluster, of every kind kubectl takes: a bearer token (a file, an
//! environment variable, or a Secret's), a client certificate and key (files or a Secret's), and
//! an exec credential plugin (client-go's `client.authentication.k8s.io/v1` ExecCredential,
//! <https://kubernetes.io/docs/reference/access-authn-authz/authentication/#client-go-credential-plugins>).
//!
//! They are put into kube's [`AuthInfo`] when a client is built; an exec plugin is run then (and
//! what it printed kept until it expires, [`super::exec`]), a kubeconfig user's too
//! ([`run_kubeconfig_exec`]), so kube never runs one. Credentials from Secrets live in
//! [`SecretCredentials`], which never prints or serializes them.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use kube::config::{AuthInfo, ExecConfig};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{
    ClusterConfig,
    exec::{self, ExecCredential, Invocation},
    read_token,
};

/// The ExecCredential version asked of a plugin unless the entry says otherwise.
pub const EXEC_API_VERSION: &str = "client.authentication.k8s.io/v1";

/// An exec credential plugin: a command that prints an ExecCredential (a token, or a client
/// certificate and key) on stdout, as kubeconfig's `users[].user.exec`.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExecPlugin {
    /// The program; a relative path with a `/` is relative to the registry file.
    pub command: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment variables of the plugin's process.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The ExecCredential version the plugin speaks.
    #[serde(default = "exec_api_version")]
    pub api_version: String,
}

fn exec_api_version() -> String {
    EXEC_API_VERSION.to_owned()
}

/// Shows the command and arguments; of the environment only the names, as values may be secret.
impl std::fmt::Debug for ExecPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecPlugin")
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("api_version", &self.api_version)
            .finish()
    }
}

/// Credentials read from a Secret of the home cluster: held in memory only, never printed
/// (`Debug` says which are set) nor serialized.
#[derive(Clone, Default)]
pub struct SecretCredentials {
    /// A bearer token.
    pub token: Option<SecretString>,
    /// A client certificate (PEM) and its key (PEM).
    pub client_certificate: Option<(String, SecretString)>,
    /// A whole kubeconfig (Cluster API's `<cluster>-kubeconfig` Secret), already checked.
    pub kubeconfig: Option<SecretString>,
}

impl std::fmt::Debug for SecretCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretCredentials")
            .field("token", &self.token.is_some())
            .field("client_certificate", &self.client_certificate.is_some())
            .field("kubeconfig", &self.kubeconfig.is_some())
            .finish()
    }
}

/// Equal when every credential is: a rotated credential is a changed registry entry.
impl PartialEq for SecretCredentials {
    fn eq(&self, other: &Self) -> bool {
        let secret = |a: &Option<SecretString>, b: &Option<SecretString>| {
            a.as_ref().map(ExposeSecret::expose_secret) == b.as_ref().map(ExposeSecret::expose_secret)
        };
        let pair =
            |p: &Option<(String, SecretString)>| p.as_ref().map(|(c, k)| (c.clone(), k.expose_secret().to_owned()));
        secret(&self.token, &other.token)
            && secret(&self.kubeconfig, &other.kubeconfig)
            && pair(&self.client_certificate) == pair(&other.client_certificate)
    }
}

/// Checks that a `server:` entry has one bearer token at most, a client certificate with its
/// key, and some credential.
pub(super) fn check(cluster: &ClusterConfig) -> Result<(), String> {
    let tokens = [cluster.token_file.is_some(), cluster.token_env.is_some(), cluster.secret.token.is_some()];
    if tokens.iter().filter(|set| **set).count() > 1 {
        return Err("give one of token_file and token_env, not both".into());
    }
    if cluster.client_certificate_file.is_some() != cluster.client_key_file.is_some() {
        return Err("give client_certificate_file and client_key_file together".into());
    }
    let has_certificate = cluster.client_certificate_file.is_some() || cluster.secret.client_certificate.is_some();
    if !tokens.contains(&true) && !has_certificate && cluster.exec.is_none() {
        return Err("give a credential: token_file or token_env, client_certificate_file with client_key_file, \
                    or exec"
            .into());
    }
    Ok(())
}

/// Puts the cluster's credentials into `auth`: reads token files and environment variables now,
/// so a rotated token is picked up by the next client; runs its exec plugin (within `exec_timeout`).
pub(super) async fn apply(cluster: &ClusterConfig, auth: &mut AuthInfo, exec_timeout: Duration) -> Result<(), String> {
    auth.token = match (&cluster.token_file, &cluster.token_env, &cluster.secret.token) {
        (Some(path), _, _) => Some(read_token(path)?),
        (None, Some(var), _) => Some(
            std::env::var(var)
                .map(|token| SecretString::from(token.trim().to_owned()))
                .map_err(|_| format!("environment variable {var} (token_env) is not set"))?,
        ),
        (None, None, token) => token.clone(),
    };
    let path = |file: &PathBuf| file.to_string_lossy().into_owned();
    auth.client_certificate = cluster.client_certificate_file.as_ref().map(path);
    auth.client_key = cluster.client_key_file.as_ref().map(path);
    if let Some((certificate, key)) = &cluster.secret.client_certificate {
        put(ExecCredential::Certificate(certificate.clone(), key.clone()), auth);
    }
    if let Some(plugin) = &cluster.exec {
        let invocation = Invocation { cluster: &cluster.name, plugin, cluster_info: None, timeout: exec_timeout };
        put(exec::credential(invocation).await?, auth);
    }
    Ok(())
}

/// Runs a kubeconfig user's `exec` plugin here, within `timeout`, and puts what it printed into
/// `auth` in its place, so that kube, which would run it blocking and without a time limit when
/// it builds the client, does not. `cluster` names the cluster (or the home cluster) whose
/// credential it is: what the plugin printed is kept for it until it expires.
///
/// # Errors
/// The exec entry has no command, or the plugin failed ([`super::exec::credential`]).
pub async fn run_kubeconfig_exec(cluster: &str, auth: &mut AuthInfo, timeout: Duration) -> Result<(), String> {
    let Some(exec) = auth.exec.take() else { return Ok(()) };
    let cluster_info = exec.provide_cluster_info.then(|| serde_json::to_value(&exec.cluster).unwrap_or_default());
    let plugin = kubeconfig_plugin(exec)?;
    put(exec::credential(Invocation { cluster, plugin: &plugin, cluster_info, timeout }).await?, auth);
    Ok(())
}

/// A kubeconfig user's `exec` entry as a plugin: its `env` is a list of `{name, value}`.
fn kubeconfig_plugin(exec: ExecConfig) -> Result<ExecPlugin, String> {
    let env = exec.env.iter().flatten().filter_map(|var| Some((var.get("name")?.clone(), var.get("value")?.clone())));
    Ok(ExecPlugin {
        command: exec.command.ok_or("the kubeconfig user's exec entry has no command")?,
        args: exec.args.unwrap_or_default(),
        env: env.collect(),
        api_version: exec.api_version.unwrap_or_else(exec_api_version),
    })
}

/// Puts a token, or a client certificate and key, into `auth` (as kubeconfig's inline data).
fn put(credential: ExecCredential, auth: &mut AuthInfo) {
    match credential {
        ExecCredential::Token(token) => auth.token = Some(token),
        ExecCredential::Certificate(certificate, key) => {
            auth.client_certificate_data = Some(STANDARD.encode(certificate));
            auth.client_key_data = Some(SecretString::from(STANDARD.encode(key.expose_secret())));
        }
    }
}
