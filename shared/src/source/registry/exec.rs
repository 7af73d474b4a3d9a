//! Running exec credential plugins, and keeping what they print until it expires.
//!
//! A plugin prints an ExecCredential (`client.authentication.k8s.io/v1`,
//! <https://kubernetes.io/docs/reference/access-authn-authz/authentication/#input-and-output-formats>):
//! a `status.token`, or `status.clientCertificateData` and `status.clientKeyData`, with an
//! optional `status.expirationTimestamp`. kube runs a plugin three times for each client it builds
//! (TLS identity, validity, token); kubecensus runs it here instead, once, and keeps a credential
//! with an expiry for every client built until [`MIN_REMAINING`] before it expires, as kubectl
//! keeps it for a process. The plugin gets `KUBERNETES_EXEC_INFO` (not interactive) and no
//! terminal; what it prints never reaches a log or an error message.

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    sync::{LazyLock, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use super::ExecPlugin;

/// A kept credential is used only while it stays valid at least this long: a client built with it
/// lives up to 5 minutes in a worker.
const MIN_REMAINING: Duration = Duration::from_secs(6 * 60);
/// The most of a failed plugin's stderr an error message quotes, in characters.
const STDERR_CHARS: usize = 200;

/// What a plugin printed.
#[derive(Clone)]
pub enum ExecCredential {
    Token(SecretString),
    /// A client certificate and its key, both PEM.
    Certificate(String, SecretString),
}

#[derive(Deserialize)]
struct Output {
    status: Option<Status>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    token: Option<String>,
    client_certificate_data: Option<String>,
    client_key_data: Option<String>,
    expiration_timestamp: Option<DateTime<Utc>>,
}

/// A credential and when it expires.
type Kept = (ExecCredential, DateTime<Utc>);

/// Credentials with an expiry, by plugin (its command, arguments, environment and version).
static KEPT: LazyLock<Mutex<HashMap<String, Kept>>> = LazyLock::new(Mutex::default);

/// The key of a plugin's kept credential.
fn key(plugin: &ExecPlugin) -> String {
    serde_json::to_string(plugin).unwrap_or_default()
}

/// Forgets the plugin's kept credential.
pub fn forget(plugin: &ExecPlugin) {
    KEPT.lock().expect("exec cache lock").remove(&key(plugin));
}

/// The plugin's credential: the kept one while it is valid long enough, else a new one.
pub fn credential(plugin: &ExecPlugin) -> Result<ExecCredential, String> {
    let key = key(plugin);
    let fresh_until = Utc::now() + MIN_REMAINING;
    if let Some((credential, expiry)) = KEPT.lock().expect("exec cache lock").get(&key)
        && *expiry > fresh_until
    {
        return Ok(credential.clone());
    }
    let (credential, expiry) = run(plugin)?;
    if let Some(expiry) = expiry {
        KEPT.lock().expect("exec cache lock").insert(key, (credential.clone(), expiry));
    }
    Ok(credential)
}

/// Runs the plugin once and reads its ExecCredential.
fn run(plugin: &ExecPlugin) -> Result<(ExecCredential, Option<DateTime<Utc>>), String> {
    let name = &plugin.command;
    let info = json!({"apiVersion": plugin.api_version, "kind": "ExecCredential", "spec": {"interactive": false}});
    let output = Command::new(name)
        .args(&plugin.args)
        .envs(&plugin.env)
        .env("KUBERNETES_EXEC_INFO", info.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run the exec plugin `{name}`: {err}"))?;
    if !output.status.success() {
        let stderr: String = String::from_utf8_lossy(&output.stderr).trim().chars().take(STDERR_CHARS).collect();
        return Err(format!("the exec plugin `{name}` failed ({}): {stderr}", output.status));
    }
    let parsed: Output = serde_json::from_slice(&output.stdout).map_err(|err| {
        format!("the exec plugin `{name}` printed no ExecCredential (line {}, column {})", err.line(), err.column())
    })?;
    let status = parsed.status.ok_or_else(|| format!("the exec plugin `{name}` printed no status"))?;
    let credential = match (status.token, status.client_certificate_data, status.client_key_data) {
        (Some(token), _, _) => ExecCredential::Token(SecretString::from(token)),
        (None, Some(certificate), Some(key)) => ExecCredential::Certificate(certificate, SecretString::from(key)),
        _ => return Err(format!("the exec plugin `{name}` printed neither a token nor a client certificate and key")),
    };
    Ok((credential, status.expiration_timestamp))
}
