//! Running the binaries: the command-line settings both share ([`args`]), logging and signals
//! ([`telemetry`]).

pub mod args;
pub mod telemetry;
