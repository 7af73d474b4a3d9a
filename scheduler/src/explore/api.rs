//! The JSON API (`docs/explorer-openapi.yaml`): every handler identifies the request, opens its
//! transaction as the person's role ([`identity::begin`]), and answers from [`kubecensus::store::explore`].
//! Errors are JSON too: `{"error": "<code>", "reason": "<what to do>"}` with the HTTP status.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json,
    extract::{ConnectInfo, Path, RawQuery},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use kubecensus::store::explore::{
    self, Source,
    detail::{self, Detail},
    list::{self, Facets, Page},
    status::{self, Completeness, TableState},
};
use sqlx::{Postgres, Transaction};

use super::{
    App, Shared,
    identity::{self, Identity},
    params,
};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// A short code: `unauthenticated`, `forbidden`, `bad_request`, `not_found`, `internal`.
    pub error: &'static str,
    pub reason: String,
}

impl ApiError {
    pub fn unauthorized(reason: String) -> Self {
        Self { status: StatusCode::UNAUTHORIZED, error: "unauthenticated", reason }
    }

    pub fn forbidden(reason: String) -> Self {
        Self { status: StatusCode::FORBIDDEN, error: "forbidden", reason }
    }

    fn not_found(reason: String) -> Self {
        Self { status: StatusCode::NOT_FOUND, error: "not_found", reason }
    }
}

impl From<kubecensus::Error> for ApiError {
    fn from(err: kubecensus::Error) -> Self {
        match err {
            kubecensus::Error::Query(reason) => Self { status: StatusCode::BAD_REQUEST, error: "bad_request", reason },
            other => {
                tracing::error!(err = %other, "explorer request failed");
                Self { status: StatusCode::INTERNAL_SERVER_ERROR, error: "internal", reason: other.to_string() }
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        kubecensus::Error::from(err).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({"error": self.error, "reason": self.reason}))).into_response()
    }
}

/// A request's identity and its transaction.
pub struct Session {
    pub identity: Identity,
    pub tx: Transaction<'static, Postgres>,
}

impl Session {
    /// Identifies the request from `peer` with `headers` and begins its transaction.
    ///
    /// # Errors
    /// 401, 403 or 500 as [`identity::identify`] and [`identity::begin`] say.
    pub async fn open(app: &App, peer: SocketAddr, headers: &HeaderMap) -> Result<Self, ApiError> {
        let mut identity = identity::identify(&app.trust, peer, headers)?;
        let tx = identity::begin(&app.pool, &mut identity).await?;
        Ok(Self { identity, tx })
    }
}

/// The query string's pairs.
pub fn pairs(query: Option<String>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(query.as_deref().unwrap_or_default())
        .map_err(|err| kubecensus::Error::Query(format!("the query string: {err}")).into())
}

/// `GET /api/v1/whoami`: the identity and role a request runs as.
pub async fn whoami(
    state: Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Identity>, ApiError> {
    Ok(Json(Session::open(&state.0, peer, &headers).await?.identity))
}

/// `GET /api/v1/objects`: one page with its total.
pub async fn objects(
    state: Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Page>, ApiError> {
    let request = params::page_request(&pairs(query)?)?;
    let mut session = Session::open(&state.0, peer, &headers).await?;
    Ok(Json(list::page(&mut session.tx, &request).await?))
}

/// `GET /api/v1/facets`: the facets of the same filter (`sort`, `cursor` and `limit` ignored).
pub async fn facets(
    state: Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Facets>, ApiError> {
    let request = params::page_request(&pairs(query)?)?;
    let mut session = Session::open(&state.0, peer, &headers).await?;
    Ok(Json(list::facets(&mut session.tx, request.source, &request.filter).await?))
}

/// `GET /api/v1/objects/{cluster}/{uid}`: one object, its changes and events.
pub async fn object(
    state: Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((cluster, uid)): Path<(String, String)>,
) -> Result<Json<Detail>, ApiError> {
    let mut session = Session::open(&state.0, peer, &headers).await?;
    detail::detail(&mut session.tx, &cluster, &uid)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no object {uid} in cluster {cluster} that you may see")))
}

/// What `GET /api/v1/freshness` answers.
#[derive(Debug, serde::Serialize)]
pub struct Freshness {
    #[serde(flatten)]
    pub completeness: Completeness,
    /// With `cluster=` parameters: each table of those clusters.
    pub tables: Vec<TableState>,
}

/// `GET /api/v1/freshness[?cluster=...]`: the fleet's completeness, and the tables of the
/// clusters named.
pub async fn freshness(
    state: Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Freshness>, ApiError> {
    let clusters: Vec<String> =
        pairs(query)?.into_iter().filter(|(name, _)| name == "cluster").map(|(_, value)| value).collect();
    let mut session = Session::open(&state.0, peer, &headers).await?;
    let completeness = status::completeness(&mut session.tx).await?;
    let tables = if clusters.is_empty() { Vec::new() } else { status::tables(&mut session.tx, &clusters).await? };
    Ok(Json(Freshness { completeness, tables }))
}

/// Everything the page shows, read in one transaction.
pub struct PageData {
    pub identity: Identity,
    pub page: Page,
    pub facets: Facets,
    pub completeness: Completeness,
    pub detail: Option<Detail>,
    pub fields: Vec<String>,
    pub source: Source,
}

/// Reads what the page for `pairs` shows; `detail` is the `(cluster, uid)` of the object
/// its pane shows.
pub async fn page_data(
    app: &Arc<App>,
    peer: SocketAddr,
    headers: &HeaderMap,
    pairs: &[(String, String)],
    detail: Option<(String, String)>,
) -> Result<PageData, ApiError> {
    let request = params::page_request(pairs)?;
    let mut session = Session::open(app, peer, headers).await?;
    let page = list::page(&mut session.tx, &request).await?;
    let facets = list::facets(&mut session.tx, request.source, &request.filter).await?;
    let completeness = status::completeness(&mut session.tx).await?;
    let fields = explore::field_columns(&mut session.tx, request.source).await?;
    let detail = match detail {
        Some((cluster, uid)) => detail::detail(&mut session.tx, &cluster, &uid).await?,
        None => None,
    };
    Ok(PageData { identity: session.identity, page, facets, completeness, detail, fields, source: request.source })
}
