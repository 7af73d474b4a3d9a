//! Generated cluster content: namespaces, nodes and pods shaped like the real objects a k3s or
//! EKS cluster returns, drawn from a small seeded PRNG so a seed always gives the same fleet.
//!
//! Objects come out without `resourceVersion`; the store assigns those. Pods are made by a
//! [`PodFactory`] that knows the cluster's namespaces and nodes, so churn can add pods later to
//! generated and file-loaded clusters alike.

use std::collections::HashSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};

/// A splitmix64 generator: tiny, fast, and good enough for plausible test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with the given probability in percent.
    pub fn percent(&mut self, chance: u64) -> bool {
        self.next_u64() % 100 < chance
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A random (version 4) UUID in its text form.
    pub fn uuid(&mut self) -> String {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
    }

    /// `len` lower-case hex digits.
    pub fn hex(&mut self, len: usize) -> String {
        self.chars(len, b"0123456789abcdef")
    }

    /// `len` characters from `alphabet`.
    pub(super) fn chars(&mut self, len: usize, alphabet: &[u8]) -> String {
        (0..len).map(|_| char::from(*self.pick(alphabet))).collect()
    }
}

/// The alphabet Kubernetes uses for generated name suffixes.
pub(super) const NAME_SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Namespaces beyond `kube-system` and `default`, used in order (then again with a number).
const NAMESPACE_NAMES: &[&str] = &[
    "team-a-payments",
    "team-b-checkout",
    "team-c-search",
    "platform-monitoring",
    "platform-ingress",
    "data-kafka",
    "team-d-orders",
    "security-vault",
];

/// Container images, shaped like the ones real clusters run: tags, registries, digests.
pub(super) const IMAGES: &[&str] = &[
    "nginx:1.25.3",
    "nginx:1.27.0-alpine",
    "redis:7.2.4",
    "postgres:16.2",
    "memcached:1.6.23",
    "busybox:1.36",
    "registry.k8s.io/coredns/coredns:v1.11.1",
    "registry.k8s.io/kube-proxy:v1.33.1",
    "registry.k8s.io/metrics-server/metrics-server:v0.7.1",
    "registry.k8s.io/ingress-nginx/controller:v1.10.0",
    "quay.io/prometheus/prometheus:v2.51.0",
    "quay.io/prometheus/node-exporter:v1.7.0",
    "quay.io/prometheus/alertmanager:v0.27.0",
    "grafana/grafana:10.4.1",
    "docker.io/bitnami/kafka:3.7.0",
    "docker.io/library/rabbitmq:3.13-management",
    "ghcr.io/fluxcd/source-controller:v1.2.4",
    "quay.io/jetstack/cert-manager-controller:v1.14.4",
    "docker.io/istio/proxyv2:1.21.0",
    "fluent/fluent-bit:3.0.0",
    "docker.elastic.co/elasticsearch/elasticsearch:8.13.0",
    "ghcr.io/org/payments-api@sha256:3c1f0e5d8a2b4c6e9f7a1b3d5e7f9a0c2e4f6a8b0d2c4e6f8a1b3c5d7e9f0a2b",
    "ghcr.io/org/checkout@sha256:9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b",
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/orders:2024.03.1",
    "gcr.io/distroless/static:nonroot",
    "mcr.microsoft.com/dotnet/aspnet:8.0",
    "otel/opentelemetry-collector-contrib:0.97.0",
    "hashicorp/vault:1.16.1",
    "envoyproxy/envoy:v1.29.2",
    "ghcr.io/org/search-indexer:v3.4.0",
];

/// A workload: the `app` label and its main container's image (an index into [`IMAGES`]).
struct App {
    name: &'static str,
    image: usize,
}

const SYSTEM_APPS: &[App] = &[
    App { name: "coredns", image: 6 },
    App { name: "kube-proxy", image: 7 },
    App { name: "metrics-server", image: 8 },
];

