//! Listing one resource of one cluster, page by page, as raw JSON objects.
//!
//! Pages are fetched with `limit` and `continue` so a worker holds one page at a time, whatever
//! the cluster's size, and its objects are parsed into `serde_json::Value` one at a time as
//! they are read: one malformed object is skipped (and counted) instead of failing its page. Errors are classified so the worker knows what to do:
//! an expired continue token restarts the listing, a resource the cluster does not serve skips
//! the job, anything else fails the attempt (after `Retry-After`, when the server gave one).

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use http::{StatusCode, header::RETRY_AFTER};
use http_body_util::BodyExt;
use kube::{
    client::Body,
    core::{Request, params::ListParams},
};
use serde::Deserialize;
use serde_json::{Value, value::RawValue};

use crate::{
    Error, Result,
    model::catalog::{ApiRef, CustomKind, ResourceSource, catalog},
    ops::metrics,
};

/// One page of a listing. Its objects stay JSON text until read one by one with
/// [`Page::objects`]: a parsed object takes about ten times the memory of its text, so a page
/// of parsed objects, not the page itself, would set a worker's peak memory.
#[derive(Debug)]
pub struct Page {
    items: Vec<Box<RawValue>>,
    /// What the items are, to say why one is skipped: `the pods list`.
    source: String,
    /// Whether an item without `metadata.name` is skipped (list items; not discovery documents).
    names_required: bool,
    /// The `apiVersion` and `kind` of a list's items, set on each item that lacks them (the API
    /// server omits them in lists of built-in kinds, as kubectl's `get -o json` fills them in).
    type_meta: Option<(String, String)>,
    /// Why each part of the page that could not be fetched was skipped (discovery).
    pub skipped: Vec<String>,
    /// The token for the next page; `None` on the last page.
    pub continue_token: Option<String>,
}

impl Page {
    /// A page of whole documents (discovery, `/version`), which need no `metadata.name`.
    fn of_documents(source: &str, documents: &[Value], skipped: Vec<String>) -> Result<Self> {
        let items = documents
            .iter()
            .map(serde_json::value::to_raw_value)
            .collect::<std::result::Result<_, _>>()
            .map_err(|err| Error::ClusterJson { what: source.to_owned(), source: err })?;
        Ok(Self { items, source: source.into(), names_required: false, type_meta: None, skipped, continue_token: None })
    }

    /// The number of items on the page, readable or not.
    pub fn item_count(&self) -> usize {
        self.items.len()
    }

    /// Each object of the page, parsed, or why it is skipped: an item that is not valid JSON,
    /// not an object, or (in a list) has no `metadata.name`.
    pub fn objects(&self) -> impl Iterator<Item = std::result::Result<Value, String>> + '_ {
        let source = &self.source;
        self.items.iter().map(move |raw| match serde_json::from_str::<Value>(raw.get()) {
            Ok(mut object)
                if object.is_object() && (!self.names_required || object["metadata"]["name"].is_string()) =>
            {
                if let Some((api_version, kind)) = &self.type_meta {
                    for (key, value) in [("apiVersion", api_version), ("kind", kind)] {
                        if !object[key].is_string() {
                            object[key] = Value::String(value.clone());
                        }
                    }
                }
                Ok(object)
            }
            Ok(object) if object.is_object() => Err(format!("an item of {source} has no metadata.name")),
            Ok(_) => Err(format!("an item of {source} is not an object")),
            Err(err) => Err(format!("an item of {source} is not valid JSON: {err}")),
        })
    }
}

#[derive(Deserialize)]
struct RawList {
    #[serde(default)]
    metadata: RawListMeta,
    /// `null` and absent both mean no items.
    #[serde(default)]
    items: Option<Vec<Box<RawValue>>>,
}

