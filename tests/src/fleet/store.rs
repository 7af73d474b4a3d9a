//! What one simulated cluster holds: its objects, pre-serialized once and kept sorted by
//! namespace/name per resource, in immutable snapshots.
//!
//! Every change (churn) makes a new snapshot with a new resourceVersion; unchanged objects are
//! shared between snapshots (`Arc`), so keeping the last few is cheap. Paged lists read the
//! snapshot their first page came from, which keeps a paged list consistent under churn.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::Utc;
use kubecensus::model::catalog::ApiRef;
use serde_json::Value;

use super::content::{PodFactory, Rng};

/// How many snapshots (the current one included) a cluster keeps for continue tokens.
const KEPT_SNAPSHOTS: usize = 16;

/// The resource pod churn changes.
pub(super) const PODS: &str = "pods";

/// One object, serialized once.
#[derive(Debug)]
pub struct StoredObject {
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
    pub json: Vec<u8>,
}

impl StoredObject {
    pub(super) fn key(&self) -> (&str, &str) {
        (&self.namespace, &self.name)
    }
}

/// A sorted list of the objects of one resource.
type ObjectList = Arc<Vec<Arc<StoredObject>>>;

/// A cluster's content at one resourceVersion.
#[derive(Debug)]
pub struct Snapshot {
    pub resource_version: u64,
    /// By plural.
    lists: HashMap<String, ObjectList>,
}

impl Snapshot {
    /// The objects of a resource, all or those of one namespace, sorted by namespace/name.
    pub fn list(&self, plural: &str, namespace: Option<&str>) -> &[Arc<StoredObject>] {
        let Some(objects) = self.lists.get(plural) else {
            return &[];
        };
        match namespace {
            None => objects,
            Some(namespace) => {
                let start = objects.partition_point(|o| o.namespace.as_str() < namespace);
                let end = start + objects[start..].partition_point(|o| o.namespace == namespace);
                &objects[start..end]
            }
        }
    }

    /// One object by namespace (empty for cluster-scoped) and name.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<&StoredObject> {
        let objects = self.lists.get(plural)?;
        objects.binary_search_by(|o| o.key().cmp(&(namespace, name))).ok().map(|i| &*objects[i])
    }
}

/// Objects sorted into the catalog's resources, and what fitted none.
pub struct Classified {
    /// By plural.
    pub objects: HashMap<String, Vec<Value>>,
    /// Objects of kinds the catalog does not list, counted by `apiVersion/kind`.
    pub skipped: BTreeMap<String, usize>,
    /// Objects dropped because an earlier one had the same resource, namespace and name.
    pub duplicates: usize,
}

/// Sorts objects into the catalog's resources by API group and kind, keeping the first of
/// objects with the same namespace/name. Namespaced objects without a namespace are put in
/// `default`; objects without a uid get one from `rng`.
pub fn classify(resources: &[ApiRef], objects: Vec<Value>, rng: &mut Rng) -> Classified {
    let mut classified = Classified { objects: HashMap::new(), skipped: BTreeMap::new(), duplicates: 0 };
    let mut seen = HashSet::new();
    for mut object in objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        let Some(resource) = resources.iter().find(|r| r.group == group && r.kind == kind) else {
            let kind = if kind.is_empty() { "(no kind)" } else { kind };
            *classified.skipped.entry(format!("{api_version}/{kind}")).or_default() += 1;
            continue;
        };
        let plural = resource.plural.clone();
        let metadata = &mut object["metadata"];
        if metadata["uid"].as_str().is_none() {
            metadata["uid"] = Value::String(rng.uuid());
        }
        if resource.namespaced && metadata["namespace"].as_str().is_none() {
            metadata["namespace"] = Value::String("default".to_owned());
        }
        let key = format!(
            "{plural}/{}/{}",
            metadata["namespace"].as_str().unwrap_or_default(),
            metadata["name"].as_str().unwrap_or_default()
        );
        if !seen.insert(key) {
            classified.duplicates += 1;
            continue;
        }
        classified.objects.entry(plural).or_default().push(object);
    }
    classified
}

