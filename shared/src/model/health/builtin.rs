//! kstatus' built-in rules for the kinds it knows (sigs.k8s.io/cli-utils
//! `pkg/kstatus/status/core.go`, `legacyTypes`), keyed by API group and kind. Messages are
//! kstatus' own.

use serde_json::Value;

use super::{Decided, Health, Status, Unreadable, condition, conditions, group_kind, int, string};

/// The rule of the object's kind, if kstatus has one (core.go `GetLegacyConditionsFn`).
pub(super) fn rules(object: &Value) -> Decided {
    let rule: fn(&Value) -> Decided = match group_kind(object) {
        ("", "Service") => service,
        ("", "Pod") => pod,
        ("", "Secret" | "ConfigMap") | ("batch", "CronJob") => |_| current("Resource is always ready"),
        ("policy", "PodDisruptionBudget") => |_| current("AllowedDisruptions has been computed."),
        ("", "PersistentVolumeClaim") => pvc,
        ("apps", "StatefulSet") => stateful_set,
        ("apps" | "extensions", "DaemonSet") => daemon_set,
        ("apps" | "extensions", "Deployment") => deployment,
        ("apps" | "extensions", "ReplicaSet") => replica_set,
        ("batch", "Job") => job,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => custom_resource_definition,
        _ => return Ok(None),
    };
    rule(object)
}

fn current(message: impl Into<String>) -> Decided {
    Ok(Some(Health::new(Status::Current, message)))
}

fn in_progress(message: impl Into<String>) -> Decided {
    Ok(Some(Health::new(Status::InProgress, message)))
}

fn failed(message: impl Into<String>) -> Decided {
    Ok(Some(Health::new(Status::Failed, message)))
}

/// core.go `stsConditions`.
fn stateful_set(object: &Value) -> Decided {
    if string(object, &["spec", "updateStrategy", "type"], "") == "OnDelete" {
        return current("StatefulSet is using the ondelete update strategy");
    }
    let spec = int(object, &["spec", "replicas"], 1)?;
    let ready = int(object, &["status", "readyReplicas"], 0)?;
    let current_replicas = int(object, &["status", "currentReplicas"], 0)?;
    let updated = int(object, &["status", "updatedReplicas"], 0)?;
    let status = int(object, &["status", "replicas"], 0)?;
    let partition = int(object, &["spec", "updateStrategy", "rollingUpdate", "partition"], -1)?;
    if spec > status {
        return in_progress(format!("Replicas: {status}/{spec}"));
    }
    if spec > ready {
        return in_progress(format!("Ready: {ready}/{spec}"));
    }
    if status > spec {
        return in_progress(format!("Pending termination: {}", status - spec));
    }
    if partition != -1 {
        if updated < spec - partition {
            return in_progress(format!("updated: {updated}/{}", spec - partition));
        }
        return current(format!("Partition rollout complete. updated: {updated}"));
    }
    if spec > current_replicas {
        return in_progress(format!("current: {current_replicas}/{spec}"));
    }
    if string(object, &["status", "currentRevision"], "") != string(object, &["status", "updateRevision"], "") {
        return in_progress("Waiting for updated revision to match current");
    }
    current(format!("All replicas scheduled as expected. Replicas: {status}"))
}

