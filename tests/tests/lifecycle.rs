//! A job's life across workers, on the real services: a stopping worker hands its job back
//! without spending an attempt, and workers started with different flags follow the shared
//! consumer's ack wait, so none declares another's live run dead.

use std::{path::PathBuf, time::Duration};

use kubecensus_tests::{
    fleet::{Faults, Fleet, FleetSpec},
    harness::TestEnv,
};

/// A one-cluster fleet of 100 pods whose pages each take `latency`, a worker `name` with
/// `worker_args`, and a refresh of its pods, returned once the job is running: the fleet (keep
/// it alive), the registry and the worker's pid.
async fn slow_job_running(
    env: &mut TestEnv,
    latency: Duration,
    name: &str,
    worker_args: &[&str],
) -> (Fleet, PathBuf, u32) {
    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 100, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    fleet.set_faults("sim-01", Faults { latency: Some(latency), ..Faults::default() });
    let worker = env.spawn_worker(name, &registry, worker_args).unwrap();
    env.scheduler(&registry, &["refresh", "--table", "kubernetes_pods"]).await.unwrap();
    env.wait_until(
        "the job to start",
        "SELECT count(*) = 1 FROM runs WHERE status = 'running'",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    (fleet, registry, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_interrupted_on_its_last_attempt_is_handed_back_not_failed() {
    let mut env = TestEnv::new().await.unwrap();
    // About 2.5 s of listing (10 pages): the worker is stopped in the middle of it.
    let only_try = ["--page-size", "10", "--max-attempts", "1", "--shutdown-grace", "300ms"];
    let (_fleet, registry, hasty) = slow_job_running(&mut env, Duration::from_millis(200), "hasty", &only_try).await;
    assert_eq!(env.signal_and_wait(hasty, "TERM", Duration::from_secs(30)).await.unwrap(), Some(0));
    let (status, attempt): (String, i32) = sqlx::query_as("SELECT status, attempt FROM runs WHERE worker_id = 'hasty'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!((status.as_str(), attempt), ("handed_back", 1), "a shutdown is not a failure of the job");
    // The next worker, also allowed a single attempt, gets the job and completes it: the
    // hand-back spent no attempt and did not terminate the message.
    env.spawn_worker("next", &registry, &["--page-size", "10", "--max-attempts", "1"]).unwrap();
    env.wait_until(
        "the handed-back job to succeed on its first attempt",
        "SELECT count(*) = 1 FROM runs WHERE worker_id = 'next' AND status = 'succeeded' AND attempt = 1",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_a_shorter_ack_wait_flag_never_abandons_anothers_live_run() {
    let mut env = TestEnv::new().await.unwrap();
    // About 8 s of listing (20 pages), during which the first worker heartbeats every 10 s (30 s / 3).
    let first = ["--page-size", "5", "--ack-wait", "30s"];
    let (_fleet, registry, _) = slow_job_running(&mut env, Duration::from_millis(400), "first", &first).await;
    // Its own flag would make this worker sweep every second and call a run dead after 3 s
    // without a heartbeat.
    env.spawn_worker("second", &registry, &["--ack-wait", "1s"]).unwrap();
    env.wait_until(
        "the first worker's job to end",
        "SELECT count(*) = 1 FROM runs WHERE worker_id = 'first' AND status <> 'running'",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let status: String =
        sqlx::query_scalar("SELECT status FROM runs WHERE worker_id = 'first'").fetch_one(&env.pool).await.unwrap();
    assert_eq!(status, "succeeded", "the live run was not declared abandoned");
    assert!(env.log("second").contains("following the consumer's"), "{}", env.log("second"));
}
