//! The Kubernetes manifests (`deploy/kubernetes`, `deploy/overlays`) as the tests see them:
//! rendered with the real `kubectl kustomize`, each object checked against its k8s-openapi type,
//! and a rendered container turned into a local process (its command, args and environment, with
//! the addresses and mounted files substituted).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{ConfigMap, Container, PodSpec, Secret, Service, ServiceAccount},
        networking::v1::NetworkPolicy,
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate is in the workspace").to_owned()
}

/// The base every kustomization builds on: `kubectl apply -k deploy/kubernetes`.
pub fn base_dir() -> PathBuf {
    repo_root().join("deploy/kubernetes")
}

/// The optional components (`deploy/kubernetes/components/<name>`).
pub const COMPONENTS: [&str; 3] = ["with-services", "keda", "prometheus"];

/// The objects of one rendered kustomization, as JSON values in the order kustomize printed them.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// What was rendered, for messages.
    pub name: String,
    pub objects: Vec<Value>,
}

/// Runs `kubectl kustomize <dir>` and parses its output (a YAML stream).
pub fn kustomize(dir: &Path) -> anyhow::Result<Rendered> {
    let output = Command::new("kubectl").arg("kustomize").arg(dir).output().context("running kubectl kustomize")?;
    anyhow::ensure!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout)?;
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let object = Value::deserialize(document)?;
        if !object.is_null() {
            objects.push(object);
        }
    }
    let name = dir.strip_prefix(repo_root()).unwrap_or(dir).display().to_string();
    Ok(Rendered { name, objects })
}

/// Every kustomization the repository offers, rendered: the base, the base with each component
/// alone (a kustomization written into `scratch`, naming the base by a relative path, since
/// kustomize refuses absolute ones), and the shipped overlays.
pub fn render_all(scratch: &Path) -> anyhow::Result<Vec<Rendered>> {
    let mut rendered = vec![kustomize(&base_dir())?];
    for component in COMPONENTS {
        let dir = scratch.join(component);
        std::fs::create_dir_all(&dir)?;
        let base = relative_path(&dir, &base_dir())?;
        let kustomization = format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [{base}]\n\
             components: [{base}/components/{component}]\n"
        );
        std::fs::write(dir.join("kustomization.yaml"), kustomization)?;
        let mut one = kustomize(&dir)?;
        one.name = format!("base + {component}");
        rendered.push(one);
    }
    for overlay in std::fs::read_dir(repo_root().join("deploy/overlays"))? {
        rendered.push(kustomize(&overlay?.path())?);
    }
    Ok(rendered)
}

/// `to` as a path relative to the folder `from` (both absolute).
fn relative_path(from: &Path, to: &Path) -> anyhow::Result<String> {
    let from = from.canonicalize()?;
    let to = to.canonicalize()?;
    let common = from.components().zip(to.components()).take_while(|(a, b)| a == b).count();
    let ups = from.components().count() - common;
    let mut path: Vec<String> = vec!["..".to_owned(); ups];
    path.extend(to.components().skip(common).map(|c| c.as_os_str().to_string_lossy().into_owned()));
    Ok(path.join("/"))
}

/// An object's `apiVersion` and `kind`.
pub fn type_of(object: &Value) -> (&str, &str) {
    (object["apiVersion"].as_str().unwrap_or_default(), object["kind"].as_str().unwrap_or_default())
}

/// An object's `metadata.name`.
pub fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// The kinds kubecensus' manifests use that are not built into Kubernetes: checked field by
/// field by the tests, not by a type.
pub const CUSTOM_KINDS: [(&str, &str); 3] = [
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
];

