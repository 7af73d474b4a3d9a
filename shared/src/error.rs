//! The library's one error type.

use std::time::Duration;

/// Everything that can go wrong in the shared library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("catalog: {0}")]
    Catalog(String),
    #[error("registry: {0}")]
    Registry(String),
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
}

/// A `Result` with this library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
