//! The simulated fleet against a second real client (issue 12, case 7): the official Python
//! `kubernetes` client (PyPI), installed into a virtualenv under the target folder on first use
//! and kept there, reads version, discovery, paged lists of several kinds, one namespace's pods
//! and single objects of every cluster through `tests/python/kube_client.py`; what it gets must
//! be what the simulator serves.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use kubecensus_tests::{
    fleet::{Fleet, FleetSpec, SIMULATED_MINOR, served_apis},
    programs,
};
use serde_json::{Value, json};

/// The client release the test installs (`pip install kubernetes==…`).
const CLIENT_VERSION: &str = "37.0.2";

/// Items per page the client asks for: several pages of every non-empty list.
const PAGE_SIZE: usize = 7;

/// A Python with the client installed: a virtualenv under the target folder, made (with
/// `python -m venv`, [`programs::python`], and `pip install`) in a staging folder and renamed into place, so a
/// half-made one is never used and later runs reuse it.
fn python_with_client() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("python-kubernetes-{CLIENT_VERSION}"));
    let python = venv.join("bin/python");
    let has_client = |python: &Path| {
        Command::new(python).args(["-c", "import kubernetes"]).status().is_ok_and(|status| status.success())
    };
    if has_client(&python) {
        return python;
    }
    let staging = venv.with_extension(format!("staging-{}", uuid::Uuid::new_v4().simple()));
    let run = |command: &mut Command| {
        let output = command.output().expect("run python");
        assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    run(Command::new(programs::python()).args(["-m", "venv"]).arg(&staging));
    run(Command::new(staging.join("bin/python")).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("kubernetes=={CLIENT_VERSION}"),
    ]));
    // Another run may have finished first: then its virtualenv is used and this one dropped.
    if std::fs::rename(&staging, &venv).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(has_client(&python), "no kubernetes client in {}", venv.display());
    python
}

/// `[namespace, name, uid]` of an object.
type Identity = [String; 3];

/// The identities of objects the simulator holds.
fn identities<'a>(objects: impl IntoIterator<Item = &'a Value>) -> BTreeSet<Identity> {
    let field = |object: &Value, name: &str| object["metadata"][name].as_str().unwrap_or_default().to_owned();
    objects.into_iter().map(|o| [field(o, "namespace"), field(o, "name"), field(o, "uid")]).collect()
}

/// The identities the client reported.
fn listed(value: &Value) -> BTreeSet<Identity> {
    serde_json::from_value(value.clone()).expect("a list of [namespace, name, uid]")
}

/// Runs `tests/python/kube_client.py` with the client against every cluster of a fleet started
/// from `spec`, and checks what it got against what the fleet serves; returns the fleet and
/// what the client got, per cluster.
async fn read_with_the_python_client(spec: FleetSpec) -> (Fleet, Value) {
    let python = tokio::task::spawn_blocking(python_with_client).await.unwrap();
    let out = std::env::temp_dir().join(format!("kubecensus-python-{}", uuid::Uuid::new_v4().simple()));
    let fleet = Fleet::start(spec, &out).await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/kube_client.py");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(out.join("kubeconfig"))
        .arg(PAGE_SIZE.to_string())
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&out);
    assert!(output.status.success(), "the Python client failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let results: Value = serde_json::from_slice(&output.stdout).unwrap();

    for (index, cluster) in fleet.clusters().iter().enumerate() {
        let got = &results[&cluster.name];
        let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut resources: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for api in &served_apis(index) {
            let group_version =
                if api.group.is_empty() { api.version.clone() } else { format!("{}/{}", api.group, api.version) };
            if !api.group.is_empty() {
                groups.entry(api.group.clone()).or_default().insert(group_version.clone());
            }
            resources.entry(group_version).or_default().insert(api.plural.clone());
        }

        let version = json!({"major": "1", "minor": SIMULATED_MINOR.to_string(), "gitVersion": format!("v1.{SIMULATED_MINOR}.1")});
        assert_eq!(got["version"], version);
        assert_eq!(got["core_versions"], json!(["v1"]));
        let got_groups: BTreeMap<String, BTreeSet<String>> = serde_json::from_value(got["groups"].clone()).unwrap();
        assert_eq!(got_groups, groups, "/apis of {}", cluster.name);
        assert_eq!(got["apps_group"], "apps");
        let got_resources: BTreeMap<String, BTreeSet<String>> =
            serde_json::from_value(got["resources"].clone()).unwrap();
        assert_eq!(got_resources, resources, "resources of every group/version of {}", cluster.name);

        for (plural, items) in got["lists"].as_object().unwrap() {
            let held = fleet.objects(&cluster.name, plural);
            assert_eq!(listed(items), identities(&held), "{plural} of {}", cluster.name);
            let pages = got["pages"][plural].as_u64().unwrap() as usize;
            assert_eq!(pages, held.len().div_ceil(PAGE_SIZE).max(1), "pages of {plural} of {}", cluster.name);
        }

        let namespace = got["namespace_pods"]["namespace"].as_str().unwrap();
        let pods = fleet.objects(&cluster.name, "pods");
        let in_namespace = pods.iter().filter(|pod| pod["metadata"]["namespace"] == namespace);
        assert_eq!(listed(&got["namespace_pods"]["pods"]), identities(in_namespace));
        let read_pod: Identity = serde_json::from_value(got["read_pod"].clone()).unwrap();
        assert!(identities(&pods).contains(&read_pod), "{read_pod:?}");
        assert_eq!(got["read_namespace"], json!(["", "kube-system", cluster.uid]));
        let not_found = json!({
            "kind": "Status",
            "code": 404,
            "reason": "NotFound",
            "details": {"name": "no-such-pod", "kind": "pods"},
        });
        assert_eq!(got["not_found"], not_found);
    }
    (fleet, results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_reads_version_discovery_and_paged_lists_of_every_cluster() {
    let (fleet, results) =
        read_with_the_python_client(FleetSpec { clusters: 2, pods: 30, ..FleetSpec::default() }).await;
    for cluster in fleet.clusters() {
        let lists = &results[&cluster.name]["lists"];
        assert!(lists["pods"].as_array().unwrap().len() > PAGE_SIZE, "several pages of pods");
        assert!(!lists["nodes"].as_array().unwrap().is_empty());
        assert!(fleet.requests(&cluster.name).continued > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_reads_an_object_of_every_kind_it_lists() {
    // Kubernetes' API test data: one object of each kind, every field set, which the client's
    // typed models must read.
    let objects = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/api-testdata");
    let spec = FleetSpec { clusters: 1, objects: Some(objects), ..FleetSpec::default() };
    let (fleet, results) = read_with_the_python_client(spec).await;
    let cluster = &fleet.clusters()[0];
    let lists = results[&cluster.name]["lists"].as_object().unwrap();
    assert!(lists.len() >= 15, "{:?}", lists.keys());
    for (plural, items) in lists {
        assert!(!items.as_array().unwrap().is_empty(), "no {plural} read");
    }
}
