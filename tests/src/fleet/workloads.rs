//! Generated content for every other kind the catalog lists: a few realistic objects per
//! namespace (a Deployment with its ReplicaSet, a Service and its Endpoints, RBAC, policies,
//! storage, jobs, events) and per cluster (a DaemonSet and a StatefulSet in kube-system, cluster
//! RBAC, storage classes and CSI objects per node, webhooks, component statuses), shaped after
//! real objects (`tests/fixtures/real`). Deterministic for a seed, like the rest.

use chrono::Duration;
use serde_json::{Value, json};

use super::content::{IMAGES, NAME_SUFFIX_ALPHABET, Rng, epoch, timestamp};

/// The workloads per namespace: name, image index, port.
const WORKLOADS: &[(&str, usize, u16)] =
    &[("web", 1, 8080), ("api", 21, 8443), ("cache", 2, 6379), ("worker", 23, 9090)];

/// Everything but namespaces, nodes and pods, for a cluster with these namespaces and nodes:
/// the cluster's objects, and with `per_namespace`, each namespace's workloads.
pub fn generate(
    cluster: &str,
    namespaces: &[Value],
    nodes: &[Value],
    per_namespace: bool,
    rng: &mut Rng,
) -> Vec<Value> {
    let mut objects = Vec::new();
    let created = timestamp(epoch() + Duration::days(2));
    let names: Vec<&str> = namespaces.iter().filter_map(|ns| ns["metadata"]["name"].as_str()).collect();
    let names = if per_namespace { &names[..] } else { &[] };
    for (i, namespace) in names.iter().enumerate().filter(|(_, ns)| **ns != "kube-system") {
        let (app, image, port) = WORKLOADS[i % WORKLOADS.len()];
        let image = IMAGES[image];
        namespaced_objects(&mut objects, rng, &created, namespace, app, image, port);
    }
    cluster_objects(&mut objects, rng, &created, cluster, nodes);
    objects
}

fn meta(rng: &mut Rng, name: &str, namespace: Option<&str>, created: &str, labels: Value) -> Value {
    let mut metadata = json!({"name": name, "uid": rng.uuid(), "creationTimestamp": created});
    if let Some(namespace) = namespace {
        metadata["namespace"] = json!(namespace);
    }
    if !labels.is_null() {
        metadata["labels"] = labels;
    }
    metadata
}

fn object(api_version: &str, kind: &str, metadata: Value, mut body: Value) -> Value {
    body["apiVersion"] = json!(api_version);
    body["kind"] = json!(kind);
    body["metadata"] = metadata;
    body
}

/// `metadata` with `generation: 1`, as the API server sets it on an object with a spec
/// (workload controllers' `status.observedGeneration` is compared with it).
fn with_generation(mut metadata: Value) -> Value {
    metadata["generation"] = json!(1);
    metadata
}

/// A pod template for one app: a container with resources and probes, a config volume and a
/// projected service-account token, as a Deployment's template looks.
fn pod_template(app: &str, image: &str, port: u16, restart: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "containers": [{
                "name": app,
                "image": image,
                "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
                "env": [{"name": "LOG_LEVEL", "value": "info"}],
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": port, "scheme": "HTTP"}, "periodSeconds": 10,
                                   "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
                "volumeMounts": [{"name": "config", "mountPath": "/etc/app", "readOnly": true}],
                "securityContext": {"runAsNonRoot": true, "allowPrivilegeEscalation": false,
                                    "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": true},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
            }],
            "volumes": [
                {"name": "config", "configMap": {"name": format!("{app}-config"), "defaultMode": 420}},
                {"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}},
            ],
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": app,
            "securityContext": {"runAsUser": 10001, "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "schedulerName": "default-scheduler",
        },
    })
}

fn suffix(rng: &mut Rng, len: usize) -> String {
    rng.chars(len, NAME_SUFFIX_ALPHABET)
}