#[derive(Default, Deserialize)]
struct RawListMeta {
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

/// An `apiVersion`: `v1`, `apps/v1`.
pub fn api_version(api: &ApiRef) -> String {
    match api.group.as_str() {
        "" => api.version.clone(),
        group => format!("{group}/{}", api.version),
    }
}

/// The URL path that lists a resource in every namespace.
pub fn list_path(api: &ApiRef) -> String {
    match api.group.as_str() {
        "" => format!("/api/{}/{}", api.version, api.plural),
        group => format!("/apis/{group}/{}/{}", api.version, api.plural),
    }
}

/// Fetches one page of `api`, starting at `continue_token`, reading its body into `body`.
pub async fn list_page(
    client: &kube::Client,
    api: &ApiRef,
    limit: u32,
    continue_token: Option<&str>,
    body: &mut Vec<u8>,
) -> Result<Page> {
    let mut params = ListParams::default().limit(limit);
    if let Some(token) = continue_token {
        params = params.continue_token(token);
    }
    let request = Request::new(list_path(api))
        .list(&params)
        .map_err(|err| Error::BadRequest { request: list_path(api), source: err.into() })?;
    let received = receive_into(client, request, body).await;
    metrics::worker().list_request(received.as_ref().ok().map(|response| response.status.as_u16()));
    received?.check(body)?;
    let list: RawList = serde_json::from_str(&String::from_utf8_lossy(body))
        .map_err(|err| Error::ClusterJson { what: format!("the list of {}", api.plural), source: err })?;
    Ok(Page {
        items: list.items.unwrap_or_default(),
        source: format!("the {} list", api.plural),
        names_required: true,
        type_meta: Some((api_version(api), api.kind.clone())),
        skipped: Vec::new(),
        continue_token: list.metadata.continue_token.filter(|token| !token.is_empty()),
    })
}

/// One page of what a resource of `source` lists: a page of `api`'s list from `continue_token`
/// (`page_size` objects at most, its body read into `body`), or the cluster's discovery or
/// version document.
pub async fn fetch(
    client: &kube::Client,
    source: ResourceSource,
    api: &ApiRef,
    page_size: u32,
    continue_token: Option<&str>,
    body: &mut Vec<u8>,
) -> Result<Page> {
    match source {
        ResourceSource::List | ResourceSource::Custom => list_page(client, api, page_size, continue_token, body).await,
        ResourceSource::Discovery => discovery(client).await,
        ResourceSource::Version => version(client).await,
    }
}

/// Discovery as objects: one `APIResourceList` per group/version the cluster serves (`/api/v1`,
/// then every version of every group under `/apis`), each with `group` and `version` added so
/// rows can name them. A group/version that fails to answer (an aggregated API that is down) is
/// skipped with the reason rather than failing the whole listing.
pub async fn discovery(client: &kube::Client) -> Result<Page> {
    let mut group_versions: Vec<(String, String, String)> = Vec::new();
    let core: Value = get_json(client, "/api").await?;
    for version in core["versions"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        group_versions.push((String::new(), version.to_owned(), format!("/api/{version}")));
    }
    let groups: Value = get_json(client, "/apis").await?;
    for group in groups["groups"].as_array().into_iter().flatten() {
        let name = group["name"].as_str().unwrap_or_default();
        for version in group["versions"].as_array().into_iter().flatten() {
            if let Some(group_version) = version["groupVersion"].as_str() {
                let version = version["version"].as_str().unwrap_or_default();
                group_versions.push((name.to_owned(), version.to_owned(), format!("/apis/{group_version}")));
            }
        }
    }
    let mut documents = Vec::new();
    let mut skipped = Vec::new();
    for (group, version, path) in group_versions {
        match get_json(client, &path).await {
            Ok(mut list) if list.is_object() => {
                list["group"] = Value::String(group);
                list["version"] = Value::String(version);
                documents.push(list);
            }
            Ok(_) => skipped.push(format!("GET {path}: not an object")),
            Err(err) => skipped.push(err.to_string()),
        }
    }
    Page::of_documents("discovery", &documents, skipped)
}

/// Where `kind` is served: its version (the group's preferred version unless the kind names one)
/// and its plural and scope, from the cluster's discovery (`/apis/<group>`,
/// `/apis/<group>/<version>`).
///
/// # Errors
/// [`Error::NotServed`] when the cluster serves no such group, version or kind (the job is
/// `skipped`), or any error of the requests.
pub async fn find_kind(client: &kube::Client, kind: &CustomKind) -> Result<ApiRef> {
    let group: Value = get_json(client, &format!("/apis/{}", kind.group)).await?;
    let version = match &kind.version {
        Some(version) => version.clone(),
        None => group["preferredVersion"]["version"]
            .as_str()
            .ok_or_else(|| Error::ClusterAnswer(format!("/apis/{}: no preferredVersion", kind.group)))?
            .to_owned(),
    };
    let resources: Value = get_json(client, &format!("/apis/{}/{version}", kind.group)).await?;
    let resource = resources["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["kind"] == kind.kind.as_str() && r["name"].as_str().is_some_and(|name| !name.contains('/')))
        .ok_or_else(|| Error::NotServed(format!("{}/{version} serves no kind {}", kind.group, kind.kind)))?;
    Ok(ApiRef {
        group: kind.group.clone(),
        version,
        kind: kind.kind.clone(),
        plural: resource["name"].as_str().unwrap_or_default().to_owned(),
        namespaced: resource["namespaced"].as_bool().unwrap_or(true),
    })
}

/// The group and kind of every CustomResourceDefinition of the cluster, listed page by page
/// (`apiextensions.k8s.io/v1`): what the target of every other custom kind lists.
pub async fn defined_kinds(client: &kube::Client, limit: u32) -> Result<Vec<CustomKind>> {
    let api = catalog_api("kubernetes_custom_resource_definitions")?;
    let mut kinds = Vec::new();
    each_object(client, &api, limit, |definition| {
        let text = |path: &[&str]| path.iter().fold(&definition, |value, key| &value[key]).as_str().map(str::to_owned);
        if let (Some(group), Some(kind)) = (text(&["spec", "group"]), text(&["spec", "names", "kind"])) {
            kinds.push(CustomKind { group, kind, version: None, schedule: None, limit: None });
        }
    })
    .await?;
    Ok(kinds)
}

/// The cluster's `/version` as one object.
pub async fn version(client: &kube::Client) -> Result<Page> {
    let info = get_json(client, "/version").await?;
    Page::of_documents("/version", &[info], Vec::new())
}

/// The labels of every namespace, by name, listed page by page.
pub async fn namespace_labels(client: &kube::Client, limit: u32) -> Result<HashMap<String, BTreeMap<String, String>>> {
    let api = catalog_api("kubernetes_namespaces")?;
    let mut labels = HashMap::new();
    each_object(client, &api, limit, |namespace| {
        let Some(name) = namespace["metadata"]["name"].as_str() else { return };
        let own: BTreeMap<String, String> = namespace["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_owned())))
            .collect();
        labels.insert(name.to_owned(), own);
    })
    .await?;
    Ok(labels)
}

/// The API of the catalog resource that fills `table`.
fn catalog_api(table: &str) -> Result<ApiRef> {
    let resource = catalog().resource_of(table).ok_or_else(|| Error::Catalog(format!("no resource fills {table}")))?;
    Ok(resource.api.clone())
}

/// Lists `api` page by page (`limit` objects a page) and hands each readable object to `each`.
async fn each_object(client: &kube::Client, api: &ApiRef, limit: u32, mut each: impl FnMut(Value)) -> Result<()> {
    let mut continue_token: Option<String> = None;
    let mut body = Vec::new();
    loop {
        let page = list_page(client, api, limit, continue_token.as_deref(), &mut body).await?;
        page.objects().filter_map(std::result::Result::ok).for_each(&mut each);
        match page.continue_token {
            Some(token) => continue_token = Some(token),
            None => return Ok(()),
        }
    }
}

async fn get_json(client: &kube::Client, path: &str) -> Result<Value> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|err| Error::BadRequest { request: path.to_owned(), source: err.into() })?;
    let body = send(client, request).await?;
    serde_json::from_slice(&body).map_err(|err| Error::ClusterJson { what: format!("GET {path}"), source: err })
}

/// The uid of the cluster's `kube-system` namespace: kubequery's cluster uid.
pub async fn cluster_uid(client: &kube::Client) -> Result<String> {
    let body = send(
        client,
        Request::new("/api/v1/namespaces")
            .get("kube-system", &Default::default())
            .map_err(|err| Error::BadRequest { request: "GET kube-system namespace".into(), source: err.into() })?,
    )
    .await?;
    let namespace: Value = serde_json::from_slice(&body)
        .map_err(|err| Error::ClusterJson { what: "the kube-system namespace".into(), source: err })?;
    namespace["metadata"]["uid"]
        .as_str()
        .filter(|uid| !uid.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| Error::ClusterAnswer("the kube-system namespace has no uid".into()))
}

async fn send(client: &kube::Client, request: http::Request<Vec<u8>>) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    send_into(client, request, &mut body).await?;
    Ok(body)
}

