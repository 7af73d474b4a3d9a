//! Tests of flattening: real and hand-made objects into rows, column by column.

use serde_json::json;

use super::*;
use crate::model::catalog::Catalog;

fn cluster() -> ClusterContext {
    ClusterContext { name: "c1".into(), uid: "u-1".into(), field_values: vec![Some("us-east".into())] }
}

/// Rows as a list of column → text (None for NULL), decoded back from COPY text.
fn rows(table_name: &str, object: &Value) -> Vec<Vec<(String, Option<String>)>> {
    let fields = ["region".to_owned()];
    let catalog = Catalog::builtin();
    let table = catalog.tables().find(|(_, t)| t.name == table_name).unwrap().1;
    let layout = Layout { table, fields: &fields, namespace_fields: &[] };
    let mut out = Vec::new();
    let count = layout.write_rows(object, &cluster(), &mut out);
    let text = String::from_utf8(out).unwrap();
    let rows: Vec<_> = text
        .lines()
        .map(|line| {
            layout
                .column_names()
                .into_iter()
                .zip(line.split('\t'))
                .map(|(name, field)| (name.to_owned(), (field != "\\N").then(|| field.to_owned())))
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), count);
    rows
}

fn get<'a>(row: &'a [(String, Option<String>)], column: &str) -> Option<&'a str> {
    row.iter().find(|(name, _)| name == column).unwrap_or_else(|| panic!("no column {column}")).1.as_deref()
}

fn pod() -> Value {
    json!({
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "p-1", "creationTimestamp": "2024-01-02T03:04:05Z",
                     "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "hostNetwork": true, "priority": 5,
                 "initContainers": [{"name": "init", "image": "busybox:1.36"}],
                 "containers": [{"name": "app", "image": "ghcr.io/org/app:1.2@sha256:abc", "stdin": false},
                                {"name": "side", "image": "envoy"}]},
        "status": {"phase": "Running",
                   "containerStatuses": [{"name": "app", "ready": true, "restartCount": 3}],
                   "initContainerStatuses": [{"name": "init", "ready": false, "restartCount": 0}]}
    })
}

#[test]
fn a_pod_becomes_one_pod_row_with_kubequery_values_and_the_cluster_fields() {
    let rows = rows("kubernetes_pods", &pod());
    let row = &rows[0];
    assert_eq!(row[1].0, "cluster_name");
    assert_eq!(row[2], ("region".into(), Some("us-east".into())));
    assert_eq!(get(row, "cluster_uid"), Some("u-1"));
    assert_eq!(get(row, "namespace"), Some("shop"));
    assert_eq!(get(row, "creation_timestamp"), Some("1704164645"));
    assert_eq!(get(row, "labels"), Some(r#"{"app":"web"}"#));
    assert_eq!(get(row, "host_network"), Some("1"));
    assert_eq!(get(row, "host_pid"), None);
    assert_eq!(get(row, "priority"), Some("5"));
    assert_eq!(get(row, "phase"), Some("Running"));
}

#[test]
fn a_pods_containers_are_matched_to_their_statuses_by_list_and_name() {
    let rows = rows("kubernetes_pod_containers", &pod());
    let summary: Vec<_> = rows
        .iter()
        .map(|r| {
            (get(r, "name"), get(r, "container_type"), get(r, "ready"), get(r, "restart_count"), get(r, "pod_name"))
        })
        .collect();
    assert_eq!(
        summary,
        [
            (Some("init"), Some("init"), Some("0"), Some("0"), Some("web-1")),
            (Some("app"), Some("container"), Some("1"), Some("3"), Some("web-1")),
            (Some("side"), Some("container"), None, None, Some("web-1")),
        ]
    );
    assert_eq!(get(&rows[1], "image_repo"), Some("ghcr.io/org/app"));
    assert_eq!(get(&rows[1], "stdin"), Some("0"));
}

#[test]
fn statuses_listed_in_another_order_or_missing_are_never_a_neighbours() {
    let mut pod = pod();
    pod["status"]["containerStatuses"] = json!([
        {"name": "side", "ready": false, "restartCount": 7, "imageID": "envoy@sha256:e"},
        {"name": "app", "ready": true, "restartCount": 3, "imageID": "app@sha256:a"},
    ]);
    pod["status"]["initContainerStatuses"] = json!([]);
    let rows = rows("kubernetes_pod_containers", &pod);
    let summary: Vec<_> = rows.iter().map(|r| (get(r, "name"), get(r, "ready"), get(r, "restart_count"))).collect();
    assert_eq!(
        summary,
        [(Some("init"), None, None), (Some("app"), Some("1"), Some("3")), (Some("side"), Some("0"), Some("7"))]
    );
}

#[test]
fn wrong_types_become_null_and_nul_and_control_characters_are_made_safe() {
    let object = json!({
        "metadata": {"name": "a\tb\\c\nd\u{0}e", "uid": 7, "creationTimestamp": "yesterday",
                     "labels": {"k\u{0}": "v\u{0}"}},
        "spec": {"hostNetwork": "yes", "priority": 99999999999_i64},
    });
    let rows = rows("kubernetes_pods", &object);
    let row = &rows[0];
    assert_eq!(get(row, "name"), Some(r"a\tb\\c\nde"));
    assert_eq!(get(row, "uid"), Some("7"));
    assert_eq!(get(row, "creation_timestamp"), None);
    assert_eq!(get(row, "labels"), Some(r#"{"k":"v"}"#));
    assert_eq!(get(row, "host_network"), None);
    assert_eq!(get(row, "priority"), None);
}

#[test]
fn image_repo_drops_tag_and_digest_but_keeps_registry_ports() {
    assert_eq!(image_repo("nginx"), "nginx");
    assert_eq!(image_repo("nginx:1.25"), "nginx");
    assert_eq!(image_repo("registry:5000/team/app:v1"), "registry:5000/team/app");
    assert_eq!(image_repo("registry:5000/team/app"), "registry:5000/team/app");
    assert_eq!(image_repo("ghcr.io/a/b@sha256:ff"), "ghcr.io/a/b");
}
