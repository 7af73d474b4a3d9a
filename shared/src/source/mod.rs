//! Where objects come from: the cluster [`registry`] (a cluster name to a Kubernetes client),
//! the [`proxy`] a cluster is reached through, [`kubeapi`], paged listing from a cluster's
//! API server, and [`cluster_api`], how each request is sent (throttled answers waited out) and
//! its answer classified.

pub mod cluster_api;
pub mod kubeapi;
pub mod proxy;
pub mod registry;
