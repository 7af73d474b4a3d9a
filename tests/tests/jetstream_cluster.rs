//! A three-node JetStream cluster losing nodes in the middle of a full refresh: the stream's
//! leader killed, the consumer's leader killed, a node restarted with its store and one with its
//! store wiped. Every (cluster, table) still ends with its rows in, no job is lost and none is
//! applied twice; jobs flow again within 15 s of a kill (one election, 4 to 9 s, and a margin).

use std::{path::PathBuf, time::Duration};

use kubecensus::queue::CONSUMER;
use kubecensus_tests::{
    checks::assert_postgres_equals_simulator,
    fleet::{Faults, Fleet, FleetSpec},
    harness::{TestEnv, admin_database_url},
    nats_cluster::{NatsCluster, job_outcomes},
};
use serde_json::Value;
use uuid::Uuid;

/// The flags of every process: three copies of the stream and consumer, and quick redelivery
/// of the jobs whose ack was lost with a leader.
const REPLICAS: [&str; 2] = ["--stream-replicas", "3"];
const WORKER: [&str; 8] = ["--ack-wait", "5s", "--retry-delay", "1s", "--max-attempts", "30", "--page-size", "20"];

/// How long after a kill jobs must flow again.
const FLOWING_AGAIN: Duration = Duration::from_secs(15);

struct Setup {
    nats: NatsCluster,
    env: TestEnv,
    fleet: Fleet,
    registry: PathBuf,
}

/// A cluster, a simulated fleet answering slowly enough for a refresh to last seconds, and two
/// workers listing every node's URL.
async fn setup() -> Setup {
    let nats = NatsCluster::start().await.unwrap();
    let mut env = TestEnv::on(admin_database_url(), nats.url()).await.unwrap();
    let spec = FleetSpec { clusters: 4, pods: 120, custom_resources: 0, ..FleetSpec::default() };
    let fleet = Fleet::start(spec, &env.dir).await.unwrap();
    for cluster in fleet.clusters() {
        fleet.set_faults(&cluster.name, Faults { latency: Some(Duration::from_millis(40)), ..Faults::default() });
    }
    let registry = env.dir.join("clusters.yaml");
    for name in ["worker-1", "worker-2"] {
        env.spawn_worker(name, &registry, &[&REPLICAS[..], &WORKER].concat()).unwrap();
        env.wait_for_log(name, "worker started").await;
    }
    Setup { nats, env, fleet, registry }
}

/// Publishes a full refresh (every table of every cluster); returns each queued job's id.
async fn full_refresh(setup: &Setup) -> Vec<Uuid> {
    let (jobs, published) = refresh(setup, &[]).await;
    assert_eq!(jobs.len(), published, "every job of a full refresh is queued");
    jobs
}

/// Runs `scheduler refresh` with `args`; returns the ids of the jobs it queued and how many it
/// published. None may fail, not even during an election: a publish is retried with the same
/// message id until a leader answers (`duplicate` when an attempt whose answer was lost had
/// stored it: queued all the same); a job already pending is not queued again.
async fn refresh(setup: &Setup, args: &[&str]) -> (Vec<Uuid>, usize) {
    let args = [&["--output", "json", "refresh"][..], args, &REPLICAS].concat();
    let output: Value = serde_json::from_str(&setup.env.scheduler(&setup.registry, &args).await.unwrap()).unwrap();
    let published = output["published"].as_array().unwrap();
    let queued = |p: &&Value| p["result"] == "queued" || p["result"] == "duplicate";
    assert!(published.iter().all(|p| queued(&p) || p["result"] == "already pending"), "{published:#?}");
    (published.iter().filter(queued).map(|p| p["job_id"].as_str().unwrap().parse().unwrap()).collect(), published.len())
}

/// The database's clock now, as SQL text.
async fn now(env: &TestEnv) -> String {
    let now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&env.pool).await.unwrap();
    format!("'{}'", now.to_rfc3339())
}

