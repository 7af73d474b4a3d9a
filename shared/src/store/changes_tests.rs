//! Change history against a real PostgreSQL: a first load is a baseline, each later replace
//! records exactly the objects it created, updated and deleted, noise records nothing, and a
//! failed or superseded job records none.

use serde_json::{Value, json};
use sqlx::PgPool;

use super::tests::{at, count, layouts_for, list_and_commit, pods_resource, pods_scope, prepared};
use super::*;
use crate::{
    model::flatten::ClusterContext,
    queue::job::{Job, Trigger},
    store::runs::{self, Outcome},
};

/// Pod `i` of `c1` at resourceVersion `rv`, running `image`, its Ready condition probed at `probed`.
fn pod(i: usize, rv: u64, image: &str, probed: &str) -> Value {
    json!({"metadata": {"name": format!("p{i}"), "namespace": "ns", "uid": format!("c1-{i}"), "resourceVersion": rv.to_string()},
           "spec": {"containers": [{"name": "c", "image": image}]},
           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": probed}]}})
}

async fn refresh(pool: &PgPool, pods: &[Value], scheduled: i64) -> ReplaceOutcome {
    let mut conn = pool.acquire().await.unwrap();
    let layouts = layouts_for(&super::tests::REGION);
    let refresh = Refresh::begin(&mut conn, "c1", pods_scope(), pods_resource(), &layouts).await.unwrap();
    list_and_commit(pool, &mut conn, refresh, &layouts, "c1", pods, at(scheduled), usize::MAX).await.unwrap()
}

/// `(name, change, old rv, new rv, changed_columns)` of every change, by name then change.
async fn changes(pool: &PgPool) -> Vec<(String, String, Option<String>, Option<String>, Option<Value>)> {
    sqlx::query_as(
        "SELECT name, change, old_resource_version, new_resource_version, changed_columns FROM object_changes
         ORDER BY name, change",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn a_first_load_is_a_baseline_and_later_replaces_record_each_changed_object(pool: PgPool) {
    prepared(&pool).await;
    let first: Vec<Value> = (0..4).map(|i| pod(i, 10, "nginx:1", "t0")).collect();
    refresh(&pool, &first, 10).await;
    assert!(changes(&pool).await.is_empty(), "a first load records no `created`");
    let baseline = "SELECT objects FROM change_baselines WHERE cluster_name = $1 AND table_name = 'kubernetes_pods'";
    assert_eq!(count(&pool, baseline, "c1").await, 4, "the job table's objects");

    // p0 unchanged; p1 a new image; p2 only its resourceVersion and a probe time; p3 gone; p4 new.
    let second = vec![
        pod(0, 10, "nginx:1", "t0"),
        pod(1, 20, "nginx:2", "t0"),
        pod(2, 21, "nginx:1", "t1"),
        pod(4, 22, "redis:7", "t0"),
    ];
    refresh(&pool, &second, 20).await;
    let images = |old: &str, new: &str| json!({"container_images": {"old": [old], "new": [new]}});
    assert_eq!(
        changes(&pool).await,
        vec![
            ("p1".into(), "updated".into(), Some("10".into()), Some("20".into()), Some(images("nginx:1", "nginx:2"))),
            ("p3".into(), "deleted".into(), Some("10".into()), None, None),
            ("p4".into(), "created".into(), None, Some("22".into()), None),
        ]
    );
    let (job, listed): (uuid::Uuid, bool) = sqlx::query_as(
        "SELECT DISTINCT c.job_id, c.changed_at <= r.started_at + interval '1 minute'
         FROM object_changes c JOIN runs r USING (run_id)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let run_job: uuid::Uuid =
        sqlx::query_scalar("SELECT job_id FROM runs ORDER BY started_at DESC LIMIT 1").fetch_one(&pool).await.unwrap();
    assert_eq!((job, listed), (run_job, true));

    // The same listing again changes nothing; a version bumped alone rewrites no row.
    let before = changes(&pool).await;
    let bumped: Vec<Value> = second.iter().map(|p| with_version(p, 99)).collect();
    let outcome = refresh(&pool, &bumped, 30).await;
    assert!(
        matches!(outcome, ReplaceOutcome::Replaced(rows) if rows.inserted == 0 && rows.deleted == 0),
        "{outcome:?}"
    );
    assert_eq!(changes(&pool).await, before);
}

/// An unschedulable Pending Pod's health turns from `InProgress` to `Failed` 15 s after its
/// creation (kstatus' `ScheduleWindow`) with no change to the object: its row is rewritten, and
/// no change is recorded.
#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn a_health_that_follows_the_clock_alone_records_no_change(pool: PgPool) {
    prepared(&pool).await;
    // Created 12 s ago, in whole seconds as the API server writes it: 3 s left in the window.
    let created = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() - 12, 0).unwrap();
    let pending = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p0", "namespace": "ns", "uid": "c1-0", "resourceVersion": "10",
                                      "creationTimestamp": created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
        "spec": {"containers": [{"name": "c", "image": "nginx:1"}]},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}});
    let health = || async {
        sqlx::query_scalar::<_, String>("SELECT health FROM kubernetes_pods WHERE uid = 'c1-0'")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    refresh(&pool, &[pod(1, 10, "nginx:1", "t0")], 10).await;
    refresh(&pool, &[pod(1, 10, "nginx:1", "t0"), pending.clone()], 20).await;
    let before = changes(&pool).await;
    assert_eq!(before.len(), 1, "p0 created: {before:?}");
    assert_eq!(health().await, "InProgress", "within the schedule window");
    // The next listing of the same object comes once the window is over.
    let window_ends = created + chrono::Duration::seconds(15);
    tokio::time::sleep((window_ends - chrono::Utc::now()).to_std().unwrap_or_default()).await;
    let outcome = refresh(&pool, &[pod(1, 10, "nginx:1", "t0"), pending], 30).await;
    assert!(
        matches!(outcome, ReplaceOutcome::Replaced(rows) if rows.inserted == 1 && rows.deleted == 1),
        "{outcome:?}"
    );
    assert_eq!(health().await, "Failed");
    assert_eq!(changes(&pool).await, before, "no change recorded for the health alone");
}

