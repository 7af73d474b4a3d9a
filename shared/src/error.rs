//! The library's one error type, and what the worker does with a job that ended in each.

use std::time::Duration;

/// Everything that can go wrong in the shared library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("catalog: {0}")]
    Catalog(String),
    #[error("registry: {0}")]
    Registry(String),
    /// A job message that can never succeed (not JSON, an unknown cluster or table).
    #[error("job: {0}")]
    Job(String),
    #[error("queue: {0}")]
    Queue(String),
    #[error("database: {0}")]
    Database(String),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    /// The cluster could not be reached, refused us, or answered with an error.
    #[error("cluster: {0}")]
    Cluster(String),
    /// The cluster asked us to come back later.
    #[error("cluster: {message} (retry after {retry_after:?})")]
    Throttled { message: String, retry_after: Duration },
    /// A continue token expired mid-listing (HTTP 410): the listing must start over.
    #[error("cluster: {0}")]
    Expired(String),
    /// The cluster does not serve this resource (HTTP 404 on the list).
    #[error("cluster does not serve this resource: {0}")]
    NotServed(String),
    /// The cluster refused the request for lack of a permission (HTTP 403): the API server's
    /// `Status` message, which names the verb, the resource and the scope (`pods is forbidden:
    /// User "system:serviceaccount:x:y" cannot list resource "pods" in API group "" at the
    /// cluster scope`; kube-apiserver's `responsewriters.forbiddenMessage`).
    #[error(
        "cluster: {0} (the credential lacks this permission: grant it, or register the cluster with `namespaces:`)"
    )]
    Forbidden(String),
    /// The resource is cluster-scoped and the cluster is read only in some namespaces (its
    /// registry entry's `namespaces` without `cluster_resources: true`).
    #[error("{0}")]
    OutsideNamespaces(String),
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
    /// The cluster does not serve the resource, or the cluster is read only in namespaces and
    /// the resource is cluster-scoped: record `skipped`, never retry.
    Skip,
    /// A permission is missing (403): record `failed` at once. Another attempt seconds later
    /// would get the same answer (RBAC changes by hand); the next scheduled job tries again.
    Fail,
    /// The message itself is unusable: record `rejected`, never retry.
    Reject,
}

impl Error {
    /// What the worker does with a job that ended in this error.
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::ShuttingDown => Disposition::HandBack,
            Self::NotServed(_) | Self::OutsideNamespaces(_) => Disposition::Skip,
            Self::Forbidden(_) => Disposition::Fail,
            Self::Job(_) => Disposition::Reject,
            Self::Throttled { retry_after, .. } => Disposition::Retry { after: Some(*retry_after) },
            _ => Disposition::Retry { after: None },
        }
    }

    /// Whether the error came from the cluster's API (its client is then dropped, so the next
    /// attempt connects afresh and re-reads credentials); a database error, a timeout or a
    /// shutdown says nothing about the client.
    pub fn came_from_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_) | Self::Throttled { .. } | Self::Expired(_) | Self::Forbidden(_))
    }

    /// A short label for the error's kind, for logs and metrics (`cluster`, `database`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Catalog(_) => "catalog",
            Self::Registry(_) => "registry",
            Self::Job(_) => "job",
            Self::Queue(_) => "queue",
            Self::Database(_) | Self::Sql(_) => "database",
            Self::Cluster(_) | Self::Expired(_) => "cluster",
            Self::Throttled { .. } => "throttled",
            Self::NotServed(_) => "not_served",
            Self::Forbidden(_) => "forbidden",
            Self::OutsideNamespaces(_) => "outside_namespaces",
            Self::ShuttingDown => "shutdown",
            Self::TimedOut(_) => "timeout",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shutdown_is_handed_back_and_only_cluster_errors_drop_the_client() {
        assert_eq!(Error::ShuttingDown.disposition(), Disposition::HandBack);
        assert!(!Error::ShuttingDown.came_from_cluster());
        assert!(!Error::TimedOut(Duration::from_secs(1)).came_from_cluster());
        assert!(!Error::Sql(sqlx::Error::PoolTimedOut).came_from_cluster());
        assert!(Error::Cluster("connection refused".into()).came_from_cluster());
        assert_eq!(Error::NotServed("404".into()).disposition(), Disposition::Skip);
        assert_eq!(Error::OutsideNamespaces("cluster-scoped".into()).disposition(), Disposition::Skip);
        assert_eq!(Error::Forbidden("403".into()).disposition(), Disposition::Fail);
        assert_eq!(
            Error::Throttled { message: "429".into(), retry_after: Duration::from_secs(7) }.disposition(),
            Disposition::Retry { after: Some(Duration::from_secs(7)) }
        );
    }
}
