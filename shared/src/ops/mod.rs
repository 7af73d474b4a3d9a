//! Running the binaries: the command-line settings both share ([`args`]), TLS and credentials
//! for the services ([`credentials`]), logging and signals ([`telemetry`]), the admin endpoint
//! ([`admin`]: probes and `/metrics`) and the metrics ([`metrics`]).

pub mod admin;
pub mod args;
pub mod credentials;
pub mod metrics;
pub mod telemetry;
