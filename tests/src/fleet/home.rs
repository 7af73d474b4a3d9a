//! A simulated home cluster: the management cluster where platform teams keep every cluster's
//! credentials as Secrets. It serves only what kubecensus reads there: discovery and Secrets,
//! listed per namespace with a label selector, over HTTPS with its own CA and bearer token.
//!
//! [`HomeCluster::argocd_secret`] and [`HomeCluster::capi_secret`] make a simulated cluster's
//! Secret in Argo CD's or Cluster API's format; [`HomeCluster::put`] and [`HomeCluster::delete`]
//! change the Secrets at any time.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{SimCluster, kubeconfig_user, tls, write_private};

/// `/api/v1` discovery: only Secrets, enough for kubectl.
static SECRETS_RESOURCE_LIST: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| {
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": [
        {"name": "secrets", "singularName": "secret", "namespaced": true, "kind": "Secret", "verbs": ["get", "list"]}
    ]})
});

/// Secrets by (namespace, name).
type Secrets = BTreeMap<(String, String), Value>;

struct HomeState {
    token: String,
    secrets: Mutex<Secrets>,
}

/// A running home cluster. Dropping it stops its server.
pub struct HomeCluster {
    state: Arc<HomeState>,
    handle: Handle<SocketAddr>,
    /// A kubeconfig reaching it (context `home`).
    pub kubeconfig: PathBuf,
}

impl HomeCluster {
    /// Starts an empty home cluster and writes `home.kubeconfig` into `out_dir`.
    pub fn start(out_dir: &Path) -> anyhow::Result<Self> {
        let tls = tls::cluster_tls("home", false)?;
        let token = format!("home-{}", uuid::Uuid::new_v4().simple());
        let state = Arc::new(HomeState { token: token.clone(), secrets: Mutex::default() });
        let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let handle = Handle::new();
        let app = Router::new()
            .route(
                "/version",
                get(|| async { axum::Json(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.1"})) }),
            )
            .route("/api", get(|| async { axum::Json(json!({"kind": "APIVersions", "versions": ["v1"]})) }))
            .route("/api/v1", get(|| async { axum::Json(SECRETS_RESOURCE_LIST.clone()) }))
            .route(
                "/apis",
                get(|| async { axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})) }),
            )
            .route("/api/v1/namespaces/{namespace}/secrets", get(list_secrets))
            .with_state(Arc::clone(&state));
        let http = axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(tls.server_config))?
            .handle(handle.clone());
        tokio::spawn(async move {
            if let Err(err) = http.serve(app.into_make_service()).await {
                tracing::error!(%err, "simulated home cluster stopped");
            }
        });
        let kubeconfig = out_dir.join("home.kubeconfig");
        let config = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "home",
            "clusters": [{"name": "home", "cluster": {"server": format!("https://{address}"),
                                                      "certificate-authority-data": STANDARD.encode(&tls.ca_pem)}}],
            "users": [{"name": "home", "user": {"token": token}}],
            "contexts": [{"name": "home", "context": {"cluster": "home", "user": "home"}}],
        });
        write_private(&kubeconfig, &serde_norway::to_string(&config)?)?;
        Ok(Self { state, handle, kubeconfig })
    }

    /// Adds or replaces a Secret (by its namespace and name).
    pub fn put(&self, secret: Value) {
        let key = (
            secret["metadata"]["namespace"].as_str().unwrap_or("default").to_owned(),
            secret["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
        );
        self.state.secrets.lock().expect("secrets lock").insert(key, secret);
    }

    /// Deletes a Secret; whether it was there.
    pub fn delete(&self, namespace: &str, name: &str) -> bool {
        self.state.secrets.lock().expect("secrets lock").remove(&(namespace.to_owned(), name.to_owned())).is_some()
    }

    /// An Argo CD cluster Secret for `cluster` in `namespace`: its token (or client certificate)
    /// and CA, with `fields` as `fields.kubecensus.io/` labels.
    pub fn argocd_secret(namespace: &str, cluster: &SimCluster, fields: &[(&str, &str)]) -> Value {
        let mut tls = json!({"caData": STANDARD.encode(&cluster.ca_pem)});
        let mut config = json!({});
        match &cluster.client_certificate {
            Some((certificate, key)) => {
                tls["certData"] = json!(STANDARD.encode(certificate));
                tls["keyData"] = json!(STANDARD.encode(key));
            }
            None => config["bearerToken"] = json!(cluster.token),
        }
        config["tlsClientConfig"] = tls;
        Self::argocd_secret_with_config(namespace, cluster, &config, fields)
    }

    /// An Argo CD cluster Secret for `cluster` with this `config` JSON.
    pub fn argocd_secret_with_config(
        namespace: &str,
        cluster: &SimCluster,
        config: &Value,
        fields: &[(&str, &str)],
    ) -> Value {
        let mut labels = json!({"argocd.argoproj.io/secret-type": "cluster"});
        for (field, value) in fields {
            labels[format!("fields.kubecensus.io/{field}")] = json!(value);
        }
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": format!("cluster-{}", cluster.name), "namespace": namespace, "labels": labels},
            "data": {
                "name": STANDARD.encode(&cluster.name),
                "server": STANDARD.encode(&cluster.url),
                "config": STANDARD.encode(config.to_string()),
            },
        })
    }

    /// Cluster API's `<cluster>-kubeconfig` Secret for `cluster` in `namespace`, with `fields` as
    /// `fields.kubecensus.io/` annotations.
    pub fn capi_secret(namespace: &str, cluster: &SimCluster, fields: &[(&str, &str)]) -> Value {
        let user = format!("{}-admin", cluster.name);
        let context = format!("{user}@{}", cluster.name);
        let kubeconfig = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": cluster.name, "cluster": {"server": cluster.url,
                                                             "certificate-authority-data": STANDARD.encode(&cluster.ca_pem)}}],
            "users": [{"name": user, "user": kubeconfig_user(cluster)}],
            "contexts": [{"name": context, "context": {"cluster": cluster.name, "user": user}}],
        });
        let annotations: serde_json::Map<String, Value> =
            fields.iter().map(|(field, value)| (format!("fields.kubecensus.io/{field}"), json!(value))).collect();
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "cluster.x-k8s.io/secret",
            "metadata": {"name": format!("{}-kubeconfig", cluster.name), "namespace": namespace,
                         "labels": {"cluster.x-k8s.io/cluster-name": cluster.name}, "annotations": annotations},
            "data": {"value": STANDARD.encode(serde_norway::to_string(&kubeconfig).expect("YAML"))},
        })
    }
}