#[allow(clippy::too_many_lines)]
fn namespaced_objects(out: &mut Vec<Value>, rng: &mut Rng, created: &str, ns: &str, app: &str, image: &str, port: u16) {
    let labels = json!({"app": app, "app.kubernetes.io/managed-by": "Helm"});
    let namespace = ns;
    let ns = Some(ns);
    let template = pod_template(app, image, port, "Always");
    let hash = suffix(rng, 10);

    let m = meta(rng, app, ns, created, labels.clone());
    let deployment_uid = m["uid"].clone();
    out.push(object("apps/v1", "Deployment", with_generation(m), json!({
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": app}}, "template": template,
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                 "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600},
        "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2,
                   "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                                   "message": "Deployment has minimum availability.",
                                   "lastUpdateTime": created, "lastTransitionTime": created},
                                  {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                                   "message": format!("ReplicaSet \"{app}-{hash}\" has successfully progressed."),
                                   "lastUpdateTime": created, "lastTransitionTime": created}]},
    })));
    let mut rs_template = template.clone();
    rs_template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    let m = meta(rng, &format!("{app}-{hash}"), ns, created, json!({"app": app, "pod-template-hash": hash}));
    out.push(object("apps/v1", "ReplicaSet", with_generation(m), json!({
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": app, "pod-template-hash": hash}}, "template": rs_template},
        "status": {"replicas": 2, "fullyLabeledReplicas": 2, "readyReplicas": 2, "availableReplicas": 2, "observedGeneration": 1},
    })));
    let m = meta(rng, app, ns, created, labels.clone());
    out.push(object("v1", "Service", m, json!({
        "spec": {"type": "ClusterIP", "selector": {"app": app}, "clusterIP": format!("10.43.{}.{}", rng.below(250), 2 + rng.below(250)),
                 "ports": [{"name": "http", "port": 80, "targetPort": port, "protocol": "TCP"}], "sessionAffinity": "None",
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"},
        "status": {"loadBalancer": {}},
    })));
    let m = meta(rng, app, ns, created, labels.clone());
    let ip = format!("10.42.{}.{}", rng.below(250), 2 + rng.below(250));
    out.push(object("v1", "Endpoints", m, json!({
        "subsets": [{"addresses": [{"ip": ip, "targetRef": {"kind": "Pod", "name": format!("{app}-{hash}-{}", suffix(rng, 5))}}],
                     "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}],
    })));
    let m = meta(rng, &format!("{app}-config"), ns, created, labels.clone());
    out.push(object("v1", "ConfigMap", m, json!({"data": {"app.yaml": format!("port: {port}\nlog: info\n")}})));
    let mut m = meta(rng, &format!("{app}-credentials"), ns, created, labels.clone());
    m["annotations"] = json!({
        "kubectl.kubernetes.io/last-applied-configuration": format!(
            "{{\"apiVersion\":\"v1\",\"data\":{{\"password\":\"c2VjcmV0\"}},\"kind\":\"Secret\",\"metadata\":{{\"name\":\"{app}-credentials\"}}}}\n"
        ),
        "owner": "platform",
    });
    out.push(object("v1", "Secret", m, json!({"type": "Opaque", "data": {"password": "c2VjcmV0"}})));
    let m = meta(rng, app, ns, created, labels.clone());
    out.push(object("v1", "ServiceAccount", m, json!({"automountServiceAccountToken": false})));
    let m = meta(rng, &format!("{app}-reader"), ns, created, Value::Null);
    out.push(object("rbac.authorization.k8s.io/v1", "Role", m, json!({
        "rules": [{"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get", "list", "watch"]},
                  {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}],
    })));
    let m = meta(rng, &format!("{app}-reader"), ns, created, Value::Null);
    out.push(object(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        m,
        json!({
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("{app}-reader")},
            "subjects": [{"kind": "ServiceAccount", "name": app, "namespace": ns}],
        }),
    ));
    let m = meta(rng, &format!("{app}-allow"), ns, created, Value::Null);
    out.push(object("networking.k8s.io/v1", "NetworkPolicy", m, json!({
        "spec": {"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Ingress", "Egress"],
                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "platform-ingress"}}}],
                              "ports": [{"protocol": "TCP", "port": port}]}],
                 "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"protocol": "TCP", "port": 5432}]}]},
    })));
    let m = meta(rng, app, ns, created, labels.clone());
    out.push(object("policy/v1", "PodDisruptionBudget", m, json!({
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}},
        "status": {"observedGeneration": 1, "disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2,
                   "conditions": [{"type": "DisruptionAllowed", "status": "True", "reason": "SufficientPods", "lastTransitionTime": created,
                                   "message": "", "observedGeneration": 1}]},
    })));
    let m = meta(rng, app, ns, created, labels.clone());
    out.push(object("autoscaling/v2", "HorizontalPodAutoscaler", m, json!({
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app}, "minReplicas": 2, "maxReplicas": 10,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]},
        "status": {"observedGeneration": 1, "lastScaleTime": created, "currentReplicas": 2, "desiredReplicas": 2,
                   "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageValue": "112m", "averageUtilization": 45}}}],
                   "conditions": [{"type": "AbleToScale", "status": "True", "lastTransitionTime": created, "reason": "ReadyForNewScale"}]},
    })));
    let m = meta(rng, app, ns, created, labels.clone());
    out.push(object("networking.k8s.io/v1", "Ingress", m, json!({
        "spec": {"ingressClassName": "nginx",
                 "rules": [{"host": format!("{app}.{}.example.com", namespace),
                            "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": app, "port": {"number": 80}}}}]}}],
                 "tls": [{"hosts": [format!("{app}.{}.example.com", namespace)], "secretName": format!("{app}-tls")}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}},
    })));
    let m = meta(rng, &format!("data-{app}"), ns, created, labels.clone());
    let volume = format!("pvc-{}", rng.uuid());
    out.push(object("v1", "PersistentVolumeClaim", m, json!({
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}, "storageClassName": "standard",
                 "volumeName": volume, "volumeMode": "Filesystem"},
        "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "10Gi"}},
    })));
    let m = meta(rng, &volume, None, created, Value::Null);
    out.push(object("v1", "PersistentVolume", m, json!({
        "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Delete",
                 "storageClassName": "standard", "volumeMode": "Filesystem",
                 "claimRef": {"kind": "PersistentVolumeClaim", "namespace": ns, "name": format!("data-{app}")},
                 "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": format!("vol-{}", rng.hex(17)), "fsType": "ext4",
                         "volumeAttributes": {"storage.kubernetes.io/csiProvisionerIdentity": "1712345678901-8081-ebs.csi.aws.com"}}},
        "status": {"phase": "Bound"},
    })));
    let m = meta(rng, "limits", ns, created, Value::Null);
    out.push(object("v1", "LimitRange", m, json!({
        "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m", "memory": "512Mi"}, "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                             "max": {"cpu": "4", "memory": "8Gi"}}]},
    })));
    let m = meta(rng, "quota", ns, created, Value::Null);
    out.push(object(
        "v1",
        "ResourceQuota",
        m,
        json!({
            "spec": {"hard": {"requests.cpu": "20", "requests.memory": "64Gi", "pods": "100"}},
            "status": {"hard": {"requests.cpu": "20", "requests.memory": "64Gi", "pods": "100"},
                       "used": {"requests.cpu": "750m", "requests.memory": "1536Mi", "pods": "6"}},
        }),
    ));
    let job_template = pod_template(&format!("{app}-report"), IMAGES[5], 8081, "OnFailure");
    let m = meta(rng, &format!("{app}-report"), ns, created, labels.clone());
    out.push(object("batch/v1", "CronJob", m, json!({
        "spec": {"schedule": "0 3 * * *", "concurrencyPolicy": "Forbid", "suspend": false, "successfulJobsHistoryLimit": 3,
                 "failedJobsHistoryLimit": 1, "jobTemplate": {"spec": {"backoffLimit": 2, "activeDeadlineSeconds": 3600, "template": job_template}}},
        "status": {"lastScheduleTime": created, "lastSuccessfulTime": created},
    })));
    let job_name = format!("{app}-report-{}", 28_000_000 + rng.below(999_999));
    let m = meta(rng, &job_name, ns, created, labels.clone());
    out.push(object("batch/v1", "Job", m, json!({
        "spec": {"parallelism": 1, "completions": 1, "backoffLimit": 2, "completionMode": "NonIndexed", "suspend": false,
                 "template": pod_template(&format!("{app}-report"), IMAGES[5], 8081, "OnFailure")},
        "status": {"startTime": created, "completionTime": created, "succeeded": 1, "ready": 0,
                   "uncountedTerminatedPods": {},
                   "conditions": [{"type": "Complete", "status": "True", "lastProbeTime": created, "lastTransitionTime": created}]},
    })));
    let event_name = format!("{app}.{}", rng.hex(16));
    let m = meta(rng, &event_name, ns, created, Value::Null);
    // About the Deployment above, as its controller reports a rollout.
    out.push(object("events.k8s.io/v1", "Event", m, json!({
        "eventTime": null, "reportingController": "deployment-controller", "reportingInstance": "", "action": "ScalingReplicaSet",
        "reason": "ScalingReplicaSet",
        "regarding": {"kind": "Deployment", "namespace": ns, "name": app, "uid": deployment_uid, "apiVersion": "apps/v1"},
        "note": format!("Scaled up replica set {app}-{hash} to 2 (image {image})"), "type": "Normal",
        "deprecatedSource": {"component": "deployment-controller"}, "deprecatedFirstTimestamp": created, "deprecatedLastTimestamp": created, "deprecatedCount": 1,
    })));
}

