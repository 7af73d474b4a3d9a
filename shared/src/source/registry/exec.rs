//! Running exec credential plugins, and keeping what they print until it expires.
//!
//! A plugin prints an ExecCredential (`client.authentication.k8s.io/v1`,
//! <https://kubernetes.io/docs/reference/access-authn-authz/authentication/#input-and-output-formats>):
//! a `status.token`, or `status.clientCertificateData` and `status.clientKeyData`, with an
//! optional `status.expirationTimestamp`. kube would run a plugin three times for each client it
//! builds (TLS identity, validity, token), each a blocking `std::process::Command::output()` with
//! no time limit; kubecensus runs it here instead, for `server:` entries and for kubeconfig users
//! alike: once, as a child process of the async runtime, within a time limit (`--exec-timeout`),
//! and keeps a credential with an expiry for every client built until [`MIN_REMAINING`] before
//! it expires, as kubectl keeps it for a process. The plugin gets `KUBERNETES_EXEC_INFO` (not
//! interactive; with the cluster's details when its kubeconfig entry says
//! `provideClusterInfo`), no terminal and no stdin, and runs in a process group of its own: on
//! timeout, or when the job that needed it is cancelled, the whole group is killed (a shell
//! script's children too). What it prints on stdout never reaches a log or an error message;
//! the first [`STDERR_CHARS`] characters of its stderr do.

use std::{
    collections::HashMap,
    process::Stdio,
    sync::{LazyLock, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};

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

/// Credentials with an expiry, by cluster, each with the key of the plugin that printed it (its
/// command, arguments, environment, version and cluster details).
static KEPT: LazyLock<Mutex<HashMap<String, (String, Kept)>>> = LazyLock::new(Mutex::default);

/// The most a plugin may print on stdout: an ExecCredential with a certificate chain is a few KiB.
const STDOUT_BYTES: usize = 1 << 20;

/// An exec plugin to run for a cluster.
pub struct Invocation<'a> {
    /// The cluster whose credential it prints.
    pub cluster: &'a str,
    pub plugin: &'a ExecPlugin,
    /// `spec.cluster` of `KUBERNETES_EXEC_INFO`, for a kubeconfig user with `provideClusterInfo`.
    pub cluster_info: Option<serde_json::Value>,
    /// How long the plugin may run before it is killed.
    pub timeout: Duration,
}

impl Invocation<'_> {
    /// The key of the plugin's kept credential.
    fn key(&self) -> String {
        serde_json::to_string(&(self.plugin, &self.cluster_info)).unwrap_or_default()
    }
}

/// Forgets what the cluster's plugin printed, so the next client runs it again.
pub fn forget(cluster: &str) {
    KEPT.lock().expect("exec cache lock").remove(cluster);
}

/// The plugin's credential: the kept one while it is valid long enough, else a new one.
///
/// # Errors
/// The plugin cannot be started, runs longer than the timeout (it is killed), fails (with the
/// start of its stderr), or prints no ExecCredential with a token or a certificate and key.
pub async fn credential(invocation: Invocation<'_>) -> Result<ExecCredential, String> {
    let key = invocation.key();
    let fresh_until = Utc::now() + MIN_REMAINING;
    if let Some((kept_key, (credential, expiry))) = KEPT.lock().expect("exec cache lock").get(invocation.cluster)
        && *kept_key == key
        && *expiry > fresh_until
    {
        return Ok(credential.clone());
    }
    let (credential, expiry) = run(&invocation).await?;
    if let Some(expiry) = expiry {
        let kept = (key, (credential.clone(), expiry));
        KEPT.lock().expect("exec cache lock").insert(invocation.cluster.to_owned(), kept);
    }
    Ok(credential)
}

/// A plugin's process group, killed when this is dropped: after the plugin ended, only what it
/// left behind; on timeout or cancellation, the plugin too.
struct ProcessGroup(Option<rustix::process::Pid>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            // ESRCH (nothing left of the group) is the usual case.
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

/// Reads `reader` to its end, keeping its first `most` bytes in `kept`: a plugin that writes
/// more never blocks on a full pipe.
async fn read_capped(mut reader: impl AsyncRead + Unpin, most: usize, kept: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; 8192];
    let mut whole = true;
    loop {
        let read = reader.read(&mut chunk).await?;
        if read == 0 {
            return Ok(whole);
        }
        let room = most.saturating_sub(kept.len());
        whole &= read <= room;
        kept.extend_from_slice(&chunk[..read.min(room)]);
    }
}

/// The start of a plugin's stderr, for an error message.
fn stderr_text(stderr: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(stderr).trim().chars().take(STDERR_CHARS).collect();
    if text.is_empty() { "(nothing on stderr)".to_owned() } else { text }
}

/// Runs the plugin once, within its timeout, and reads its ExecCredential.
async fn run(invocation: &Invocation<'_>) -> Result<(ExecCredential, Option<DateTime<Utc>>), String> {
    let (plugin, timeout) = (invocation.plugin, invocation.timeout);
    let name = &plugin.command;
    let mut spec = json!({"interactive": false});
    if let Some(cluster) = &invocation.cluster_info {
        spec["cluster"] = cluster.clone();
    }
    let info = json!({"apiVersion": plugin.api_version, "kind": "ExecCredential", "spec": spec});
    let mut child = tokio::process::Command::new(name)
        .args(&plugin.args)
        .envs(&plugin.env)
        .env("KUBERNETES_EXEC_INFO", info.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("cannot run the exec plugin `{name}`: {err}"))?;
    let _group = ProcessGroup(child.id().and_then(|pid| rustix::process::Pid::from_raw(pid as i32)));
    let (stdout, stderr) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let ran = tokio::time::timeout(timeout, async {
        let (whole, _, status) = tokio::try_join!(
            read_capped(stdout, STDOUT_BYTES, &mut out),
            read_capped(stderr, STDERR_CHARS * 4, &mut err),
            child.wait()
        )?;
        std::io::Result::Ok((whole, status))
    })
    .await;
    let (whole, status) = match ran {
        Ok(result) => result.map_err(|err| format!("the exec plugin `{name}`: {err}"))?,
        Err(_) => {
            // Killed with its group when `_group` drops; reaped here.
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(format!(
                "the exec plugin `{name}` did not finish within {} (--exec-timeout) and was killed; its stderr: {}",
                humantime::format_duration(timeout),
                stderr_text(&err)
            ));
        }
    };
    if !status.success() {
        return Err(format!("the exec plugin `{name}` failed ({status}): {}", stderr_text(&err)));
    }
    if !whole {
        return Err(format!("the exec plugin `{name}` printed more than {STDOUT_BYTES} bytes"));
    }
    let parsed: Output = serde_json::from_slice(&out).map_err(|err| {
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