impl Drop for HomeCluster {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(rename = "labelSelector")]
    label_selector: Option<String>,
}

/// `GET /api/v1/namespaces/{namespace}/secrets`: the bearer token checked, the label selector
/// applied.
async fn list_secrets(
    State(state): State<Arc<HomeState>>,
    UrlPath(namespace): UrlPath<String>,
    Query(query): Query<ListQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    let token = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if token.and_then(|t| t.strip_prefix("Bearer ")) != Some(state.token.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"kind": "Status", "code": 401, "reason": "Unauthorized"})),
        )
            .into_response();
    }
    let selector = query.label_selector.unwrap_or_default();
    let items: Vec<Value> = state
        .secrets
        .lock()
        .expect("secrets lock")
        .iter()
        .filter(|((ns, _), secret)| *ns == namespace && matches(&selector, &secret["metadata"]["labels"]))
        .map(|(_, secret)| secret.clone())
        .collect();
    axum::Json(json!({"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}))
        .into_response()
}

/// Whether `labels` match an equality-based label selector (`a=b,c!=d,e,!f`).
fn matches(selector: &str, labels: &Value) -> bool {
    selector.split(',').map(str::trim).filter(|term| !term.is_empty()).all(|term| {
        if let Some((key, value)) = term.split_once("!=") {
            labels[key.trim()].as_str() != Some(value.trim())
        } else if let Some((key, value)) = term.split_once('=') {
            labels[key.trim()].as_str() == Some(value.trim_start_matches('=').trim())
        } else if let Some(key) = term.strip_prefix('!') {
            labels[key.trim()].is_null()
        } else {
            !labels[term].is_null()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_match_as_the_api_server_does() {
        let labels = json!({"a": "1", "b": "2"});
        assert!(matches("a=1,b", &labels));
        assert!(matches("a==1,!c", &labels));
        assert!(!matches("a!=1", &labels));
        assert!(!matches("c", &labels));
        assert!(matches("", &labels));
    }
}