/// core.go `deploymentConditions`.
fn deployment(object: &Value) -> Decided {
    let mut progressing =
        int(object, &["spec", "progressDeadlineSeconds"], i64::from(i32::MAX))? == i64::from(i32::MAX);
    let mut available = false;
    for c in conditions(object) {
        if c["type"] == "Progressing" {
            if c["reason"] == "ProgressDeadlineExceeded" {
                return Ok(Some(Health::new(Status::Failed, "Progress deadline exceeded").since(c)));
            }
            progressing |= c["status"] == "True" && c["reason"] == "NewReplicaSetAvailable";
        } else if c["type"] == "Available" {
            available |= c["status"] == "True";
        }
    }
    let spec = int(object, &["spec", "replicas"], 1)?;
    let status = int(object, &["status", "replicas"], 0)?;
    let updated = int(object, &["status", "updatedReplicas"], 0)?;
    let ready = int(object, &["status", "readyReplicas"], 0)?;
    let available_replicas = int(object, &["status", "availableReplicas"], 0)?;
    if spec > status {
        return in_progress(format!("Replicas: {status}/{spec}"));
    }
    if spec > updated {
        return in_progress(format!("Updated: {updated}/{spec}"));
    }
    if status > spec {
        return in_progress(format!("Pending termination: {}", status - spec));
    }
    if updated > available_replicas {
        return in_progress(format!("Available: {available_replicas}/{updated}"));
    }
    if spec > ready {
        return in_progress(format!("Ready: {ready}/{spec}"));
    }
    if !progressing {
        return in_progress("ReplicaSet not Available");
    }
    if !available {
        return in_progress("Deployment not Available");
    }
    current(format!("Deployment is available. Replicas: {status}"))
}

/// core.go `replicasetConditions`.
fn replica_set(object: &Value) -> Decided {
    if let Some(c) = condition(object, "ReplicaFailure", "True") {
        return Ok(Some(Health::new(Status::InProgress, "Replica Failure condition. Check Pods").since(c)));
    }
    let spec = int(object, &["spec", "replicas"], 1)?;
    let status = int(object, &["status", "replicas"], 0)?;
    let ready = int(object, &["status", "readyReplicas"], 0)?;
    let available = int(object, &["status", "availableReplicas"], 0)?;
    let labelled = int(object, &["status", "fullyLabeledReplicas"], 0)?;
    if spec > labelled {
        return in_progress(format!("Labelled: {labelled}/{spec}"));
    }
    if spec > available {
        return in_progress(format!("Available: {available}/{spec}"));
    }
    if spec > ready {
        return in_progress(format!("Ready: {ready}/{spec}"));
    }
    if status > spec {
        return in_progress(format!("Pending termination: {}", status - spec));
    }
    current(format!("ReplicaSet is available. Replicas: {status}"))
}

/// core.go `daemonsetConditions`, after `checkGenerationSet`.
fn daemon_set(object: &Value) -> Decided {
    let kind = group_kind(object).1;
    if object["metadata"]["generation"].is_null() {
        return in_progress(format!("{kind} metadata.generation not found"));
    }
    if object["status"]["observedGeneration"].is_null() {
        return in_progress(format!("{kind} status.observedGeneration not found"));
    }
    let desired = int(object, &["status", "desiredNumberScheduled"], -1)?;
    let current_number = int(object, &["status", "currentNumberScheduled"], 0)?;
    let updated = int(object, &["status", "updatedNumberScheduled"], 0)?;
    let available = int(object, &["status", "numberAvailable"], 0)?;
    let ready = int(object, &["status", "numberReady"], 0)?;
    if desired == -1 {
        return in_progress("Missing .status.desiredNumberScheduled");
    }
    if desired > current_number {
        return in_progress(format!("Current: {current_number}/{desired}"));
    }
    if desired > updated {
        return in_progress(format!("Updated: {updated}/{desired}"));
    }
    if desired > available {
        return in_progress(format!("Available: {available}/{desired}"));
    }
    if desired > ready {
        return in_progress(format!("Ready: {ready}/{desired}"));
    }
    current(format!("All replicas scheduled as expected. Replicas: {desired}"))
}

/// core.go `pvcConditions`.
fn pvc(object: &Value) -> Decided {
    match string(object, &["status", "phase"], "unknown") {
        "Bound" => current("PVC is Bound"),
        phase => in_progress(format!("PVC is not Bound. phase: {phase}")),
    }
}

