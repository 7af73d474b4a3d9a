//! The pieces of `bench` and `bench-scale` (see `src/bin/` and BENCHMARKS.md).

pub mod access;
pub mod env;
pub mod explorer;
pub mod fleet_view;
pub mod history;
pub mod limits;
pub mod nats_failover;
pub mod queries;
pub mod readers;
pub mod refresh;
pub mod report;
pub mod scale;
pub mod scale_report;
pub mod standby;
pub mod stats;