/// Deserializes a built-in object as its k8s-openapi type and serializes it back: the result must
/// be the same JSON, so a misspelt or misplaced field (which deserialization ignores) or a value
/// of the wrong type fails. Errors name the object; a kind with no type here is an error too.
pub fn check_typed(object: &Value) -> anyhow::Result<()> {
    match type_of(object) {
        ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(object),
        ("v1", "ConfigMap") => round_trip::<ConfigMap>(object),
        ("v1", "Secret") => round_trip::<Secret>(object),
        ("v1", "Service") => round_trip::<Service>(object),
        ("apps/v1", "Deployment") => round_trip::<Deployment>(object),
        ("apps/v1", "StatefulSet") => round_trip::<StatefulSet>(object),
        ("policy/v1", "PodDisruptionBudget") => round_trip::<PodDisruptionBudget>(object),
        ("networking.k8s.io/v1", "NetworkPolicy") => round_trip::<NetworkPolicy>(object),
        (api_version, kind) => anyhow::bail!("{api_version} {kind} {} has no type to check it", name_of(object)),
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(object: &Value) -> anyhow::Result<()> {
    let typed: T = serde_json::from_value(object.clone())
        .with_context(|| format!("{:?} {} does not deserialize", type_of(object), name_of(object)))?;
    let again = serde_json::to_value(&typed)?;
    match difference(object, &again, "") {
        None => Ok(()),
        Some(at) => anyhow::bail!("{:?} {}: its type does not read {at}", type_of(object), name_of(object)),
    }
}

/// The first place where `rendered` and `read` differ: a JSON path and both values.
fn difference(rendered: &Value, read: &Value, path: &str) -> Option<String> {
    match (rendered, read) {
        (Value::Object(a), Value::Object(b)) => a.keys().chain(b.keys()).find_map(|key| {
            difference(
                &a.get(key).cloned().unwrap_or_default(),
                &b.get(key).cloned().unwrap_or_default(),
                &format!("{path}.{key}"),
            )
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            a.iter().zip(b).enumerate().find_map(|(i, (a, b))| difference(a, b, &format!("{path}[{i}]")))
        }
        (a, b) if a == b => None,
        (a, b) => Some(format!("{path}: rendered {a}, read as {b}")),
    }
}

/// The objects of `kind` as their type.
pub fn typed<T: DeserializeOwned>(rendered: &Rendered, kind: &str) -> Vec<T> {
    rendered
        .objects
        .iter()
        .filter(|object| type_of(object).1 == kind)
        .map(|object| serde_json::from_value(object.clone()).expect("checked by check_typed"))
        .collect()
}

/// A workload's pod template and name: Deployments and StatefulSets.
pub fn pod_specs(rendered: &Rendered) -> Vec<(String, PodSpec)> {
    let deployments = typed::<Deployment>(rendered, "Deployment")
        .into_iter()
        .map(|d| (d.metadata.name.unwrap_or_default(), d.spec.and_then(|s| s.template.spec)));
    let stateful_sets = typed::<StatefulSet>(rendered, "StatefulSet")
        .into_iter()
        .map(|s| (s.metadata.name.unwrap_or_default(), s.spec.and_then(|s| s.template.spec)));
    deployments.chain(stateful_sets).map(|(name, spec)| (name, spec.unwrap_or_default())).collect()
}

/// The ConfigMap whose name is `name` or `name` plus kustomize's hash suffix.
pub fn config_map(rendered: &Rendered, name: &str) -> Option<ConfigMap> {
    typed::<ConfigMap>(rendered, "ConfigMap").into_iter().find(|cm| {
        let rendered_name = cm.metadata.name.as_deref().unwrap_or_default();
        rendered_name == name
            || rendered_name.strip_prefix(name).and_then(|rest| rest.strip_prefix('-')).is_some_and(|h| h.len() == 10)
    })
}

/// The environment a container sees: its ConfigMaps' entries (`envFrom`), then its own `env`
/// (which wins, as in Kubernetes); a `fieldRef` to `metadata.name` gives `pod_name`.
pub fn container_env(rendered: &Rendered, container: &Container, pod_name: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for source in container.env_from.iter().flatten() {
        if let Some(reference) = &source.config_map_ref {
            let cm = rendered
                .objects
                .iter()
                .filter(|o| type_of(o) == ("v1", "ConfigMap") && name_of(o) == reference.name)
                .find_map(|o| serde_json::from_value::<ConfigMap>(o.clone()).ok());
            env.extend(cm.and_then(|cm| cm.data).unwrap_or_default());
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => value.clone(),
            (None, Some(from)) if from.field_ref.as_ref().is_some_and(|f| f.field_path == "metadata.name") => {
                pod_name.to_owned()
            }
            _ => continue,
        };
        env.insert(var.name.clone(), value);
    }
    env
}

/// The container port a probe or Service names: a number, or a port's name.
pub fn resolve_port(container: &Container, port: &IntOrString) -> Option<i32> {
    match port {
        IntOrString::Int(number) => Some(*number),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

/// A container's readiness probe: its HTTP path and port number.
pub fn readiness(container: &Container) -> Option<(String, i32)> {
    let get = container.readiness_probe.as_ref()?.http_get.as_ref()?;
    Some((get.path.clone()?, resolve_port(container, &get.port)?))
}

/// The value of `--<flag>` in args (`--flag=value` or `--flag value`).
pub fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let long = format!("--{flag}");
    args.iter().enumerate().find_map(|(i, arg)| match arg.strip_prefix(&long) {
        Some(rest) if rest.starts_with('=') => Some(&rest[1..]),
        Some("") => args.get(i + 1).map(String::as_str),
        _ => None,
    })
}
