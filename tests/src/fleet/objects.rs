//! Objects read from a folder of JSON files (`--objects DIR`), for serving real captured content
//! instead of generated content.
//!
//! Every `*.json` file under the folder (recursively, in path order) holds one object, a
//! `…List` (`items` may be `null`; typed lists' items may lack `kind`/`apiVersion`, which then
//! come from the list), or a bare array of objects.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

/// Reads every object from the JSON files under `dir`.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut files = Vec::new();
    collect_json_files(dir, &mut files).with_context(|| format!("reading {}", dir.display()))?;
    files.sort();
    let mut objects = Vec::new();
    for file in &files {
        let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let document: Value =
            serde_json::from_slice(&text).with_context(|| format!("parsing {}", file.display()))?;
        let before = objects.len();
        flatten_document(document, &mut objects);
        tracing::debug!(file = %file.display(), objects = objects.len() - before, "loaded objects");
    }
    Ok(objects)
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
        Value::Array(items) => items
            .into_iter()
            .for_each(|item| flatten_document(item, objects)),
        Value::Object(mut map) if map.contains_key("items") => {
            let list_kind = map.get("kind").and_then(Value::as_str).unwrap_or("List");
            let item_kind = list_kind
                .strip_suffix("List")
                .filter(|kind| !kind.is_empty())
                .map(str::to_owned);
            let api_version = map.get("apiVersion").cloned();
            let Value::Array(items) = map.remove("items").unwrap_or(Value::Null) else {
                return;
            };
            for mut item in items {
                if let Value::Object(fields) = &mut item {
                    if let Some(kind) = &item_kind {
                        fields
                            .entry("kind")
                            .or_insert_with(|| Value::String(kind.clone()));
                    }
                    if let Some(api_version) = &api_version {
                        fields
                            .entry("apiVersion")
                            .or_insert_with(|| api_version.clone());
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
    use serde_json::json;

    use super::*;

    #[test]
    fn lists_arrays_and_single_objects_flatten_with_kinds_filled_in() {
        let mut objects = Vec::new();
        flatten_document(
            json!({"kind": "PodList", "apiVersion": "v1", "items": [{"metadata": {"name": "a"}}]}),
            &mut objects,
        );
        flatten_document(
            json!({"kind": "List", "apiVersion": "v1", "items": null}),
            &mut objects,
        );
        flatten_document(
            json!([{"kind": "Node", "apiVersion": "v1", "metadata": {"name": "n"}}]),
            &mut objects,
        );
        flatten_document(
            json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "x"}}),
            &mut objects,
        );
        let kinds: Vec<&str> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["Pod", "Node", "Namespace"]);
        assert_eq!(objects[0]["apiVersion"], "v1");
    }
}
