//! Job messages as any NATS client may publish them (README, "Ad-hoc refresh"), on the real
//! services: none can stop a (cluster, table) from refreshing or make a worker write without
//! bound. A job from the future is rejected, and the next job runs; a job for a cluster no source
//! declares is handed back a bounded number of times, into one `runs` row.

use std::time::Duration;

use kubecensus_tests::{
    fleet::{Fleet, FleetSpec},
    harness::TestEnv,
};
use uuid::Uuid;

/// A job message for `cluster`'s namespaces, scheduled at `scheduled_at`.
fn namespaces_job(id: Uuid, cluster: &str, scheduled_at: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","cluster":"{cluster}","table":"kubernetes_namespaces","trigger":"manual","scheduled_at":"{}"}}"#,
        scheduled_at.to_rfc3339()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_from_the_future_is_rejected_and_the_next_job_refreshes_the_table() {
    let mut env = TestEnv::new().await.unwrap();
    let _fleet = Fleet::start(FleetSpec { clusters: 1, pods: 3, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &registry, &[]).unwrap();
    env.wait_for_log("worker", "worker started").await;
    // A year ahead: a typo, or a publisher's clock gone wrong.
    let id = Uuid::new_v4();
    let ahead = chrono::Utc::now() + chrono::Duration::days(365);
    env.publish_raw("sim-01.kubernetes_namespaces", namespaces_job(id, "sim-01", ahead)).await.unwrap();
    env.wait_until(
        "the job from the future to end",
        &format!("SELECT count(*) = 1 FROM runs WHERE job_id = '{id}' AND finished_at IS NOT NULL"),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM runs WHERE job_id = $1").bind(id).fetch_one(&env.pool).await.unwrap();
    assert_eq!(status, "rejected", "{error:?}");
    let error = error.unwrap_or_default();
    let shown = ahead.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(error.contains(&shown) && error.contains("ahead of this worker's clock"), "{error}");

    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_namespaces"]).await.unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM runs WHERE job_id <> $1 AND finished_at IS NOT NULL")
        .bind(id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(status, "succeeded", "the next job refreshes the table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_for_an_unknown_cluster_is_handed_back_a_bounded_number_of_times_into_one_row() {
    let mut env = TestEnv::new().await.unwrap();
    let _fleet = Fleet::start(FleetSpec { clusters: 1, pods: 3, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    // Two registry intervals are two hours: only the count of hand-backs ends the job.
    env.spawn_worker("worker", &registry, &["--registry-refresh", "1h", "--unknown-cluster-hand-backs", "3"]).unwrap();
    env.wait_for_log("worker", "worker started").await;
    let id = Uuid::new_v4();
    env.publish_raw("nowhere.kubernetes_namespaces", namespaces_job(id, "nowhere", chrono::Utc::now())).await.unwrap();
    env.wait_until(
        "the job to be rejected",
        &format!("SELECT count(*) = 1 FROM runs WHERE job_id = '{id}' AND status = 'rejected'"),
        Duration::from_secs(90),
    )
    .await
    .unwrap();
    let rows: Vec<(String, i32, String)> =
        sqlx::query_as("SELECT status, deliveries, error FROM runs WHERE job_id = $1 ORDER BY started_at")
            .bind(id)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    let statuses: Vec<(&str, i32)> =
        rows.iter().map(|(status, deliveries, _)| (status.as_str(), *deliveries)).collect();
    assert_eq!(statuses, [("handed_back", 3), ("rejected", 1)], "{rows:#?}");
    assert!(rows[1].2.contains("after 3 hand-backs"), "{}", rows[1].2);
}