const APPS: &[App] = &[
    App { name: "web", image: 0 },
    App { name: "frontend", image: 1 },
    App { name: "cache", image: 2 },
    App { name: "db", image: 3 },
    App { name: "sessions", image: 4 },
    App { name: "ingress-controller", image: 9 },
    App { name: "prometheus", image: 10 },
    App { name: "node-exporter", image: 11 },
    App { name: "alertmanager", image: 12 },
    App { name: "grafana", image: 13 },
    App { name: "kafka", image: 14 },
    App { name: "rabbitmq", image: 15 },
    App { name: "source-controller", image: 16 },
    App { name: "cert-manager", image: 17 },
    App { name: "elasticsearch", image: 20 },
    App { name: "payments-api", image: 21 },
    App { name: "checkout", image: 22 },
    App { name: "orders", image: 23 },
    App { name: "static-site", image: 24 },
    App { name: "billing", image: 25 },
    App { name: "vault", image: 27 },
    App { name: "edge-proxy", image: 28 },
    App { name: "search-indexer", image: 29 },
];

/// Sidecar containers: name and image index.
const SIDECARS: &[(&str, usize)] = &[("istio-proxy", 18), ("log-shipper", 19), ("otel-collector", 26)];

const CPU_REQUESTS: &[&str] = &["50m", "100m", "250m", "500m", "1"];
const MEMORY_REQUESTS: &[&str] = &["64Mi", "128Mi", "256Mi", "512Mi", "1Gi"];
const INSTANCE_TYPES: &[(&str, u32, u64)] = &[("m5.xlarge", 4, 16), ("m5.2xlarge", 8, 32), ("c6i.4xlarge", 16, 32)];

/// When generated objects were (notionally) created.
pub(super) fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 6, 9, 0, 0).single().expect("a valid date")
}

/// RFC 3339 with second precision and `Z`, as the API server writes timestamps.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A deterministic fake digest for an image (the `imageID` a kubelet reports).
fn image_id(image: &str) -> String {
    if image.contains("@sha256:") {
        return image.to_owned();
    }
    let repo = image.rsplit_once(':').map_or(image, |(repo, _)| repo);
    let mut rng =
        Rng::new(image.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)));
    format!("{repo}@sha256:{}", rng.hex(64))
}

/// The namespace names of a generated cluster: `kube-system`, `default`, then team namespaces.
fn namespace_names(count: usize) -> Vec<String> {
    let mut names = vec!["kube-system".to_owned(), "default".to_owned()];
    for i in 0..count.saturating_sub(2) {
        let base = NAMESPACE_NAMES[i % NAMESPACE_NAMES.len()];
        let round = i / NAMESPACE_NAMES.len();
        names.push(if round == 0 { base.to_owned() } else { format!("{base}-{}", round + 1) });
    }
    names
}

