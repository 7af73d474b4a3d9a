//! Event history on the real services: events kept once each however often and by however many
//! workers they are listed, repeats updated in place, events expired from the cluster kept, one
//! gap for a worker stopped longer than the event lifetime, and no history from a failed or
//! superseded job. The simulated fleet says exactly what each step of its events did.

use std::{path::Path, time::Duration};

use kubecensus_tests::{
    fleet::{EventChanges, FailResource, Faults, Fleet, FleetSpec},
    harness::TestEnv,
};
use serde_json::Value;

const CLUSTER: &str = "sim-01";
const EVENTS: &[&str] = &["--table", "kubernetes_events"];

/// `(uid, count, last_seen)` of every history row, by uid.
async fn history(env: &TestEnv) -> Vec<(String, i32, chrono::DateTime<chrono::Utc>)> {
    sqlx::query_as("SELECT uid, coalesce(count, 1), last_seen FROM event_history WHERE cluster_name = $1 ORDER BY uid")
        .bind(CLUSTER)
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

async fn scalar(env: &TestEnv, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&env.pool).await.unwrap()
}

/// The uids of the events the simulated cluster serves now.
fn served(fleet: &Fleet) -> Vec<String> {
    let mut uids: Vec<String> = fleet
        .objects(CLUSTER, "events")
        .iter()
        .map(|event| event["metadata"]["uid"].as_str().unwrap().to_owned())
        .collect();
    uids.sort();
    uids
}

async fn refresh(env: &TestEnv, registry: &Path) {
    env.scheduler(registry, &[&["refresh", "--wait"][..], EVENTS].concat()).await.unwrap();
}

