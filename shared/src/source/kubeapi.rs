//! Listing one resource of one cluster, page by page, as raw JSON objects.
//!
//! Pages are fetched with `limit` and `continue` so a worker holds one page at a time, whatever
//! the cluster's size, and its objects are parsed into `serde_json::Value` one at a time as
//! they are read: one malformed object is skipped (and counted) instead of failing its page.
//! Requests go through a [`ClusterApi`] (throttled answers waited out, statuses classified so
//! the worker knows what to do: an expired continue token restarts the listing, a resource the
//! cluster does not serve skips the job, a missing permission fails it, anything else fails the
//! attempt). A cluster read only in some namespaces is listed one namespace at a time
//! ([`list_path`] with a namespace) and its namespaces fetched by name ([`named_namespaces`]).

use std::collections::{BTreeMap, HashMap};

use kube::core::{Request, params::ListParams};
use serde::Deserialize;
use serde_json::{Value, value::RawValue};

pub use super::cluster_api::ClusterApi;
use crate::{
    Error, Result,
    model::catalog::{ApiRef, Catalog, CustomKind, ResourceSource},
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

/// Where one API of a listing is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach<'a> {
    /// One cluster-wide list.
    Everywhere,
    /// The list of one namespace.
    In(&'a str),
    /// The namespaces of these names, each fetched by name (the `namespaces` of a cluster read
    /// only in them: listing namespaces is cluster-wide).
    Named(&'a [String]),
}

impl<'a> Reach<'a> {
    /// Where `api` is read from a cluster read in `read_in` (empty: every namespace).
    pub fn of(api: &ApiRef, read_in: &'a [String]) -> Vec<Self> {
        match (read_in.is_empty(), api.namespaced, is_namespaces(api)) {
            (true, _, _) | (false, false, false) => vec![Self::Everywhere],
            (false, _, true) => vec![Self::Named(read_in)],
            (false, true, false) => read_in.iter().map(|namespace| Self::In(namespace)).collect(),
        }
    }
}

/// Whether `api` is the core `namespaces` resource.
pub fn is_namespaces(api: &ApiRef) -> bool {
    api.group.is_empty() && api.plural == "namespaces"
}

/// An `apiVersion`: `v1`, `apps/v1`.
pub fn api_version(api: &ApiRef) -> String {
    match api.group.as_str() {
        "" => api.version.clone(),
        group => format!("{group}/{}", api.version),
    }
}

/// The URL path that lists a resource: in every namespace (`/api/v1/pods`), or in one
/// (`/api/v1/namespaces/<namespace>/pods`, for a namespaced resource).
pub fn list_path(api: &ApiRef, namespace: Option<&str>) -> String {
    let prefix = match api.group.as_str() {
        "" => format!("/api/{}", api.version),
        group => format!("/apis/{group}/{}", api.version),
    };
    match namespace.filter(|_| api.namespaced) {
        Some(namespace) => format!("{prefix}/namespaces/{namespace}/{}", api.plural),
        None => format!("{prefix}/{}", api.plural),
    }
}

/// Fetches one page of `api` (in `namespace`, or all), starting at `continue_token`, reading its
/// body into `body`.
pub async fn list_page(
    client: &ClusterApi<'_>,
    api: &ApiRef,
    namespace: Option<&str>,
    limit: u32,
    continue_token: Option<&str>,
    body: &mut Vec<u8>,
) -> Result<Page> {
    let mut params = ListParams::default().limit(limit);
    if let Some(token) = continue_token {
        params = params.continue_token(token);
    }
    let path = list_path(api, namespace);
    let build = || {
        Request::new(&path).list(&params).map_err(|err| Error::BadRequest { request: path.clone(), source: err.into() })
    };
    client.send_into(build, body, true).await?;
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

/// One page of what a resource of `source` lists: a page of `api`'s list where `reach` says
/// from `continue_token` (`page_size` objects at most, its body read into `body`), or the
/// cluster's discovery or version document.
pub async fn fetch(
    client: &ClusterApi<'_>,
    source: ResourceSource,
    api: &ApiRef,
    reach: Reach<'_>,
    page_size: u32,
    continue_token: Option<&str>,
    body: &mut Vec<u8>,
) -> Result<Page> {
    match (source, reach) {
        (ResourceSource::List | ResourceSource::Custom, Reach::Named(names)) => {
            named_namespaces(client, api, names).await
        }
        (ResourceSource::List | ResourceSource::Custom, Reach::Everywhere) => {
            list_page(client, api, None, page_size, continue_token, body).await
        }
        (ResourceSource::List | ResourceSource::Custom, Reach::In(namespace)) => {
            list_page(client, api, Some(namespace), page_size, continue_token, body).await
        }
        (ResourceSource::Discovery, _) => discovery(client).await,
        (ResourceSource::Version, _) => version(client).await,
    }
}

/// Discovery as objects: one `APIResourceList` per group/version the cluster serves (`/api/v1`,
/// then every version of every group under `/apis`), each with `group` and `version` added so
/// rows can name them. A group/version that fails to answer (an aggregated API that is down) is
/// skipped with the reason rather than failing the whole listing.
pub async fn discovery(client: &ClusterApi<'_>) -> Result<Page> {
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
pub async fn find_kind(client: &ClusterApi<'_>, kind: &CustomKind) -> Result<ApiRef> {
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
/// (`apiextensions.k8s.io/v1`, as `catalog` names it): what the target of every other custom
/// kind lists.
pub async fn defined_kinds(client: &ClusterApi<'_>, catalog: &Catalog, limit: u32) -> Result<Vec<CustomKind>> {
    let api = catalog_api(catalog, "kubernetes_custom_resource_definitions")?;
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
pub async fn version(client: &ClusterApi<'_>) -> Result<Page> {
    let info = get_json(client, "/version").await?;
    Page::of_documents("/version", &[info], Vec::new())
}

/// The labels of every namespace, by name (the API `catalog` names): listed page by page, or for
/// a cluster read only in `namespaces` (not empty), those fetched by name ([`named_namespaces`]).
pub async fn namespace_labels(
    client: &ClusterApi<'_>,
    catalog: &Catalog,
    limit: u32,
    namespaces: &[String],
) -> Result<HashMap<String, BTreeMap<String, String>>> {
    let api = catalog_api(catalog, "kubernetes_namespaces")?;
    let mut labels = HashMap::new();
    let each = |namespace: Value| {
        let Some(name) = namespace["metadata"]["name"].as_str() else { return };
        let own: BTreeMap<String, String> = namespace["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_owned())))
            .collect();
        labels.insert(name.to_owned(), own);
    };
    if namespaces.is_empty() {
        each_object(client, &api, limit, each).await?;
    } else {
        named_namespaces(client, &api, namespaces).await?.objects().filter_map(std::result::Result::ok).for_each(each);
    }
    Ok(labels)
}

/// The `namespaces` objects (`api`) of these names, each fetched by name (`GET
/// /api/v1/namespaces/<name>`), as one page: what a cluster read only in some namespaces lists
/// of its namespaces. Listing namespaces is cluster-wide, but getting one is a request in that
/// namespace (kube-apiserver's `RequestInfoFactory` takes a namespace's name as the request's
/// namespace), which a Role there can allow (the `view`, `edit` and `admin` roles do). A
/// namespace that does not exist (404) is left out.
pub async fn named_namespaces(client: &ClusterApi<'_>, api: &ApiRef, names: &[String]) -> Result<Page> {
    let mut items = Vec::new();
    for name in names {
        match get_json(client, &format!("{}/{name}", list_path(api, None))).await {
            Ok(namespace) => items.push(
                serde_json::value::to_raw_value(&namespace)
                    .map_err(|err| Error::ClusterJson { what: format!("the {name} namespace"), source: err })?,
            ),
            Err(Error::NotServed(why)) => tracing::debug!(%why, "a registry namespace does not exist; left out"),
            Err(err) => return Err(err),
        }
    }
    Ok(Page {
        items,
        source: "the named namespaces".into(),
        names_required: true,
        type_meta: Some((api_version(api), api.kind.clone())),
        skipped: Vec::new(),
        continue_token: None,
    })
}

/// The API of the resource of `catalog` that fills `table`.
///
/// # Errors
/// [`Error::Catalog`] when no resource of `catalog` fills it.
pub fn catalog_api(catalog: &Catalog, table: &str) -> Result<ApiRef> {
    let resource = catalog.resource_of(table).ok_or_else(|| Error::Catalog(format!("no resource fills {table}")))?;
    Ok(resource.api.clone())
}

/// Lists `api` page by page (`limit` objects a page) and hands each readable object to `each`.
async fn each_object(client: &ClusterApi<'_>, api: &ApiRef, limit: u32, mut each: impl FnMut(Value)) -> Result<()> {
    let mut continue_token: Option<String> = None;
    let mut body = Vec::new();
    loop {
        let page = list_page(client, api, None, limit, continue_token.as_deref(), &mut body).await?;
        page.objects().filter_map(std::result::Result::ok).for_each(&mut each);
        match page.continue_token {
            Some(token) => continue_token = Some(token),
            None => return Ok(()),
        }
    }
}

async fn get_json(client: &ClusterApi<'_>, path: &str) -> Result<Value> {
    let build = || {
        http::Request::get(path)
            .body(Vec::new())
            .map_err(|err| Error::BadRequest { request: path.to_owned(), source: err.into() })
    };
    let body = client.send(build).await?;
    serde_json::from_slice(&body).map_err(|err| Error::ClusterJson { what: format!("GET {path}"), source: err })
}

/// The namespaces whose uid is the cluster's, in order: kubequery's `cluster_uid` is
/// `kube-system`'s; `default` is the one namespace every cluster keeps.
const UID_NAMESPACES: [&str; 2] = ["kube-system", "default"];

/// The cluster's uid (kubequery's `cluster_uid`): the uid of its `kube-system` namespace; where
/// the credential may not read it (403) or it is missing (404), the `default` namespace's; where
/// neither can be read, `name`, the cluster's registry name. Learned at every job.
pub async fn cluster_uid(client: &ClusterApi<'_>, name: &str) -> Result<String> {
    for namespace in UID_NAMESPACES {
        match namespace_uid(client, namespace).await {
            Ok(uid) => return Ok(uid),
            Err(err @ (Error::Forbidden { .. } | Error::NotServed(_))) => {
                tracing::debug!(%err, "this namespace's uid cannot be the cluster's; trying the next");
            }
            Err(err) => return Err(err),
        }
    }
    Ok(name.to_owned())
}

/// The uid of one namespace.
async fn namespace_uid(client: &ClusterApi<'_>, name: &str) -> Result<String> {
    let namespace = get_json(client, &format!("/api/v1/namespaces/{name}")).await?;
    namespace["metadata"]["uid"]
        .as_str()
        .filter(|uid| !uid.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| Error::ClusterAnswer(format!("the {name} namespace has no uid")))
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
        assert_eq!(list_path(&api(""), None), "/api/v1/xs");
        assert_eq!(list_path(&api("apps"), None), "/apis/apps/v1/xs");
        assert_eq!(list_path(&api("apps"), Some("a")), "/apis/apps/v1/namespaces/a/xs");
        let cluster_scoped = ApiRef { namespaced: false, ..api("") };
        assert_eq!(list_path(&cluster_scoped, Some("a")), "/api/v1/xs", "no namespace for a cluster-scoped kind");
    }

    #[test]
    fn a_cluster_read_in_namespaces_lists_each_and_gets_its_namespaces_by_name() {
        let api = |plural: &str, namespaced| ApiRef {
            group: String::new(),
            version: "v1".into(),
            kind: "X".into(),
            plural: plural.into(),
            namespaced,
        };
        let read_in = ["a".to_owned(), "b".to_owned()];
        assert_eq!(Reach::of(&api("pods", true), &[]), [Reach::Everywhere]);
        assert_eq!(Reach::of(&api("pods", true), &read_in), [Reach::In("a"), Reach::In("b")]);
        assert_eq!(Reach::of(&api("namespaces", false), &read_in), [Reach::Named(&read_in)]);
        assert_eq!(Reach::of(&api("nodes", false), &read_in), [Reach::Everywhere], "cluster_resources: true");
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