#[allow(clippy::too_many_lines)]
fn cluster_objects(out: &mut Vec<Value>, rng: &mut Rng, created: &str, cluster: &str, nodes: &[Value]) {
    let kube_system = Some("kube-system");
    let proxy = pod_template("kube-proxy", IMAGES[7], 10256, "Always");
    let m = meta(rng, "kube-proxy", kube_system, created, json!({"k8s-app": "kube-proxy"}));
    out.push(object("apps/v1", "DaemonSet", with_generation(m), json!({
        "spec": {"selector": {"matchLabels": {"app": "kube-proxy"}}, "template": proxy,
                 "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}, "revisionHistoryLimit": 10},
        "status": {"currentNumberScheduled": nodes.len(), "numberMisscheduled": 0, "desiredNumberScheduled": nodes.len(),
                   "numberReady": nodes.len(), "observedGeneration": 1, "updatedNumberScheduled": nodes.len(), "numberAvailable": nodes.len()},
    })));
    let prometheus = pod_template("prometheus", IMAGES[10], 9090, "Always");
    let m = meta(rng, "prometheus", kube_system, created, json!({"app": "prometheus"}));
    out.push(object("apps/v1", "StatefulSet", with_generation(m), json!({
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "prometheus"}}, "template": prometheus, "serviceName": "prometheus",
                 "podManagementPolicy": "Parallel", "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "50Gi"}}}}]},
        "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "currentReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1,
                   "currentRevision": "prometheus-6d4b8f8c7b", "updateRevision": "prometheus-6d4b8f8c7b", "collisionCount": 0},
    })));
    let m = meta(rng, "node-problem-detector", kube_system, created, Value::Null);
    out.push(object(
        "v1",
        "PodTemplate",
        m,
        json!({"template": pod_template("node-problem-detector", IMAGES[24], 20256, "Always")}),
    ));
    let m = meta(rng, "view-pods", None, created, json!({"rbac.authorization.k8s.io/aggregate-to-view": "true"}));
    out.push(object(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        m,
        json!({
            "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
                      {"nonResourceURLs": ["/healthz", "/version"], "verbs": ["get"]}],
        }),
    ));
    let m = meta(rng, "view-pods", None, created, Value::Null);
    out.push(object(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        m,
        json!({
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view-pods"},
            "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "oncall"},
                         {"kind": "ServiceAccount", "name": "kubecensus", "namespace": "kube-system"}],
        }),
    ));
    let mut m = meta(rng, "standard", None, created, Value::Null);
    m["annotations"] = json!({"storageclass.kubernetes.io/is-default-class": "true"});
    out.push(object(
        "storage.k8s.io/v1",
        "StorageClass",
        m,
        json!({
            "provisioner": "ebs.csi.aws.com", "parameters": {"type": "gp3"}, "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": true,
        }),
    ));
    let m = meta(rng, "ebs.csi.aws.com", None, created, Value::Null);
    out.push(object("storage.k8s.io/v1", "CSIDriver", m, json!({
        "spec": {"attachRequired": true, "podInfoOnMount": false, "volumeLifecycleModes": ["Persistent"], "fsGroupPolicy": "ReadWriteOnceWithFSType",
                 "storageCapacity": false, "requiresRepublish": false, "seLinuxMount": false},
    })));
    for node in nodes {
        let name = node["metadata"]["name"].as_str().unwrap_or_default();
        let m = meta(rng, name, None, created, Value::Null);
        out.push(object("storage.k8s.io/v1", "CSINode", m, json!({
            "spec": {"drivers": [{"name": "ebs.csi.aws.com", "nodeID": format!("i-{}", rng.hex(17)),
                                  "topologyKeys": ["topology.ebs.csi.aws.com/zone"], "allocatable": {"count": 25}}]},
        })));
    }
    if let Some(node) = nodes.first().and_then(|n| n["metadata"]["name"].as_str()) {
        let attachment = format!("csi-{}", rng.hex(64));
        let m = meta(rng, &attachment, None, created, Value::Null);
        out.push(object("storage.k8s.io/v1", "VolumeAttachment", m, json!({
            "spec": {"attacher": "ebs.csi.aws.com", "nodeName": node, "source": {"persistentVolumeName": format!("pvc-{}", rng.uuid())}},
            "status": {"attached": true, "attachmentMetadata": {"devicePath": "/dev/xvdaa"}},
        })));
    }
    let m = meta(rng, "nginx", None, created, json!({"app.kubernetes.io/name": "ingress-nginx"}));
    out.push(object(
        "networking.k8s.io/v1",
        "IngressClass",
        m,
        json!({"spec": {"controller": "k8s.io/ingress-nginx"}}),
    ));
    let webhook = |name: &str, service: &str| {
        json!({"name": name, "clientConfig": {"service": {"namespace": "kube-system", "name": service, "path": "/validate", "port": 443},
                                              "caBundle": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="},
               "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "*"}],
               "failurePolicy": "Fail", "matchPolicy": "Equivalent", "namespaceSelector": {}, "objectSelector": {},
               "sideEffects": "None", "timeoutSeconds": 10, "admissionReviewVersions": ["v1"]})
    };
    let m = meta(rng, "pod-policy", None, created, Value::Null);
    let mut mutating = webhook("mutate.pods.example.com", "pod-policy");
    mutating["reinvocationPolicy"] = json!("Never");
    out.push(object(
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        m,
        json!({"webhooks": [mutating]}),
    ));
    let m = meta(rng, "pod-policy", None, created, Value::Null);
    out.push(object("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", m,
        json!({"webhooks": [webhook("validate.pods.example.com", "pod-policy"), webhook("validate.images.example.com", "image-policy")]})));
    for component in ["scheduler", "controller-manager", "etcd-0"] {
        let mut m = meta(rng, component, None, created, Value::Null);
        m.as_object_mut().map(|m| m.remove("uid"));
        out.push(object("v1", "ComponentStatus", m, json!({
            "conditions": [{"type": "Healthy", "status": "True", "message": if component == "etcd-0" { "{\"health\":\"true\"}" } else { "ok" }}],
        })));
    }
    let _ = cluster;
}
