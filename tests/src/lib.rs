//! The simulated fleet ([`fleet`]), a Kubernetes API server per cluster that the real kubectl
//! and the kube crate work against, and the harness ([`harness`]) that gives each end-to-end
//! test its own database, stream and processes on the real PostgreSQL and NATS, and [`servers`]
//! private servers for the tests that restart them (or run them with TLS and authentication:
//! [`certs`], [`nats_jwt`]); [`probes`] reads the admin endpoint and makes HTTPS GETs with client
//! certificates; [`manifests`] renders and reads the Kubernetes manifests; [`connect_proxy`] is
//! an HTTP proxy on loopback; [`nats_cluster`] a three-node JetStream cluster; [`programs`] finds
//! kubectl and Python; [`readme`] the README's SQL; [`bench`] holds the pieces of the `bench` and `bench-scale` binaries.

pub mod bench;
pub mod certs;
pub mod checks;
pub mod connect_proxy;
pub mod explorer;
pub mod fleet;
pub mod grafana;
pub mod harness;
pub mod manifests;
pub mod nats_cluster;
pub mod nats_jwt;
pub mod probes;
pub mod programs;
pub mod readme;
pub mod servers;
pub mod webdriver;
