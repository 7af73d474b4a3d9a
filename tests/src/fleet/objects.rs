//! Objects read from a folder of JSON files (`--objects DIR`), for serving real captured content
//! instead of generated content.
//!
//! Every `*.json` file under the folder (recursively, in path order) holds one object, a
//! `…List` (`items` may be `null`; typed lists' items may lack `kind`/`apiVersion`, which then
//! come from the list), or a bare array of objects.
//!
//! Objects are then shaped as an API server would serve them to kubecensus: an object without
//! `kind` (as some archives store them) gets one from its shape (a Pod has `spec.containers`, a
//! Node `status.nodeInfo`); core `v1` Events are served through `events.k8s.io/v1` and
//! `autoscaling/v1` HorizontalPodAutoscalers through `autoscaling/v2`, converted as the API
//! server converts them. Converted objects come after native ones, so a native object wins
//! when both have the same name.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};

/// Reads every object from the JSON files under `dir`.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut files = Vec::new();
    collect_json_files(dir, &mut files).with_context(|| format!("reading {}", dir.display()))?;
    files.sort();
    let mut objects = Vec::new();
    for file in &files {
        let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let document: Value = serde_json::from_slice(&text).with_context(|| format!("parsing {}", file.display()))?;
        let before = objects.len();
        flatten_document(document, &mut objects);
        tracing::debug!(file = %file.display(), objects = objects.len() - before, "loaded objects");
    }
    Ok(as_served(objects))
}

/// The objects as the simulated API serves them: kinds inferred, old versions converted (and
/// placed after the native objects).
pub fn as_served(objects: Vec<Value>) -> Vec<Value> {
    let (mut native, mut converted) = (Vec::new(), Vec::new());
    for mut object in objects {
        if object.get("kind").and_then(Value::as_str).is_none() {
            infer_kind(&mut object);
        }
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
        match (api_version.as_str(), object["kind"].as_str().unwrap_or_default()) {
            ("v1", "Event") => converted.push(event_to_events_v1(&object)),
            ("autoscaling/v1", "HorizontalPodAutoscaler") => converted.push(hpa_to_v2(&object)),
            _ => native.push(object),
        }
    }
    native.extend(converted);
    native
}

/// Gives an object without `kind` the kind its shape shows, when it is a Pod or a Node.
fn infer_kind(object: &mut Value) {
    let kind = if object["spec"]["containers"].is_array() {
        "Pod"
    } else if object["status"]["nodeInfo"].is_object() {
        "Node"
    } else {
        return;
    };
    object["kind"] = json!(kind);
    object["apiVersion"] = json!("v1");
}

/// A core `v1` Event as `events.k8s.io/v1` serves it.
fn event_to_events_v1(event: &Value) -> Value {
    let mut converted = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": event["metadata"]});
    let fields = [
        ("eventTime", "eventTime"),
        ("series", "series"),
        ("reportingComponent", "reportingController"),
        ("reportingInstance", "reportingInstance"),
        ("action", "action"),
        ("reason", "reason"),
        ("involvedObject", "regarding"),
        ("related", "related"),
        ("message", "note"),
        ("type", "type"),
        ("source", "deprecatedSource"),
        ("firstTimestamp", "deprecatedFirstTimestamp"),
        ("lastTimestamp", "deprecatedLastTimestamp"),
        ("count", "deprecatedCount"),
    ];
    for (from, to) in fields {
        if let Some(value) = event.get(from).filter(|v| !v.is_null()) {
            converted[to] = value.clone();
        }
    }
    converted
}

