//! The HTTP side of one simulated cluster: a read-only Kubernetes API server.
//!
//! It answers `/version`, legacy discovery (`/api`, `/api/v1`, `/apis`, `/apis/{group}/{version}`;
//! clients asking for aggregated discovery get plain JSON and fall back), lists with `limit` and
//! `continue` (pages of one snapshot, tokens expire with 410 Gone), and single objects. Every
//! request needs the cluster's bearer token, or a token of a [`Grant`] (allowed only in some
//! namespaces, [`super::access`]); errors carry a Kubernetes `Status` body. Faults ([`Faults`],
//! a [`Throttle`] among them) are checked on each request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kubecensus::model::catalog::ApiRef;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::access::{self, Grant, Throttle};
use super::store::{ClusterStore, Snapshot};

/// Faults injected into one cluster's answers; checked on every request.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Delay before answering every request.
    pub latency: Option<Duration>,
    /// Answer every request for one resource with an error status.
    pub fail: Option<FailResource>,
    /// Answer every request with 401, as when the cluster's token was revoked.
    pub reject_token: bool,
    /// Answer the next list request that carries a continue token with 410 Gone, once.
    pub expire_next_continue: bool,
    /// Break every list response of one resource mid-body.
    pub break_list: Option<BrokenList>,
    /// Raw JSON items (any bytes, even invalid UTF-8) appended to the first page of every
    /// list of a resource: `(plural, item)`.
    pub extra_items: Vec<(String, Vec<u8>)>,
    /// Answer some continued pages of a resource with 429 (each answered one counts down).
    pub throttle: Option<Throttle>,
}

/// How a list response of the resource `plural` is broken.
#[derive(Debug, Clone)]
pub struct BrokenList {
    pub plural: String,
    pub how: Breakage,
}

/// Ways a list response can break mid-body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breakage {
    /// The body stops halfway: truncated, malformed JSON.
    Truncated,
    /// The connection is reset halfway through the body.
    Reset,
}

/// Every request for the resource `plural` gets the HTTP status `status` and a `Status` body.
#[derive(Debug, Clone)]
pub struct FailResource {
    pub plural: String,
    pub status: u16,
}

/// How many requests a cluster has answered, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Every request, authenticated or not.
    pub total: u64,
    /// List requests (any page).
    pub lists: u64,
    /// List requests carrying a `continue` token (second and later pages).
    pub continued: u64,
}

#[derive(Default)]
struct RequestCounters {
    total: AtomicU64,
    lists: AtomicU64,
    continued: AtomicU64,
}

/// One cluster's API server state, shared by its request handlers.
pub struct ClusterServer {
    pub name: String,
    token: String,
    resources: Vec<ApiRef>,
    /// `host:port` the server listens on, reported by `/api`.
    address: String,
    continue_ttl: Duration,
    pub store: Mutex<ClusterStore>,
    pub faults: Mutex<Faults>,
    counters: RequestCounters,
    /// Clients authenticate with a client certificate, which TLS has checked: no token needed.
    pub client_certificates: bool,
    /// Tokens allowed only in some namespaces.
    pub grants: Mutex<Vec<Grant>>,
}

impl ClusterServer {
    pub fn new(
        name: String,
        token: String,
        resources: Vec<ApiRef>,
        address: String,
        continue_ttl: Duration,
        store: ClusterStore,
    ) -> Self {
        Self {
            name,
            token,
            resources,
            address,
            continue_ttl,
            store: Mutex::new(store),
            faults: Mutex::default(),
            counters: RequestCounters::default(),
            client_certificates: false,
            grants: Mutex::default(),
        }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.store.lock().expect("store lock").current()
    }

    pub fn request_counts(&self) -> RequestCounts {
        RequestCounts {
            total: self.counters.total.load(Ordering::Relaxed),
            lists: self.counters.lists.load(Ordering::Relaxed),
            continued: self.counters.continued.load(Ordering::Relaxed),
        }
    }