/// The fleet's `clusters.yaml` with `event_lifetime` set on every cluster, as `events.yaml`.
fn with_lifetime(env: &TestEnv, lifetime: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(env.dir.join("clusters.yaml")).unwrap();
    let mut registry: Value = serde_norway::from_str(&text).unwrap();
    for cluster in registry["clusters"].as_array_mut().unwrap() {
        cluster["event_lifetime"] = Value::String(lifetime.to_owned());
    }
    let path = env.dir.join("events.yaml");
    std::fs::write(&path, serde_norway::to_string(&registry).unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_kept_once_each_updated_in_place_and_kept_after_they_expire() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 10, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("w1", &registry, &[]).unwrap();
    env.spawn_worker("w2", &registry, &[]).unwrap();

    // Listed twice: one row per event, unchanged by the second listing.
    let generated = served(&fleet);
    refresh(&env, &registry).await;
    let first = history(&env).await;
    assert_eq!(first.iter().map(|(uid, ..)| uid.clone()).collect::<Vec<_>>(), generated);
    refresh(&env, &registry).await;
    assert_eq!(history(&env).await, first, "the same listing again changes nothing");

    // The generated events are old: the first step expires them; they stay in history.
    let step = fleet.step_events(CLUSTER, 4, 0);
    let mut expired = step.expired.clone();
    expired.sort();
    assert_eq!(expired, generated);
    assert_eq!(step.added.len(), 4);
    assert!(step.added.iter().all(|event| event.regarding_uid.is_some()), "about real pods");
    refresh(&env, &registry).await;
    assert_eq!(history(&env).await.len(), generated.len() + 4);
    assert_eq!(scalar(&env, "SELECT count(*) FROM kubernetes_events").await, 4);

    // Repeats update their rows in place, listed by two workers at once.
    let EventChanges { bumped, .. } = fleet.step_events(CLUSTER, 0, 3);
    assert_eq!(bumped.len(), 3);
    let jobs = "SELECT count(DISTINCT job_id) FROM runs WHERE table_name = 'kubernetes_events' \
                AND status IN ('succeeded', 'superseded')";
    let ended = scalar(&env, jobs).await;
    for _ in 0..2 {
        env.scheduler(&registry, &[&["refresh"][..], EVENTS].concat()).await.unwrap();
    }
    env.wait_until("both refreshes", &format!("SELECT ({jobs}) = {}", ended + 2), Duration::from_secs(60))
        .await
        .unwrap();
    let rows = history(&env).await;
    assert_eq!(rows.len(), generated.len() + 4, "one row per event");
    for event in &bumped {
        let (_, count, _) = rows.iter().find(|(uid, ..)| *uid == event.uid).unwrap();
        assert_eq!(*count as u64, event.count, "{} updated in place", event.uid);
        assert_eq!(event.count, 2);
    }
    let counts: Vec<i32> = rows.iter().map(|(_, count, _)| *count).collect();
    assert_eq!(counts.iter().filter(|count| **count == 2).count(), 3, "only the repeated events changed");
    assert_eq!(scalar(&env, "SELECT count(*) FROM event_gaps").await, 0, "listings within the lifetime");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_longer_than_the_event_lifetime_records_exactly_one_gap() {
    let mut env = TestEnv::new().await.unwrap();
    let _fleet = Fleet::start(FleetSpec { clusters: 1, pods: 5, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = with_lifetime(&env, "5s");
    let worker = env.spawn_worker("w1", &registry, &[]).unwrap();
    refresh(&env, &registry).await;
    env.kill(worker);

    // The worker stays stopped past the lifetime; the job published meanwhile waits for one.
    env.wait_until(
        "the event lifetime to pass",
        "SELECT now() - swapped_at > interval '5 seconds' FROM snapshots WHERE table_name = 'kubernetes_events'",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    env.scheduler(&registry, &[&["refresh"][..], EVENTS].concat()).await.unwrap();
    env.spawn_worker("w2", &registry, &[]).unwrap();
    env.wait_until("the gap", "SELECT count(*) = 1 FROM event_gaps", Duration::from_secs(60)).await.unwrap();
    let (cluster, seconds, reason, listed): (String, f64, String, bool) = sqlx::query_as(
        "SELECT cluster_name, extract(epoch FROM gap_to - gap_from)::float8, reason,
                run_id IN (SELECT run_id FROM runs WHERE status = 'succeeded')
         FROM event_gaps",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(cluster, CLUSTER);
    assert!(seconds > 5.0, "{seconds}");
    assert!(reason.contains("no events job ran"), "{reason}");
    assert!(listed, "the gap belongs to the listing that found it");

    // The next listing comes in time: still one gap.
    refresh(&env, &registry).await;
    assert_eq!(scalar(&env, "SELECT count(*) FROM event_gaps").await, 1);

    // The scheduler says at start that a minute between listings is longer than 5 s.
    env.spawn_scheduler(&registry, EVENTS).unwrap();
    env.wait_for_log("scheduler", "events are listed as rarely as every 1m").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_superseded_events_job_writes_no_history() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 5, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("w1", &registry, &["--max-attempts", "1"]).unwrap();
    refresh(&env, &registry).await;
    let before = history(&env).await;

    // Failed: the cluster refuses the listing.
    fleet.step_events(CLUSTER, 3, 0);
    let refused = Faults { fail: Some(FailResource { plural: "events".into(), status: 403 }), ..Faults::default() };
    fleet.set_faults(CLUSTER, refused);
    env.scheduler(&registry, &[&["refresh"][..], EVENTS].concat()).await.unwrap();
    env.wait_until("the failed job", "SELECT count(*) = 1 FROM runs WHERE status = 'failed'", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(history(&env).await, before);

    // Superseded: a job scheduled before the current snapshot lists the new events, and writes
    // nothing.
    fleet.set_faults(CLUSTER, Faults::default());
    let late = r#"{"id":"018f0000-0000-7000-8000-0000000000ab","cluster":"sim-01","table":"kubernetes_events","trigger":"schedule","scheduled_at":"2020-01-01T00:00:00Z"}"#;
    env.publish_raw("sim-01.kubernetes_events", late.as_bytes().to_vec()).await.unwrap();
    env.wait_until(
        "the late job",
        "SELECT count(*) = 1 FROM runs WHERE status = 'superseded'",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(history(&env).await, before);

    // The next good listing keeps them.
    refresh(&env, &registry).await;
    assert_eq!(history(&env).await.len(), before.len() + 3);
}

/// The SQL statements of the README's "Events kept past their hour", in order.
fn readme_queries() -> Vec<String> {
    kubecensus_tests::readme::sql_statements("### Events kept past their hour")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_event_queries_run_verbatim() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 20, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("w1", &registry, &[]).unwrap();
    for cluster in fleet.clusters() {
        fleet.step_events(&cluster.name, 8, 0);
    }
    let objects = ["refresh", "--wait", "--table", "kubernetes_pods", "--table", "kubernetes_deployments"];
    env.scheduler(&registry, &objects).await.unwrap();
    refresh(&env, &registry).await;
    let unowned = "SELECT count(*) FROM event_history WHERE regarding_kind = 'Pod'
                   AND (regarding_owner_kind IS DISTINCT FROM 'ReplicaSet' OR regarding_labels ? 'app' IS NOT TRUE)";
    assert_eq!(scalar(&env, unowned).await, 0, "every event about a listed pod has its labels and owner");
    let queries = readme_queries();
    assert_eq!(queries.len(), 2, "{queries:#?}");

    // Warning events by reason: what the simulated clusters serve.
    let mut expected: std::collections::BTreeMap<String, (i64, Vec<String>)> = Default::default();
    for cluster in fleet.clusters() {
        for event in fleet.objects(&cluster.name, "events").iter().filter(|e| e["type"] == "Warning") {
            let entry = expected.entry(event["reason"].as_str().unwrap().to_owned()).or_default();
            entry.0 += 1;
            entry.1.push(cluster.name.clone());
        }
    }
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(&format!(
        "SELECT reason, events, clusters FROM ({}) q ORDER BY reason",
        queries[0].trim_end_matches(';')
    ))
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let expected: Vec<(String, i64, i64)> = expected
        .into_iter()
        .map(|(reason, (events, mut clusters))| {
            clusters.dedup();
            (reason, events, clusters.len() as i64)
        })
        .collect();
    assert!(!expected.is_empty(), "the simulated fleet served warnings");
    assert_eq!(rows, expected);

    // The deployment's events joined to its changes. `object_changes` comes with change history
    // (branch `changes`): without it, the events half (before `UNION ALL`) is checked alone.
    let pods = fleet.objects(CLUSTER, "pods");
    let of_web = |event: &&Value| {
        pods.iter().any(|pod| {
            let metadata = &pod["metadata"];
            metadata["uid"] == event["regarding"]["uid"]
                && metadata["namespace"] == "team-c-search"
                && metadata["ownerReferences"][0]["name"].as_str()
                    == Some(&format!("web-{}", metadata["labels"]["pod-template-hash"].as_str().unwrap()))
        })
    };
    let expected = fleet.objects(CLUSTER, "events").iter().filter(of_web).count();
    let events_half = queries[1].split("UNION ALL").next().unwrap();
    assert_eq!(sqlx::query(events_half).fetch_all(&env.pool).await.unwrap().len(), expected);
    let deployment: i64 = scalar(
        &env,
        "SELECT count(*) FROM kubernetes_deployments WHERE cluster_name = 'sim-01' AND namespace = 'team-c-search' AND name = 'web'",
    )
    .await;
    assert_eq!(deployment, 1, "the README's deployment exists in the simulated fleet");
    let changes: bool =
        sqlx::query_scalar("SELECT to_regclass('object_changes') IS NOT NULL").fetch_one(&env.pool).await.unwrap();
    if changes {
        sqlx::query(&queries[1]).fetch_all(&env.pool).await.unwrap();
    }
}
