//! Change history and retention on the real services: simulator churn produces exactly the
//! created, updated and deleted rows its own log names (none for unchanged objects, none for
//! heartbeats), a first load writes a baseline, and retention drops old partitions and old runs
//! and nothing else, while `scheduler report` still shows every (cluster, table) without scanning
//! `runs`. (A failed or superseded job writing no history: `store::changes_tests`.)

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{Days, Utc};
use kubecensus::store::retention::{self, Retention};
use kubecensus_tests::{
    bench::history::readme_history_queries,
    fleet::{Fleet, FleetSpec, WorkloadChurn},
    harness::TestEnv,
};
use serde_json::Value;

/// The tables churn changes, by the simulator's plural.
const TABLES: [(&str, &str); 4] = [
    ("deployments", "kubernetes_deployments"),
    ("configmaps", "kubernetes_config_maps"),
    ("nodes", "kubernetes_nodes"),
    ("pods", "kubernetes_pods"),
];

async fn refresh(env: &TestEnv, registry: &std::path::Path) {
    let mut args = vec!["refresh", "--wait"];
    for (_, table) in TABLES {
        args.extend(["--table", table]);
    }
    env.scheduler(registry, &args).await.unwrap();
}

/// Every recorded change: (table, change) → uids.
async fn recorded(env: &TestEnv) -> BTreeMap<(String, String), BTreeSet<String>> {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT table_name, change, uid FROM object_changes").fetch_all(&env.pool).await.unwrap();
    let mut recorded: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (table, change, uid) in rows {
        recorded.entry((table, change)).or_default().insert(uid);
    }
    recorded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_records_exactly_the_changes_the_simulator_made_after_a_baseline() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 20, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &registry, &[]).unwrap();
    refresh(&env, &registry).await;
    assert!(recorded(&env).await.is_empty(), "a first load records no change");
    let baselines: Vec<String> =
        sqlx::query_scalar("SELECT table_name FROM change_baselines ORDER BY 1").fetch_all(&env.pool).await.unwrap();
    let mut expected: Vec<&str> = TABLES.iter().map(|(_, table)| *table).collect();
    expected.sort();
    assert_eq!(baselines, expected);

    let churn = WorkloadChurn {
        deployments: 2,
        config_maps_updated: 2,
        config_maps_created: 1,
        config_maps_deleted: 1,
        nodes: 1,
        heartbeats: true,
        pods_deleted: 3,
        pods_added: 2,
    };
    let log = fleet.churn_workloads("sim-01", &churn);
    refresh(&env, &registry).await;
    let mut want: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (plural, table) in TABLES {
        let changed = &log[plural];
        for (change, uids) in
            [("created", &changed.created), ("updated", &changed.updated), ("deleted", &changed.deleted)]
        {
            if !uids.is_empty() {
                want.insert((table.to_owned(), change.to_owned()), uids.clone());
            }
        }
    }
    assert_eq!(recorded(&env).await, want, "the simulator's log: {log:#?}");
    assert!(!log["nodes"].noise.is_empty(), "heartbeats moved on the other nodes, recording nothing");

    // A deployment's new image, old and new; the CLI shows the same rows.
    let images: Vec<Value> = sqlx::query_scalar(
        "SELECT changed_columns->'container_images' FROM object_changes WHERE table_name = 'kubernetes_deployments'",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    for diff in &images {
        assert!(diff["new"][0].as_str().unwrap().starts_with("churn/app:"), "{diff}");
        assert_ne!(diff["old"], diff["new"]);
    }
    let json = env.scheduler(&registry, &["--output", "json", "changes", "--cluster", "sim-01", "--since", "1h"]).await;
    let shown: Vec<Value> = serde_json::from_str(&json.unwrap()).unwrap();
    assert_eq!(shown.len(), want.values().map(BTreeSet::len).sum::<usize>());
    let text = env
        .scheduler(&registry, &["changes", "--cluster", "sim-01", "--table", "kubernetes_deployments"])
        .await
        .unwrap();
    assert!(text.lines().next().unwrap().split_whitespace().eq([
        "changed_at",
        "table",
        "namespace",
        "name",
        "change",
        "resource_version",
        "columns"
    ]));
    let updated = text.lines().filter(|line| line.split_whitespace().any(|word| word == "updated")).count();
    assert_eq!(updated, 2, "{text}");

    // The README's History queries run verbatim; the first finds every change of sim-01.
    let queries = readme_history_queries();
    assert_eq!(queries.len(), 2, "{queries:#?}");
    for query in &queries {
        let rows = sqlx::query(query).fetch_all(&env.pool).await.unwrap_or_else(|err| panic!("{query}: {err}"));
        if query.contains("last hour") {
            assert_eq!(rows.len(), shown.len(), "{query}");
        }
    }

    // Nothing changed: nothing recorded.
    let before = recorded(&env).await;
    refresh(&env, &registry).await;
    assert_eq!(recorded(&env).await, before);
}