    fn faults(&self) -> Faults {
        self.faults.lock().expect("faults lock").clone()
    }
}

/// The routes of one cluster's API server. Version and discovery paths are also served with a
/// trailing slash, as the API server registers them (`/api` and `/api/`): clients generated
/// from the OpenAPI spec, such as the official Python client, ask for `/version/`, `/apis/` and
/// `/apis/{group}/{version}/`.
pub fn router(server: Arc<ClusterServer>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/version/", get(version))
        .route("/api", get(core_versions))
        .route("/api/", get(core_versions))
        .route("/api/v1", get(core_resources))
        .route("/api/v1/", get(core_resources))
        .route("/api/v1/{*path}", get(core_objects))
        .route("/apis", get(groups))
        .route("/apis/", get(groups))
        .route("/apis/{group}", get(group))
        .route("/apis/{group}/", get(group))
        .route("/apis/{group}/{version}", get(group_resources))
        .route("/apis/{group}/{version}/", get(group_resources))
        .route("/apis/{group}/{version}/{*path}", get(group_objects))
        .fallback(|| async {
            status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource")
        })
        .layer(middleware::from_fn_with_state(Arc::clone(&server), authenticate))
        .with_state(server)
}

/// Paths answered without credentials (as `system:public-info-viewer` allows).
const PUBLIC_PATHS: &[&str] = &["/version", "/healthz", "/livez", "/readyz"];

/// Counts the request, checks its bearer token, and applies the latency fault.
async fn authenticate(State(server): State<Arc<ClusterServer>>, request: Request, next: Next) -> Response {
    server.counters.total.fetch_add(1, Ordering::Relaxed);
    let token = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let bearer = token.and_then(|value| value.strip_prefix("Bearer "));
    let grant = bearer
        .and_then(|bearer| server.grants.lock().expect("grants lock").iter().find(|g| g.token == bearer).cloned());
    let authorized = match token {
        Some(_) => bearer == Some(server.token.as_str()) || grant.is_some(),
        None => server.client_certificates || PUBLIC_PATHS.contains(&request.uri().path()),
    };
    if !authorized || server.faults().reject_token && token.is_some() {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let watch = request
        .uri()
        .query()
        .is_some_and(|query| query.split('&').any(|pair| pair == "watch=true" || pair == "watch=1"));
    if let Some(refused) = grant.and_then(|grant| grant.refuse(request.uri().path(), watch)) {
        return refused;
    }
    if let Some(latency) = server.faults().latency {
        tokio::time::sleep(latency).await;
    }
    next.run(request).await
}

/// A Kubernetes `Status` error response.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    (code, axum::Json(status_body(code, reason, message))).into_response()
}

pub(super) fn status_body(code: StatusCode, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    })
}

/// The API server's 404 for a missing object (apimachinery's `NewNotFound`): a `Status` whose
/// `details` name the object and its resource.
fn object_not_found(api: &ApiRef, name: &str) -> Response {
    let code = StatusCode::NOT_FOUND;
    let mut body = status_body(code, "NotFound", &format!("{} \"{name}\" not found", api.plural));
    body["details"] = json!({"name": name, "kind": api.plural});
    if !api.group.is_empty() {
        body["details"]["group"] = json!(api.group); // `omitempty` in StatusDetails
    }
    (code, axum::Json(body)).into_response()
}

/// A JSON response from bytes already serialized.
fn json_bytes(body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn version() -> Response {
    axum::Json(json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.1",
        "gitCommit": "8adc0f041b8e7ad1d30e29cc59c6ae7a15e19828",
        "gitTreeState": "clean",
        "buildDate": "2025-05-15T08:19:08Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    }))
    .into_response()
}

async fn core_versions(State(server): State<Arc<ClusterServer>>) -> Response {
    axum::Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server.address}],
    }))
    .into_response()
}

