//! kubecensus: a PostgreSQL copy of many Kubernetes clusters' resources in kubequery's schema.
//!
//! This crate holds what the `scheduler` and `worker` binaries share. Follow one job through it:
//! [`catalog`] says what to list and which tables to fill; [`job`] is the message the scheduler
//! publishes and [`queue`] the JetStream stream it goes through; [`registry`] turns a cluster name
//! into a Kubernetes client and [`kubeapi`] lists from it page by page; [`flatten`] turns objects
//! into rows; [`store`] streams rows into a staging table with COPY and swaps it in; [`runs`]
//! records every attempt's outcome.

pub mod args;
pub mod catalog;
pub mod error;
pub mod flatten;
pub mod job;
pub mod kubeapi;
pub mod quantity;
pub mod queue;
pub mod registry;
pub mod runs;
pub mod store;
pub mod telemetry;

pub use error::{Error, Result};