/// A namespace object. `uid` is given so `kube-system`'s can be the cluster uid.
pub fn namespace(name: &str, uid: &str, created: DateTime<Utc>) -> Value {
    json!({
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": uid,
            "creationTimestamp": timestamp(created),
            "labels": namespace_labels(name),
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

/// A namespace's labels: its name, and for team namespaces (`team-a-payments`) the team.
fn namespace_labels(name: &str) -> Value {
    let mut labels = json!({"kubernetes.io/metadata.name": name});
    if let Some(team) = name.strip_prefix("team-").and_then(|rest| rest.split_once('-')).map(|(_, team)| team) {
        labels["team"] = json!(team);
    }
    labels
}

/// The generated content of one cluster.
pub struct ClusterContent {
    pub objects: Vec<Value>,
    pub pod_factory: PodFactory,
}

/// Generates a cluster's namespaces, nodes and pods, and the other kinds' objects
/// ([`super::workloads::generate`]; with `workloads`, each namespace's too). `cluster_uid`
/// becomes `kube-system`'s uid.
pub fn generate(
    cluster: &str,
    region: &str,
    cluster_uid: &str,
    counts: (usize, usize, usize),
    workloads: bool,
    rng: &mut Rng,
) -> ClusterContent {
    let (namespace_count, node_count, pod_count) = counts;
    let created = epoch();
    let namespaces: Vec<Value> = namespace_names(namespace_count)
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let uid = if name == "kube-system" { cluster_uid.to_owned() } else { rng.uuid() };
            namespace(name, &uid, created + Duration::minutes(i as i64))
        })
        .collect();
    let nodes: Vec<Value> = (0..node_count).map(|i| node(cluster, region, i, rng)).collect();
    let pod_factory = PodFactory::new(&namespaces, &nodes);
    let mut taken = HashSet::new();
    let pods: Vec<Value> = (0..pod_count)
        .map(|_| {
            let age = Duration::minutes(rng.below(120 * 24 * 60) as i64);
            pod_factory.pod(rng, created + Duration::days(1) + age, &mut taken)
        })
        .collect();
    let others = super::workloads::generate(cluster, &namespaces, &nodes, workloads, rng);
    let objects = namespaces.into_iter().chain(nodes).chain(pods).chain(others).collect();
    ClusterContent { objects, pod_factory }
}

fn node(cluster: &str, region: &str, index: usize, rng: &mut Rng) -> Value {
    let name = format!("{cluster}-node-{:03}", index + 1);
    let created = timestamp(epoch() + Duration::minutes(10 + index as i64));
    let heartbeat = timestamp(epoch() + Duration::days(120));
    let (instance_type, cpus, memory_gib) = *rng.pick(INSTANCE_TYPES);
    let zone = format!("{region}-{}", ["1a", "1b", "1c"][index % 3]);
    let internal_ip = format!("10.0.{}.{}", index / 250, 10 + index % 250);
    let pod_cidr = format!("10.{}.{}.0/24", 42 + index / 256, index % 256);
    let memory_ki = memory_gib * 1024 * 1024;
    let machine_id = rng.hex(32);
    let mut labels = json!({
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": instance_type,
        "topology.kubernetes.io/region": region,
        "topology.kubernetes.io/zone": zone,
    });
    if index == 0 {
        labels["node-role.kubernetes.io/control-plane"] = json!("true");
    }
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind, "status": status, "lastHeartbeatTime": heartbeat,
            "lastTransitionTime": created, "reason": reason, "message": message,
        })
    };
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": rng.uuid(),
            "creationTimestamp": created,
            "labels": labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {
            "podCIDR": pod_cidr,
            "podCIDRs": [pod_cidr],
            "providerID": format!("aws:///{zone}/i-0{}", rng.hex(16)),
        },
        "status": {
            "capacity": {
                "cpu": cpus.to_string(),
                "ephemeral-storage": "104845292Ki",
                "hugepages-1Gi": "0",
                "hugepages-2Mi": "0",
                "memory": format!("{memory_ki}Ki"),
                "pods": "110",
            },
            "allocatable": {
                "cpu": format!("{}m", cpus * 1000 - 80),
                "ephemeral-storage": "95551679124",
                "hugepages-1Gi": "0",
                "hugepages-2Mi": "0",
                "memory": format!("{}Ki", memory_ki - 600 * 1024),
                "pods": "110",
            },
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": internal_ip},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": machine_id,
                "systemUUID": machine_id,
                "bootID": rng.uuid(),
                "kernelVersion": "6.1.84-99.169.amzn2023.x86_64",
                "osImage": "Amazon Linux 2023.4.20240429",
                "containerRuntimeVersion": "containerd://1.7.11",
                "kubeletVersion": "v1.33.1",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    })
}

/// Where pods can be scheduled: a node's name, its IP and its pod network prefix.
struct NodeSlot {
    name: String,
    host_ip: String,
    /// The pod CIDR without its last octet and mask, e.g. `10.42.3`.
    pod_network: String,
}

impl NodeSlot {
    fn from_node(node: &Value, index: usize) -> Option<Self> {
        let name = node["metadata"]["name"].as_str()?.to_owned();
        let host_ip = node["status"]["addresses"]
            .as_array()
            .and_then(|addresses| addresses.iter().find(|a| a["type"] == "InternalIP"))
            .and_then(|a| a["address"].as_str())
            .map_or_else(|| format!("10.0.0.{}", 10 + index % 240), str::to_owned);
        let pod_network = node["spec"]["podCIDR"]
            .as_str()
            .and_then(|cidr| cidr.rsplit_once('.'))
            .map_or_else(|| format!("10.42.{}", index % 256), |(network, _)| network.to_owned());
        Some(Self { name, host_ip, pod_network })
    }
}

