//! Health: whether an object is what its spec asks for, computed as kstatus computes it.
//!
//! The rules are those of sigs.k8s.io/cli-utils `pkg/kstatus/status` (the library Flux and
//! `kubectl wait`-style tooling use; read at commit 5895ad6c of its `master`), followed in the
//! order of its `Compute` (status.go):
//!
//! 1. the generic properties (generic.go `checkGenericProperties`): a `deletionTimestamp` is
//!    `Terminating`; a `status.observedGeneration` other than `metadata.generation` is
//!    `InProgress`; a `Reconciling` condition `True` is `InProgress`, a `Stalled` one `True` is
//!    `Failed`;
//! 2. the built-in rules of a kind (core.go `legacyTypes`, in [`builtin`]): Deployments,
//!    StatefulSets, DaemonSets, ReplicaSets, Jobs, Pods, PersistentVolumeClaims, Services, ...;
//! 3. a `Ready` condition (status.go `checkReadyCondition`): `True` is `Current`, `False` or
//!    `Unknown` is `InProgress`;
//! 4. otherwise `Current`.
//!
//! An object kstatus cannot read (a field of the wrong type, a Pod phase it does not know) is
//! `Unknown`, as kstatus' callers report a `Compute` error. Two additions. Flux's: an object
//! whose `spec.suspend` is `true` (Flux's Kustomization, HelmRelease and sources,
//! fluxcd.io/flux/components/kustomize/kustomizations/#suspend) is `Suspended` once it is not
//! terminating: its controller no longer reconciles it, so its conditions are old news. Argo
//! CD's: an Application's health is the one Argo CD wrote to `status.health`, mapped onto
//! kstatus' statuses in place of step 2 ([`argocd`]).
//!
//! Each result carries a message (kstatus' own wording, or the deciding condition's message)
//! and `since`: the `lastTransitionTime` of the deciding condition (the deletion timestamp for
//! `Terminating`), when one decided.

mod argocd;
mod builtin;
#[cfg(test)]
mod tests;

use serde_json::Value;

/// An object's health, as kstatus names it (`Suspended` is Flux's addition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The object is what its spec asks for.
    Current,
    /// Its controller is still working towards the spec.
    InProgress,
    /// Its controller gave up (a `Stalled` condition, a failed Job, a crash-looping Pod, ...).
    Failed,
    /// It is being deleted.
    Terminating,
    /// Its status cannot be read.
    Unknown,
    /// Flux's `spec.suspend: true`, or Argo CD's `Suspended`: not reconciled.
    Suspended,
}

impl Status {
    /// The name stored in the `health` column (kstatus' `Status` strings).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "Current",
            Self::InProgress => "InProgress",
            Self::Failed => "Failed",
            Self::Terminating => "Terminating",
            Self::Unknown => "Unknown",
            Self::Suspended => "Suspended",
        }
    }
}

/// The health of one object: its status, why, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub status: Status,
    pub message: String,
    /// RFC 3339 time of the deciding condition's `lastTransitionTime` (or the deletion
    /// timestamp), when a condition decided.
    pub since: Option<String>,
}

/// A field kstatus could not read: the object's health is `Unknown`.
#[derive(Debug)]
pub(crate) struct Unreadable(pub String);

type Decided = Result<Option<Health>, Unreadable>;

impl Health {
    fn new(status: Status, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), since: None }
    }

    fn since(mut self, condition: &Value) -> Self {
        self.since = condition["lastTransitionTime"].as_str().map(str::to_owned);
        self
    }
}

/// The health of `object` (as the API serves it, with `apiVersion` and `kind`).
pub fn compute(object: &Value) -> Health {
    let decided = generic(object).and_then(|health| match health {
        Some(health) => Ok(Some(health)),
        None if group_kind(object) == ("argoproj.io", "Application") => Ok(Some(argocd::application(object))),
        None => builtin::rules(object),
    });
    match decided {
        Ok(Some(health)) => health,
        Ok(None) => ready_condition(object).unwrap_or_else(|| Health::new(Status::Current, "Resource is current")),
        Err(Unreadable(why)) => Health::new(Status::Unknown, why),
    }
}

