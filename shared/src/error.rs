//! The library's one error type: each variant keeps its cause (`#[source]`) and the context
//! that makes its message readable, and says, in [`Error::disposition`] alone, what the worker
//! does with a job that ended in it.
//!
//! The shape follows kube-rs's controller-rs (`src/lib.rs`: an error enum whose variants wrap
//! `kube::Error`, `serde_json::Error`, ..., and a `metric_label` for its error counter) and
//! `underway`'s job errors (retry, fatal, timed out). Adding a condition the worker reacts to
//! is adding a variant, its arm in [`Error::disposition`] and its [`Error::metric_label`]: both
//! matches are exhaustive, so the compiler points at what is left to decide.

use std::{path::PathBuf, time::Duration};

use chrono::{DateTime, Utc};
use http::StatusCode;
use uuid::Uuid;

/// A boxed cause from a library whose error types are many (async-nats has one per call).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong in the shared library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // What the files and settings say: fixed by changing them.
    /// The catalog, or a `--custom-resources` file, breaks one of its rules.
    #[error("catalog: {0}")]
    Catalog(String),
    /// The registry (a file entry, a Secret, `namespace_fields`) breaks one of its rules.
    #[error("registry: {0}")]
    Registry(String),
    /// A setting of the connection to PostgreSQL (`database`) or NATS (`queue`) cannot be used:
    /// a URL, clashing flags, a secret file that cannot be read.
    #[error("{service}: {why}")]
    Settings {
        /// `database` or `queue`.
        service: &'static str,
        why: String,
    },
    /// A file the settings name cannot be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    ReadFile {
        /// What the file is for: `custom resources file`, `token file`.
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A YAML document is not what it should be.
    #[error("{what}: {source}")]
    Yaml {
        /// Which document, and what it should hold: `registry file clusters.yaml`.
        what: String,
        #[source]
        source: serde_norway::Error,
    },

    /// An explorer request's parameters cannot be used: a label selector, a cursor, a filter on
    /// a column that does not exist, a page size out of range. The message names the parameter.
    #[error("query: {0}")]
    Query(String),

    // A cluster's API.
    /// A request to a cluster got no complete answer: refused, reset, TLS, a proxy that is down.
    #[error("cluster: {request}: {}", error_chain(.source))]
    ClusterRequest {
        /// `GET <path>`, and what part of the exchange failed.
        request: String,
        #[source]
        source: kube::Error,
    },
    /// A request to a cluster could not even be built (a bad path or parameter).
    #[error("cluster: bad request {request}: {source}")]
    BadRequest {
        request: String,
        #[source]
        source: BoxError,
    },
    /// The cluster answered with an error status (and the `Status` object's message).
    #[error("cluster: GET {path}: {status}{}", spaced(.reason))]
    ClusterStatus { path: String, status: StatusCode, reason: String },
    /// The cluster asked us to come back later (429, or 503 with `Retry-After`).
    #[error("cluster: GET {path}: {status}{} (retry after {retry_after:?})", spaced(.reason))]
    Throttled { path: String, status: StatusCode, reason: String, retry_after: Duration },
    /// A continue token expired mid-listing (HTTP 410): the listing must start over.
    #[error("cluster: GET {path}: 410 Gone{}", spaced(.reason))]
    Expired { path: String, reason: String },
    /// The cluster does not serve this resource (HTTP 404, or no such kind in its discovery).
    #[error("cluster does not serve this resource: {0}")]
    NotServed(String),
    /// The cluster refused the request for lack of a permission (HTTP 403). `reason` is the API
    /// server's `Status` message, which names the verb, the resource and the scope (`pods is
    /// forbidden: User "system:serviceaccount:x:y" cannot list resource "pods" in API group ""
    /// at the cluster scope`; kube-apiserver's `responsewriters.forbiddenMessage`).
    #[error(
        "cluster: GET {path}: 403 Forbidden{} (the credential lacks this permission: grant it, or name in the \
         registry entry's `namespaces:` only the namespaces it may read)",
        spaced(.reason)
    )]
    Forbidden { path: String, reason: String },
    /// The resource is cluster-scoped and the cluster is read only in some namespaces (its
    /// registry entry's `namespaces` without `cluster_resources: true`): the reason.
    #[error("{0}")]
    OutsideNamespaces(String),
    /// A cluster's answer is not the JSON it should be.
    #[error("cluster: {what} is not valid JSON: {source}")]
    ClusterJson {
        /// Which answer: `the list of pods`, `GET /version`.
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A cluster's answer lacks what kubecensus needs of it (a uid, a preferred version).
    #[error("cluster: {0}")]
    ClusterAnswer(String),

    // PostgreSQL.
    /// PostgreSQL cannot be reached, or refused us.
    #[error("database: cannot connect to PostgreSQL at {url}: {source}")]
    DatabaseConnect {
        /// The URL without its credentials.
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// A statement failed.
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    /// The migrations of `shared/migrations` failed.
    #[error("database: migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database cannot be used as it is: a server too old, a column of another type, a name
    /// PostgreSQL cannot take.
    #[error("database: {0}")]
    Schema(String),
    /// Another job of the same (cluster, table) replaced the rows while this one listed: the
    /// hashes it diffed against are stale, and the next attempt starts from the new rows.
    #[error(
        "database: another job replaced {cluster}'s rows of {table} while this one listed (run {current:?}, \
         listed against {base:?}); the next attempt starts from its rows"
    )]
    StaleBase { cluster: String, table: String, current: Option<Uuid>, base: Option<Uuid> },
    /// DDL (a schema upgrade) whose locks were not granted within `lock_timeout` at any of its
    /// tries: a long transaction holds them.
    #[error(
        "database: {what}: a lock was not granted within {lock_timeout:?} in {tries} tries (a long transaction \
         holds it: see pg_locks): {source}"
    )]
    LockTimeout {
        what: String,
        lock_timeout: Duration,
        tries: u32,
        #[source]
        source: sqlx::Error,
    },
    /// A table of the job changed shape (a column added, the table converted) after the job read
    /// its hashes: the next attempt starts from the rows as they are now.
    #[error(
        "database: {table} changed shape (a column added) while this job listed {cluster}'s rows; the next attempt starts from its rows"
    )]
    ShapeChanged { cluster: String, table: String },
    /// The cluster was pruned (missing from every registry source) while the job listed.
    #[error(
        "job: cluster {cluster} was pruned at {removed_at} (missing from every registry source) while this job listed"
    )]
    ClusterPruned { cluster: String, removed_at: DateTime<Utc> },

    // NATS.
    /// NATS cannot be reached, refused the credentials, or did not answer a request.
    #[error("queue: {what}: {source}")]
    Nats {
        /// What was asked: `cannot connect to NATS at nats://...`, `stream KUBECENSUS_JOBS`.
        what: String,
        #[source]
        source: BoxError,
    },

    // The job itself.
    /// A job message that can never succeed: not JSON, an unknown cluster or table.
    #[error("job: {0}")]
    MalformedJob(String),
    /// A job message that is not JSON of a job.
    #[error("job: not a job message: {0}")]
    JobJson(#[source] serde_json::Error),
    /// The worker is stopping (SIGTERM past its grace period).
    #[error("the worker is shutting down")]
    ShuttingDown,
    /// The job ran longer than `--job-timeout`.
    #[error("the job took longer than {0:?} (--job-timeout)")]
    TimedOut(Duration),
}

