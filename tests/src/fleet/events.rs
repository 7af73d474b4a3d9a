//! Events that behave as an API server's: a step of a cluster's events ([`Fleet::step_events`])
//! expires the events whose last update is older than the fleet's event lifetime (the API
//! server's `--event-ttl`, counted from the event's last update), repeats some of the others on
//! the same object (same uid, a new resourceVersion), and adds new ones, about real pods of the
//! cluster. It says exactly what it did ([`EventChanges`]), so tests compare exactly.
//!
//! Both recorders are simulated, as `events.k8s.io/v1` serves their events: client-go's
//! correlator (core `v1`: `count` and `lastTimestamp` bumped, served as `deprecatedCount` and
//! `deprecatedLastTimestamp`), and the `events.k8s.io/v1` recorder (`eventTime` set; a repeat
//! sets `series.count`, 2 at the first repeat, and `series.lastObservedTime`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Fleet, content::Rng, content::timestamp, store::Snapshot};

/// The plural events are listed by.
const EVENTS: &str = "events";

/// What new events say: type, reason, reporting controller, note (`{}` is the pod's name).
const KINDS_OF_EVENT: &[(&str, &str, &str, &str)] = &[
    ("Warning", "BackOff", "kubelet", "Back-off restarting failed container in pod {}"),
    ("Warning", "Unhealthy", "kubelet", "Readiness probe failed: HTTP probe failed with statuscode: 503"),
    ("Normal", "Pulled", "kubelet", "Container image already present on machine"),
    ("Normal", "Scheduled", "default-scheduler", "Successfully assigned {} to a node"),
];

/// One event a step added or repeated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventChange {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// Its count now: `series.count`, else `deprecatedCount`, else 1.
    pub count: u64,
    /// The uid of the object it is about.
    pub regarding_uid: Option<String>,
}

/// What one step did to a cluster's events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventChanges {
    pub added: Vec<EventChange>,
    pub bumped: Vec<EventChange>,
    /// The uids of the events that expired.
    pub expired: Vec<String>,
}

impl Fleet {
    /// One step of a cluster's events at the current time: expires those last updated longer
    /// than the fleet's event lifetime ago, repeats `bump` of the others (at random, each once),
    /// and adds `add` new ones. Panics on an unknown cluster.
    pub fn step_events(&self, cluster: &str, add: usize, bump: usize) -> EventChanges {
        let lifetime = self.event_lifetime;
        let cluster = self.cluster(cluster);
        let mut store = cluster.server.store.lock().expect("store lock");
        store
            .change_list(EVENTS, |snapshot, version, rng| step(snapshot, version, rng, lifetime, add, bump, Utc::now()))
    }
}

/// The events of `snapshot` after one step at `now` (see [`Fleet::step_events`]), with
/// resourceVersion `version` on every changed one.
fn step(
    snapshot: &Snapshot,
    version: u64,
    rng: &mut Rng,
    lifetime: Duration,
    add: usize,
    bump: usize,
    now: DateTime<Utc>,
) -> (Vec<Value>, EventChanges) {
    let mut changes = EventChanges::default();
    let mut events: Vec<Value> = Vec::new();
    for stored in snapshot.list(EVENTS, None) {
        let event: Value = serde_json::from_slice(&stored.json).expect("stored objects are JSON");
        let expired = last_update(&event).is_none_or(|last| last + lifetime <= now);
        if expired {
            changes.expired.push(event["metadata"]["uid"].as_str().unwrap_or_default().to_owned());
        } else {
            events.push(event);
        }
    }
    // Each at most once: the first `bump` of a partial Fisher-Yates shuffle.
    let mut order: Vec<usize> = (0..events.len()).collect();
    for i in 0..bump.min(events.len()) {
        order.swap(i, i + rng.below(events.len() - i));
        let event = &mut events[order[i]];
        repeat(event, version, now);
        changes.bumped.push(change(event));
    }
    let pods: Vec<Value> =
        snapshot.list("pods", None).iter().filter_map(|pod| serde_json::from_slice(&pod.json).ok()).collect();
    for i in 0..add {
        let pod = pods.get(rng.below(pods.len().max(1)));
        let event = new_event(rng, pod, i % 2 == 0, version, now);
        changes.added.push(change(&event));
        events.push(event);
    }
    (events, changes)
}

/// When the event was last updated: its series' last occurrence, else its last timestamp, else
/// its event time, else its creation.
fn last_update(event: &Value) -> Option<DateTime<Utc>> {
    [
        &event["series"]["lastObservedTime"],
        &event["deprecatedLastTimestamp"],
        &event["eventTime"],
        &event["metadata"]["creationTimestamp"],
    ]
    .into_iter()
    .find_map(|value| value.as_str().and_then(|text| DateTime::parse_from_rfc3339(text).ok()))
    .map(|time| time.with_timezone(&Utc))
}

/// The event's count: `series.count`, else `deprecatedCount`, else 1.
fn count(event: &Value) -> u64 {
    event["series"]["count"].as_u64().or_else(|| event["deprecatedCount"].as_u64()).unwrap_or(1)
}

fn change(event: &Value) -> EventChange {
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    EventChange {
        uid: text(&event["metadata"]["uid"]),
        namespace: text(&event["metadata"]["namespace"]),
        name: text(&event["metadata"]["name"]),
        count: count(event),
        regarding_uid: event["regarding"]["uid"].as_str().map(str::to_owned),
    }
}

