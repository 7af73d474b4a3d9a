//! Where objects come from: the cluster [`registry`] (a cluster name to a Kubernetes client) and
//! [`kubeapi`], paged listing from a cluster's API server.

pub mod kubeapi;
pub mod registry;