/// A `Result` with this library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the worker does with a job that ended in an error (the shape of `underway`'s job errors:
/// retry, fatal, timed out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Give the job back to the queue at once: it costs no attempt and is never terminated.
    HandBack,
    /// Try again later, after the cluster's `Retry-After` when it gave one, else after the
    /// [`crate::queue::RetryPolicy`]'s delay; fail once the attempts are spent.
    Retry { after: Option<Duration> },
    /// The cluster does not serve the resource, or is read only in namespaces and the resource
    /// is cluster-scoped: record `skipped`, never retry.
    Skip,
    /// A permission is missing (403): record `failed` at once. Another attempt seconds later
    /// would get the same answer (RBAC is changed by people); the next scheduled job tries again.
    Fail,
    /// The job can never succeed (its message is unusable, its cluster is gone): record
    /// `rejected`, never retry.
    Reject,
}

impl Error {
    /// What the worker does with a job that ended in this error: the one place that decides it.
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::ShuttingDown => Disposition::HandBack,
            Self::NotServed(_) | Self::OutsideNamespaces(_) => Disposition::Skip,
            Self::Forbidden { .. } | Self::Query(_) => Disposition::Fail,
            Self::MalformedJob(_) | Self::JobJson(_) | Self::ClusterPruned { .. } => Disposition::Reject,
            Self::Throttled { retry_after, .. } => Disposition::Retry { after: Some(*retry_after) },
            Self::Catalog(_)
            | Self::Registry(_)
            | Self::Settings { .. }
            | Self::ReadFile { .. }
            | Self::Yaml { .. }
            | Self::ClusterRequest { .. }
            | Self::BadRequest { .. }
            | Self::ClusterStatus { .. }
            | Self::Expired { .. }
            | Self::ClusterJson { .. }
            | Self::ClusterAnswer(_)
            | Self::DatabaseConnect { .. }
            | Self::Sql(_)
            | Self::Migrate(_)
            | Self::Schema(_)
            | Self::StaleBase { .. }
            | Self::ShapeChanged { .. }
            | Self::LockTimeout { .. }
            | Self::Nats { .. }
            | Self::TimedOut(_) => Disposition::Retry { after: None },
        }
    }

    /// Whether the error came from the cluster's API (its client is then dropped, so the next
    /// attempt connects afresh and re-reads credentials); a database error, a timeout or a
    /// shutdown says nothing about the client.
    pub fn came_from_cluster(&self) -> bool {
        matches!(
            self,
            Self::ClusterRequest { .. }
                | Self::ClusterStatus { .. }
                | Self::Throttled { .. }
                | Self::Forbidden { .. }
                | Self::Expired { .. }
                | Self::ClusterJson { .. }
                | Self::ClusterAnswer(_)
        )
    }

    /// Whether the error may have left a database connection out of step with its session (a
    /// statement, a COPY above all, failed half-way): such a connection is never reused.
    pub fn taints_connection(&self) -> bool {
        matches!(self, Self::Sql(_))
    }

    /// The error's kind in one bounded word, for logs and the `error` label of
    /// `kubecensus_job_errors_total`: never a cluster's name, a path or a message.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Catalog(_) => "catalog",
            Self::Registry(_) => "registry",
            Self::Settings { .. } => "settings",
            Self::ReadFile { .. } => "read_file",
            Self::Yaml { .. } => "yaml",
            Self::Query(_) => "query",
            Self::ClusterRequest { .. } => "cluster_unreachable",
            Self::BadRequest { .. } => "bad_request",
            Self::ClusterStatus { .. } => "cluster_status",
            Self::Throttled { .. } => "throttled",
            Self::Expired { .. } => "continue_expired",
            Self::NotServed(_) => "not_served",
            Self::Forbidden { .. } => "forbidden",
            Self::OutsideNamespaces(_) => "outside_namespaces",
            Self::ClusterJson { .. } => "cluster_json",
            Self::ClusterAnswer(_) => "cluster_answer",
            Self::DatabaseConnect { .. } => "database_connect",
            Self::Sql(_) => "database",
            Self::Migrate(_) => "migration",
            Self::Schema(_) => "schema",
            Self::StaleBase { .. } | Self::ShapeChanged { .. } => "replace_conflict",
            Self::LockTimeout { .. } => "lock_timeout",
            Self::ClusterPruned { .. } => "cluster_pruned",
            Self::Nats { .. } => "nats",
            Self::MalformedJob(_) | Self::JobJson(_) => "malformed_job",
            Self::ShuttingDown => "shutdown",
            Self::TimedOut(_) => "timeout",
        }
    }

    /// A [`Self::Settings`] error of the connection to PostgreSQL.
    pub fn database_setting(why: String) -> Self {
        Self::Settings { service: "database", why }
    }

    /// A [`Self::Settings`] error of the connection to NATS.
    pub fn nats_setting(why: String) -> Self {
        Self::Settings { service: "queue", why }
    }

    /// A [`Self::Nats`] error: `what` was asked of NATS, `source` is its answer.
    pub fn nats(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Nats { what: what.into(), source: source.into() }
    }
}

