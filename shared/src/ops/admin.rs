//! The admin endpoint both binaries (and `scheduler explore`) serve on `--admin-addr` (off when unset): `/livez` and
//! `/readyz` for Kubernetes probes, `/metrics` for Prometheus.
//!
//! - `/livez`: 200 while the process runs.
//! - `/readyz`: 200 once start-up is done while PostgreSQL answers a query, the NATS client is
//!   connected (where the process uses NATS), and the process is not stopping; else 503 with the reason as the body. It turns
//!   503 at SIGTERM, before a worker drains its jobs (the binaries call [`Health::drain`] first).
//! - `/metrics`: [`super::metrics`] in Prometheus's text format, version 0.0.4
//!   (<https://prometheus.io/docs/instrumenting/exposition_formats/>).

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{encoding::prometheus_text, registry::Registry};
use sqlx::{PgPool, postgres::PgPoolOptions};

/// The longest `/readyz` waits for PostgreSQL (Kubernetes's probe timeout defaults to 1 s; set
/// `timeoutSeconds` above this).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest `/metrics` waits for its sampled gauges; past it, their last values are served.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The admin endpoint's setting, shared by both binaries.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Serve /livez, /readyz and /metrics on this address (e.g. 0.0.0.0:8080); off when unset.
    #[arg(long, global = true, env = "KUBECENSUS_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
}

/// What `/readyz` reports: the services once start-up has connected to them, and whether the
/// process is stopping.
#[derive(Debug, Default)]
pub struct Health {
    services: OnceLock<Services>,
    draining: AtomicBool,
}

#[derive(Debug)]
struct Services {
    /// A pool of one connection of its own: a worker whose connections are all busy with jobs
    /// still answers its probe at once.
    postgres: PgPool,
    /// `None` for a process that uses no queue (`scheduler explore`).
    nats: Option<async_nats::Client>,
}

impl Health {
    /// A process that is starting: not ready until [`Self::started`].
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Start-up is done: readiness now checks PostgreSQL (with `pool`'s connect options: the
    /// same server, credentials and TLS settings) and the `nats` client's connection.
    pub fn started(&self, pool: &PgPool, nats: &async_nats::Client) {
        self.start(pool, Some(nats.clone()));
    }

    /// Start-up is done for a process without a queue: readiness checks PostgreSQL only.
    pub fn started_without_queue(&self, pool: &PgPool) {
        self.start(pool, None);
    }

    fn start(&self, pool: &PgPool, nats: Option<async_nats::Client>) {
        let postgres = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(PROBE_TIMEOUT)
            .connect_lazy_with((*pool.connect_options()).clone());
        let _ = self.services.set(Services { postgres, nats });
    }

    /// The process is stopping (SIGTERM): not ready from now on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the process is ready, or why not.
    pub async fn check(&self) -> Result<(), String> {
        if self.draining.load(Ordering::SeqCst) {
            return Err("draining: the process received SIGTERM and is stopping".into());
        }
        let Some(services) = self.services.get() else {
            return Err("starting: not yet connected to PostgreSQL and NATS".into());
        };
        if let Some(nats) = &services.nats {
            let state = nats.connection_state();
            if state != async_nats::connection::State::Connected {
                return Err(format!("NATS is not connected ({state})"));
            }
        }
        match tokio::time::timeout(PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(&services.postgres)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(format!("PostgreSQL is not reachable: {err}")),
            Err(_) => Err(format!("PostgreSQL is not reachable: no answer within {PROBE_TIMEOUT:?}")),
        }
    }
}

/// A future sampling gauges, boxed so [`Sampler`]s of any shape fit one field.
pub type SampleFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
/// Reads gauges from PostgreSQL or NATS right before a scrape encodes them.
pub type Sampler = Box<dyn Fn() -> SampleFuture + Send + Sync>;

/// What `/metrics` serves: a binary's registry and what to sample before each scrape.
pub struct Metrics {
    pub registry: Registry,
    pub sample: Option<Sampler>,
}

struct AdminState {
    health: Arc<Health>,
    metrics: Metrics,
}

/// Binds `addr` and serves the admin endpoint on a task of its own, for the life of the
/// process; does nothing when `addr` is `None`.
///
/// # Errors
/// When `addr` cannot be bound (in use, not an address of this host).
pub async fn serve(addr: Option<SocketAddr>, health: Arc<Health>, metrics: Metrics) -> std::io::Result<()> {
    let Some(addr) = addr else { return Ok(()) };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "admin endpoint: /livez /readyz /metrics");
    let app = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .with_state(Arc::new(AdminState { health, metrics }));
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(%err, "the admin endpoint stopped");
        }
    });
    Ok(())
}

async fn readyz(State(state): State<Arc<AdminState>>) -> (StatusCode, String) {
    match state.health.check().await {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn scrape(State(state): State<Arc<AdminState>>) -> Response {
    if let Some(sample) = &state.metrics.sample
        && tokio::time::timeout(SAMPLE_TIMEOUT, sample()).await.is_err()
    {
        tracing::warn!(timeout = ?SAMPLE_TIMEOUT, "sampling gauges took too long; serving their last values");
    }
    let mut text = String::new();
    match prometheus_text::encode(&mut text, &state.metrics.registry) {
        Ok(()) => ([(CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], text).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the metrics: {err}\n")).into_response(),
    }
}