/// One more occurrence of `event` at `now`, as its recorder writes it: the correlator's (an
/// event with `deprecatedCount`) bumps the count and the last timestamp; the `events.k8s.io/v1`
/// recorder's sets its series.
fn repeat(event: &mut Value, version: u64, now: DateTime<Utc>) {
    let occurrences = count(event) + 1;
    if event["deprecatedCount"].is_u64() {
        event["deprecatedCount"] = json!(occurrences);
        event["deprecatedLastTimestamp"] = json!(timestamp(now));
    } else {
        event["series"] = json!({"count": occurrences, "lastObservedTime": micro_time(now)});
    }
    event["metadata"]["resourceVersion"] = json!(version.to_string());
}

/// A `MicroTime` as the API server writes it.
fn micro_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A new event about `pod` (in `default` about nothing that exists, without one), from the
/// correlator when `correlated`, else from an `events.k8s.io/v1` recorder.
fn new_event(rng: &mut Rng, pod: Option<&Value>, correlated: bool, version: u64, now: DateTime<Utc>) -> Value {
    let (kind, reason, controller, note) = *rng.pick(KINDS_OF_EVENT);
    let text = |value: &Value| value.as_str().map(str::to_owned);
    let metadata = pod.map(|pod| &pod["metadata"]);
    let namespace = metadata.and_then(|m| text(&m["namespace"])).unwrap_or_else(|| "default".to_owned());
    let pod_name = metadata.and_then(|m| text(&m["name"])).unwrap_or_else(|| "gone".to_owned());
    let mut event = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": format!("{pod_name}.{}", rng.hex(16)), "namespace": namespace, "uid": rng.uuid(),
                     "resourceVersion": version.to_string(), "creationTimestamp": timestamp(now)},
        "reportingController": controller, "reportingInstance": format!("{controller}-1"), "action": reason,
        "reason": reason, "type": kind, "note": note.replace("{}", &pod_name),
        "regarding": {"kind": "Pod", "apiVersion": "v1", "namespace": namespace, "name": pod_name,
                      "uid": metadata.and_then(|m| text(&m["uid"]))},
    });
    if correlated {
        event["deprecatedSource"] = json!({"component": controller});
        event["deprecatedCount"] = json!(1);
        event["deprecatedFirstTimestamp"] = json!(timestamp(now));
        event["deprecatedLastTimestamp"] = json!(timestamp(now));
    } else {
        event["eventTime"] = json!(micro_time(now));
    }
    event
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::{content::PodFactory, store::ClusterStore};
    use super::*;

    fn store_with_pods(pods: usize) -> ClusterStore {
        let factory = PodFactory::new(&[json!({"metadata": {"name": "shop"}})], &[]);
        let mut rng = Rng::new(3);
        let mut taken = Default::default();
        let pods = (0..pods).map(|_| factory.pod(&mut rng, Utc::now(), &mut taken)).collect();
        ClusterStore::new(HashMap::from([("pods".to_owned(), pods)]), factory, rng)
    }

    fn step_at(store: &mut ClusterStore, add: usize, bump: usize, now: DateTime<Utc>) -> EventChanges {
        let lifetime = Duration::from_secs(3600);
        store.change_list(EVENTS, |snapshot, version, rng| step(snapshot, version, rng, lifetime, add, bump, now))
    }

    #[test]
    fn events_are_added_about_real_pods_repeated_in_place_and_expire_after_their_last_update() {
        let mut store = store_with_pods(3);
        let start = Utc::now();
        let added = step_at(&mut store, 2, 0, start).added;
        let pod_uids: Vec<String> = store
            .current()
            .list("pods", None)
            .iter()
            .map(|pod| {
                serde_json::from_slice::<Value>(&pod.json).unwrap()["metadata"]["uid"].as_str().unwrap().to_owned()
            })
            .collect();
        assert!(added.iter().all(|event| pod_uids.contains(event.regarding_uid.as_ref().unwrap())));
        assert!(added.iter().all(|event| event.count == 1));

        // Both repeated: the correlator's and the series' alike count 2, under the same uid.
        let later = start + chrono::Duration::minutes(50);
        let bumped = step_at(&mut store, 0, 2, later).bumped;
        let mut uids: Vec<&str> = bumped.iter().map(|event| event.uid.as_str()).collect();
        uids.sort_unstable();
        let mut added_uids: Vec<&str> = added.iter().map(|event| event.uid.as_str()).collect();
        added_uids.sort_unstable();
        assert_eq!(uids, added_uids);
        assert!(bumped.iter().all(|event| event.count == 2));
        let events = store.current();
        let series =
            events.list(EVENTS, None).iter().filter(|e| String::from_utf8_lossy(&e.json).contains("\"series\""));
        assert_eq!(series.count(), 1, "the events.k8s.io/v1 recorder's repeat is a series");

        // An hour after the repeat, both are gone; not before.
        assert!(step_at(&mut store, 0, 0, later + chrono::Duration::minutes(59)).expired.is_empty());
        let expired = step_at(&mut store, 0, 0, later + chrono::Duration::minutes(61)).expired;
        assert_eq!(expired.len(), 2);
        assert!(store.current().list(EVENTS, None).is_empty());
    }
}
