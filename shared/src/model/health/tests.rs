//! Every health outcome of every kind, from real objects (tests/fixtures, sources in
//! tests/fixtures/SOURCES.md), each changed by a JSON merge patch (RFC 7386) into the state a
//! case needs.

use serde_json::{Value, json};

use super::{Status, compute};

/// The object named `name` in a fixture (a list or one object), with `apiVersion` and `kind`
/// filled in from the list's kind when missing, as the worker serves them.
fn fixture(file: &str, name: &str) -> Value {
    let path = format!("{}/../tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
    let document: Value = serde_json::from_str(&text).unwrap();
    let list_kind = document["kind"].as_str().and_then(|k| k.strip_suffix("List")).map(str::to_owned);
    let items = match document["items"].as_array() {
        Some(items) => items.clone(),
        None => vec![document.clone()],
    };
    let mut object = items
        .into_iter()
        .find(|item| item["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{file} has no object {name}"));
    if object["kind"].is_null() {
        object["kind"] = json!(list_kind.unwrap());
        object["apiVersion"] = document["apiVersion"].clone();
    }
    object
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(target), Some(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

const K3S_DEPLOYMENTS: &str = "real/troubleshoot.apps.v1.DeploymentList-monitoring.json";
const STATEFUL_SETS: &str = "real/troubleshoot.apps.v1.StatefulSetList-monitoring.json";
const DAEMON_SETS: &str = "real/k3s-bundle.apps.v1.DaemonSetList-kube-system.json";
const REPLICA_SETS: &str = "real/k3s-bundle.apps.v1.ReplicaSetList-default.json";
const JOBS: &str = "real/k3s-bundle.batch.v1.JobList-kube-system.json";
const FAILED_JOBS: &str = "real/troubleshoot.batch.v1.JobList-projectcontour.json";
const CRASHING_PODS: &str = "real/troubleshoot.v1.PodList-crashloopbackoff.json";
const PENDING_PODS: &str = "real/troubleshoot.v1.PodList-pending-insufficient-resources.json";
const PVCS: &str = "real/troubleshoot.v1.PersistentVolumeClaimList-default.json";
const SERVICES: &str = "real/k3s-bundle.v1.ServiceList-kube-system.json";
const NODES: &str = "real/k3s-bundle.v1.NodeList.json";
const KUSTOMIZATION: &str = "real/flux.kustomize.toolkit.fluxcd.io.v1.Kustomization-observed.json";
const HELM_RELEASE: &str = "real/flux.helm.toolkit.fluxcd.io.v2beta1.HelmRelease-observed.json";
const BUCKET: &str = "real/flux.source.toolkit.fluxcd.io.v1beta2.Bucket-observed.json";
const GIT_REPOSITORIES: &str = "real/flux2-testdata.List-GitRepository-failed-ready-unknown.json";
const APPLICATION: &str = "docs/argocd.argoproj.io.v1alpha1.Application-guestbook.json";
const CERTIFICATE: &str = "docs/cert-manager.io.v1.Certificate-example-com.json";

const DELETED: &str = r#"{"metadata": {"deletionTimestamp": "2024-06-01T00:00:00Z"}}"#;

/// (fixture, object, merge patch, health, words of the message, since)
type Case = (&'static str, &'static str, &'static str, Status, &'static str, Option<&'static str>);

#[rustfmt::skip]
const CASES: &[Case] = &[
    // Deployment (core.go deploymentConditions)
    (K3S_DEPLOYMENTS, "grafana", "{}", Status::Current, "Deployment is available. Replicas: 1", None),
    (K3S_DEPLOYMENTS, "prometheus-operator", "{}", Status::InProgress, "Pending termination: 1", None),
    (K3S_DEPLOYMENTS, "grafana", r#"{"status": {"updatedReplicas": 0}}"#, Status::InProgress, "Updated: 0/1", None),
    (K3S_DEPLOYMENTS, "grafana", r#"{"status": {"conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "lastTransitionTime": "2024-06-01T00:00:00Z"}]}}"#, Status::Failed, "Progress deadline exceeded", Some("2024-06-01T00:00:00Z")),
    (K3S_DEPLOYMENTS, "grafana", r#"{"metadata": {"generation": 2}}"#, Status::InProgress, "Deployment generation is 2, but latest observed generation is 1", None),
    (K3S_DEPLOYMENTS, "grafana", DELETED, Status::Terminating, "Resource scheduled for deletion", Some("2024-06-01T00:00:00Z")),
    (K3S_DEPLOYMENTS, "grafana", r#"{"status": {"replicas": "one"}}"#, Status::Unknown, ".status.replicas is not an integer", None),
    // StatefulSet (core.go stsConditions)
    (STATEFUL_SETS, "prometheus-k8s", "{}", Status::Current, "All replicas scheduled as expected. Replicas: 1", None),
    (STATEFUL_SETS, "alertmanager-prometheus-alertmanager", "{}", Status::InProgress, "Pending termination: 1", None),
    (STATEFUL_SETS, "prometheus-k8s", r#"{"status": {"readyReplicas": 0}}"#, Status::InProgress, "Ready: 0/1", None),
    (STATEFUL_SETS, "prometheus-k8s", r#"{"status": {"updateRevision": "prometheus-k8s-6"}}"#, Status::InProgress, "Waiting for updated revision to match current", None),
    (STATEFUL_SETS, "prometheus-k8s", DELETED, Status::Terminating, "Resource scheduled for deletion", Some("2024-06-01T00:00:00Z")),
    // DaemonSet (core.go daemonsetConditions)
    (DAEMON_SETS, "svclb-traefik-9ce4920b", "{}", Status::Current, "All replicas scheduled as expected. Replicas: 1", None),
    (DAEMON_SETS, "svclb-traefik-9ce4920b", r#"{"status": {"numberReady": 0}}"#, Status::InProgress, "Ready: 0/1", None),
    (DAEMON_SETS, "svclb-traefik-9ce4920b", r#"{"status": {"observedGeneration": null}}"#, Status::InProgress, "DaemonSet status.observedGeneration not found", None),
    // ReplicaSet (core.go replicasetConditions)
    (REPLICA_SETS, "memory-hungry-app-59c695fbfb", "{}", Status::Current, "ReplicaSet is available. Replicas: 2", None),
    (REPLICA_SETS, "cpu-intensive-app-7bcfc5d944", "{}", Status::InProgress, "Available: 1/3", None),
    (REPLICA_SETS, "memory-hungry-app-59c695fbfb", r#"{"status": {"conditions": [{"type": "ReplicaFailure", "status": "True", "lastTransitionTime": "2024-06-01T00:00:00Z"}]}}"#, Status::InProgress, "Replica Failure condition. Check Pods", Some("2024-06-01T00:00:00Z")),
    // Job (core.go jobConditions)
    (JOBS, "helm-install-traefik", "{}", Status::Current, "Job Completed. succeeded: 1/1", Some("2025-09-11T20:40:27Z")),
    (FAILED_JOBS, "contour-certgen-v1.19.1", r#"{"status": {"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": "2021-12-17T18:41:17Z"}]}}"#, Status::Failed, "Job Failed. failed: 1/1", Some("2021-12-17T18:41:17Z")),
    (JOBS, "helm-install-traefik", r#"{"status": {"conditions": null, "startTime": null}}"#, Status::InProgress, "Job not started", None),
    // Pod (core.go podConditions)
    (CRASHING_PODS, "init-demo", "{}", Status::Failed, "Containers in CrashLoop state:", None),
    (CRASHING_PODS, "init-demo", r#"{"status": {"containerStatuses": null}}"#, Status::InProgress, "Pod is running but is not Ready", None),
    (CRASHING_PODS, "init-demo", r#"{"status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2023-07-11T03:32:00Z"}]}}"#, Status::Current, "Pod is Ready", Some("2023-07-11T03:32:00Z")),
    (PENDING_PODS, "pending-pod-resources-5fddcf7688-djjfc", "{}", Status::Failed, "Pod could not be scheduled", Some("2023-07-11T04:20:29Z")),
    (CRASHING_PODS, "init-demo", r#"{"status": {"phase": "Succeeded"}}"#, Status::Current, "Pod has completed successfully", None),
    (CRASHING_PODS, "init-demo", r#"{"status": {"phase": "Lost"}}"#, Status::Unknown, "unknown phase Lost", None),
    (CRASHING_PODS, "init-demo", DELETED, Status::Terminating, "Resource scheduled for deletion", Some("2024-06-01T00:00:00Z")),
    // PersistentVolumeClaim (core.go pvcConditions)
    (PVCS, "data-postgresql-0", "{}", Status::Current, "PVC is Bound", None),
    (PVCS, "data-postgresql-0", r#"{"status": {"phase": "Pending"}}"#, Status::InProgress, "PVC is not Bound. phase: Pending", None),
    // Service (core.go serviceConditions)
    (SERVICES, "kube-dns", "{}", Status::Current, "Service is ready", None),
    (SERVICES, "traefik", r#"{"spec": {"clusterIP": null}}"#, Status::InProgress, "ClusterIP not set. Service type: LoadBalancer", None),
    // Node: no built-in rule, its Ready condition (status.go checkReadyCondition)
    (NODES, "c9b7eea91", "{}", Status::Current, "Resource is Ready", Some("2025-09-11T20:39:40Z")),
    (NODES, "c9b7eea91", r#"{"status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status.", "lastTransitionTime": "2024-06-01T00:00:00Z"}]}}"#, Status::InProgress, "Kubelet stopped posting node status.", Some("2024-06-01T00:00:00Z")),
    // Flux: Ready, Reconciling, Stalled (generic.go), suspend
    (KUSTOMIZATION, "sample", r#"{"spec": {"suspend": false}}"#, Status::Current, "Resource is Ready", Some("2023-04-30T12:51:06Z")),
    (KUSTOMIZATION, "sample", "{}", Status::Suspended, "Reconciliation is suspended (spec.suspend)", None),
    (HELM_RELEASE, "sample", "{}", Status::Current, "Resource is Ready", Some("2023-05-01T07:11:16Z")),
    (HELM_RELEASE, "sample", r#"{"status": {"conditions": [{"type": "Stalled", "status": "True", "reason": "InstallFailed", "message": "install retries exhausted", "lastTransitionTime": "2024-06-01T00:00:00Z"}]}}"#, Status::Failed, "install retries exhausted", Some("2024-06-01T00:00:00Z")),
    (HELM_RELEASE, "sample", DELETED, Status::Terminating, "Resource scheduled for deletion", Some("2024-06-01T00:00:00Z")),
    (BUCKET, "sample", r#"{"spec": {"suspend": false}, "status": {"observedGeneration": 1}}"#, Status::InProgress, "", Some("2023-04-29T14:03:19Z")),
    (BUCKET, "sample", r#"{"spec": {"suspend": false}}"#, Status::InProgress, "Bucket generation is 1, but latest observed generation is -1", None),
    (GIT_REPOSITORIES, "gr-failed", "{}", Status::InProgress, "failed to checkout and determine revision", Some("2021-07-20T00:48:16Z")),
    (GIT_REPOSITORIES, "gr-unknown", "{}", Status::InProgress, "reconciliation in progress", Some("2021-07-20T00:48:16Z")),
    (GIT_REPOSITORIES, "gr-ready", "{}", Status::Current, "Resource is Ready", Some("2021-07-20T00:48:16Z")),
    // Argo CD Application: Argo CD's own status.health (gitops-engine health.go), mapped
    (APPLICATION, "guestbook", "{}", Status::Current, "Argo CD health is Healthy", None),
    (APPLICATION, "guestbook", r#"{"status": {"health": {"status": "Progressing", "lastTransitionTime": "2024-06-01T00:00:00Z"}}}"#, Status::InProgress, "Argo CD health is Progressing", Some("2024-06-01T00:00:00Z")),
    (APPLICATION, "guestbook", r#"{"status": {"health": {"status": "Missing"}}}"#, Status::InProgress, "Argo CD health is Missing", None),
    (APPLICATION, "guestbook", r#"{"status": {"health": {"status": "Degraded", "lastTransitionTime": "2024-06-01T00:00:00Z"}, "conditions": [{"type": "ComparisonError", "message": "Failed to load target state: repository not found", "lastTransitionTime": "2024-06-01T00:00:00Z"}]}}"#, Status::Failed, "Argo CD health is Degraded: Failed to load target state: repository not found", Some("2024-06-01T00:00:00Z")),
    (APPLICATION, "guestbook", r#"{"status": {"health": {"status": "Degraded", "message": "Back-off pulling image"}}}"#, Status::Failed, "Argo CD health is Degraded: Back-off pulling image", None),
    (APPLICATION, "guestbook", r#"{"status": {"health": {"status": "Suspended"}}}"#, Status::Suspended, "Argo CD health is Suspended", None),
    (APPLICATION, "guestbook", r#"{"status": {"health": {"status": "Unknown"}}}"#, Status::Unknown, "Argo CD health is Unknown", None),
    (APPLICATION, "guestbook", r#"{"status": null}"#, Status::Unknown, "has not assessed", None),
    (APPLICATION, "guestbook", DELETED, Status::Terminating, "Resource scheduled for deletion", Some("2024-06-01T00:00:00Z")),
    // cert-manager Certificate: its Ready condition
    (CERTIFICATE, "example-com", "{}", Status::Current, "Resource is Ready", Some("2024-03-01T09:00:05Z")),
    (CERTIFICATE, "example-com", r#"{"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "DoesNotExist", "message": "Issuing certificate as Secret does not exist", "lastTransitionTime": "2024-06-01T00:00:00Z"}]}}"#, Status::InProgress, "Issuing certificate as Secret does not exist", Some("2024-06-01T00:00:00Z")),
];

#[test]
fn every_kind_gets_each_of_its_health_outcomes_as_kstatus_computes_them() {
    let mut failures = Vec::new();
    for (i, (file, name, patch, status, message, since)) in CASES.iter().enumerate() {
        let mut object = fixture(file, name);
        merge(&mut object, &serde_json::from_str(patch).unwrap());
        let health = compute(&object);
        if health.status != *status || !health.message.contains(message) || health.since.as_deref() != *since {
            failures.push(format!(
                "case {i} ({file} {name} {patch}): expected {status:?} {message:?} {since:?}, got {health:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_object_without_conditions_or_rules_is_current_and_a_suspended_job_is_the_job_rule() {
    let health = compute(&json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}));
    assert_eq!((health.status, health.message.as_str()), (Status::Current, "Resource is current"));
    let mut job = fixture(JOBS, "helm-install-traefik");
    merge(
        &mut job,
        &json!({"spec": {"suspend": true}, "status": {"conditions": [{"type": "Suspended", "status": "True"}]}}),
    );
    assert_eq!(compute(&job).message, "Job is suspended", "spec.suspend is Flux's only for Flux kinds");
}
