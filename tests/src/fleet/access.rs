//! Who may read what on a simulated cluster, and how it answers when it is too busy.
//!
//! Besides the cluster's own token (which may read everything), a cluster can issue tokens
//! allowed only in some namespaces ([`Grant`]), as a ServiceAccount with a `view` RoleBinding in
//! each and nothing cluster-wide: a request outside them (a cluster-wide list, another
//! namespace, `GET` of another namespace) gets 403 with the `Status` kube-apiserver sends
//! (`responsewriters.Forbidden` and `forbiddenMessage` in `k8s.io/apiserver/pkg/endpoints/
//! handlers/responsewriters/errors.go`, `apierrors.NewForbidden`). Discovery and `/version`
//! stay open, as `system:discovery` allows every authenticated user.
//!
//! A [`Throttle`] answers some page requests of a resource with 429 and `Retry-After: 1`, as
//! API Priority and Fairness does when a priority level's queues are full
//! (`k8s.io/apiserver/pkg/server/filters/priority-and-fairness.go` with `maxinflight.go`'s
//! `tooManyRequests`: `http.Error`'s plain text and the `X-Kubernetes-PF-*` headers), or with the
//! `Status` body of `apierrors.NewTooManyRequests` that other throttles send.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::server::{parse_object_path, status_body};

/// A token of one cluster allowed only in some namespaces.
#[derive(Debug, Clone)]
pub struct Grant {
    pub token: String,
    /// The user the API server names in its messages: `system:serviceaccount:<ns>:<name>`.
    pub user: String,
    pub namespaces: Vec<String>,
}

/// Answers the next `pages` requests for continued pages (those with a continue token) of the
/// resource `plural` with 429: the middle of a paged list, where a restart costs the most.
#[derive(Debug, Clone)]
pub struct Throttle {
    pub plural: String,
    pub pages: u32,
    pub body: ThrottleBody,
}

/// The body of a throttled answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleBody {
    /// API Priority and Fairness's: `Too many requests, please try again later.` as plain text.
    PriorityAndFairness,
    /// A `Status` with `reason: TooManyRequests` and `details.retryAfterSeconds` (apimachinery's
    /// `NewTooManyRequests`).
    Status,
}

/// APF's message (`maxinflight.go`'s `tooManyRequests`).
const TOO_MANY_REQUESTS: &str = "Too many requests, please try again later.";

/// The 429 answer of `body`'s kind, with `Retry-After: 1` (APF's constant `retryAfter`).
pub fn too_many_requests(body: ThrottleBody) -> Response {
    let code = StatusCode::TOO_MANY_REQUESTS;
    let mut response = match body {
        ThrottleBody::PriorityAndFairness => {
            let mut response = (code, format!("{TOO_MANY_REQUESTS}\n")).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            headers.insert("X-Content-Type-Options", HeaderValue::from_static("nosniff"));
            // The UIDs of the FlowSchema and PriorityLevelConfiguration that classified it.
            let uid = HeaderValue::from_static("5e4a1b6c-2f6e-4c55-9d5b-0b1d6f2c1a77");
            headers.insert("X-Kubernetes-PF-FlowSchema-UID", uid.clone());
            headers.insert("X-Kubernetes-PF-PriorityLevel-UID", uid);
            response
        }
        ThrottleBody::Status => {
            let mut status = status_body(code, "TooManyRequests", TOO_MANY_REQUESTS);
            status["details"] = json!({"retryAfterSeconds": 1});
            (code, axum::Json(status)).into_response()
        }
    };
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// What an API request asks, as the authorizer sees it (kube-apiserver's `RequestInfo`).
struct Attributes<'a> {
    verb: &'static str,
    group: &'a str,
    plural: &'a str,
    /// The namespace of a namespaced request; a namespace's own name for `GET` of one.
    namespace: Option<&'a str>,
    name: Option<&'a str>,
}

/// The attributes of a request for `path` (`watch`: a `watch=true` query), `None` for a
/// non-resource request (discovery, `/version`).
fn attributes<'a>(path: &'a str, watch: bool) -> Option<Attributes<'a>> {
    let (group, rest) = match path.strip_prefix("/api/v1/") {
        Some(rest) => ("", rest),
        None => {
            let mut parts = path.strip_prefix("/apis/")?.splitn(3, '/');
            let (group, _version, rest) = (parts.next()?, parts.next()?, parts.next()?);
            (group, rest)
        }
    };
    let request = parse_object_path(rest)?;
    let verb = match (request.name, watch) {
        (_, true) => "watch",
        (Some(_), false) => "get",
        (None, false) => "list",
    };
    let namespace = match (request.namespace, request.plural, request.name) {
        (Some(namespace), _, _) => Some(namespace),
        (None, "namespaces", Some(name)) if group.is_empty() => Some(name),
        _ => None,
    };
    Some(Attributes { verb, group, plural: request.plural, namespace, name: request.name })
}

impl Grant {
    /// `None` when the grant allows the request for `path`, else the 403 the API server sends.
    pub fn refuse(&self, path: &str, watch: bool) -> Option<Response> {
        let asked = attributes(path, watch)?;
        if asked.namespace.is_some_and(|namespace| self.namespaces.iter().any(|own| own == namespace)) {
            return None;
        }
        let Attributes { verb, group, plural, namespace, name } = asked;
        let scope = match namespace {
            Some(namespace) => format!("in the namespace \"{namespace}\""),
            None => "at the cluster scope".to_owned(),
        };
        let why =
            format!("User \"{}\" cannot {verb} resource \"{plural}\" in API group \"{group}\" {scope}", self.user);
        let resource = if group.is_empty() { plural.to_owned() } else { format!("{plural}.{group}") };
        let message = match name {
            Some(name) => format!("{resource} \"{name}\" is forbidden: {why}"),
            None => format!("{resource} is forbidden: {why}"),
        };
        let code = StatusCode::FORBIDDEN;
        let mut body = status_body(code, "Forbidden", &message);
        body["details"] = json!({"kind": plural});
        if let Some(name) = name {
            body["details"]["name"] = json!(name);
        }
        if !group.is_empty() {
            body["details"]["group"] = json!(group);
        }
        Some((code, axum::Json(body)).into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_grant_allows_its_namespaces_and_refuses_the_rest_as_the_api_server_does() {
        let grant =
            Grant { token: "t".into(), user: "system:serviceaccount:ci:reader".into(), namespaces: vec!["a".into()] };
        for allowed in [
            "/api/v1/namespaces/a/pods",
            "/api/v1/namespaces/a",
            "/apis/apps/v1/namespaces/a/deployments",
            "/api",
            "/apis/apps/v1",
        ] {
            assert!(grant.refuse(allowed, false).is_none(), "{allowed}");
        }
        let grant = &grant;
        let message = |path: &'static str| async move {
            let response = grant.refuse(path, false).expect("refused");
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()["message"].as_str().unwrap().to_owned()
        };
        assert_eq!(
            message("/api/v1/pods").await,
            r#"pods is forbidden: User "system:serviceaccount:ci:reader" cannot list resource "pods" in API group "" at the cluster scope"#
        );
        assert_eq!(
            message("/api/v1/namespaces/kube-system").await,
            r#"namespaces "kube-system" is forbidden: User "system:serviceaccount:ci:reader" cannot get resource "namespaces" in API group "" in the namespace "kube-system""#
        );
        assert_eq!(
            message("/apis/apps/v1/namespaces/b/deployments").await,
            r#"deployments.apps is forbidden: User "system:serviceaccount:ci:reader" cannot list resource "deployments" in API group "apps" in the namespace "b""#
        );
    }
}