async fn core_resources(State(server): State<Arc<ClusterServer>>) -> Response {
    resource_list(&server, "", "v1")
}

/// The non-core group/versions of the catalog, in catalog order.
fn group_versions(server: &ClusterServer) -> Vec<(&str, &str)> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for api in server.resources.iter().filter(|api| !api.group.is_empty()) {
        if !pairs.contains(&(&api.group, &api.version)) {
            pairs.push((&api.group, &api.version));
        }
    }
    pairs
}

fn api_group(name: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v})).collect();
    json!({"name": name, "versions": versions, "preferredVersion": versions[0]})
}

async fn groups(State(server): State<Arc<ClusterServer>>) -> Response {
    let pairs = group_versions(&server);
    let mut names: Vec<&str> = pairs.iter().map(|(group, _)| *group).collect();
    names.dedup();
    let groups: Vec<Value> = names
        .iter()
        .map(|name| {
            let versions: Vec<&str> = pairs.iter().filter(|(g, _)| g == name).map(|(_, v)| *v).collect();
            api_group(name, &versions)
        })
        .collect();
    axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})).into_response()
}

async fn group(State(server): State<Arc<ClusterServer>>, Path(name): Path<String>) -> Response {
    let versions: Vec<&str> = group_versions(&server).into_iter().filter(|(g, _)| *g == name).map(|(_, v)| v).collect();
    if versions.is_empty() {
        return status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource");
    }
    let mut body = api_group(&name, &versions);
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    axum::Json(body).into_response()
}

async fn group_resources(
    State(server): State<Arc<ClusterServer>>,
    Path((group, version)): Path<(String, String)>,
) -> Response {
    resource_list(&server, &group, &version)
}

/// Short names kubectl users expect, for the resources that have them.
fn short_names(plural: &str) -> &'static [&'static str] {
    match plural {
        "pods" => &["po"],
        "nodes" => &["no"],
        "namespaces" => &["ns"],
        "services" => &["svc"],
        "configmaps" => &["cm"],
        "persistentvolumeclaims" => &["pvc"],
        "persistentvolumes" => &["pv"],
        "serviceaccounts" => &["sa"],
        "endpoints" => &["ep"],
        "events" => &["ev"],
        "deployments" => &["deploy"],
        "replicasets" => &["rs"],
        "daemonsets" => &["ds"],
        "statefulsets" => &["sts"],
        "cronjobs" => &["cj"],
        "ingresses" => &["ing"],
        "horizontalpodautoscalers" => &["hpa"],
        "customresourcedefinitions" => &["crd", "crds"],
        _ => &[],
    }
}

/// The `APIResourceList` of one group/version.
fn resource_list(server: &ClusterServer, group: &str, version: &str) -> Response {
    let resources: Vec<Value> = server
        .resources
        .iter()
        .filter(|api| api.group == group && api.version == version)
        .map(|api| {
            json!({
                "name": api.plural,
                "singularName": api.kind.to_lowercase(),
                "namespaced": api.namespaced,
                "kind": api.kind,
                "verbs": ["get", "list"],
                "shortNames": short_names(&api.plural),
            })
        })
        .collect();
    if resources.is_empty() && !group.is_empty() {
        return status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource");
    }
    let group_version = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    axum::Json(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
    .into_response()
}

/// Query parameters of object requests; others (`labelSelector`, `resourceVersion`,
/// `timeoutSeconds`, …) are accepted and ignored.
#[derive(Debug, Deserialize)]
struct ObjectQuery {
    limit: Option<usize>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
    watch: Option<String>,
}

async fn core_objects(
    State(server): State<Arc<ClusterServer>>,
    Path(path): Path<String>,
    Query(query): Query<ObjectQuery>,
) -> Response {
    objects(&server, "", "v1", &path, query)
}

async fn group_objects(
    State(server): State<Arc<ClusterServer>>,
    Path((group, version, path)): Path<(String, String, String)>,
    Query(query): Query<ObjectQuery>,
) -> Response {
    objects(&server, &group, &version, &path, query)
}

/// What an object path asks for.
pub(super) struct ObjectRequest<'a> {
    pub plural: &'a str,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// Parses the path after `/api/v1/` or `/apis/{group}/{version}/`.
pub(super) fn parse_object_path(path: &str) -> Option<ObjectRequest<'_>> {
    let segments: Vec<&str> = path.split('/').collect();
    if segments.iter().any(|segment| segment.is_empty()) {
        return None;
    }
    let (plural, namespace, name) = match segments[..] {
        [plural] => (plural, None, None),
        ["namespaces", namespace, plural] => (plural, Some(namespace), None),
        ["namespaces", namespace, plural, name] => (plural, Some(namespace), Some(name)),
        [plural, name] => (plural, None, Some(name)),
        _ => return None,
    };
    Some(ObjectRequest { plural, namespace, name })
}

