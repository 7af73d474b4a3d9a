//! Where objects come from: the cluster [`registry`] (a cluster name to a Kubernetes client),
//! the [`proxy`] a cluster is reached through, and [`kubeapi`], paged listing from a cluster's
//! API server.

pub mod kubeapi;
pub mod proxy;
pub mod registry;
