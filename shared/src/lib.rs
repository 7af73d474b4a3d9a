//! kubecensus: a PostgreSQL copy of many Kubernetes clusters' resources in kubequery's schema.
//!
//! This crate holds what the `scheduler` and `worker` binaries share, by layer:
//!
//! - [`model`]: what kubecensus knows without I/O: the table catalog, flattening objects into
//!   rows, Kubernetes quantities;
//! - [`source`]: where objects come from: the cluster registry (a name to a Kubernetes client),
//!   the proxy a cluster is reached through, and paged listing from a cluster's API;
//! - [`queue`]: the job message and the JetStream stream and consumer it goes through;
//! - [`store`]: PostgreSQL: names in SQL, the tables, the replace of a cluster's rows, `runs`;
//! - [`ops`]: running the binaries: command-line settings, logging, signals, the admin endpoint
//!   and metrics.
//!
//! [`error`] is the one error type, and says what the worker does with each error.

pub mod error;
pub mod model;
pub mod ops;
pub mod queue;
pub mod source;
pub mod store;

pub use error::{Error, Result};
