//! Argo CD's Application, whose health kstatus cannot see: the Argo CD controller writes it to
//! `status.health` (`status`, `lastTransitionTime`, and `message` in older releases) in
//! gitops-engine's vocabulary (github.com/argoproj/gitops-engine `pkg/health/health.go`,
//! `HealthStatusCode`), and writes no condition kstatus reads (an Application's conditions are
//! errors and warnings without a `status`). kstatus alone would call every Application
//! `Current`; this maps Argo CD's own verdict onto kstatus' statuses instead:
//!
//! | `status.health.status` | health |
//! |---|---|
//! | `Healthy` | `Current` |
//! | `Progressing` ("not healthy but still have a chance to reach healthy state") | `InProgress` |
//! | `Missing` (its resources are not in the cluster yet) | `InProgress` |
//! | `Degraded` ("failure or could not reach healthy state within some timeout") | `Failed` |
//! | `Suspended` | `Suspended` |
//! | `Unknown`, another value, or none yet | `Unknown` |
//!
//! A deleted Application is `Terminating` first, by kstatus' generic rule.

use serde_json::Value;

use super::{Health, Status, string};

/// The health of an `argoproj.io` Application from its `status.health`; the message names Argo
/// CD's code and adds its message or the first condition's (a `ComparisonError`, ...).
pub(super) fn application(object: &Value) -> Health {
    let code = string(object, &["status", "health", "status"], "");
    let status = match code {
        "Healthy" => Status::Current,
        "Progressing" | "Missing" => Status::InProgress,
        "Degraded" => Status::Failed,
        "Suspended" => Status::Suspended,
        _ => Status::Unknown,
    };
    let detail = [string(object, &["status", "health", "message"], "")]
        .into_iter()
        .chain(super::conditions(object).iter().filter_map(|c| c["message"].as_str()))
        .find(|message| !message.is_empty());
    let message = match (code, detail) {
        ("", _) => "Argo CD has not assessed the Application's health yet (no status.health.status)".to_owned(),
        (code, Some(detail)) => format!("Argo CD health is {code}: {detail}"),
        (code, None) => format!("Argo CD health is {code}"),
    };
    let mut health = Health::new(status, message);
    health.since = object["status"]["health"]["lastTransitionTime"].as_str().map(str::to_owned);
    health
}
