//! A busy API server (API Priority and Fairness) on the real services: 429s with `Retry-After`
//! in the middle of a paged list are waited out and the same page asked again, within one
//! attempt (issue 20, item 1).

use std::{net::SocketAddr, time::Duration};

use kubecensus_tests::{
    checks::assert_same_pods,
    fleet::{Fleet, FleetSpec, ThrottleBody},
    harness::TestEnv,
    probes,
    servers::free_port,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_pages_are_asked_again_in_one_attempt_and_the_run_counts_them() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 50, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    let admin = format!("--admin-addr={addr}");
    // Five attempts, as by default: on main every 429 cost one, and the fifth failed the job.
    let flags = ["--page-size", "10", "--max-attempts", "5", "--retry-delay", "1s", &admin];
    env.spawn_worker("worker", &registry, &flags).unwrap();
    probes::wait_for(addr, "/readyz", 200, Duration::from_secs(60)).await.unwrap();
    // sim-01 answers five of its continued pod pages as APF does (plain text), sim-02 with a
    // `Status` body; each with `Retry-After: 1`.
    fleet.throttle("sim-01", "pods", 5, ThrottleBody::PriorityAndFairness);
    fleet.throttle("sim-02", "pods", 5, ThrottleBody::Status);
    let lists_before = fleet.requests("sim-01").lists;

    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();

    let runs: Vec<(String, String, i32, i32)> = sqlx::query_as(
        "SELECT cluster_name, status, attempt, throttled FROM runs WHERE table_name = 'kubernetes_pods' ORDER BY 1, 3",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        runs,
        [("sim-01".into(), "succeeded".into(), 1, 5), ("sim-02".into(), "succeeded".into(), 1, 5)],
        "one attempt each, five throttles recorded"
    );
    assert_same_pods(&env.pool, &fleet, "sim-01").await;
    assert_same_pods(&env.pool, &fleet, "sim-02").await;
    // Five pages of ten, each asked once, and the five throttled ones again: never from the start.
    assert_eq!(fleet.requests("sim-01").lists - lists_before, 5 + 5);
    let metrics = probes::scrape(addr).await.unwrap();
    assert_eq!(metrics.count("kubecensus_api_throttled_total", &[("code", "429")]), 10.0);
    let report = env.scheduler(&registry, &["report", "--output", "json"]).await.unwrap();
    assert!(report.contains("\"throttled\": 5") || report.contains("\"throttled\":5"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waiting_out_throttles_still_ends_at_its_timeout_and_records_them() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 30, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &registry, &["--page-size", "10", "--max-attempts", "1", "--job-timeout", "4s"])
        .unwrap();
    // Throttled without end: every wait is within the attempt, so only the timeout ends it.
    fleet.throttle("sim-01", "pods", 1000, ThrottleBody::PriorityAndFairness);
    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();

    let (status, error, throttled): (String, String, i32) =
        sqlx::query_as("SELECT status, error, throttled FROM runs").fetch_one(&env.pool).await.unwrap();
    assert_eq!(status, "failed");
    assert!(error.contains("took longer than 4s"), "the job's timeout ends the waits: {error}");
    assert!(throttled >= 2, "the waits before the timeout are recorded: {throttled}");
}
