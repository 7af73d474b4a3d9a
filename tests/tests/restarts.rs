//! The servers themselves fail: PostgreSQL restarted or crashed mid-run, NATS restarted. Each
//! test runs its own private server (restarting the shared ones would disturb other tests).

use std::{path::Path, time::Duration};

use kubecensus_tests::{
    checks::{assert_every_clusters_pods_equal, pod_counts, simulator_pod_counts},
    fleet::{Faults, Fleet, FleetSpec},
    harness::{BASIC_TABLES, TestEnv, admin_database_url, nats_url},
    servers::{TempNats, TempPostgres},
};

/// Every cluster's jobs of the latest refresh succeeded.
const LATEST_ROUND_DONE: &str = "SELECT count(DISTINCT cluster_name) = 2 FROM runs
     WHERE status = 'succeeded' AND scheduled_at = (SELECT max(scheduled_at) FROM runs)";
const A_JOB_RUNS: &str = "SELECT count(*) > 0 FROM runs WHERE status = 'running'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_or_crashed_mid_run_loses_no_committed_snapshot() {
    let postgres = TempPostgres::start().await.unwrap();
    let mut env = TestEnv::on(postgres.url("postgres"), nats_url()).await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 150, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    let worker_args = ["--retry-delay", "1s", "--max-attempts", "30", "--page-size", "10", "--ack-wait", "5s"];
    env.spawn_worker("worker", &registry, &worker_args).unwrap();
    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();
    assert_every_clusters_pods_equal(&env.pool, &fleet).await;
    let slow = Faults { latency: Some(Duration::from_millis(100)), ..Faults::default() };
    for cluster in fleet.clusters() {
        fleet.set_faults(&cluster.name, slow.clone());
    }

    // A clean restart while jobs run: the worker reconnects and retries.
    for cluster in fleet.clusters() {
        fleet.churn(&cluster.name, 10, 5);
    }
    env.scheduler(&registry, &["refresh", "--table", "kubernetes_pods"]).await.unwrap();
    env.wait_until("a job to run", A_JOB_RUNS, Duration::from_secs(30)).await.unwrap();
    postgres.restart().await.unwrap();
    env.wait_until("the refresh to succeed after the restart", LATEST_ROUND_DONE, Duration::from_secs(90))
        .await
        .unwrap();
    assert_every_clusters_pods_equal(&env.pool, &fleet).await;

    // A crash (kill -9 of the postmaster) while jobs run: recovery keeps every committed
    // snapshot (partitions are logged tables, which crash recovery never empties).
    let committed = pod_counts(&env.pool).await;
    for cluster in fleet.clusters() {
        fleet.churn(&cluster.name, 10, 5);
    }
    let next = simulator_pod_counts(&fleet);
    env.scheduler(&registry, &["refresh", "--table", "kubernetes_pods"]).await.unwrap();
    env.wait_until("a job to run", A_JOB_RUNS, Duration::from_secs(30)).await.unwrap();
    postgres.crash_and_recover().await.unwrap();
    let recovered = pod_counts(&env.pool).await;
    for (cluster, n) in &recovered {
        assert!(*n == committed[cluster] || *n == next[cluster], "{cluster}: {n} pods after crash recovery");
    }
    assert_eq!(recovered.len(), 2, "no cluster lost its rows: {recovered:?}");
    env.wait_until("the refresh to succeed after the crash", LATEST_ROUND_DONE, Duration::from_secs(90)).await.unwrap();
    assert_every_clusters_pods_equal(&env.pool, &fleet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarts_keep_queued_jobs_and_apply_none_twice() {
    let mut nats = TempNats::start().await.unwrap();
    let mut env = TestEnv::on(admin_database_url(), nats.url()).await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 20, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");

    // Jobs queued while no worker runs survive a restart (file storage).
    let queued = env.scheduler(&registry, &[&["refresh"][..], &BASIC_TABLES].concat()).await.unwrap();
    assert_eq!(queued.matches("queued").count(), 6, "{queued}");
    nats.restart(Duration::from_millis(300)).await.unwrap();
    env.spawn_worker("worker", &registry, &["--ack-wait", "2s"]).unwrap();
    env.wait_until(
        "the queued jobs",
        "SELECT count(*) = 6 FROM runs WHERE status = 'succeeded'",
        Duration::from_secs(60),
    )
    .await
    .unwrap();

    // A running scheduler and worker reconnect: ticks after the restart are published and run.
    scheduled_runs_survive(&mut env, &registry, &mut nats, false).await;

    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT job_id FROM runs WHERE status = 'succeeded' GROUP BY job_id HAVING count(*) > 1) j",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(twice, 0, "no job was applied twice");
    assert_every_clusters_pods_equal(&env.pool, &fleet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_that_lost_its_store_gets_its_stream_and_consumer_back_from_running_processes() {
    let mut nats = TempNats::start().await.unwrap();
    let mut env = TestEnv::on(admin_database_url(), nats.url()).await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 10, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &registry, &["--ack-wait", "2s"]).unwrap();
    // The server comes back empty: no stream, no consumer. Nothing restarts the scheduler or the
    // worker: they must notice and create what they need again.
    scheduled_runs_survive(&mut env, &registry, &mut nats, true).await;
    let refreshed = tokio::time::timeout(
        Duration::from_secs(60),
        env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_nodes"]),
    )
    .await;
    assert!(matches!(refreshed, Ok(Ok(_))), "refresh --wait did not return: {refreshed:?}");
    assert!(env.log("worker").contains("created it again"), "{}", env.log("worker"));
    assert_every_clusters_pods_equal(&env.pool, &fleet).await;
}

/// Starts `scheduler run` with the pods every second, waits for a scheduled run, restarts NATS
/// (with its store deleted when `empty`), and waits until both clusters' pods were scheduled and
/// refreshed again after the restart.
async fn scheduled_runs_survive(env: &mut TestEnv, registry: &Path, nats: &mut TempNats, empty: bool) {
    env.spawn_scheduler(registry, &["--schedule", "kubernetes_pods=* * * * * *"]).unwrap();
    env.wait_until(
        "a scheduled run",
        "SELECT count(*) > 0 FROM runs WHERE trigger = 'schedule' AND status = 'succeeded'",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    if empty {
        nats.restart_empty(Duration::from_millis(300)).await.unwrap();
    } else {
        nats.restart(Duration::from_secs(1)).await.unwrap();
    }
    let restarted: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT now()").fetch_one(&env.pool).await.unwrap();
    let after_restart = format!(
        "SELECT count(DISTINCT cluster_name) = 2 FROM runs WHERE trigger = 'schedule' AND status = 'succeeded'
         AND scheduled_at > '{}'",
        restarted.to_rfc3339()
    );
    env.wait_until("scheduled runs after the restart", &after_restart, Duration::from_secs(60)).await.unwrap();
}