/// Makes pods for one cluster, spread over its namespaces and nodes.
pub struct PodFactory {
    namespaces: Vec<String>,
    nodes: Vec<NodeSlot>,
}

impl PodFactory {
    /// A factory for a cluster holding these namespace and node objects.
    pub fn new(namespaces: &[Value], nodes: &[Value]) -> Self {
        let mut names: Vec<String> =
            namespaces.iter().filter_map(|ns| ns["metadata"]["name"].as_str().map(str::to_owned)).collect();
        if names.is_empty() {
            names.push("default".to_owned());
        }
        let nodes = nodes.iter().enumerate().filter_map(|(i, node)| NodeSlot::from_node(node, i)).collect();
        Self { namespaces: names, nodes }
    }

    /// A new pod created at `created`, its `namespace/name` not in `taken` (and then added to it).
    pub fn pod(&self, rng: &mut Rng, created: DateTime<Utc>, taken: &mut HashSet<String>) -> Value {
        let namespace = rng.pick(&self.namespaces).clone();
        let app = if namespace == "kube-system" { rng.pick(SYSTEM_APPS) } else { rng.pick(APPS) };
        let template_hash = {
            let mut owner_rng = Rng::new(
                format!("{namespace}/{}", app.name)
                    .bytes()
                    .fold(7, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
            );
            owner_rng.chars(10, NAME_SUFFIX_ALPHABET)
        };
        let replica_set = format!("{}-{template_hash}", app.name);
        let name = loop {
            let candidate = format!("{replica_set}-{}", rng.chars(5, NAME_SUFFIX_ALPHABET));
            if taken.insert(format!("{namespace}/{candidate}")) {
                break candidate;
            }
        };
        let replica_set_uid = {
            let mut owner_rng =
                Rng::new(template_hash.bytes().fold(0, |h, b| h.wrapping_mul(131).wrapping_add(u64::from(b))));
            owner_rng.uuid()
        };

        let mut containers = vec![container(rng, app.name, IMAGES[app.image])];
        for _ in 0..rng.below(3) {
            let (sidecar, image) = *rng.pick(SIDECARS);
            if containers.iter().all(|c| c["name"] != sidecar) {
                containers.push(container(rng, sidecar, IMAGES[image]));
            }
        }
        let init_containers =
            if rng.percent(20) { vec![container(rng, "init-config", "busybox:1.36")] } else { vec![] };

        let node = if self.nodes.is_empty() || rng.percent(4) { None } else { Some(rng.pick(&self.nodes)) };
        let created_at = timestamp(created);
        let started_at = timestamp(created + Duration::seconds(3));
        // Values are moved into place rather than interpolated: `json!` would deep-copy them.
        let status = match node {
            Some(node) => {
                let pod_ip = format!("{}.{}", node.pod_network, 2 + rng.below(250));
                let mut status = json!({
                    "phase": "Running",
                    "hostIP": node.host_ip,
                    "hostIPs": [{"ip": node.host_ip}],
                    "podIP": pod_ip,
                    "podIPs": [{"ip": pod_ip}],
                    "startTime": created_at,
                    "qosClass": "Burstable",
                });
                status["conditions"] = [
                    "PodReadyToStartContainers",
                    "Initialized",
                    "Ready",
                    "ContainersReady",
                    "PodScheduled",
                ]
                .iter()
                .map(|kind| {
                    json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": started_at})
                })
                .collect();
                status["containerStatuses"] = containers.iter().map(|c| running_status(rng, c, &started_at)).collect();
                if !init_containers.is_empty() {
                    status["initContainerStatuses"] =
                        init_containers.iter().map(|c| completed_status(rng, c, &created_at, &started_at)).collect();
                }
                status
            }
            None => json!({
                "phase": "Pending",
                "conditions": [{
                    "type": "PodScheduled", "status": "False", "lastProbeTime": null, "lastTransitionTime": created_at,
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.",
                }],
                "qosClass": "Burstable",
            }),
        };
        let mut spec = json!({
            "volumes": [{
                "name": format!("kube-api-access-{}", rng.chars(5, NAME_SUFFIX_ALPHABET)),
                "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}], "defaultMode": 420},
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ],
            "priority": 0,
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority",
        });
        spec["containers"] = Value::Array(containers);
        if !init_containers.is_empty() {
            spec["initContainers"] = Value::Array(init_containers);
        }
        if let Some(node) = node {
            spec["nodeName"] = Value::String(node.name.clone());
        }
        let mut pod = json!({
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "generateName": format!("{replica_set}-"),
                "namespace": namespace,
                "uid": rng.uuid(),
                "creationTimestamp": created_at,
                "labels": {"app": app.name, "pod-template-hash": template_hash},
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": replica_set,
                    "uid": replica_set_uid, "controller": true, "blockOwnerDeletion": true,
                }],
            },
        });
        pod["spec"] = spec;
        pod["status"] = status;
        pod
    }
}