/// The object's API group (`apps` of `apps/v1`, empty for `v1`) and kind.
pub(crate) fn group_kind(object: &Value) -> (&str, &str) {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    (group, object["kind"].as_str().unwrap_or_default())
}

/// The status conditions, or none (kstatus' `GetObjectWithConditions`).
pub(crate) fn conditions(object: &Value) -> &[Value] {
    object["status"]["conditions"].as_array().map_or(&[], Vec::as_slice)
}

/// The first condition of `type_` whose status is `status`.
pub(crate) fn condition<'a>(object: &'a Value, type_: &str, status: &str) -> Option<&'a Value> {
    conditions(object).iter().find(|c| c["type"] == type_ && c["status"] == status)
}

/// An integer field, `default` when absent; a value of another type is unreadable (kstatus'
/// `unstructured.NestedInt64` errors).
pub(crate) fn int(object: &Value, path: &[&str], default: i64) -> Result<i64, Unreadable> {
    match path.iter().try_fold(object, |value, key| value.get(key)) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value.as_i64().ok_or_else(|| Unreadable(format!(".{} is not an integer", path.join(".")))),
    }
}

/// A string field, `default` when absent or not a string (kstatus' `GetStringField`).
pub(crate) fn string<'a>(object: &'a Value, path: &[&str], default: &'a str) -> &'a str {
    path.iter().try_fold(object, |value, key| value.get(key)).and_then(Value::as_str).unwrap_or(default)
}

/// generic.go `checkGenericProperties` (deletion, generation, Reconciling, Stalled), with Flux's
/// `spec.suspend` after the deletion check.
fn generic(object: &Value) -> Decided {
    if let Some(deleted) = object["metadata"]["deletionTimestamp"].as_str().filter(|t| !t.is_empty()) {
        let mut health = Health::new(Status::Terminating, "Resource scheduled for deletion");
        health.since = Some(deleted.to_owned());
        return Ok(Some(health));
    }
    if object["spec"]["suspend"] == Value::Bool(true) && is_flux(object) {
        return Ok(Some(Health::new(Status::Suspended, "Reconciliation is suspended (spec.suspend)")));
    }
    // generic.go `checkGeneration`: only when both are set.
    if object["metadata"]["generation"].is_number() && object["status"]["observedGeneration"].is_number() {
        let generation = int(object, &["metadata", "generation"], 0)?;
        let observed = int(object, &["status", "observedGeneration"], 0)?;
        if generation != observed {
            let kind = group_kind(object).1;
            return Ok(Some(Health::new(
                Status::InProgress,
                format!("{kind} generation is {generation}, but latest observed generation is {observed}"),
            )));
        }
    }
    for condition in conditions(object) {
        if condition["status"] != "True" {
            continue;
        }
        let message = condition["message"].as_str().unwrap_or_default();
        if condition["type"] == "Reconciling" {
            return Ok(Some(Health::new(Status::InProgress, message).since(condition)));
        }
        if condition["type"] == "Stalled" {
            return Ok(Some(Health::new(Status::Failed, message).since(condition)));
        }
    }
    Ok(None)
}

/// Whether the object is Flux's (an API group under `toolkit.fluxcd.io`), whose `spec.suspend`
/// stops its reconciliation. A Job's `spec.suspend` is the Job rule's (core.go `jobConditions`).
fn is_flux(object: &Value) -> bool {
    group_kind(object).0.ends_with(".toolkit.fluxcd.io")
}

/// status.go `checkReadyCondition`: the first `Ready` condition decides, when its status is
/// `True`, `False` or `Unknown`.
fn ready_condition(object: &Value) -> Option<Health> {
    conditions(object).iter().filter(|c| c["type"] == "Ready").find_map(|c| {
        let message = c["message"].as_str().unwrap_or_default();
        match c["status"].as_str()? {
            "True" => Some(Health::new(Status::Current, "Resource is Ready")),
            "False" | "Unknown" => Some(Health::new(Status::InProgress, message)),
            _ => None,
        }
        .map(|health| health.since(c))
    })
}