/// core.go `podConditions`. An unschedulable Pod is `Failed` once it is older than kstatus'
/// `ScheduleWindow` (15 s) at the time it is flattened, as kstatus compares with `time.Now()`.
fn pod(object: &Value) -> Decided {
    match string(object, &["status", "phase"], "") {
        "Succeeded" => current("Pod has completed successfully"),
        "Failed" => current("Pod has completed, but not successfully"),
        "Running" => {
            if let Some(ready) = condition(object, "Ready", "True") {
                return Ok(Some(Health::new(Status::Current, "Pod is Ready").since(ready)));
            }
            let crash_looping: Vec<&str> = object["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|status| status["state"]["waiting"]["reason"] == "CrashLoopBackOff")
                .filter_map(|status| status["name"].as_str())
                .collect();
            if !crash_looping.is_empty() {
                return failed(format!("Containers in CrashLoop state: {}", crash_looping.join(",")));
            }
            in_progress("Pod is running but is not Ready")
        }
        "Pending" => match condition(object, "PodScheduled", "False").filter(|c| c["reason"] == "Unschedulable") {
            Some(c) if created_within_schedule_window(object) => {
                Ok(Some(Health::new(Status::InProgress, "Pod has not been scheduled").since(c)))
            }
            Some(c) => Ok(Some(Health::new(Status::Failed, "Pod could not be scheduled").since(c))),
            None => in_progress("Pod is in the Pending phase"),
        },
        "" => in_progress("Pod phase not available"),
        phase => Err(Unreadable(format!("unknown phase {phase}"))),
    }
}

/// Whether the object was created less than kstatus' `ScheduleWindow` (15 s) ago.
fn created_within_schedule_window(object: &Value) -> bool {
    let created =
        object["metadata"]["creationTimestamp"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    created.is_some_and(|created| chrono::Utc::now().signed_duration_since(created) < chrono::Duration::seconds(15))
}

/// core.go `jobConditions`.
fn job(object: &Value) -> Decided {
    let parallelism = int(object, &["spec", "parallelism"], 1)?;
    let completions = int(object, &["spec", "completions"], parallelism)?;
    let succeeded = int(object, &["status", "succeeded"], 0)?;
    let active = int(object, &["status", "active"], 0)?;
    let failed_pods = int(object, &["status", "failed"], 0)?;
    let suspended = object["spec"]["suspend"] == Value::Bool(true);
    for c in conditions(object).iter().filter(|c| c["status"] == "True") {
        let decided = match c["type"].as_str() {
            Some("Complete") => {
                Health::new(Status::Current, format!("Job Completed. succeeded: {succeeded}/{completions}"))
            }
            Some("Failed") => Health::new(Status::Failed, format!("Job Failed. failed: {failed_pods}/{completions}")),
            Some("Suspended") if suspended => Health::new(Status::Current, "Job is suspended"),
            _ => continue,
        };
        return Ok(Some(decided.since(c)));
    }
    if string(object, &["status", "startTime"], "").is_empty() {
        return in_progress("Job not started");
    }
    current(format!("Job in progress. success:{succeeded}, active: {active}, failed: {failed_pods}"))
}

/// core.go `serviceConditions`.
fn service(object: &Value) -> Decided {
    let load_balancer = string(object, &["spec", "type"], "ClusterIP") == "LoadBalancer";
    if load_balancer && string(object, &["spec", "clusterIP"], "").is_empty() {
        return in_progress("ClusterIP not set. Service type: LoadBalancer");
    }
    current("Service is ready")
}

/// core.go `CRDConditions`.
fn custom_resource_definition(object: &Value) -> Decided {
    for c in conditions(object) {
        let message = c["message"].as_str().unwrap_or_default();
        if c["type"] == "NamesAccepted" && c["status"] == "False" {
            return Ok(Some(Health::new(Status::Failed, message).since(c)));
        }
        if c["type"] == "Established" {
            if c["status"] == "False" && c["reason"] != "Installing" {
                return Ok(Some(Health::new(Status::Failed, message).since(c)));
            }
            if c["status"] == "True" {
                return Ok(Some(Health::new(Status::Current, "CRD is established").since(c)));
            }
        }
    }
    in_progress("Install in progress")
}
