//! Running the binaries: the command-line settings both share ([`args`]), logging and signals
//! ([`telemetry`]), the admin endpoint ([`admin`]: probes and `/metrics`) and the metrics
//! ([`metrics`]).

pub mod admin;
pub mod args;
pub mod metrics;
pub mod telemetry;