fn container(rng: &mut Rng, name: &str, image: &str) -> Value {
    let cpu = *rng.pick(CPU_REQUESTS);
    let memory = rng.below(MEMORY_REQUESTS.len());
    let mut resources = json!({"requests": {"cpu": cpu, "memory": MEMORY_REQUESTS[memory]}});
    if rng.percent(60) {
        resources["limits"] = json!({"memory": MEMORY_REQUESTS[(memory + 1).min(MEMORY_REQUESTS.len() - 1)]});
    }
    let mut container = json!({
        "name": name,
        "image": image,
        "ports": [{"name": "http", "containerPort": 8080 + rng.below(3) as u16, "protocol": "TCP"}],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    });
    container["resources"] = resources;
    container
}

fn running_status(rng: &mut Rng, container: &Value, started_at: &str) -> Value {
    let image = container["image"].as_str().unwrap_or_default();
    let restarts = if rng.percent(10) { 1 + rng.below(5) } else { 0 };
    json!({
        "name": container["name"],
        "state": {"running": {"startedAt": started_at}},
        "lastState": {},
        "ready": true,
        "restartCount": restarts,
        "image": image,
        "imageID": image_id(image),
        "containerID": format!("containerd://{}", rng.hex(64)),
        "started": true,
    })
}

fn completed_status(rng: &mut Rng, container: &Value, created_at: &str, started_at: &str) -> Value {
    let image = container["image"].as_str().unwrap_or_default();
    let container_id = format!("containerd://{}", rng.hex(64));
    json!({
        "name": container["name"],
        "state": {"terminated": {
            "exitCode": 0, "reason": "Completed", "startedAt": created_at, "finishedAt": started_at,
            "containerID": container_id,
        }},
        "lastState": {},
        "ready": true,
        "restartCount": 0,
        "image": image,
        "imageID": image_id(image),
        "containerID": container_id,
        "started": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_cluster_and_statuses_align_with_containers() {
        let make = || generate("sim-01", "us-east", "uid-1", (5, 3, 40), true, &mut Rng::new(7)).objects;
        let objects = make();
        assert_eq!(objects, make());
        let core =
            objects.iter().filter(|o| ["Namespace", "Node", "Pod"].contains(&o["kind"].as_str().unwrap())).count();
        assert_eq!(core, 5 + 3 + 40);
        for pod in objects.iter().filter(|o| o["kind"] == "Pod") {
            if pod["status"]["phase"] == "Running" {
                let specs = pod["spec"]["containers"].as_array().unwrap();
                let statuses = pod["status"]["containerStatuses"].as_array().unwrap();
                assert_eq!(specs.len(), statuses.len());
                assert!(specs.iter().zip(statuses).all(|(c, s)| c["name"] == s["name"]));
            }
        }
    }
}
