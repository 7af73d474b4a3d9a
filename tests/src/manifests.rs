//! The Kubernetes manifests (`deploy/kubernetes`, `deploy/overlays`) as the tests see them:
//! rendered with the real `kubectl kustomize`, each object checked against its k8s-openapi type,
//! and a rendered container turned into a local process (its command, args and environment, with
//! the addresses and mounted files substituted).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context;

use crate::probes;
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
    let output = Command::new(crate::programs::kubectl())
        .arg("kustomize")
        .arg(dir)
        .output()
        .context("running kubectl kustomize")?;
    anyhow::ensure!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout)?;
    let mut objects = Vec::new();
    for document in serde_norway::Deserializer::from_str(&text) {
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
pub const CUSTOM_KINDS: [(&str, &str); 4] = [
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("postgresql.cnpg.io/v1", "Cluster"),
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

/// A rendered container run as a local process, the way its pod would run it: its command and
/// args, only its environment (ConfigMaps' entries and its own), and its volumes as folders of
/// `dir`, with every mount path in the environment, the args and the mounted ConfigMap files
/// replaced by the folder that stands in for it.
pub struct LocalPod<'a> {
    pub rendered: &'a Rendered,
    /// Where the volumes' folders go.
    pub dir: PathBuf,
    /// The files of each Secret, by name: Secrets are referenced by the manifests, never in them.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// ConfigMap entries replaced, by (ConfigMap name without kustomize's hash suffix, key): the
    /// registry of the simulated fleet instead of the example.
    pub config_files: BTreeMap<(String, String), String>,
    /// Settings replaced or added: the local services' addresses, the admin address.
    pub env: BTreeMap<String, String>,
}

impl LocalPod<'_> {
    /// The command that runs `container` of `pod` as pod `pod_name`; `binary` gives the path of
    /// one of the image's binaries.
    pub fn command(
        &self,
        pod_name: &str,
        pod: &PodSpec,
        container: &Container,
        binary: impl Fn(&str) -> PathBuf,
    ) -> anyhow::Result<Command> {
        let mounts = self.mount_volumes(pod_name, pod, container)?;
        let substitute = |text: &str| substitute_mounts(text, &mounts);
        let command_line = container.command.clone().context("a command")?;
        let mut command = Command::new(binary(&command_line[0]));
        command.args(command_line[1..].iter().chain(container.args.iter().flatten()).map(|a| substitute(a)));
        command.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
        for (name, value) in container_env(self.rendered, container, pod_name) {
            command.env(name, substitute(&value));
        }
        command.envs(&self.env);
        Ok(command)
    }

    /// Makes a folder per volume mount of the container, filled from its ConfigMap or Secret;
    /// returns (mount path, folder) pairs, longest mount path first.
    fn mount_volumes(
        &self,
        pod_name: &str,
        pod: &PodSpec,
        container: &Container,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let mut mounts = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let local = self.dir.join(pod_name).join(&mount.name);
            std::fs::create_dir_all(&local)?;
            mounts.push((mount.mount_path.clone(), local.to_str().context("a UTF-8 path")?.to_owned()));
        }
        mounts.sort_by_key(|(mount, _)| std::cmp::Reverse(mount.len()));
        for mount in container.volume_mounts.iter().flatten() {
            let volume = pod.volumes.iter().flatten().find(|v| v.name == mount.name).context("a mounted volume")?;
            let local = self.dir.join(pod_name).join(&mount.name);
            let files = if let Some(source) = &volume.config_map {
                let cm = config_map(self.rendered, &source.name).context("a mounted ConfigMap")?;
                let base_name = source.name.rsplit_once('-').map_or(source.name.as_str(), |(base, _)| base);
                cm.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(key, value)| {
                        let value =
                            self.config_files.get(&(base_name.to_owned(), key.clone())).cloned().unwrap_or(value);
                        let value = substitute_mounts(&value, &mounts);
                        (key, value)
                    })
                    .collect()
            } else if let Some(source) = &volume.secret {
                let name = source.secret_name.clone().unwrap_or_default();
                match self.secrets.get(&name) {
                    Some(files) => files.clone(),
                    None if source.optional == Some(true) => BTreeMap::new(),
                    None => anyhow::bail!("the pod needs Secret {name}"),
                }
            } else {
                BTreeMap::new()
            };
            for (key, value) in files {
                std::fs::write(local.join(key), value)?;
            }
        }
        Ok(mounts)
    }
}

/// `text` with each mount path replaced by its local folder, in one pass (a folder is never
/// replaced again); `mounts` are (mount path, folder) pairs, longest mount path first.
fn substitute_mounts(text: &str, mounts: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        match mounts.iter().find(|(mount, _)| rest.starts_with(mount.as_str())) {
            Some((mount, local)) => {
                out.push_str(local);
                rest = &rest[mount.len()..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// The binary a container runs: the first word of its command.
pub fn command_of(container: &Container) -> &str {
    container.command.as_ref().and_then(|c| c.first()).map(String::as_str).unwrap_or_default()
}

/// A rendered container running as a local process; killed on drop.
pub struct Running {
    pub child: std::process::Child,
    /// The local address standing in for its admin port.
    pub addr: std::net::SocketAddr,
    /// Its readiness probe's path.
    pub ready_path: String,
    pub log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Waits until its readiness path answers `status`; fails with its log.
    pub async fn wait_ready(&self, status: u16, timeout: Duration) {
        if let Err(err) = probes::wait_for(self.addr, &self.ready_path, status, timeout).await {
            panic!("{err:#}; log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }

    /// Its `/metrics` as text, which must answer 200.
    pub async fn metrics_text(&self) -> String {
        let answer = probes::get(self.addr, "/metrics").await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body
    }

    /// Its `/metrics`, read.
    pub async fn metrics(&self) -> probes::Metrics {
        probes::scrape(self.addr).await.unwrap()
    }
}

/// Starts the container of `local`'s rendering whose command is `binary_name`, in the workload
/// whose name `pod_name` starts with (`kubecensus-scheduler` for `kubecensus-scheduler-0`), as pod `pod_name`,
/// its admin endpoint on a free local port, with `extra_env` added; logs go to `<dir>/<pod>.log`.
pub fn start_container(local: &LocalPod<'_>, binary_name: &str, pod_name: &str, extra_env: &[(&str, &str)]) -> Running {
    let pods = pod_specs(local.rendered);
    let (pod, container) = pods
        .iter()
        .filter(|(workload, _)| pod_name.starts_with(workload.as_str()))
        .flat_map(|(_, pod)| pod.containers.iter().map(move |c| (pod, c)))
        .find(|(_, c)| command_of(c) == binary_name)
        .unwrap_or_else(|| panic!("no {binary_name} container"));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], crate::servers::free_port().unwrap()));
    let (ready_path, probe_port) = readiness(container).expect("a readiness probe");
    let admin = container_env(local.rendered, container, pod_name)["KUBECENSUS_ADMIN_ADDR"].clone();
    assert!(admin.ends_with(&format!(":{probe_port}")), "the probe's port {probe_port} is the admin port {admin}");
    let mut command = local.command(pod_name, pod, container, crate::harness::binary).unwrap();
    command.env("KUBECENSUS_ADMIN_ADDR", addr.to_string()).envs(extra_env.iter().copied());
    let log = local.dir.join(format!("{pod_name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let child = command.stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
    Running { child, addr, ready_path, log }
}
