//! Event history against a real PostgreSQL (`#[sqlx::test]`: a fresh database per test): the
//! occurrence rule (a listing moves a row only forward), labels and owner of the regarding
//! object at first sight, events kept after they leave the cluster, and gaps.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{
    event_history::EVENTS_TABLE,
    tests::{CATALOG, REGION, at, pods_resource, pods_scope, prepared},
    *,
};
use crate::{
    model::flatten::{ClusterContext, Layout},
    ops::metrics,
    queue::job::{Job, Trigger},
    store::runs::{self, Outcome},
};

/// An `events.k8s.io/v1` Event about pod `p1` of namespace `ns`, as client-go's correlator
/// leaves it after `count` occurrences, the last at second `last`.
fn correlated(uid: &str, count: i64, last: i64) -> Value {
    json!({"metadata": {"name": format!("p1.{uid}"), "namespace": "ns", "uid": uid,
                        "creationTimestamp": at(0).to_rfc3339()},
           "reason": "BackOff", "type": "Warning", "note": "Back-off restarting failed container",
           "regarding": {"kind": "Pod", "namespace": "ns", "name": "p1", "uid": "pod-uid-1"},
           "deprecatedCount": count, "deprecatedFirstTimestamp": at(0).to_rfc3339(),
           "deprecatedLastTimestamp": at(last).to_rfc3339()})
}

/// An `events.k8s.io/v1` Event with a series of `count` occurrences, the last at second `last`.
fn series(uid: &str, count: i64, last: i64) -> Value {
    json!({"metadata": {"name": format!("n1.{uid}"), "namespace": "default", "uid": uid,
                        "creationTimestamp": at(0).to_rfc3339()},
           "eventTime": at(0).to_rfc3339(), "reason": "NodeNotReady", "type": "Normal",
           "regarding": {"kind": "Node", "name": "n1"},
           "series": {"count": count, "lastObservedTime": at(last).to_rfc3339()}})
}

fn events_layouts() -> Vec<Layout<'static>> {
    let resource = CATALOG.resource_of(EVENTS_TABLE).unwrap();
    resource.tables.iter().map(|table| Layout { table, fields: &REGION, namespace_fields: &[] }).collect()
}

/// Lists `objects` of `resource` (its target `target`) as one job of `cluster` scheduled at
/// `scheduled` would, and commits it.
async fn list(pool: &PgPool, cluster: &str, target: &str, objects: &[Value], scheduled: DateTime<Utc>) {
    let resource = CATALOG.resource_of(target).unwrap();
    let layouts: Vec<Layout<'static>> =
        resource.tables.iter().map(|table| Layout { table, fields: &REGION, namespace_fields: &[] }).collect();
    let scope = if target == EVENTS_TABLE {
        Scope::of(&CATALOG, CATALOG.target(EVENTS_TABLE).unwrap().1)
    } else {
        pods_scope()
    };
    let mut conn = pool.acquire().await.unwrap();
    let mut refresh = Refresh::begin(&mut conn, cluster, scope, resource, &layouts).await.unwrap();
    let context = ClusterContext { name: cluster.into(), uid: format!("uid-{cluster}"), field_values: vec![None] };
    for object in objects {
        for (index, layout) in layouts.iter().enumerate() {
            let mut rows = Vec::new();
            layout.write_rows(object, &context, &mut rows);
            refresh.add(index, &rows);
        }
    }
    let job = Job::new(&CATALOG, cluster, target, Trigger::Schedule, scheduled).unwrap();
    let (run_id, _) = runs::start(pool, &job, 1, "test").await.unwrap();
    refresh.commit(&mut conn, &job, run_id, &Outcome::succeeded()).await.unwrap();
}

async fn events(pool: &PgPool, objects: &[Value], scheduled: DateTime<Utc>) {
    list(pool, "c1", EVENTS_TABLE, objects, scheduled).await;
}

