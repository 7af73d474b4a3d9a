//! The admin endpoint (`--admin-addr`) of both binaries on the real services: the probes answer
//! as Kubernetes needs them (503 with the reason while PostgreSQL is down or a worker drains),
//! and `/metrics` is Prometheus text whose counters and gauges say what really happened, checked
//! against `runs`, `snapshots` and the simulated fleet's own request counts.

use std::{net::SocketAddr, path::Path, time::Duration};

use kubecensus_tests::{
    fleet::{FailResource, Faults, Fleet, FleetSpec},
    harness::{TestEnv, nats_url},
    probes::{self, Metrics},
    servers::{TempPostgres, free_port},
};

const PROBE_WAIT: Duration = Duration::from_secs(60);
const PODS: &[(&str, &str)] = &[("table", "kubernetes_pods")];

/// A free loopback address for an admin endpoint, and the flag that serves it there.
fn admin_address() -> (SocketAddr, String) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    (addr, format!("--admin-addr={addr}"))
}

/// Starts a worker serving its admin endpoint, and waits until it is ready.
async fn ready_worker(env: &mut TestEnv, name: &str, registry: &Path, args: &[&str]) -> (u32, SocketAddr) {
    let (addr, flag) = admin_address();
    let pid = env.spawn_worker(name, registry, &[&[flag.as_str()][..], args].concat()).unwrap();
    probes::wait_for(addr, "/readyz", 200, PROBE_WAIT).await.unwrap();
    (pid, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_moves_the_job_row_and_list_counters_by_what_runs_and_the_fleet_say() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 60, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    let (_, addr) = ready_worker(&mut env, "worker", &registry, &["--page-size", "25"]).await;
    assert_eq!(probes::get(addr, "/livez").await.unwrap().status, 200);
    let lists_before: u64 = fleet.clusters().iter().map(|c| fleet.requests(&c.name).lists).sum();
    let before = probes::scrape(addr).await.unwrap();

    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();

    let after = probes::scrape(addr).await.unwrap();
    let moved = |name: &str, labels: &[(&str, &str)]| after.count(name, labels) - before.count(name, labels);
    let (succeeded, rows_written, rows_inserted): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), sum(rows_written)::bigint, sum(rows_inserted)::bigint FROM runs
         WHERE table_name = 'kubernetes_pods' AND status = 'succeeded'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(succeeded, 2, "one job per cluster");
    let succeeded_pods = &[("table", "kubernetes_pods"), ("outcome", "succeeded")];
    assert_eq!(moved("kubecensus_jobs_total", succeeded_pods), 2.0);
    assert_eq!(moved("kubecensus_job_duration_seconds_count", PODS), 2.0);
    assert!(after.count("kubecensus_job_duration_seconds_sum", PODS) > 0.0);
    assert_eq!(moved("kubecensus_rows_written_total", PODS), rows_written as f64);
    assert_eq!(moved("kubecensus_rows_inserted_total", PODS), rows_inserted as f64);
    assert!(rows_written > 120, "pods, their containers and volumes: {rows_written} rows");
    assert_eq!(moved("kubecensus_objects_skipped_total", PODS), 0.0);
    assert_eq!(after.value("kubecensus_jobs_in_flight", &[]), Some(0.0));
    // 60 pods in pages of 25: three list requests per cluster, as the simulator counted them.
    let lists: u64 = fleet.clusters().iter().map(|c| fleet.requests(&c.name).lists).sum::<u64>() - lists_before;
    assert_eq!(lists, 6);
    assert_eq!(moved("kubecensus_api_list_requests_total", &[("code", "200")]), lists as f64);
    assert_eq!(moved("kubecensus_jobs_total", &[("table", "kubernetes_nodes"), ("outcome", "succeeded")]), 0.0);

    // A cluster that does not serve the resource: the 404 is counted by code, the job `skipped`.
    let not_served = FailResource { plural: "pods".into(), status: 404 };
    fleet.set_faults("sim-01", Faults { fail: Some(not_served), ..Faults::default() });
    env.scheduler(&registry, &["refresh", "--wait", "--cluster", "sim-01", "--table", "kubernetes_pods"])
        .await
        .unwrap();
    let last = probes::scrape(addr).await.unwrap();
    assert_eq!(last.count("kubecensus_api_list_requests_total", &[("code", "404")]), 1.0);
    assert_eq!(last.count("kubecensus_jobs_total", &[("table", "kubernetes_pods"), ("outcome", "skipped")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_with_the_reason_while_postgres_is_down_and_200_once_it_is_back() {
    let postgres = TempPostgres::start().await.unwrap();
    let mut env = TestEnv::on(postgres.url("postgres"), nats_url()).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    std::fs::write(&registry, "clusters: []\n").unwrap();
    let (_, addr) = ready_worker(&mut env, "worker", &registry, &[]).await;

    postgres.stop().unwrap();
    let down = probes::wait_for(addr, "/readyz", 503, PROBE_WAIT).await.unwrap();
    assert!(down.body.contains("PostgreSQL is not reachable"), "{}", down.body);
    assert_eq!(probes::get(addr, "/livez").await.unwrap().status, 200, "alive all the same");

    postgres.start_again().await.unwrap();
    let up = probes::wait_for(addr, "/readyz", 200, PROBE_WAIT).await.unwrap();
    assert_eq!(up.body, "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_at_sigterm_while_the_worker_drains_its_slow_job() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 100, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    // About 5 s of listing (10 pages of 10 pods, 500 ms each), well within the grace.
    fleet.set_faults("sim-01", Faults { latency: Some(Duration::from_millis(500)), ..Faults::default() });
    let args = ["--page-size", "10", "--shutdown-grace", "60s"];
    let (worker, addr) = ready_worker(&mut env, "worker", &registry, &args).await;
    env.scheduler(&registry, &["refresh", "--table", "kubernetes_pods"]).await.unwrap();
    env.wait_until("the job to start", "SELECT count(*) = 1 FROM runs WHERE status = 'running'", PROBE_WAIT)
        .await
        .unwrap();
    assert_eq!(probes::scrape(addr).await.unwrap().value("kubecensus_jobs_in_flight", &[]), Some(1.0));

    env.signal(worker, "TERM").unwrap();
    let draining = probes::wait_for(addr, "/readyz", 503, Duration::from_secs(5)).await.unwrap();
    assert!(draining.body.starts_with("draining"), "{}", draining.body);
    let status: String = sqlx::query_scalar("SELECT status FROM runs").fetch_one(&env.pool).await.unwrap();
    assert_eq!(status, "running", "503 came while the job was still draining");
    assert_eq!(probes::get(addr, "/livez").await.unwrap().status, 200);

    assert_eq!(env.wait_for_exit(worker, PROBE_WAIT).await.unwrap(), Some(0));
    let status: String = sqlx::query_scalar("SELECT status FROM runs").fetch_one(&env.pool).await.unwrap();
    assert_eq!(status, "succeeded", "the drained job finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_metrics_count_published_jobs_the_backlog_and_stale_snapshots() {
    let mut env = TestEnv::new().await.unwrap();
    let _fleet = Fleet::start(FleetSpec { clusters: 2, pods: 20, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    let (addr, flag) = admin_address();
    // A tick every 3 s: a snapshot is stale once older than 6 s.
    let args = [flag.as_str(), "--schedule", "kubernetes_pods=*/3 * * * * *", "--table", "kubernetes_pods"];
    env.spawn_scheduler(&registry, &args).unwrap();
    probes::wait_for(addr, "/readyz", 200, PROBE_WAIT).await.unwrap();

    // No worker yet: the first tick queues a job per cluster, later ones find them pending.
    let published = |metrics: &Metrics, result: &str| {
        metrics.count("kubecensus_jobs_published_total", &[("trigger", "schedule"), ("result", result)])
    };
    let waiting = wait_for_metrics(addr, "two ticks", |m| published(m, "already_pending") >= 2.0).await;
    assert_eq!(published(&waiting, "queued"), 2.0, "one job per cluster is queued");
    assert_eq!(waiting.value("kubecensus_consumer_pending_jobs", &[]), Some(2.0));
    assert_eq!(waiting.value("kubecensus_consumer_ack_pending_jobs", &[]), Some(0.0));
    assert_eq!(waiting.value("kubecensus_snapshot_oldest_age_seconds", PODS), None, "no snapshot yet");
    assert_eq!(waiting.value("kubecensus_snapshots_stale", PODS), Some(0.0));

    // A worker loads them: the snapshots are fresh.
    let worker = env.spawn_worker("worker", &registry, &[]).unwrap();
    env.wait_until(
        "both clusters' pods to load",
        "SELECT count(*) = 2 FROM snapshots WHERE table_name = 'kubernetes_pods'",
        PROBE_WAIT,
    )
    .await
    .unwrap();
    let fresh = probes::scrape(addr).await.unwrap();
    let age = fresh.value("kubecensus_snapshot_oldest_age_seconds", PODS).unwrap();
    assert!((0.0..6.0).contains(&age), "oldest snapshot {age} s old");
    assert!(fresh.value("kubecensus_snapshot_oldest_age_seconds", &[("table", "kubernetes_pod_containers")]).is_some());
    assert!(published(&fresh, "queued") >= 2.0);

    // Without a worker, both clusters' snapshots age past twice the schedule.
    env.kill(worker);
    let stale = wait_for_metrics(addr, "stale snapshots", |m| m.count("kubecensus_snapshots_stale", PODS) == 2.0).await;
    assert!(stale.value("kubecensus_snapshot_oldest_age_seconds", PODS).unwrap() > 6.0);
}

/// Scrapes `addr` until `done` holds, and returns that scrape.
async fn wait_for_metrics(addr: SocketAddr, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = tokio::time::Instant::now() + PROBE_WAIT;
    loop {
        let metrics = probes::scrape(addr).await.unwrap();
        if done(&metrics) {
            return metrics;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {metrics:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
