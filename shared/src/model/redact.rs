//! Keeping a Secret's (or ConfigMap's) data out of every column, wherever tools copy it.
//!
//! kubecensus never stores a Secret's or ConfigMap's data. Deployment tools copy it into
//! annotations: kubectl keeps the last applied manifest in
//! `kubectl.kubernetes.io/last-applied-configuration`, kapp the original manifest and a diff of it
//! in `kapp.k14s.io/original` and `kapp.k14s.io/original-diff`, and other tools record manifests,
//! patches or command lines under names nobody can list in advance. So the rule is on the
//! values, not on the keys: an annotation of such an object keeps its key, and its value only when
//! it is plainly not a carrier of data. A value becomes `null` when any of these holds:
//!
//! 1. it is longer than [`MAX_KEPT_BYTES`] (manifests and diffs are long);
//! 2. it is JSON (an object or a list: a manifest, a patch);
//! 3. it mentions a data field (`data:`, `"data"`, `/data/`, `stringData`, `binaryData`): a YAML
//!    manifest or a patch path, even with data values other than today's;
//! 4. it holds any of the object's `data`, `stringData` or `binaryData` values, as stored or
//!    base64-decoded.
//!
//! Short values that name things (`meta.helm.sh/release-name: payments`,
//! `kubernetes.io/service-account.name: builder`, `kapp.k14s.io/identity: v1;ns//Secret/x;v1`)
//! are kept.

use base64::Engine;
use serde_json::{Map, Value};

/// The longest annotation value kept (a Kubernetes label value is at most 63 characters; names
/// and identities fit well under this).
pub const MAX_KEPT_BYTES: usize = 256;

/// Words that mark a value as a manifest or a patch of an object's data.
const DATA_FIELDS: [&str; 5] = ["data:", "\"data\"", "/data/", "stringData", "binaryData"];

/// `annotations` (a JSON object) of `object`, with every value that could carry the object's
/// data replaced by `null` (the module's rule); `None` when `annotations` is not an object.
pub fn without_data(object: &Value, annotations: &Value) -> Option<Value> {
    let annotations = annotations.as_object()?;
    let secrets = data_values(object);
    let kept: Map<String, Value> = annotations
        .iter()
        .map(|(key, value)| {
            let safe = value.as_str().is_some_and(|text| is_plainly_not_data(text, &secrets));
            (key.clone(), if safe { value.clone() } else { Value::Null })
        })
        .collect();
    Some(Value::Object(kept))
}

fn is_plainly_not_data(text: &str, secrets: &[String]) -> bool {
    let trimmed = text.trim_start();
    text.len() <= MAX_KEPT_BYTES
        && !trimmed.starts_with('{')
        && !trimmed.starts_with('[')
        && !DATA_FIELDS.iter().any(|field| text.contains(field))
        && !secrets.iter().any(|secret| text.contains(secret.as_str()))
}

/// The object's `data`, `stringData` and `binaryData` values, as stored and base64-decoded
/// (where they decode to text), without empty ones.
fn data_values(object: &Value) -> Vec<String> {
    let mut values = Vec::new();
    for field in ["data", "stringData", "binaryData"] {
        let Some(map) = object.get(field).and_then(Value::as_object) else { continue };
        for value in map.values().filter_map(Value::as_str).filter(|v| !v.is_empty()) {
            values.push(value.to_owned());
            if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(value)
                && let Ok(text) = String::from_utf8(decoded)
                && !text.is_empty()
            {
                values.push(text);
            }
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_are_kept_and_manifests_diffs_and_data_values_are_not() {
        let secret = json!({
            "data": {"password": "UGE1NXcwcmQ="},
            "metadata": {"annotations": {}}
        });
        let annotations = json!({
            "meta.helm.sh/release-name": "payments",
            "kapp.k14s.io/identity": "v1;shop//Secret/db;v1",
            "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"password\":\"old\"}}",
            "kapp.k14s.io/original-diff": "- type: test\n  path: /data/password\n  value: b2xk\n",
            "example.com/cmdline": "create secret db --from-literal=password=Pa55w0rd",
            "example.com/encoded": "UGE1NXcwcmQ=",
            "example.com/long": "x".repeat(300),
            "example.com/number": 3,
        });
        let kept = without_data(&secret, &annotations).unwrap();
        assert_eq!(
            kept,
            json!({
                "meta.helm.sh/release-name": "payments",
                "kapp.k14s.io/identity": "v1;shop//Secret/db;v1",
                "kubectl.kubernetes.io/last-applied-configuration": null,
                "kapp.k14s.io/original-diff": null,
                "example.com/cmdline": null,
                "example.com/encoded": null,
                "example.com/long": null,
                "example.com/number": null,
            })
        );
    }
}