/// Sends `request` and reads the response body into `body` (emptied first): a listing passes
/// the same buffer for every page, so a page's body is not a fresh allocation of its size.
async fn send_into(client: &kube::Client, request: http::Request<Vec<u8>>, body: &mut Vec<u8>) -> Result<()> {
    receive_into(client, request, body).await?.check(body)
}

/// A response whose body was read: what [`Received::check`] needs to classify its status.
struct Received {
    path: String,
    status: StatusCode,
    retry_after: Option<Duration>,
}

/// Sends `request` and reads the whole response body into `body` (emptied first), whatever
/// its status.
async fn receive_into(client: &kube::Client, request: http::Request<Vec<u8>>, body: &mut Vec<u8>) -> Result<Received> {
    let path = request.uri().path().to_owned();
    let response = client
        .send(request.map(Body::from))
        .await
        .map_err(|source| Error::ClusterRequest { request: format!("GET {path}"), source })?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
        .map(Duration::from_secs);
    body.clear();
    let mut incoming = response.into_body();
    while let Some(frame) = incoming.frame().await {
        let frame = frame
            .map_err(|source| Error::ClusterRequest { request: format!("GET {path}: reading the response"), source })?;
        if let Some(data) = frame.data_ref() {
            body.extend_from_slice(data);
        }
    }
    Ok(Received { path, status, retry_after })
}