fn objects(server: &ClusterServer, group: &str, version: &str, path: &str, query: ObjectQuery) -> Response {
    let not_found = || status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource");
    let Some(request) = parse_object_path(path) else {
        return not_found();
    };
    let Some(api) = server
        .resources
        .iter()
        .find(|api| api.group == group && api.version == version && api.plural == request.plural)
    else {
        return not_found();
    };
    if request.namespace.is_some() && !api.namespaced
        || request.namespace.is_none() && request.name.is_some() && api.namespaced
    {
        return not_found();
    }
    if let Some(fail) = server.faults().fail.filter(|fail| fail.plural == api.plural) {
        let code = StatusCode::from_u16(fail.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return failure(code);
    }
    if query.watch.as_deref().is_some_and(|watch| watch == "true" || watch == "1") {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "this simulated API server does not support watch",
        );
    }
    match request.name {
        Some(name) => {
            let snapshot = server.current();
            match snapshot.get(&api.plural, request.namespace.unwrap_or_default(), name) {
                Some(object) => json_bytes(object.json.clone()),
                None => object_not_found(api, name),
            }
        }
        None => list(server, api, request.namespace, query),
    }
}

/// An error status for an injected fault, with the reason the API server would give.
fn failure(code: StatusCode) -> Response {
    let reason = match code.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        410 => "Expired",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    let mut response =
        status(code, reason, &format!("simulated failure: {}", code.canonical_reason().unwrap_or(reason)));
    if code == StatusCode::TOO_MANY_REQUESTS {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Where a paged list continues: the snapshot it reads, the next offset, and when it began.
#[derive(Debug, Serialize, Deserialize)]
struct ContinueToken {
    rv: u64,
    offset: usize,
    /// Unix milliseconds of the first page.
    started: u64,
}

impl ContinueToken {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("a token serializes"))
    }

    fn decode(text: &str) -> Option<Self> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).ok()?).ok()
    }
}

fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

const EXPIRED_MESSAGE: &str = "The provided continue parameter is too old to display a consistent list result. \
    You can start a new list without the continue parameter.";

