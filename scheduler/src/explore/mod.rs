//! `scheduler explore`: the fleet explorer, a read-only query service (the multi-cluster RFC's
//! query module) serving one HTML page (`/`, [`page`]) and a JSON API (`/api/v1/...`, [`api`],
//! described by `docs/explorer-openapi.yaml`).
//!
//! Who asks is said by an authenticating proxy in request headers ([`identity`]), trusted only
//! on a loopback listener or over mutual TLS with a client CA ([`tls`]); each request runs in a
//! read-only transaction as the role `access_identities` maps the user to, so row-level security
//! decides every row, count and facet. `--single-user` serves one person on a laptop instead:
//! loopback only, as the service's own role, and the page says so.

mod api;
mod identity;
mod page;
mod params;
mod tls;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Instant};

use anyhow::Context;
use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    middleware::{self, Next},
    response::Response,
    routing::get,
};
use kubecensus::ops::{
    admin::{self, AdminArgs, Health},
    args::ReadArgs,
    metrics, telemetry,
};
use sqlx::PgPool;

pub use identity::Trust;

/// The explorer's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ExploreArgs {
    /// The address the page and the API are served on. Without TLS it must be a loopback address
    /// (the proxy runs beside the service, as a sidecar).
    #[arg(long, env = "KUBECENSUS_EXPLORE_ADDR", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// The request header naming the user (oauth2-proxy's; Kubernetes' request-header
    /// authentication uses X-Remote-User).
    #[arg(long, env = "KUBECENSUS_USER_HEADER", default_value = "X-Forwarded-User")]
    pub user_header: String,
    /// The request header naming the user's groups, comma-separated or repeated (X-Remote-Group).
    #[arg(long, env = "KUBECENSUS_GROUP_HEADER", default_value = "X-Forwarded-Groups")]
    pub group_header: String,
    /// Serve over TLS and require a client certificate signed by this CA (PEM): the proxy's.
    #[arg(long, env = "KUBECENSUS_EXPLORE_CLIENT_CA", requires_all = ["tls_cert", "tls_key"])]
    pub client_ca: Option<PathBuf>,
    /// The server's certificate chain (PEM), with `--client-ca`.
    #[arg(long, env = "KUBECENSUS_EXPLORE_TLS_CERT", requires = "client_ca")]
    pub tls_cert: Option<PathBuf>,
    /// The server's private key (PEM), with `--client-ca`.
    #[arg(long, env = "KUBECENSUS_EXPLORE_TLS_KEY", requires = "client_ca")]
    pub tls_key: Option<PathBuf>,
    /// One person on this machine: no identity headers, every row the service's own role sees;
    /// loopback only.
    #[arg(long, conflicts_with = "client_ca")]
    pub single_user: bool,
    /// Where to read: a standby (its rows are as fresh as its replay).
    #[command(flatten)]
    pub read: ReadArgs,
}

/// What every handler shares.
pub struct App {
    pub pool: PgPool,
    pub trust: Trust,
}

/// Serves the explorer until SIGTERM or Ctrl-C, with the admin endpoint on `admin`.
pub async fn run(args: ExploreArgs, admin: AdminArgs, pool: PgPool) -> anyhow::Result<()> {
    let trust = Trust::from_args(&args)?;
    let health = Health::new();
    let metrics = admin::Metrics { registry: metrics::explorer().registry(), sample: None };
    admin::serve(admin.admin_addr, health.clone(), metrics).await.context("serving the admin endpoint")?;
    let tls = match (&args.client_ca, &args.tls_cert, &args.tls_key) {
        (Some(ca), Some(cert), Some(key)) => Some(tls::mutual(ca, cert, key)?),
        _ => None,
    };
    let app = router(Arc::new(App { pool: pool.clone(), trust }));
    health.started_without_queue(&pool);
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        telemetry::shutdown_signal().await;
        stopper.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    });
    match tls {
        Some(config) => {
            let server = axum_server::bind_rustls(args.listen, config).handle(handle.clone());
            log_listening(&handle, "https (mutual TLS)");
            server.serve(service).await
        }
        None => {
            let server = axum_server::bind(args.listen).handle(handle.clone());
            log_listening(&handle, if args.single_user { "http (single user)" } else { "http (loopback)" });
            server.serve(service).await
        }
    }
    .with_context(|| format!("serving the explorer on {}", args.listen))
}

/// Logs the bound address once the listener is up (the tests wait for this line).
fn log_listening(handle: &axum_server::Handle<SocketAddr>, how: &'static str) {
    let handle = handle.clone();
    tokio::spawn(async move {
        if let Some(address) = handle.listening().await {
            tracing::info!(%address, how, "explorer listening");
        }
    });
}

/// The page, the API, and a timer around both.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/vendor/explorer.js", get(page::script))
        .route("/api/v1/whoami", get(api::whoami))
        .route("/api/v1/objects", get(api::objects))
        .route("/api/v1/facets", get(api::facets))
        .route("/api/v1/objects/{cluster}/{uid}", get(api::object))
        .route("/api/v1/freshness", get(api::freshness))
        .layer(middleware::from_fn(timed))
        .with_state(app)
}

/// Counts each request by route and status, and its time in the server.
async fn timed(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let response = next.run(request).await;
    metrics::explorer().answered(&route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// The state type of every handler.
type Shared = State<Arc<App>>;