/// A cluster's snapshots, newest first, and what it needs to change its content.
pub struct ClusterStore {
    snapshots: VecDeque<Arc<Snapshot>>,
    rng: Rng,
    pod_factory: PodFactory,
}

impl ClusterStore {
    /// A store holding these objects (by plural; unique by namespace/name). Objects without a
    /// resourceVersion get one.
    pub fn new(objects: HashMap<String, Vec<Value>>, pod_factory: PodFactory, rng: Rng) -> Self {
        let mut next_version = 1;
        let mut lists = HashMap::new();
        for (plural, values) in objects {
            let mut stored: Vec<Arc<StoredObject>> = values
                .into_iter()
                .map(|mut value| {
                    let metadata = &mut value["metadata"];
                    match metadata["resourceVersion"].as_str().and_then(|rv| rv.parse::<u64>().ok()) {
                        Some(version) => next_version = next_version.max(version + 1),
                        None if metadata["resourceVersion"].is_string() => {}
                        None => {
                            metadata["resourceVersion"] = Value::String(next_version.to_string());
                            next_version += 1;
                        }
                    }
                    Arc::new(store(&value))
                })
                .collect();
            stored.sort_by(|a, b| a.key().cmp(&b.key()));
            lists.insert(plural, Arc::new(stored));
        }
        let snapshot = Arc::new(Snapshot { resource_version: next_version, lists });
        Self { snapshots: VecDeque::from([snapshot]), rng, pod_factory }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshots[0])
    }

    /// A kept snapshot by resourceVersion.
    pub fn at(&self, resource_version: u64) -> Option<Arc<Snapshot>> {
        self.snapshots.iter().find(|s| s.resource_version == resource_version).cloned()
    }

    /// Deletes `delete` random pods and adds `add` new ones, as a new snapshot.
    pub fn churn(&mut self, delete: usize, add: usize) {
        let version = self.next_version();
        let pods = self.churned_pods(delete, add, version, &mut super::churn::Changed::default());
        self.commit(vec![(PODS.to_owned(), pods)]);
    }

    /// The current pods less `delete` random ones plus `add` new ones at `version`, their uids
    /// recorded in `log`.
    pub(super) fn churned_pods(
        &mut self,
        delete: usize,
        add: usize,
        version: u64,
        log: &mut super::churn::Changed,
    ) -> Vec<Arc<StoredObject>> {
        let mut pods: Vec<Arc<StoredObject>> = self.current().list(PODS, None).to_vec();
        for _ in 0..delete.min(pods.len()) {
            let victim = pods.remove(self.rng.below(pods.len()));
            log.deleted.insert(uid_of(&victim));
        }
        let mut taken: HashSet<String> = pods.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect();
        for _ in 0..add {
            let mut pod = self.pod_factory.pod(&mut self.rng, Utc::now(), &mut taken);
            pod["metadata"]["resourceVersion"] = Value::String(version.to_string());
            log.created.insert(pod["metadata"]["uid"].as_str().unwrap_or_default().to_owned());
            pods.push(Arc::new(store(&pod)));
        }
        pods
    }

    /// The resourceVersion of the next snapshot ([`Self::commit`]).
    pub(super) fn next_version(&self) -> u64 {
        self.snapshots[0].resource_version + 1
    }

    /// The store's random numbers.
    pub(super) fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Makes the next snapshot: the current one with `changed` lists (by plural) in place of its
    /// own, each sorted here.
    pub(super) fn commit(&mut self, changed: Vec<(String, Vec<Arc<StoredObject>>)>) {
        let current = self.current();
        let mut lists = current.lists.clone();
        for (plural, mut objects) in changed {
            objects.sort_by(|a, b| a.key().cmp(&b.key()));
            lists.insert(plural, Arc::new(objects));
        }
        self.snapshots.push_front(Arc::new(Snapshot { resource_version: self.next_version(), lists }));
        self.snapshots.truncate(KEPT_SNAPSHOTS);
    }

    /// Puts `object`, of the resource `plural`, in a new snapshot, in place of the object of the
    /// same namespace and name if there is one; it gets the new resourceVersion (and a uid if
    /// it has none).
    pub fn put(&mut self, plural: &str, mut object: Value) {
        let metadata = &mut object["metadata"];
        metadata["resourceVersion"] = Value::String(self.next_version().to_string());
        if metadata["uid"].as_str().is_none() {
            metadata["uid"] = Value::String(self.rng.uuid());
        }
        let stored = Arc::new(store(&object));
        let mut objects: Vec<Arc<StoredObject>> = self.current().list(plural, None).to_vec();
        objects.retain(|o| o.key() != stored.key());
        objects.push(stored);
        self.commit(vec![(plural.to_owned(), objects)]);
    }

    /// Removes the object of `plural` in `namespace` (empty for cluster-scoped) named `name`,
    /// in a new snapshot; false (and no new snapshot) when there is none.
    pub fn remove(&mut self, plural: &str, namespace: &str, name: &str) -> bool {
        let mut objects: Vec<Arc<StoredObject>> = self.current().list(plural, None).to_vec();
        let before = objects.len();
        objects.retain(|o| o.key() != (namespace, name));
        if objects.len() == before {
            return false;
        }
        self.commit(vec![(plural.to_owned(), objects)]);
        true
    }

    /// Makes a new snapshot whose objects of `plural` are those `change` returns, given the
    /// current snapshot, the new resourceVersion and the store's random numbers; the other
    /// resources are shared. Returns what `change` says it did.
    pub fn change_list<T>(
        &mut self,
        plural: &str,
        change: impl FnOnce(&Snapshot, u64, &mut Rng) -> (Vec<Value>, T),
    ) -> T {
        let current = self.current();
        let (objects, done) = change(&current, self.next_version(), &mut self.rng);
        let stored = objects.iter().map(|object| Arc::new(store(object))).collect();
        self.commit(vec![(plural.to_owned(), stored)]);
        done
    }
}

