//! Churn beyond pods: deployments get a new image, config maps new labels (and some come and
//! go), nodes new labels, and nodes' heartbeats move, each change in one new snapshot, with a log
//! of exactly which objects changed, so tests compare kubecensus's change history with it.
//!
//! A config map's change is a label, not its data: kubecensus keeps no config map data (no such
//! column), so a data-only change is no change to it. A heartbeat (every node's conditions'
//! `lastHeartbeatTime`, with a new resourceVersion) is noise: logged apart, it must record no
//! `updated`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::content::timestamp;
use super::store::{ClusterStore, PODS, StoredObject, store, uid_of};

/// What one churn changes in one cluster (counts of objects, each picked at random).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WorkloadChurn {
    /// Deployments whose first container gets a new image.
    pub deployments: usize,
    /// Config maps given a new label.
    pub config_maps_updated: usize,
    /// Config maps created (`churn-<version>-<n>` in a namespace that has some).
    pub config_maps_created: usize,
    /// Config maps deleted (none of those updated).
    pub config_maps_deleted: usize,
    /// Nodes given a new label.
    pub nodes: usize,
    /// Every node's heartbeat moves (noise: no change to record).
    pub heartbeats: bool,
    /// Pods deleted and pods added.
    pub pods_deleted: usize,
    pub pods_added: usize,
}

/// The uids one churn changed in one resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    pub created: BTreeSet<String>,
    pub updated: BTreeSet<String>,
    pub deleted: BTreeSet<String>,
    /// Objects rewritten with noise only (a heartbeat): no change to record.
    pub noise: BTreeSet<String>,
}

/// What one churn changed, by plural (`deployments`, `configmaps`, `nodes`, `pods`).
pub type ChurnLog = BTreeMap<String, Changed>;

impl ClusterStore {
    /// Applies `churn` as one new snapshot; returns what it changed.
    pub fn churn_workloads(&mut self, churn: &WorkloadChurn) -> ChurnLog {
        let version = self.next_version();
        let mut log = ChurnLog::new();
        let mut lists = Vec::new();
        if churn.deployments > 0 {
            let changed = log.entry("deployments".into()).or_default();
            let deployments = self.updated("deployments", churn.deployments, version, changed, |deployment| {
                deployment["spec"]["template"]["spec"]["containers"][0]["image"] =
                    json!(format!("churn/app:{version}"));
            });
            lists.push(("deployments".to_owned(), deployments));
        }
        if churn.config_maps_updated + churn.config_maps_created + churn.config_maps_deleted > 0 {
            let changed = log.entry("configmaps".into()).or_default();
            let mut maps = self.updated("configmaps", churn.config_maps_updated, version, changed, |map| {
                map["metadata"]["labels"]["kubecensus.io/churn"] = json!(version.to_string());
            });
            self.delete_some(&mut maps, churn.config_maps_deleted, changed);
            self.create_config_maps(&mut maps, churn.config_maps_created, version, changed);
            lists.push(("configmaps".to_owned(), maps));
        }
        if churn.nodes > 0 || churn.heartbeats {
            let changed = log.entry("nodes".into()).or_default();
            let mut nodes = self.updated("nodes", churn.nodes, version, changed, |node| {
                node["metadata"]["labels"]["kubecensus.io/churn"] = json!(version.to_string());
            });
            if churn.heartbeats {
                heartbeat(&mut nodes, version, changed);
            }
            lists.push(("nodes".to_owned(), nodes));
        }
        if churn.pods_deleted + churn.pods_added > 0 {
            let changed = log.entry(PODS.into()).or_default();
            lists.push((PODS.to_owned(), self.churned_pods(churn.pods_deleted, churn.pods_added, version, changed)));
        }
        self.commit(lists);
        log
    }

    /// The current objects of `plural` with `count` distinct random ones changed by `change` and
    /// stamped with `version`, their uids recorded as updated.
    fn updated(
        &mut self,
        plural: &str,
        count: usize,
        version: u64,
        log: &mut Changed,
        change: impl Fn(&mut Value),
    ) -> Vec<Arc<StoredObject>> {
        let mut objects: Vec<Arc<StoredObject>> = self.current().list(plural, None).to_vec();
        let mut picked = HashSet::new();
        while picked.len() < count.min(objects.len()) {
            picked.insert(self.rng().below(objects.len()));
        }
        for index in picked {
            let mut value: Value = serde_json::from_slice(&objects[index].json).expect("stored JSON");
            change(&mut value);
            value["metadata"]["resourceVersion"] = json!(version.to_string());
            log.updated.insert(value["metadata"]["uid"].as_str().unwrap_or_default().to_owned());
            objects[index] = Arc::new(store(&value));
        }
        objects
    }

    /// Removes `count` random objects of `objects` not already changed, recording them deleted.
    fn delete_some(&mut self, objects: &mut Vec<Arc<StoredObject>>, count: usize, log: &mut Changed) {
        let mut deleted = 0;
        while deleted < count && objects.len() > log.updated.len() {
            let index = self.rng().below(objects.len());
            let uid = uid_of(&objects[index]);
            if !log.updated.contains(&uid) {
                objects.remove(index);
                log.deleted.insert(uid);
                deleted += 1;
            }
        }
    }

    /// Adds `count` new config maps next to existing ones' namespaces, recording them created.
    fn create_config_maps(&mut self, maps: &mut Vec<Arc<StoredObject>>, count: usize, version: u64, log: &mut Changed) {
        let namespaces: Vec<String> = maps.iter().map(|map| map.namespace.clone()).collect();
        for n in 0..count {
            let namespace = match namespaces.is_empty() {
                true => "default".to_owned(),
                false => self.rng().pick(&namespaces).clone(),
            };
            let uid = self.rng().uuid();
            let map = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("churn-{version}-{n}"), "namespace": namespace, "uid": uid,
                             "resourceVersion": version.to_string(), "creationTimestamp": timestamp(Utc::now())},
                "data": {"churn": version.to_string()}});
            log.created.insert(uid);
            maps.push(Arc::new(store(&map)));
        }
    }
}

/// Moves every node's conditions' `lastHeartbeatTime` (and its resourceVersion), recording the
/// nodes not otherwise changed as noise.
fn heartbeat(nodes: &mut [Arc<StoredObject>], version: u64, log: &mut Changed) {
    let now = timestamp(Utc::now());
    for node in nodes.iter_mut() {
        let mut value: Value = serde_json::from_slice(&node.json).expect("stored JSON");
        for condition in value["status"]["conditions"].as_array_mut().into_iter().flatten() {
            condition["lastHeartbeatTime"] = json!(now);
        }
        value["metadata"]["resourceVersion"] = json!(version.to_string());
        let uid = value["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
        if !log.updated.contains(&uid) {
            log.noise.insert(uid);
        }
        *node = Arc::new(store(&value));
    }
}
