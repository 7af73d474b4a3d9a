//! The pieces of `bench` (see `src/bin/bench.rs` and BENCHMARKS.md).

pub mod env;
pub mod limits;
pub mod queries;
pub mod readers;
pub mod refresh;
pub mod report;
pub mod stats;