fn list(server: &ClusterServer, api: &ApiRef, namespace: Option<&str>, query: ObjectQuery) -> Response {
    server.counters.lists.fetch_add(1, Ordering::Relaxed);
    let (snapshot, offset, started) = match query.continue_token.as_deref().filter(|t| !t.is_empty()) {
        None => (server.current(), 0, unix_millis()),
        Some(text) => {
            server.counters.continued.fetch_add(1, Ordering::Relaxed);
            if let Some(throttled) = take_throttle(server, &api.plural) {
                return throttled;
            }
            let Some(token) = ContinueToken::decode(text) else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "continue key is not valid");
            };
            let age = Duration::from_millis(unix_millis().saturating_sub(token.started));
            if std::mem::take(&mut server.faults.lock().expect("faults lock").expire_next_continue) {
                return status(StatusCode::GONE, "Expired", EXPIRED_MESSAGE);
            }
            let kept = server.store.lock().expect("store lock").at(token.rv);
            match kept.filter(|_| age <= server.continue_ttl) {
                Some(snapshot) => (snapshot, token.offset, token.started),
                None => return status(StatusCode::GONE, "Expired", EXPIRED_MESSAGE),
            }
        }
    };
    let objects = snapshot.list(&api.plural, namespace);
    let start = offset.min(objects.len());
    let end = match query.limit.filter(|&limit| limit > 0) {
        Some(limit) => (start + limit).min(objects.len()),
        None => objects.len(),
    };
    let page = &objects[start..end];

    let api_version = if api.group.is_empty() { api.version.clone() } else { format!("{}/{}", api.group, api.version) };
    let mut metadata = json!({"resourceVersion": snapshot.resource_version.to_string()});
    if end < objects.len() {
        let token = ContinueToken { rv: snapshot.resource_version, offset: end, started };
        metadata["continue"] = json!(token.encode());
        metadata["remainingItemCount"] = json!(objects.len() - end);
    }
    let head = format!(r#"{{"kind":"{}List","apiVersion":"{api_version}","metadata":{metadata},"items":["#, api.kind);
    let mut body = Vec::with_capacity(head.len() + page.iter().map(|o| o.json.len() + 1).sum::<usize>() + 2);
    body.extend_from_slice(head.as_bytes());
    let faults = server.faults();
    let extra_items = faults.extra_items.iter().filter(|(plural, _)| offset == 0 && *plural == api.plural);
    let items = page.iter().map(|object| object.json.as_slice()).chain(extra_items.map(|(_, item)| item.as_slice()));
    for (i, item) in items.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    match faults.break_list.filter(|broken| broken.plural == api.plural) {
        Some(broken) => broken_body(body, broken.how),
        None => json_bytes(body),
    }
}

/// The 429 of the cluster's [`Throttle`] of `plural`, while it has pages left (counting one down).
fn take_throttle(server: &ClusterServer, plural: &str) -> Option<Response> {
    let mut faults = server.faults.lock().expect("faults lock");
    let throttle = faults.throttle.as_mut().filter(|throttle| throttle.plural == plural && throttle.pages > 0)?;
    throttle.pages -= 1;
    Some(access::too_many_requests(throttle.body))
}

/// A list response cut halfway: either a short, complete body (malformed JSON) or a body whose
/// stream fails halfway, which resets the connection.
fn broken_body(mut body: Vec<u8>, how: Breakage) -> Response {
    let half = body.split_off(body.len() / 2);
    match how {
        Breakage::Truncated => json_bytes(body),
        Breakage::Reset => {
            drop(half);
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                vec![Ok(body), Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated reset"))];
            let mut response = Response::new(Body::from_stream(futures::stream::iter(chunks)));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_parse_into_resource_namespace_and_name() {
        let parsed = |path| parse_object_path(path).map(|r| (r.plural, r.namespace, r.name));
        assert_eq!(parsed("pods"), Some(("pods", None, None)));
        assert_eq!(parsed("namespaces/kube-system"), Some(("namespaces", None, Some("kube-system"))));
        assert_eq!(parsed("namespaces/a/pods"), Some(("pods", Some("a"), None)));
        assert_eq!(parsed("namespaces/a/pods/p"), Some(("pods", Some("a"), Some("p"))));
        assert_eq!(parsed("namespaces/a/pods/p/log"), None);
        assert_eq!(parsed("pods/"), None);
    }

    #[test]
    fn continue_tokens_round_trip() {
        let token = ContinueToken { rv: 12, offset: 7, started: 99 };
        let decoded = ContinueToken::decode(&token.encode()).unwrap();
        assert_eq!((decoded.rv, decoded.offset, decoded.started), (12, 7, 99));
        assert!(ContinueToken::decode("not a token!").is_none());
    }
}