/// Each pod's row as `jsonb`, by uid.
async fn pod_rows(env: &TestEnv) -> BTreeMap<String, Value> {
    let rows: Vec<(String, Value)> =
        sqlx::query_as("SELECT uid, to_jsonb(p) FROM kubernetes_pods p").fetch_all(&env.pool).await.unwrap();
    rows.into_iter().collect()
}

/// Every table of the catalog, after churn refreshed with change history and churn refreshed
/// without it (`--change-history false`), as the bench does, then refreshed once more with
/// nothing changed in between: no change row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_of_an_unchanged_fleet_records_no_change_in_any_table() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 200, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    let churn = WorkloadChurn { deployments: 2, pods_deleted: 30, pods_added: 30, ..WorkloadChurn::default() };
    let mut worker = env.spawn_worker("worker", &registry, &[]).unwrap();
    env.scheduler(&registry, &["refresh", "--wait"]).await.unwrap();
    let loaded: i64 = sqlx::query_scalar("SELECT count(*) FROM change_baselines").fetch_one(&env.pool).await.unwrap();
    assert!(loaded > 50, "every (cluster, table) was loaded once: {loaded} baselines");
    for (round, history) in ["true", "false"].into_iter().enumerate() {
        for cluster in fleet.clusters() {
            fleet.churn_workloads(&cluster.name, &churn);
        }
        env.kill(worker);
        worker = env.spawn_worker(&format!("worker-{round}"), &registry, &["--change-history", history]).unwrap();
        env.scheduler(&registry, &["refresh", "--wait"]).await.unwrap();
    }
    env.kill(worker);
    env.spawn_worker("worker-unchanged", &registry, &[]).unwrap();
    let before = (recorded(&env).await, pod_rows(&env).await);
    env.scheduler(&registry, &["refresh", "--wait"]).await.unwrap();
    let after = pod_rows(&env).await;
    let rewritten: Vec<String> = before
        .1
        .iter()
        .filter_map(|(uid, row)| {
            let new = after.get(uid)?;
            let keys: Vec<&String> =
                row.as_object()?.iter().filter(|(k, v)| new.get(k.as_str()) != Some(v)).map(|(k, _)| k).collect();
            (!keys.is_empty()).then(|| format!("{uid}: {keys:?}"))
        })
        .collect();
    assert_eq!(recorded(&env).await, before.0, "no change recorded; pods rows rewritten: {rewritten:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_partitions_and_runs_only_and_the_report_reads_runs_by_index() {
    let mut env = TestEnv::new().await.unwrap();
    Fleet::start(FleetSpec { clusters: 2, pods: 5, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    let worker = env.spawn_worker("worker", &registry, &[]).unwrap();
    let tables = ["--table", "kubernetes_namespaces", "--table", "kubernetes_nodes"];
    env.scheduler(&registry, &[&["refresh", "--wait"][..], &tables].concat()).await.unwrap();
    // Only the report reads `runs` from here on.
    env.kill(worker);
    // The set-up runs on one connection of its own, whose table statistics are flushed at its
    // end: a backend publishes its scans up to 10 s later otherwise (PostgreSQL 15's cumulative
    // statistics), and making a daily partition scans runs' DEFAULT partition.
    let setup =
        sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&env.services.database_url).await.unwrap();
    let keep = Retention { history: Duration::from_secs(30 * 86_400), runs: Duration::from_secs(14 * 86_400) };
    let now = Utc::now();
    let long_ago = now - chrono::Duration::days(40);
    // Partitions made 40 days ago (that day and the next 3), with a change in each day.
    retention::upkeep(&setup, &keep, long_ago).await.unwrap().unwrap();
    let change = "INSERT INTO object_changes (changed_at, cluster_name, table_name, uid, change, job_id, run_id)
                  VALUES ($1, 'sim-01', 'kubernetes_nodes', 'u', 'updated', gen_random_uuid(), gen_random_uuid())";
    for days in [40, 39, 1] {
        sqlx::query(change).bind(now - chrono::Duration::days(days)).execute(&setup).await.unwrap();
    }
    // 50,000 runs 20 days old (into runs' DEFAULT partition) beside the real, recent ones.
    sqlx::query(
        "INSERT INTO runs (run_id, job_id, cluster_name, table_name, attempt, worker_id, scheduled_at, started_at, status)
         SELECT gen_random_uuid(), gen_random_uuid(), 'sim-0' || (1 + i % 2), 'kubernetes_nodes', 1, 'old',
                now() - interval '20 days', now() - interval '20 days' + i * interval '1 millisecond', 'succeeded'
         FROM generate_series(1, 50000) i",
    )
    .execute(&setup)
    .await
    .unwrap();
    let recent: i64 =
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE worker_id <> 'old'").fetch_one(&setup).await.unwrap();
    sqlx::query("ANALYZE runs").execute(&setup).await.unwrap();
    // Flushed before the server answers this statement (when the backend goes idle).
    sqlx::query("SELECT pg_stat_force_next_flush()").execute(&setup).await.unwrap();
    setup.close().await;

    // The report reads each (cluster, table)'s latest run through an index, never scanning runs.
    // (The empty daily partitions have no statistics yet: a scan of one reads nothing.)
    let scans =
        "SELECT seq_scan, idx_scan FROM pg_stat_user_tables WHERE relid = 'kubecensus_history.runs_default'::regclass";
    let (seq_before, idx_before): (i64, i64) = sqlx::query_as(scans).fetch_one(&env.pool).await.unwrap();
    let report: Value =
        serde_json::from_str(&env.scheduler(&registry, &["--output", "json", "report"]).await.unwrap()).unwrap();
    let wait = format!(
        "SELECT idx_scan > {idx_before} FROM pg_stat_user_tables WHERE relid = 'kubecensus_history.runs_default'::regclass"
    );
    env.wait_until("the report's statistics", &wait, Duration::from_secs(30)).await.unwrap();
    let (seq_after, _): (i64, i64) = sqlx::query_as(scans).fetch_one(&env.pool).await.unwrap();
    assert_eq!(seq_after, seq_before, "the report scanned the 50,000 runs");
    let pairs = |report: &Value| -> BTreeSet<(String, String)> {
        report["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|run| (run["cluster"].as_str().unwrap().to_owned(), run["table"].as_str().unwrap().to_owned()))
            .collect()
    };
    let every: BTreeSet<(String, String)> = ["sim-01", "sim-02"]
        .iter()
        .flat_map(|c| ["kubernetes_namespaces", "kubernetes_nodes"].map(|t| (c.to_string(), t.to_owned())))
        .collect();
    assert_eq!(pairs(&report), every);

    let done = retention::upkeep(&env.pool, &keep, now).await.unwrap().unwrap();
    let by_table: BTreeMap<&str, &retention::TableUpkeep> = done.iter().map(|d| (d.table, d)).collect();
    let day = |days_ago: u64| (now.date_naive() - Days::new(days_ago)).format("%Y%m%d").to_string();
    let dropped: Vec<String> = [40, 39, 38, 37].map(|d| format!("object_changes_p{}", day(d))).into();
    assert_eq!(by_table["object_changes"].dropped, dropped);
    assert_eq!(by_table["runs"].deleted, 50_000);
    // Event history is kept the same way: the same four old days go.
    let dropped: Vec<String> = [40, 39, 38, 37].map(|d| format!("event_history_p{}", day(d))).into();
    assert_eq!(by_table["event_history"].dropped, dropped);
    let days: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'object_changes'::regclass ORDER BY 1",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let ahead: Vec<String> =
        (0..=3).map(|d| format!("object_changes_p{}", (now.date_naive() + Days::new(d)).format("%Y%m%d"))).collect();
    assert_eq!(days, [vec!["object_changes_default".to_owned()], ahead].concat());
    let changes: i64 = sqlx::query_scalar("SELECT count(*) FROM object_changes").fetch_one(&env.pool).await.unwrap();
    assert_eq!(changes, 1, "yesterday's change is kept");
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs").fetch_one(&env.pool).await.unwrap();
    assert_eq!(runs, recent, "only the old runs are gone");
    let report: Value =
        serde_json::from_str(&env.scheduler(&registry, &["--output", "json", "report"]).await.unwrap()).unwrap();
    assert_eq!(pairs(&report), every);
}