/// An `autoscaling/v1` HorizontalPodAutoscaler as `autoscaling/v2` serves it: the CPU target
/// and current utilization become `Resource` metrics named cpu.
fn hpa_to_v2(hpa: &Value) -> Value {
    let mut converted = hpa.clone();
    converted["apiVersion"] = json!("autoscaling/v2");
    if let Some(spec) = converted.get_mut("spec").and_then(Value::as_object_mut)
        && let Some(target) = spec.remove("targetCPUUtilizationPercentage")
    {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}]),
        );
    }
    if let Some(status) = converted.get_mut("status").and_then(Value::as_object_mut)
        && let Some(current) = status.remove("currentCPUUtilizationPercentage")
    {
        status.insert(
            "currentMetrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": current}}}]),
        );
    }
    converted
}

fn collect_json_files(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_json_files(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "json") {
            files.push(path);
        }
    }
    Ok(())
}

/// Appends the objects of one parsed file: itself, its list items, or its array elements.
fn flatten_document(document: Value, objects: &mut Vec<Value>) {
    match document {
        Value::Array(items) => items.into_iter().for_each(|item| flatten_document(item, objects)),
        Value::Object(mut map) if map.contains_key("items") => {
            let list_kind = map.get("kind").and_then(Value::as_str).unwrap_or("List");
            let item_kind = list_kind.strip_suffix("List").filter(|kind| !kind.is_empty()).map(str::to_owned);
            let api_version = map.get("apiVersion").cloned();
            let Value::Array(items) = map.remove("items").unwrap_or(Value::Null) else {
                return;
            };
            for mut item in items {
                if let Value::Object(fields) = &mut item {
                    if let Some(kind) = &item_kind {
                        fields.entry("kind").or_insert_with(|| Value::String(kind.clone()));
                    }
                    if let Some(api_version) = &api_version {
                        fields.entry("apiVersion").or_insert_with(|| api_version.clone());
                    }
                }
                flatten_document(item, objects);
            }
        }
        object @ Value::Object(_) => objects.push(object),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_served_as_the_api_would_serve_them() {
        let served = as_served(vec![
            json!({"kind": "Event", "apiVersion": "v1", "metadata": {"name": "e"}, "message": "m", "involvedObject": {"kind": "Pod"}, "count": 3}),
            json!({"kind": "HorizontalPodAutoscaler", "apiVersion": "autoscaling/v1", "metadata": {"name": "h"},
                   "spec": {"maxReplicas": 3, "targetCPUUtilizationPercentage": 80}, "status": {"currentCPUUtilizationPercentage": 50}}),
            json!({"metadata": {"name": "p"}, "spec": {"containers": []}}),
            json!({"metadata": {"name": "n"}, "status": {"nodeInfo": {}}}),
        ]);
        let kinds: Vec<(&str, &str)> =
            served.iter().map(|o| (o["apiVersion"].as_str().unwrap(), o["kind"].as_str().unwrap())).collect();
        assert_eq!(
            kinds,
            [
                ("v1", "Pod"),
                ("v1", "Node"),
                ("events.k8s.io/v1", "Event"),
                ("autoscaling/v2", "HorizontalPodAutoscaler")
            ]
        );
        assert_eq!(served[2]["note"], "m");
        assert_eq!(served[2]["regarding"]["kind"], "Pod");
        assert_eq!(served[2]["deprecatedCount"], 3);
        assert_eq!(served[3]["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 80);
        assert_eq!(served[3]["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"], 50);
    }

    #[test]
    fn lists_arrays_and_single_objects_flatten_with_kinds_filled_in() {
        let mut objects = Vec::new();
        flatten_document(
            json!({"kind": "PodList", "apiVersion": "v1", "items": [{"metadata": {"name": "a"}}]}),
            &mut objects,
        );
        flatten_document(json!({"kind": "List", "apiVersion": "v1", "items": null}), &mut objects);
        flatten_document(json!([{"kind": "Node", "apiVersion": "v1", "metadata": {"name": "n"}}]), &mut objects);
        flatten_document(json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "x"}}), &mut objects);
        let kinds: Vec<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Pod", "Node", "Namespace"]);
        assert_eq!(objects[0]["apiVersion"], "v1");
    }
}
