//! kubecensus: a PostgreSQL copy of many Kubernetes clusters' resources in kubequery's schema.
//!
//! This crate holds what the `scheduler` and `worker` binaries share, by layer, lowest first (a
//! module imports only from its own layer and those below it):
//!
//! - [`model`]: what kubecensus knows without I/O: the table catalog, flattening objects into
//!   rows, Kubernetes quantities;
//! - [`ops`]: running the binaries: command-line settings, credentials for the services,
//!   logging, signals, the admin endpoint and the metrics (which take plain labels, so every
//!   layer above records into them);
//! - [`source`]: where objects come from: the cluster registry (a name to a Kubernetes client),
//!   the proxy a cluster is reached through, and paged listing from a cluster's API;
//! - [`queue`]: the job message and the JetStream stream and consumer it goes through;
//! - [`store`]: PostgreSQL: names in SQL, the tables, the replace of a cluster's rows, `runs`.
//!
//! [`error`] is the one error type, and says what the worker does with each error.

pub mod error;
pub mod model;
pub mod ops;
pub mod queue;
pub mod source;
pub mod store;

pub use error::{Error, Result};