fn with_version(pod: &Value, rv: u64) -> Value {
    let mut pod = pod.clone();
    pod["metadata"]["resourceVersion"] = json!(rv.to_string());
    pod
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn a_failed_or_superseded_job_records_no_change(pool: PgPool) {
    prepared(&pool).await;
    refresh(&pool, &(0..3).map(|i| pod(i, 10, "nginx:1", "t0")).collect::<Vec<_>>(), 10).await;
    // Superseded: scheduled before the rows it would replace.
    let superseded = refresh(&pool, &[pod(0, 11, "nginx:9", "t0")], 5).await;
    assert!(matches!(superseded, ReplaceOutcome::Superseded { .. }), "{superseded:?}");
    // Failed: every pod row deleted (and kept for history), then a row PostgreSQL refuses.
    let mut conn = pool.acquire().await.unwrap();
    let layouts = layouts_for(&super::tests::REGION);
    let mut refresh = Refresh::begin(&mut conn, "c1", pods_scope(), pods_resource(), &layouts).await.unwrap();
    refresh.add(0, b"u\tc1\teu\tuid\tbad\tns\tnot-a-number\n");
    let context = ClusterContext { name: "c1".into(), uid: "uid-c1".into(), field_values: vec![Some("eu".into())] };
    let mut rows = Vec::new();
    layouts[1].write_rows(&pod(0, 12, "nginx:9", "t0"), &context, &mut rows);
    refresh.add(1, &rows);
    let job = Job::new(&super::tests::CATALOG, "c1", "kubernetes_pods", Trigger::Schedule, at(20)).unwrap();
    let (run_id, _) = runs::start(&pool, &job, 1, "test").await.unwrap();
    assert!(refresh.commit(&mut conn, &job, run_id, &Outcome::succeeded()).await.is_err());
    assert_eq!(count(&pool, "SELECT count(*) FROM object_changes WHERE cluster_name = $1", "c1").await, 0);
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn a_row_from_before_the_history_is_rewritten_without_an_update(pool: PgPool) {
    prepared(&pool).await;
    refresh(&pool, &[pod(0, 10, "nginx:1", "t0")], 10).await;
    // As a release before this one wrote it: no resource_version.
    sqlx::query("UPDATE kubernetes_pods SET resource_version = NULL").execute(&pool).await.unwrap();
    refresh(&pool, &[pod(0, 11, "nginx:2", "t0")], 20).await;
    assert!(changes(&pool).await.is_empty());
    refresh(&pool, &[pod(0, 12, "nginx:3", "t0")], 30).await;
    assert_eq!(changes(&pool).await.len(), 1, "the next change is recorded");
}