/// Waits until a job of the refresh ran from start to end after `since` (a SQL timestamp).
async fn jobs_flow_after(env: &TestEnv, since: &str, within: Duration) {
    let query = format!("SELECT count(*) > 0 FROM runs WHERE status = 'succeeded' AND started_at > {since}");
    env.wait_until("a job to run from start to end after the kill", &query, within).await.unwrap();
}

/// Waits until every job of `jobs` ended `succeeded`, `superseded` or `skipped` (a resource the
/// cluster does not serve), then checks that none was applied twice and the rows are the fleet's.
async fn assert_nothing_lost_nor_twice(setup: &Setup, jobs: &[Uuid]) {
    let ids: Vec<String> = jobs.iter().map(|id| format!("'{id}'")).collect();
    let ended = format!(
        "SELECT count(DISTINCT job_id) = {} FROM runs WHERE job_id IN ({}) AND status IN ('succeeded', 'superseded', 'skipped')",
        jobs.len(),
        ids.join(", ")
    );
    setup.env.wait_until("every job of the refresh to end", &ended, Duration::from_secs(240)).await.unwrap();
    let outcomes = job_outcomes(&setup.env.pool, jobs).await.unwrap();
    assert!(outcomes.lost.is_empty(), "{outcomes:#?}");
    assert!(outcomes.twice.is_empty(), "jobs applied twice: {outcomes:#?}");
    let failed: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT cluster_name, table_name, error FROM runs WHERE status IN ('failed', 'rejected')")
            .fetch_all(&setup.env.pool)
            .await
            .unwrap();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_postgres_equals_simulator(&setup.env.pool, &setup.fleet).await;
}

/// Kills the leader of the stream (or of the consumer) once part of a full refresh is in; a
/// refresh published right after the kill, during the election, gets through.
async fn kill_a_leader_mid_refresh(consumer: Option<&str>) {
    let mut setup = setup().await;
    let mut jobs = full_refresh(&setup).await;
    setup
        .env
        .wait_until(
            "part of the refresh to be in",
            "SELECT count(*) >= 4 FROM runs WHERE status = 'succeeded'",
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    let stream = setup.env.services.stream.clone();
    let leader = setup.nats.leader(&stream, consumer).await.unwrap();
    let killed_at = now(&setup.env).await;
    setup.nats.kill(&leader).unwrap();
    // Published during the election: retried with the same message id until a leader answers.
    let (again, _) = refresh(&setup, &["--table", "kubernetes_namespaces"]).await;
    jobs.extend(again);
    jobs_flow_after(&setup.env, &killed_at, FLOWING_AGAIN).await;
    assert_nothing_lost_nor_twice(&setup, &jobs).await;
    // The killed node comes back with its store and catches up.
    setup.nats.start_node(&leader, false).await.unwrap();
    setup.nats.wait_healed(&stream, CONSUMER, Duration::from_secs(60)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_leader_killed_mid_refresh_loses_no_job_and_applies_none_twice() {
    kill_a_leader_mid_refresh(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_leader_killed_mid_refresh_loses_no_job_and_applies_none_twice() {
    kill_a_leader_mid_refresh(Some(CONSUMER)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_its_store_kept_or_wiped_rejoins_and_nothing_is_lost() {
    let mut setup = setup().await;
    let stream = setup.env.services.stream.clone();
    for (node, wipe) in [("n1", false), ("n2", true)] {
        let jobs = full_refresh(&setup).await;
        setup
            .env
            .wait_until(
                "a job of the refresh to run",
                "SELECT count(*) > 0 FROM runs WHERE status = 'running'",
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        setup.nats.stop(node).unwrap();
        let stopped_at = now(&setup.env).await;
        jobs_flow_after(&setup.env, &stopped_at, FLOWING_AGAIN).await;
        setup.nats.start_node(node, wipe).await.unwrap();
        assert_nothing_lost_nor_twice(&setup, &jobs).await;
        setup.nats.wait_healed(&stream, CONSUMER, Duration::from_secs(60)).await.unwrap();
        assert!(setup.nats.names().contains(&node.to_owned()));
    }
}
