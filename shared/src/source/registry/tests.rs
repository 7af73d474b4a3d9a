//! Tests of the registry file: loading, checking, namespace fields, and credentials kept out of debug output.

use std::collections::HashMap;

use super::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kc-registry-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn loads_clusters_with_fields_and_resolves_relative_files() {
    let dir = temp_dir();
    let path = write(
        &dir,
        "clusters.yaml",
        "clusters:\n- name: prod-1\n  server: https://10.0.0.1:6443\n  ca_file: ca.crt\n  token_file: t\n  fields: {region: us-east, team: payments}\n- name: dev\n  kubeconfig: kc\n  context: dev\n",
    );
    let registry = Registry::load(&path, &Catalog::builtin()).unwrap();
    assert_eq!(registry.get("prod-1").unwrap().ca_file.as_deref(), Some(dir.join("ca.crt").as_path()));
    assert_eq!(registry.field_names(), ["region", "team"]);
    assert!(registry.get("nope").is_none());
}

#[test]
fn rejects_bad_clusters_with_a_clear_reason() {
    let cases = [
        ("- name: Bad_Name\n  kubeconfig: k\n", "lower-case"),
        ("- name: a\n  server: https://x\n  ca_data: x\n", "give a credential"),
        ("- name: a\n  server: https://x\n  client_certificate_file: c\n", "together"),
        ("- name: a\n", "give kubeconfig"),
        ("- name: a\n  kubeconfig: k\n  fields: {namespace: x}\n", "name of a table column"),
        ("- name: a\n  kubeconfig: k\n  fields: {'drop table': x}\n", "SQL identifier"),
        ("- name: a\n  kubeconfig: k\n- name: a\n  kubeconfig: k\n", "declared twice"),
        ("- name: a\n  kubeconfig: k\n  password: x\n", "unknown field"),
    ];
    let dir = temp_dir();
    for (clusters, why) in cases {
        let path = write(&dir, "r.yaml", &format!("clusters:\n{clusters}"));
        let err = Registry::load(&path, &Catalog::builtin()).unwrap_err().to_string();
        assert!(err.contains(why), "{clusters:?}: {err}");
    }
}

#[test]
fn namespace_fields_resolve_cluster_rules_first_then_fleet_rules_globs_and_labels() {
    let dir = temp_dir();
    let path = write(
        &dir,
        "clusters.yaml",
        "namespace_fields:\n  team:\n  - {namespace: 'pay-*', value: payments}\n  - {label: team}\n  cost_center:\n  - {value: shared}\nclusters:\n- name: a\n  kubeconfig: k\n  fields: {region: eu}\n  namespace_fields:\n    team:\n    - {namespace: legacy, value: core}\n- name: b\n  kubeconfig: k\n",
    );
    let registry = Registry::load(&path, &Catalog::builtin()).unwrap();
    assert_eq!(registry.namespace_field_names(), ["cost_center", "team"]);
    let mut a = registry.namespace_fields_of(registry.get("a").unwrap());
    assert!(a.needs_labels());
    a.set_labels(HashMap::from([("shop".to_owned(), BTreeMap::from([("team".to_owned(), "web".to_owned())]))]));
    let values =
        |fields: &NamespaceFields, ns: &str| fields.values(ns).map(|v| v.map(str::to_owned)).collect::<Vec<_>>();
    assert_eq!(values(&a, "legacy"), [Some("shared".into()), Some("core".into())]);
    assert_eq!(values(&a, "pay-eu"), [Some("shared".into()), Some("payments".into())]);
    assert_eq!(values(&a, "shop"), [Some("shared".into()), Some("web".into())]);
    assert_eq!(values(&a, "other"), [Some("shared".into()), None]);
    let b = registry.namespace_fields_of(registry.get("b").unwrap());
    assert_eq!(values(&b, "legacy"), [Some("shared".into()), None], "another cluster's rules do not apply");
}

#[test]
fn bad_namespace_fields_are_rejected() {
    let dir = temp_dir();
    let cases = [
        ("namespace_fields: {Team: [{value: x}]}\n", "SQL identifier"),
        ("namespace_fields: {namespace: [{value: x}]}\n", "name of a table column"),
        ("namespace_fields: {region: [{value: x}]}\n", "also a cluster field"),
        ("namespace_fields: {team: [{value: x, label: y}]}\n", "either `value` or `label`"),
        ("namespace_fields: {team: [{namespace: a}]}\n", "either `value` or `label`"),
        ("namespace_fields: {team: [{value: x, nope: 1}]}\n", "unknown field"),
    ];
    for (fields, why) in cases {
        let path =
            write(&dir, "r.yaml", &format!("{fields}clusters:\n- name: a\n  kubeconfig: k\n  fields: {{region: x}}\n"));
        let err = Registry::load(&path, &Catalog::builtin()).unwrap_err().to_string();
        assert!(err.contains(why), "{fields:?}: {err}");
    }
}

#[tokio::test]
async fn credentials_are_read_but_never_show_in_debug_output() {
    let dir = temp_dir();
    let token_file = write(&dir, "token", "s3cret-token\n");
    let cluster = ClusterConfig {
        name: "a".into(),
        server: Some("https://127.0.0.1:1".into()),
        token_file: Some(token_file),
        ..Default::default()
    };
    let config = cluster.kube_config(Duration::from_secs(5)).await.unwrap();
    assert!(config.auth_info.token.is_some());
    assert!(!config.accept_invalid_certs);
    assert!(!format!("{config:?}").contains("s3cret-token"));
    assert!(!format!("{cluster:?}").contains("s3cret-token"));

    let from_env = ClusterConfig { token_file: None, token_env: Some("KC_TEST_UNSET_TOKEN".into()), ..cluster };
    let err = from_env.kube_config(Duration::from_secs(5)).await.unwrap_err().to_string();
    assert!(err.contains("KC_TEST_UNSET_TOKEN") && err.contains("not set"), "{err}");
}
