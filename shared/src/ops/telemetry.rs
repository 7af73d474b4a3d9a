//! Logging and process signals: tracing to stderr, plain or JSON, filtered by `RUST_LOG`; and
//! the one way both binaries learn they must stop.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

/// Installs the global subscriber: `RUST_LOG` when set, else `default_level` (`info` for the
/// services, `warn` for commands a person runs, whose output is on stdout). Call once, first
/// thing in `main`.
pub fn init(format: LogFormat, default_level: &str) {
    // sqlx warns of every statement over a second; the start-up schema lock waits that long on
    // purpose while another process prepares the tables.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},sqlx::postgres::notice=warn,sqlx::query=error")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// A future that completes at the first SIGTERM (what Kubernetes sends a pod that must stop) or
/// SIGINT. The SIGTERM handler is installed when this is called, not when the future is first
/// polled, so a SIGTERM sent at any time after the call is caught.
///
/// # Panics
/// When the SIGTERM handler cannot be installed (no signal support: not on Unix).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
    }
}