impl Received {
    /// Ok on a success status; else the error the status means, with the message of the
    /// `Status` object in `body`.
    fn check(self, body: &[u8]) -> Result<()> {
        let Self { path, status, retry_after } = self;
        if status.is_success() {
            return Ok(());
        }
        let reason = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|status| status["message"].as_str().map(str::to_owned))
            .unwrap_or_default();
        Err(match (status, retry_after) {
            (StatusCode::GONE, _) => Error::Expired { path, reason },
            (StatusCode::NOT_FOUND, _) => {
                Error::NotServed(format!("GET {path}: {status} {reason}").trim_end().to_owned())
            }
            (StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE, Some(retry_after)) => {
                Error::Throttled { path, status, reason, retry_after }
            }
            _ => Error::ClusterStatus { path, status, reason },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_paths_follow_the_api_group() {
        let api = |group: &str| ApiRef {
            group: group.into(),
            version: "v1".into(),
            kind: "X".into(),
            plural: "xs".into(),
            namespaced: true,
        };
        assert_eq!(list_path(&api("")), "/api/v1/xs");
        assert_eq!(list_path(&api("apps")), "/apis/apps/v1/xs");
    }

    #[test]
    fn list_items_are_read_one_by_one_and_unreadable_ones_say_why() {
        let body = r#"{"metadata": {"continue": ""}, "items": [
            {"metadata": {"name": "a"}}, {"metadata": {}}, 7
        ]}"#;
        let list: RawList = serde_json::from_str(body).unwrap();
        let page = Page {
            items: list.items.unwrap(),
            source: "the pods list".into(),
            names_required: true,
            type_meta: Some(("v1".into(), "Pod".into())),
            skipped: Vec::new(),
            continue_token: None,
        };
        let read: Vec<_> = page.objects().collect();
        assert_eq!(read[0].as_ref().unwrap()["metadata"]["name"], "a");
        assert_eq!(read[0].as_ref().unwrap()["kind"], "Pod", "list items get their kind");
        assert_eq!(read[1].as_ref().unwrap_err(), "an item of the pods list has no metadata.name");
        assert_eq!(read[2].as_ref().unwrap_err(), "an item of the pods list is not an object");
        assert_eq!(read.len(), 3);

        let version = Page::of_documents("/version", &[serde_json::json!({"gitVersion": "v1.33.0"})], Vec::new());
        let read: Vec<_> = version.unwrap().objects().collect();
        assert_eq!(read[0].as_ref().unwrap()["gitVersion"], "v1.33.0", "documents need no name");
    }
}
