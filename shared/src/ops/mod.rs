//! Running the binaries: the command-line settings both share ([`args`]), TLS and credentials
//! for the services ([`credentials`]), logging and signals ([`telemetry`]).

pub mod args;
pub mod credentials;
pub mod telemetry;