/// `(uid, count, last_timestamp or series_last_observed, last_seen)` of every history row.
async fn history(pool: &PgPool) -> Vec<(String, i32, i64, DateTime<Utc>)> {
    sqlx::query_as(
        "SELECT uid, count, coalesce(series_last_observed, last_timestamp), last_seen FROM event_history ORDER BY uid",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn a_listing_moves_an_event_forward_only_and_a_vanished_event_stays(pool: PgPool) {
    prepared(&pool).await;
    assert!(events_layouts()[0].table.has_column("series_count"));
    events(&pool, &[correlated("e1", 1, 0), series("e2", 2, 5)], at(10)).await;
    let first = history(&pool).await;
    assert_eq!(
        first.iter().map(|(uid, count, last, _)| (uid.as_str(), *count, *last)).collect::<Vec<_>>(),
        [("e1", 1, at(0).timestamp()), ("e2", 2, at(5).timestamp())]
    );

    // The same listing again changes nothing, not even last_seen.
    events(&pool, &[correlated("e1", 1, 0), series("e2", 2, 5)], at(20)).await;
    assert_eq!(history(&pool).await, first);

    // A higher count updates in place; a same count with a later last time too.
    events(&pool, &[correlated("e1", 4, 30), series("e2", 2, 31)], at(40)).await;
    let bumped = history(&pool).await;
    assert_eq!(
        bumped.iter().map(|(uid, count, last, _)| (uid.as_str(), *count, *last)).collect::<Vec<_>>(),
        [("e1", 4, at(30).timestamp()), ("e2", 2, at(31).timestamp())]
    );
    assert!(bumped[0].3 > first[0].3, "last_seen moves with the occurrence");

    // A lagging answer (a lower count, an earlier time) never moves a row back; e2 is gone from
    // the cluster and stays in history.
    events(&pool, &[correlated("e1", 3, 20)], at(50)).await;
    assert_eq!(history(&pool).await, bumped);
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM kubernetes_events").fetch_one(&pool).await.unwrap();
    assert_eq!(kept, 1);
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn an_event_takes_its_pods_labels_and_owner_when_first_seen(pool: PgPool) {
    prepared(&pool).await;
    assert!(pods_resource().tables[0].has_column("owner_kind"));
    let pod = json!({"metadata": {"name": "p1", "namespace": "ns", "uid": "pod-uid-1", "labels": {"app": "shop"},
                                  "ownerReferences": [{"kind": "Node", "name": "n1"},
                                                      {"kind": "ReplicaSet", "name": "shop-5d8f", "controller": true}]},
                     "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}});
    list(&pool, "c1", "kubernetes_pods", &[pod], at(0)).await;
    events(&pool, &[correlated("e1", 1, 0), series("e2", 1, 0)], at(10)).await;
    type Regarding = (String, Option<Value>, Option<String>, Option<String>);
    let rows: Vec<Regarding> = sqlx::query_as(
        "SELECT uid, regarding_labels, regarding_owner_kind, regarding_owner_name FROM event_history ORDER BY uid",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("e1".into(), Some(json!({"app": "shop"})), Some("ReplicaSet".into()), Some("shop-5d8f".into())),
            ("e2".into(), None, None, None),
        ]
    );
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn a_listing_later_than_the_event_lifetime_records_one_gap(pool: PgPool) {
    prepared(&pool).await;
    sqlx::query("INSERT INTO clusters (name, event_lifetime) VALUES ('c1', '10 minutes')")
        .execute(&pool)
        .await
        .unwrap();
    events(&pool, &[correlated("e1", 1, 0)], at(0)).await;
    events(&pool, &[correlated("e1", 1, 0)], at(60)).await;
    let gaps =
        || async { sqlx::query_scalar::<_, i64>("SELECT count(*) FROM event_gaps").fetch_one(&pool).await.unwrap() };
    assert_eq!(gaps().await, 0, "listings within the lifetime");

    // The last listing was 11 minutes ago.
    sqlx::query("UPDATE snapshots SET swapped_at = now() - interval '11 minutes'").execute(&pool).await.unwrap();
    let before = metrics::worker().event_gaps.get();
    events(&pool, &[correlated("e1", 1, 0)], at(120)).await;
    events(&pool, &[correlated("e1", 1, 0)], at(180)).await;
    let (from, to, reason): (DateTime<Utc>, DateTime<Utc>, String) =
        sqlx::query_as("SELECT gap_from, gap_to, reason FROM event_gaps").fetch_one(&pool).await.unwrap();
    assert_eq!(gaps().await, 1, "one gap, not one per listing after it");
    assert!((to - from).num_minutes() >= 11);
    assert!(reason.contains("00:10:00") && reason.contains("no events job ran"), "{reason}");
    assert!(metrics::worker().event_gaps.get() > before);
}
