//! Faults and bad input, case by case, on the real services: nothing half-written, nothing lost,
//! nothing leaked. Each test injects one kind of trouble into the simulated fleet (or the
//! processes) and checks what PostgreSQL, `runs` and the logs show afterwards.

use std::time::Duration;

use kubecensus::{model::catalog::Catalog, source::registry::Registry};
use kubecensus_tests::{
    checks::{Readers, assert_every_clusters_pods_equal, assert_same_pods, count, pod_counts, simulator_pod_counts},
    fleet::{Breakage, BrokenList, FailResource, Faults, Fleet, FleetSpec, home::HomeCluster},
    harness::TestEnv,
};
use sqlx::PgPool;

/// Worker flags that make redelivery and the sweep of dead workers' runs quick enough for a
/// test. Every job streams its new rows into staging (none are held in memory), so there is
/// staging to leave behind or to restart.
const QUICK_STAGED: &[&str] =
    &["--ack-wait", "2s", "--page-size", "10", "--retry-delay", "1s", "--in-place-limit", "0"];

/// Staging tables of any session (temporary tables): a job in progress, or left behind.
const LEFTOVERS: &str = "SELECT count(*) FROM pg_class WHERE relpersistence = 't' AND relname LIKE '%\\_staging'";

async fn leftovers(pool: &PgPool) -> i64 {
    sqlx::query_scalar(LEFTOVERS).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_leaves_nothing_half_done_and_the_job_completes_elsewhere() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 200, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    let first = env.spawn_worker("worker-1", &registry, QUICK_STAGED).unwrap();
    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();
    let old = pod_counts(&env.pool).await;

    for cluster in fleet.clusters() {
        fleet.churn(&cluster.name, 20, 7);
    }
    let new = simulator_pod_counts(&fleet);
    // sim-01 answers slowly: its 21 pages take seconds, so the worker dies mid-listing.
    fleet.set_faults("sim-01", Faults { latency: Some(Duration::from_millis(150)), ..Faults::default() });
    let readers = Readers::start(&env.pool);
    env.scheduler(&registry, &["refresh", "--table", "kubernetes_pods"]).await.unwrap();
    env.wait_until(
        "sim-01's job to be mid-listing",
        "SELECT count(*) > 0 FROM pg_class WHERE relpersistence = 't' AND relname = 'kubernetes_pods_staging'
           AND EXISTS (SELECT 1 FROM runs WHERE cluster_name = 'sim-01' AND status = 'running' AND trigger = 'manual')",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    env.kill(first);
    env.wait_until(
        "the dead worker's staging to go with its session",
        &format!("SELECT ({LEFTOVERS}) = 0"),
        Duration::from_secs(30),
    )
    .await
    .unwrap();

    env.spawn_worker("worker-2", &registry, QUICK_STAGED).unwrap();
    env.wait_until(
        "the redelivered job to succeed",
        "SELECT count(*) = 1 FROM runs WHERE cluster_name = 'sim-01' AND table_name = 'kubernetes_pods'
           AND trigger = 'manual' AND status = 'succeeded' AND attempt >= 2 AND worker_id = 'worker-2'",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    env.wait_until(
        "the sweep to mark the dead worker's run abandoned",
        "SELECT count(*) = 1 FROM runs WHERE worker_id = 'worker-1' AND cluster_name = 'sim-01' AND status = 'abandoned'",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    readers.assert_old_or_new(&old, &new).await;
    assert_every_clusters_pods_equal(&env.pool, &fleet).await;
    let abandoned: String = sqlx::query_scalar(
        "SELECT status FROM runs WHERE cluster_name = 'sim-01' AND trigger = 'manual' AND worker_id = 'worker-1'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(abandoned, "abandoned", "the dead worker's run is marked as such");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_clusters_fail_only_their_jobs_with_a_clear_error_and_keep_their_last_good_rows() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 5, pods: 20, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &registry, &["--max-attempts", "3", "--retry-delay", "3s", "--concurrency", "8"])
        .unwrap();
    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();
    let before = pod_counts(&env.pool).await;

    let fail = |status| Faults { fail: Some(FailResource { plural: "pods".into(), status }), ..Faults::default() };
    fleet.set_faults("sim-01", fail(503));
    fleet.set_faults("sim-02", fail(429));
    fleet.set_faults("sim-03", fail(403));
    fleet.set_faults("sim-04", Faults { reject_token: true, ..Faults::default() });
    for cluster in fleet.clusters() {
        fleet.churn(&cluster.name, 3, 1);
    }
    let started = std::time::Instant::now();
    let round_two: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT now()").fetch_one(&env.pool).await.unwrap();
    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();

    let healthy: (String, i32, f64) = sqlx::query_as(
        "SELECT status, attempt, extract(epoch FROM finished_at - started_at)::float8 FROM runs
         WHERE cluster_name = 'sim-05' AND started_at > $1",
    )
    .bind(round_two)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!((healthy.0.as_str(), healthy.1), ("succeeded", 1), "the healthy cluster is unaffected");
    assert!(healthy.2 < 5.0, "and on time: {}s", healthy.2);
    assert_same_pods(&env.pool, &fleet, "sim-05").await;

    for (cluster, expected) in [("sim-01", "503"), ("sim-02", "429"), ("sim-03", "403"), ("sim-04", "401")] {
        let attempts: Vec<(String, Option<String>, f64, i32)> = sqlx::query_as(
            "SELECT status, error, extract(epoch FROM started_at)::float8, throttled FROM runs
             WHERE cluster_name = $1 AND started_at > $2 ORDER BY attempt",
        )
        .bind(cluster)
        .bind(round_two)
        .fetch_all(&env.pool)
        .await
        .unwrap();
        let statuses: Vec<&str> = attempts.iter().map(|a| a.0.as_str()).collect();
        assert!(
            attempts.iter().all(|a| a.1.as_deref().unwrap_or_default().contains(expected)),
            "{cluster}: the error names the status: {attempts:#?}"
        );
        if cluster == "sim-03" {
            // A missing permission would be missing seconds later too: failed at once.
            assert_eq!(statuses, ["failed"], "{cluster}: {attempts:#?}");
        } else {
            assert_eq!(statuses, ["retrying", "retrying", "failed"], "{cluster}: {attempts:#?}");
            let gap = attempts[1].2 - attempts[0].2;
            if cluster == "sim-02" {
                // Each attempt asks again ten times, a Retry-After (1 s) apart, then the next
                // attempt comes after the Retry-After, not the 3 s backoff.
                assert!(attempts.iter().all(|a| a.3 == 11), "{cluster}: {attempts:#?}");
                assert!(attempts[0].1.as_deref().unwrap_or_default().contains("still throttled after 10 waits"));
                assert!((10.9..13.0).contains(&gap), "ten waits of Retry-After (1 s), then 1 s: {gap}");
            } else {
                assert!(gap >= 2.9, "{cluster}: retries back off: {gap}");
            }
        }
        assert_eq!(
            count(&env.pool, "kubernetes_pods", cluster).await as i64,
            before[cluster],
            "{cluster}: last good rows stay"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    // Terminated after the last attempt: nothing is left in the stream, nothing runs again.
    let js = async_nats::jetstream::new(async_nats::connect(&env.services.nats_url).await.unwrap());
    let mut stream = js.get_stream(&env.services.stream).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 0);
    assert_eq!(leftovers(&env.pool).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_too_slow_to_answer_fails_its_job_on_time_and_keeps_its_rows() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 20, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &registry, &["--max-attempts", "1", "--job-timeout", "2s"]).unwrap();
    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();
    let before = pod_counts(&env.pool).await;
    fleet.churn("sim-01", 5, 0);
    fleet.churn("sim-02", 5, 0);
    fleet.set_faults("sim-01", Faults { latency: Some(Duration::from_secs(10)), ..Faults::default() });
    let started = std::time::Instant::now();
    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(8), "the slow cluster did not hold the refresh for its 10 s");
    let (status, error): (String, String) =
        sqlx::query_as("SELECT status, error FROM runs WHERE cluster_name = 'sim-01' AND status <> 'succeeded'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    assert!(error.contains("took longer than 2s"), "{error}");
    assert_eq!(count(&env.pool, "kubernetes_pods", "sim-01").await as i64, before["sim-01"], "last good rows stay");
    assert_same_pods(&env.pool, &fleet, "sim-02").await;
    assert_eq!(leftovers(&env.pool).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_continue_token_restarts_the_listing_and_one_consistent_list_is_swapped_in() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 100, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &registry, QUICK_STAGED).unwrap();
    fleet.set_faults("sim-01", Faults { expire_next_continue: true, ..Faults::default() });
    let lists_before = fleet.requests("sim-01").lists;
    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();

    let status: String = sqlx::query_scalar("SELECT status FROM runs").fetch_one(&env.pool).await.unwrap();
    assert_eq!(status, "succeeded");
    assert_every_clusters_pods_equal(&env.pool, &fleet).await;
    // 10 pages, plus the page that got 410 and the first page of the restart.
    assert_eq!(fleet.requests("sim-01").lists - lists_before, 12);
    assert!(env.log("worker").contains("continue token expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_list_fails_the_job_and_never_half_replaces_the_rows() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 60, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &registry, &["--max-attempts", "1", "--page-size", "10"]).unwrap();
    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();
    let before = pod_counts(&env.pool).await;

    for (cluster, how) in [("sim-01", Breakage::Truncated), ("sim-02", Breakage::Reset)] {
        fleet.churn(cluster, 10, 0);
        fleet.set_faults(
            cluster,
            Faults { break_list: Some(BrokenList { plural: "pods".into(), how }), ..Faults::default() },
        );
    }
    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();
    let errors: Vec<(String, String)> = sqlx::query_as(
        "SELECT cluster_name, error FROM runs WHERE trigger = 'manual' AND status = 'failed' ORDER BY 1",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].1.contains("not valid JSON"), "truncated: {}", errors[0].1);
    assert!(errors[1].1.starts_with("cluster: GET /api/v1/pods"), "reset: {}", errors[1].1);
    assert_eq!(pod_counts(&env.pool).await, before, "the last good rows stay");
    assert_eq!(leftovers(&env.pool).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_objects_are_sanitized_or_skipped_and_cost_no_other_row() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 30, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &registry, &[]).unwrap();
    let pod = |uid: &str, extra: &str| {
        format!(r#"{{"metadata":{{"name":"{uid}","namespace":"default","uid":"{uid}"{extra}}}}}"#)
    };
    let huge_annotation = format!(r#","annotations":{{"big":"{}"}}"#, "x".repeat(1 << 20));
    let many_labels = format!(
        r#","labels":{{{}}}"#,
        (0..10_000).map(|i| format!(r#""label-{i}":"v""#)).collect::<Vec<_>>().join(",")
    );
    let items: Vec<Vec<u8>> = vec![
        br#"{"metadata":{"name":"wrong-types","namespace":"default","uid":"wrong-types","creationTimestamp":12,"labels":"not-a-map"},"spec":{"hostNetwork":"yes","priority":"high","containers":"none"}}"#.to_vec(),
        br#"{"metadata":{"name":"nul\u0000name","namespace":"default","uid":"nul","labels":{"a\u0000":"b\u0000"}},"spec":{"nodeName":"n\u0000"}}"#.to_vec(),
        [&br#"{"metadata":{"name":"bad-utf8-"#[..], &[0xff, 0xfe], &br#"","namespace":"default","uid":"bad-utf8"}}"#[..]].concat(),
        pod("huge-annotation", &huge_annotation).into_bytes(),
        pod("many-labels", &many_labels).into_bytes(),
        br#"{"metadata":{"name":"unknown-fields","namespace":"default","uid":"unknown-fields","futureField":1},"spec":{"newThing":{"a":[1,2]}},"extra":true}"#.to_vec(),
        b"42".to_vec(),
        br#"{"kind":"Pod","spec":{}}"#.to_vec(),
    ];
    let extra_items = items.into_iter().map(|item| ("pods".to_owned(), item)).collect();
    fleet.set_faults("sim-01", Faults { extra_items, ..Faults::default() });
    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();

    let (status, skipped, error): (String, i32, Option<String>) =
        sqlx::query_as("SELECT status, objects_skipped, error FROM runs").fetch_one(&env.pool).await.unwrap();
    assert_eq!((status.as_str(), skipped), ("succeeded", 2));
    let error = error.unwrap_or_default();
    assert!(error.contains("2 objects skipped") && error.contains("not an object"), "{error}");
    assert_eq!(count(&env.pool, "kubernetes_pods", "sim-01").await, 30 + 6, "every other object is stored");

    let row = |uid: &'static str, column: &'static str| {
        let pool = env.pool.clone();
        async move {
            let sql = format!("SELECT {column}::text FROM kubernetes_pods WHERE uid = $1");
            sqlx::query_scalar::<_, Option<String>>(&sql).bind(uid).fetch_one(&pool).await.unwrap()
        }
    };
    assert_eq!(row("wrong-types", "host_network").await, None, "a wrong type is stored as NULL");
    assert_eq!(row("wrong-types", "creation_timestamp").await, None);
    assert_eq!(row("nul", "name").await.as_deref(), Some("nulname"), "NUL is dropped");
    assert_eq!(row("nul", "labels").await.as_deref(), Some(r#"{"a": "b"}"#));
    assert_eq!(row("bad-utf8", "name").await.as_deref(), Some("bad-utf8-\u{fffd}\u{fffd}"));
    assert_eq!(row("huge-annotation", "length(annotations->>'big')").await.as_deref(), Some("1048576"));
    assert_eq!(row("many-labels", "(SELECT count(*) FROM jsonb_object_keys(labels))").await.as_deref(), Some("10000"));
    assert_eq!(row("unknown-fields", "name").await.as_deref(), Some("unknown-fields"));
    assert!(env.log("worker").contains("replaced"), "the worker carried on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_scheduled_before_the_current_snapshot_never_overwrites_it() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 20, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &registry, &[]).unwrap();
    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();
    fleet.churn("sim-01", 5, 0);

    // A job scheduled long ago that only now reaches a worker (say, it sat behind a slow one).
    let late = r#"{"id":"018f0000-0000-7000-8000-0000000000aa","cluster":"sim-01","table":"kubernetes_pods","trigger":"schedule","scheduled_at":"2020-01-01T00:00:00Z"}"#;
    env.publish_raw("sim-01.kubernetes_pods", late.as_bytes().to_vec()).await.unwrap();
    env.wait_until(
        "the late job to end",
        "SELECT count(*) = 1 FROM runs WHERE trigger = 'schedule' AND finished_at IS NOT NULL",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let (status, error): (String, String) =
        sqlx::query_as("SELECT status, error FROM runs WHERE trigger = 'schedule'").fetch_one(&env.pool).await.unwrap();
    assert_eq!(status, "superseded");
    assert!(error.contains("scheduled later"), "{error}");
    assert_eq!(count(&env.pool, "kubernetes_pods", "sim-01").await, 20, "the newer snapshot stays");
    assert_eq!(leftovers(&env.pool).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_jobs_or_hands_them_back_and_exits_zero() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 100, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    fleet.set_faults("sim-01", Faults { latency: Some(Duration::from_millis(200)), ..Faults::default() });
    let running = "SELECT count(*) = 1 FROM runs WHERE status = 'running'";

    // Grace long enough: the in-flight job (about 2.5 s) finishes, then the worker exits 0.
    let patient = env.spawn_worker("patient", &registry, &["--page-size", "10", "--shutdown-grace", "20s"]).unwrap();
    env.scheduler(&registry, &["refresh", "--table", "kubernetes_pods"]).await.unwrap();
    env.wait_until("the job to start", running, Duration::from_secs(30)).await.unwrap();
    let code = env.signal_and_wait(patient, "TERM", Duration::from_secs(30)).await.unwrap();
    assert_eq!(code, Some(0));
    let status: String = sqlx::query_scalar("SELECT status FROM runs").fetch_one(&env.pool).await.unwrap();
    assert_eq!(status, "succeeded", "the in-flight job finished within the grace period");

    // Grace too short: the job is handed back (nak), and the next worker completes it.
    let hasty = env.spawn_worker("hasty", &registry, &["--page-size", "10", "--shutdown-grace", "500ms"]).unwrap();
    env.scheduler(&registry, &["refresh", "--table", "kubernetes_pods"]).await.unwrap();
    env.wait_until("the job to start", running, Duration::from_secs(30)).await.unwrap();
    let code = env.signal_and_wait(hasty, "TERM", Duration::from_secs(30)).await.unwrap();
    assert_eq!(code, Some(0));
    let (status, error): (String, String) =
        sqlx::query_as("SELECT status, error FROM runs WHERE worker_id = 'hasty'").fetch_one(&env.pool).await.unwrap();
    assert_eq!(status, "handed_back");
    assert!(error.contains("shutting down"), "{error}");
    env.spawn_worker("next", &registry, &["--page-size", "10"]).unwrap();
    env.wait_until(
        "the handed-back job to succeed",
        "SELECT count(*) = 1 FROM runs WHERE worker_id = 'next' AND status = 'succeeded' AND attempt = 1",
        Duration::from_secs(60),
    )
    .await
    .unwrap();

    // The scheduler stops on SIGTERM too.
    let scheduler = env.spawn_scheduler(&registry, &[]).unwrap();
    env.wait_for_log("scheduler", "scheduler started").await;
    assert_eq!(env.signal_and_wait(scheduler, "TERM", Duration::from_secs(10)).await.unwrap(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_leak_and_tls_is_verified_with_each_clusters_ca() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 10, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    let clusters = fleet.clusters();

    // sim-02 is declared with sim-01's CA: its server certificate must be refused.
    let mut declared = Registry::load(&registry, &Catalog::builtin()).unwrap();
    declared.clusters[1].ca_file = declared.clusters[0].ca_file.clone();
    let wrong_registry = env.dir.join("wrong-ca.yaml");
    std::fs::write(&wrong_registry, serde_norway::to_string(&declared).unwrap()).unwrap();
    let worker = env.spawn_worker("worker", &wrong_registry, &["--max-attempts", "1"]).unwrap();
    env.scheduler(&wrong_registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();
    let tls_error: String = sqlx::query_scalar("SELECT error FROM runs WHERE cluster_name = 'sim-02' LIMIT 1")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(tls_error.to_lowercase().contains("certificate"), "{tls_error}");
    // A graceful stop: the worker's last acks (terminating the failed jobs) reach NATS.
    assert_eq!(env.signal_and_wait(worker, "TERM", Duration::from_secs(30)).await.unwrap(), Some(0));

    // Turning verification off is explicit, per cluster, and logged.
    declared.clusters[1].insecure_skip_tls_verify = true;
    let insecure_registry = env.dir.join("insecure.yaml");
    std::fs::write(&insecure_registry, serde_norway::to_string(&declared).unwrap()).unwrap();
    let insecure = env.spawn_worker("insecure", &insecure_registry, &[]).unwrap();
    env.scheduler(&insecure_registry, &["refresh", "--wait", "--cluster", "sim-02", "--table", "kubernetes_pods"])
        .await
        .unwrap();
    assert!(env.log("insecure").contains("TLS verification is off for this cluster"));
    assert_eq!(env.signal_and_wait(insecure, "TERM", Duration::from_secs(30)).await.unwrap(), Some(0));

    // No token anywhere: logs at trace level, runs, clusters, job messages, process arguments.
    let tracer = env.spawn_worker_with_log_level("tracer", &registry, "trace").unwrap();
    env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();
    let cmdline = std::fs::read(format!("/proc/{tracer}/cmdline")).unwrap();
    let database: String = sqlx::query_scalar(
        "SELECT (SELECT string_agg(r::text, ' ') FROM runs r) || (SELECT string_agg(c::text, ' ') FROM clusters c)",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    for cluster in &clusters {
        for (name, haystack) in [
            ("worker log", env.log("tracer")),
            ("runs and clusters", database.clone()),
            ("worker arguments", String::from_utf8_lossy(&cmdline).into_owned()),
        ] {
            assert!(!haystack.contains(&cluster.token), "{}'s token appears in the {name}", cluster.name);
        }
    }
    assert!(env.log("tracer").contains("replaced"), "the trace-level worker did its jobs");
    assert_eq!(env.signal_and_wait(tracer, "TERM", Duration::from_secs(30)).await.unwrap(), Some(0));

    // Credentials from Secrets of a home cluster neither: an Argo CD Secret (a bearer token and
    // a CA) and a Cluster API kubeconfig, and no registry file.
    let home = HomeCluster::start(&env.dir).unwrap();
    home.put(HomeCluster::argocd_secret("argocd", &clusters[0], &[]));
    home.put(HomeCluster::capi_secret("capi", &clusters[1], &[]));
    let kubeconfig = home.kubeconfig.display().to_string();
    let home_flags = ["--home-kubeconfig", &kubeconfig, "--argocd-namespace", "argocd", "--capi-namespace", "capi"];
    let no_file = env.dir.join("no-such-registry.yaml");
    let tracer = env.spawn_worker_with("home-tracer", &no_file, &home_flags, &[("RUST_LOG", "trace")]).unwrap();
    env.scheduler(&no_file, &[&["refresh", "--wait", "--table", "kubernetes_nodes"][..], &home_flags].concat())
        .await
        .unwrap();
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{tracer}/cmdline")).unwrap()).into_owned();
    let database: String = sqlx::query_scalar(
        "SELECT (SELECT string_agg(r::text, ' ') FROM runs r) || (SELECT string_agg(c::text, ' ') FROM clusters c)",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    let log = env.log("home-tracer");
    assert_eq!(log.matches("replaced").count(), 2, "both Secrets' clusters were polled");
    let home_token = std::fs::read_to_string(&home.kubeconfig).unwrap();
    let home_token = home_token.split("token: ").nth(1).unwrap().trim();
    for secret in clusters.iter().map(|c| c.token.as_str()).chain([home_token]) {
        for (name, haystack) in [("worker log", &log), ("runs and clusters", &database), ("worker arguments", &cmdline)]
        {
            assert!(!haystack.contains(secret), "a credential from a Secret appears in the {name}");
        }
    }
}
