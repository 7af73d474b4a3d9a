//! The model: what kubecensus knows without I/O. The [`catalog`] of resources and tables,
//! [`flatten`]ing an object into rows of them, the [`namespace_fields`] rules, Kubernetes
//! [`quantity`] parsing, keeping data out of annotations ([`redact`]), and objects' [`health`]
//! as kstatus computes it; Kubernetes label [`selector`]s.

pub mod catalog;
pub mod flatten;
pub mod health;
pub mod namespace_fields;
pub mod quantity;
pub mod redact;
pub mod selector;