/// A stored object's `metadata.uid`.
pub(super) fn uid_of(object: &StoredObject) -> String {
    let value: Value = serde_json::from_slice(&object.json).unwrap_or_default();
    value["metadata"]["uid"].as_str().unwrap_or_default().to_owned()
}

pub(super) fn store(object: &Value) -> StoredObject {
    let metadata = &object["metadata"];
    StoredObject {
        namespace: metadata["namespace"].as_str().unwrap_or_default().to_owned(),
        name: metadata["name"].as_str().unwrap_or_default().to_owned(),
        json: serde_json::to_vec(object).expect("a JSON value serializes"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(namespace: &str, name: &str) -> Value {
        json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"namespace": namespace, "name": name}})
    }

    #[test]
    fn classify_maps_kinds_to_plurals_fills_defaults_and_drops_the_rest() {
        let resources = [ApiRef {
            group: String::new(),
            version: "v1".to_owned(),
            kind: "Pod".to_owned(),
            plural: PODS.to_owned(),
            namespaced: true,
        }];
        let objects = vec![
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"}}),
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "namespace": "default"}}),
            json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s"}}),
        ];
        let classified = classify(&resources, objects, &mut Rng::new(1));
        let pods = &classified.objects[PODS];
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0]["metadata"]["namespace"], "default");
        assert!(pods[0]["metadata"]["uid"].is_string());
        assert_eq!(classified.duplicates, 1);
        assert_eq!(classified.skipped["v1/Secret"], 1);
    }

    #[test]
    fn lists_are_sorted_and_filtered_by_namespace_and_old_snapshots_stay_intact() {
        let objects = HashMap::from([(PODS.to_owned(), vec![pod("b", "x"), pod("a", "y"), pod("a", "b")])]);
        let factory = PodFactory::new(&[json!({"metadata": {"name": "a"}})], &[]);
        let mut store = ClusterStore::new(objects, factory, Rng::new(1));
        let first = store.current();
        let names: Vec<&str> = first.list(PODS, None).iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["b", "y", "x"]);
        assert_eq!(first.list(PODS, Some("a")).len(), 2);
        assert!(first.get(PODS, "b", "x").is_some());

        store.churn(3, 1);
        let second = store.current();
        assert_eq!(second.resource_version, first.resource_version + 1);
        assert_eq!(second.list(PODS, None).len(), 1);
        assert_eq!(store.at(first.resource_version).unwrap().list(PODS, None).len(), 3);
    }
}