/// ` reason`, or nothing for an empty reason (a status without a message).
fn spaced(reason: &str) -> String {
    if reason.is_empty() { String::new() } else { format!(" {reason}") }
}

/// How hyper-util's error for a failed proxy `CONNECT` begins (its `TunnelError`, which it
/// does not export): said plainly in [`error_chain`], so a run's error names the proxy.
const TUNNEL_ERROR: &str = "tunnel error: ";

/// An error and its causes, `outer: inner: root`: kube's own message often hides the cause
/// (a refused connection, a certificate the CA did not sign, a proxy that is down) in its
/// source chain.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = match cause.to_string() {
            tunnel if tunnel.starts_with(TUNNEL_ERROR) => {
                format!("the proxy's tunnel (HTTP CONNECT) failed: {}", &tunnel[TUNNEL_ERROR.len()..])
            }
            other => other,
        };
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disposition_and_the_client_follow_the_cause() {
        assert_eq!(Error::ShuttingDown.disposition(), Disposition::HandBack);
        assert!(!Error::ShuttingDown.came_from_cluster());
        assert!(!Error::TimedOut(Duration::from_secs(1)).came_from_cluster());
        assert!(!Error::Sql(sqlx::Error::PoolTimedOut).came_from_cluster());
        let refused = Error::ClusterStatus {
            path: "/api/v1/pods".into(),
            status: StatusCode::UNAUTHORIZED,
            reason: "Unauthorized".into(),
        };
        assert!(refused.came_from_cluster());
        assert_eq!(refused.to_string(), "cluster: GET /api/v1/pods: 401 Unauthorized Unauthorized");
        assert_eq!(Error::NotServed("404".into()).disposition(), Disposition::Skip);
        assert_eq!(Error::OutsideNamespaces("cluster-scoped".into()).disposition(), Disposition::Skip);
        let forbidden = Error::Forbidden { path: "/api/v1/pods".into(), reason: "pods is forbidden".into() };
        assert_eq!((forbidden.disposition(), forbidden.metric_label()), (Disposition::Fail, "forbidden"));
        let throttled = Error::Throttled {
            path: "/api/v1/pods".into(),
            status: StatusCode::TOO_MANY_REQUESTS,
            reason: String::new(),
            retry_after: Duration::from_secs(7),
        };
        assert_eq!(throttled.disposition(), Disposition::Retry { after: Some(Duration::from_secs(7)) });
        let pruned = Error::ClusterPruned { cluster: "c1".into(), removed_at: Utc::now() };
        assert_eq!(pruned.disposition(), Disposition::Reject);
        let stale =
            Error::StaleBase { cluster: "c1".into(), table: "kubernetes_pods".into(), current: None, base: None };
        assert_eq!(
            (stale.disposition(), stale.metric_label()),
            (Disposition::Retry { after: None }, "replace_conflict")
        );
    }

    #[test]
    fn causes_stay_reachable_as_sources() {
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let err = Error::ClusterJson { what: "the list of pods".into(), source: json };
        let source = std::error::Error::source(&err).expect("a source");
        assert!(source.is::<serde_json::Error>());
        assert!(err.to_string().starts_with("cluster: the list of pods is not valid JSON: "), "{err}");
    }
}
