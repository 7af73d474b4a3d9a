//! The whole pipeline on the real services: scheduler → JetStream → two worker processes →
//! atomically swapped PostgreSQL tables, against a simulated fleet.

use std::{collections::BTreeSet, time::Duration};

use kubecensus_tests::{
    checks::{
        Readers, assert_postgres_equals_simulator, assert_same_pods, count, pod_counts, simulator_pod_counts,
        simulator_pods,
    },
    fleet::{Fleet, FleetSpec},
    harness::{BASIC_TABLES, TestEnv},
    readme,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_loads_every_table_and_a_refresh_replaces_it_without_readers_seeing_a_mix() {
    let mut env = TestEnv::new().await.unwrap();
    let spec = FleetSpec { clusters: 3, pods: 120, namespaces: 4, nodes: 3, ..FleetSpec::default() };
    let fleet = Fleet::start(spec, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    // Small pages and one job at a time per worker: both workers share the fleet's nine jobs.
    for worker in ["worker-a", "worker-b"] {
        env.spawn_worker(worker, &registry, &["--concurrency", "1", "--page-size", "25"]).unwrap();
    }

    // Round 1: the cron loop, every table due every 2 seconds.
    let every_2s = "kubernetes_pods=*/2 * * * * *;kubernetes_nodes=*/2 * * * * *;kubernetes_namespaces=*/2 * * * * *";
    let scheduler = env.spawn_scheduler(&registry, &[&["--schedule", every_2s][..], &BASIC_TABLES].concat()).unwrap();
    env.wait_until(
        "a scheduled run of every (cluster, table)",
        "SELECT count(DISTINCT (cluster_name, table_name)) = 9 FROM runs WHERE trigger = 'schedule' AND status = 'succeeded'",
        Duration::from_secs(90),
    )
    .await
    .unwrap();
    env.kill(scheduler);
    // Let jobs published by the last ticks finish, so round 2 starts from a settled state.
    env.wait_for_no_jobs(Duration::from_secs(60)).await.unwrap();
    assert_postgres_equals_simulator(&env.pool, &fleet).await;
    let before = pod_counts(&env.pool).await;

    // The clusters change: pods deleted and added.
    let all_uids = |fleet: &Fleet| -> BTreeSet<String> {
        fleet.clusters().iter().flat_map(|c| simulator_pods(fleet, &c.name)).map(|pod| pod.2).collect()
    };
    let old_uids = all_uids(&fleet);
    for cluster in fleet.clusters() {
        fleet.churn(&cluster.name, 10, 4);
    }
    let deleted_uids: Vec<String> = old_uids.difference(&all_uids(&fleet)).cloned().collect();
    assert_eq!(deleted_uids.len(), 30);
    let after = simulator_pod_counts(&fleet);

    // Readers poll while round 2 swaps: each sees a cluster's old count or its new one.
    let readers = Readers::start(&env.pool);
    let report = env.scheduler(&registry, &[&["refresh", "--wait"][..], &BASIC_TABLES].concat()).await.unwrap();

    assert!(report.contains("queued"), "{report}");
    assert_postgres_equals_simulator(&env.pool, &fleet).await;
    let deleted_still_there: i64 = sqlx::query_scalar("SELECT count(*) FROM kubernetes_pods WHERE uid = ANY($1)")
        .bind(&deleted_uids)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(deleted_still_there, 0, "deleted pods are gone");
    let reads = readers.assert_old_or_new(&before, &after).await;
    assert!(reads > 3, "the readers polled during the refresh ({reads} reads)");

    // Both rounds are in `runs`, and both workers took part.
    let rounds: Vec<(String, i64)> = sqlx::query_as(
        "SELECT trigger, count(DISTINCT (cluster_name, table_name)) FROM runs WHERE status = 'succeeded' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(rounds, [("manual".to_owned(), 9), ("schedule".to_owned(), 9)]);
    let workers: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT worker_id) FROM runs").fetch_one(&env.pool).await.unwrap();
    assert_eq!(workers, 2, "both worker processes ran jobs");
    let snapshots: i64 = sqlx::query_scalar("SELECT count(*) FROM snapshots").fetch_one(&env.pool).await.unwrap();
    let catalog = kubecensus::model::catalog::Catalog::builtin();
    let tables: usize = ["kubernetes_pods", "kubernetes_nodes", "kubernetes_namespaces"]
        .iter()
        .map(|table| catalog.resource_of(table).unwrap().tables.len())
        .sum();
    assert_eq!(snapshots as usize, 3 * tables, "one snapshot per cluster and table of the three resources");

    // The README's example queries run verbatim; the design's two give the same figures from the
    // summaries as from every row (namespaces aside: the summary counts each cluster's).
    let examples = readme::sql_statements("## Example queries");
    assert!(examples.len() >= 7, "{examples:#?}");
    for sql in &examples {
        sqlx::raw_sql(sql).fetch_all(&env.pool).await.unwrap_or_else(|err| panic!("{sql}: {err}"));
    }
    type ByRegion = (Option<String>, i64, i64);
    let by_region = |sql: &str| {
        let sql = format!("SELECT region, cluster_cnt::bigint, pod_cnt::bigint FROM ({sql}) q ORDER BY 1");
        let pool = env.pool.clone();
        async move { sqlx::query_as::<_, ByRegion>(&sql).fetch_all(&pool).await.unwrap() }
    };
    let (summary, text) = (by_region(&examples[0]).await, by_region(&examples[2]).await);
    assert_eq!(summary.len(), 3, "one row per region: {summary:?}");
    assert_eq!(summary, text, "pods by region from fleet_counts and from the pods");
    assert_eq!(summary.iter().map(|r| r.2).sum::<i64>(), after.values().sum::<i64>());
    let images = |sql: &str| {
        let sql = format!("SELECT pod_cnt::bigint FROM ({sql}) q");
        let pool = env.pool.clone();
        async move { sqlx::query_scalar::<_, i64>(&sql).fetch_all(&pool).await.unwrap() }
    };
    let (summary, text) = (images(&examples[1]).await, images(&examples[3]).await);
    assert_eq!(summary.len(), 10);
    assert_eq!(summary, text, "the most popular images' counts from fleet_images and from the containers");
    assert!(summary.windows(2).all(|w| w[0] >= w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_fails_only_its_own_jobs_and_keeps_its_last_good_rows() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 30, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    let worker = env.spawn_worker("worker", &registry, &["--max-attempts", "2", "--retry-delay", "1s"]).unwrap();
    env.scheduler(&registry, &[&["refresh", "--wait"][..], &BASIC_TABLES].concat()).await.unwrap();
    assert_postgres_equals_simulator(&env.pool, &fleet).await;
    env.kill(worker);

    // The first cluster's API server now points at a closed port.
    let text = std::fs::read_to_string(&registry).unwrap();
    let broken = fleet.clusters()[0].clone();
    let unreachable = env.dir.join("unreachable.yaml");
    std::fs::write(&unreachable, text.replace(&broken.url, "https://127.0.0.1:9")).unwrap();
    env.spawn_worker("worker-2", &unreachable, &["--max-attempts", "2", "--retry-delay", "1s"]).unwrap();
    fleet.churn(&fleet.clusters()[1].name, 5, 0);
    let before = count(&env.pool, "kubernetes_pods", &broken.name).await;
    env.scheduler(&unreachable, &[&["refresh", "--wait"][..], &BASIC_TABLES].concat()).await.unwrap();

    let failures: Vec<(String, String, i32, String)> = sqlx::query_as(
        "SELECT cluster_name, status, attempt, error FROM runs WHERE trigger = 'manual' AND status IN ('failed', 'retrying')
         ORDER BY table_name, attempt",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(failures.len(), 2 * 3, "two attempts for each of the broken cluster's 3 jobs: {failures:#?}");
    assert!(failures.iter().all(|f| f.0 == broken.name), "only the broken cluster failed: {failures:#?}");
    assert!(failures.iter().all(|f| f.3.starts_with("cluster: ")), "the error says the cluster failed: {failures:#?}");
    assert_eq!(failures.iter().filter(|f| f.1 == "failed").count(), 3);
    assert_eq!(count(&env.pool, "kubernetes_pods", &broken.name).await, before, "last good rows stay");
    assert_same_pods(&env.pool, &fleet, &fleet.clusters()[1].name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_job_messages_are_rejected_at_once_and_the_worker_carries_on() {
    let mut env = TestEnv::new().await.unwrap();
    let _fleet = Fleet::start(FleetSpec { clusters: 1, pods: 5, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &registry, &[]).unwrap();
    let job = |cluster: &str, table: &str| {
        format!(
            r#"{{"id":"018f0000-0000-7000-8000-000000000001","cluster":"{cluster}","table":"{table}","trigger":"manual","scheduled_at":"2024-01-01T00:00:00Z"}}"#
        )
    };
    let messages = [
        ("a.bad-json", "{not json".to_owned()),
        ("nope.kubernetes_pods", job("nope", "kubernetes_pods")),
        ("sim-01.x", job("sim-01", "kubernetes_pods; DROP TABLE runs")),
        ("sim-01.kubernetes_nodes", job("sim-01", "kubernetes_pods")),
    ];
    for (suffix, payload) in messages {
        env.publish_raw(suffix, payload.into_bytes()).await.unwrap();
    }
    env.wait_until(
        "four rejected runs",
        "SELECT count(*) = 4 FROM runs WHERE status = 'rejected'",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let errors: Vec<String> = sqlx::query_scalar("SELECT error FROM runs WHERE status = 'rejected' ORDER BY error")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert!(errors.iter().any(|e| e.contains("not a job message")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("`nope` is not in this worker's registry")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("unknown table")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("published on another subject")), "{errors:?}");
    // A job of a table this worker does not know still names itself in its run, so whoever waits
    // for it sees it end; a message that is not a job names nothing.
    let named: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT job_id::text, cluster_name, table_name FROM runs WHERE status = 'rejected'
         AND (error LIKE '%unknown table%' OR error LIKE '%not a job message%') ORDER BY error",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let id = Some("018f0000-0000-7000-8000-000000000001".to_owned());
    let table = Some("kubernetes_pods; DROP TABLE runs".to_owned());
    assert_eq!(named, [(None, None, None), (id, Some("sim-01".to_owned()), table)]);

    // The worker still works: a real job succeeds after the bad ones.
    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_namespaces"]).await.unwrap();
    let succeeded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE status = 'succeeded'").fetch_one(&env.pool).await.unwrap();
    assert_eq!(succeeded, 1);
    // Nothing was redelivered: each rejected message was terminated on its first delivery.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rejected: i64 =
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE status = 'rejected'").fetch_one(&env.pool).await.unwrap();
    assert_eq!(rejected, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_wait_without_a_worker_ends_at_its_deadline_naming_the_open_jobs() {
    let env = TestEnv::new().await.unwrap();
    let _fleet = Fleet::start(FleetSpec { clusters: 2, pods: 1, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    // No worker: the jobs are queued and never run.
    let args = ["refresh", "--wait", "--wait-timeout", "2s", "--table", "kubernetes_namespaces", "--output", "json"];
    let output = tokio::time::timeout(Duration::from_secs(120), env.scheduler_output(&registry, &args))
        .await
        .expect("refresh --wait ends by its deadline")
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stderr.contains("2 jobs still open after 2s"), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let queued: BTreeSet<(String, String)> = report["published"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["cluster"].as_str().unwrap().to_owned(), p["job_id"].as_str().unwrap().to_owned()))
        .collect();
    let open: BTreeSet<(String, String)> = report["open"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|job| {
            assert_eq!((&job["table"], &job["last_status"]), (&"kubernetes_namespaces".into(), &None::<String>.into()))
        })
        .map(|job| (job["cluster"].as_str().unwrap().to_owned(), job["job_id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(open.len(), 2, "{stdout}");
    assert_eq!(open, queued, "every queued job is named open: {stdout}");
}
