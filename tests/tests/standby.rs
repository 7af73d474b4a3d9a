//! Readers on a hot standby (`pg_basebackup -R` of a private primary, `hot_standby_feedback =
//! on`) while the primary takes a full load and churned refreshes: each read, one REPEATABLE
//! READ snapshot, sees every (cluster, table) whole (its rows counted equal its snapshot's
//! `row_count`), no read is cancelled (`pg_stat_database_conflicts` stays zero), the replay lag
//! shows in `cluster_freshness`, and `scheduler report --read-database-url` reads the standby.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use kubecensus_tests::{
    checks::assert_postgres_equals_simulator,
    fleet::{Fleet, FleetSpec},
    harness::{TestEnv, nats_url},
    servers::TempPostgres,
};
use sqlx::{Connection, PgConnection, PgPool, postgres::PgPoolOptions};

/// Readers on the standby.
const READERS: usize = 3;

/// Every (cluster, table) whose rows counted in one snapshot differ from its `row_count` there.
/// A custom kind's snapshot (`kubernetes_custom_resources/<group>/<kind>`) counts that kind's
/// rows; `kubernetes_custom_resources/discovered` (every kind without a job of its own, not
/// configured here) is left out.
async fn torn(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    let mut tx = conn.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    let snapshots: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT cluster_name, table_name, row_count FROM snapshots").fetch_all(&mut *tx).await?;
    let mut counted: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT cluster_name, concat_ws('/', 'kubernetes_custom_resources', api_group, kind), count(*)
         FROM kubernetes_custom_resources GROUP BY api_group, kind, cluster_name",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut tables: Vec<&str> = snapshots
        .iter()
        .map(|(_, table, _)| table.as_str())
        .filter(|table| !table.starts_with("kubernetes_custom_resources"))
        .collect();
    tables.sort_unstable();
    tables.dedup();
    for table in tables {
        let sql = format!("SELECT cluster_name, '{table}', count(*) FROM \"{table}\" GROUP BY 1");
        counted.extend(sqlx::query_as::<_, (String, String, i64)>(&sql).fetch_all(&mut *tx).await?);
    }
    tx.commit().await?;
    Ok(snapshots
        .iter()
        .filter(|(_, table, _)| table != "kubernetes_custom_resources/discovered")
        .filter_map(|(cluster, table, rows)| {
            let seen = counted.iter().find(|(c, t, _)| c == cluster && t == table).map_or(0, |(_, _, n)| *n);
            (seen != *rows).then(|| format!("{cluster} {table}: {seen} rows, its snapshot says {rows}"))
        })
        .collect())
}

/// Readers reading [`torn`] in a loop until stopped; each returns its reads and what went wrong.
fn start_readers(url: &str, stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<(usize, Vec<String>)>> {
    (0..READERS)
        .map(|_| {
            let (url, stop) = (url.to_owned(), stop.clone());
            tokio::spawn(async move {
                let (mut reads, mut problems) = (0, Vec::new());
                let mut conn = match PgConnection::connect(&url).await {
                    Ok(conn) => conn,
                    Err(err) => return (0, vec![format!("cannot connect to the standby: {err}")]),
                };
                while !stop.load(Ordering::Relaxed) {
                    match torn(&mut conn).await {
                        Ok(torn) => problems.extend(torn),
                        Err(err) => problems.push(format!("read failed: {err}")),
                    }
                    reads += 1;
                }
                (reads, problems)
            })
        })
        .collect()
}

/// Waits until the standby has replayed everything the primary wrote so far.
async fn wait_for_replay(primary: &PgPool, standby: &PgPool) {
    let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text").fetch_one(primary).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let caught_up: bool = sqlx::query_scalar("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn")
            .bind(&lsn)
            .fetch_one(standby)
            .await
            .unwrap();
        if caught_up {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the standby did not replay up to {lsn}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_on_a_hot_standby_see_whole_clusters_and_are_never_cancelled() {
    let primary = TempPostgres::start().await.unwrap();
    let mut env = TestEnv::on(primary.url("postgres"), nats_url()).await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 3, pods: 150, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &registry, &["--page-size", "50"]).unwrap();
    // The schema is made (DDL, with its ACCESS EXCLUSIVE locks) before the standby has readers.
    env.wait_for_log("worker", "worker started").await;
    let standby = TempPostgres::standby(&primary).await.unwrap();
    let standby_url = standby.url(&env.services.database);
    let standby_pool = PgPoolOptions::new().max_connections(2).connect(&standby_url).await.unwrap();
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(&standby_pool).await.unwrap();
    assert!(in_recovery, "the standby is a standby");

    let stop = Arc::new(AtomicBool::new(false));
    let readers = start_readers(&standby_url, &stop);
    // The full load, then refreshes of churned clusters, all while the readers read.
    env.scheduler(&registry, &["refresh", "--wait"]).await.unwrap();
    for round in 0..2 {
        for cluster in fleet.clusters() {
            fleet.churn(&cluster.name, 30 + round, 20);
        }
        env.scheduler(&registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();
    }
    wait_for_replay(&env.pool, &standby_pool).await;
    stop.store(true, Ordering::Relaxed);
    let mut reads = 0;
    for reader in readers {
        let (count, problems) = reader.await.unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
        reads += count;
    }
    assert!(reads >= READERS, "the readers read ({reads} reads)");

    let conflicts: i64 = sqlx::query_scalar(
        "SELECT confl_tablespace + confl_lock + confl_snapshot + confl_bufferpin + confl_deadlock
         FROM pg_stat_database_conflicts WHERE datname = current_database()",
    )
    .fetch_one(&standby_pool)
    .await
    .unwrap();
    assert_eq!(conflicts, 0, "standby queries cancelled by replay");

    // The standby has the primary's rows, and says how far behind it is beside each snapshot.
    assert_postgres_equals_simulator(&standby_pool, &fleet).await;
    let freshness: Vec<(String, Option<f64>, Option<f64>)> = sqlx::query_as(
        "SELECT cluster_name, extract(epoch FROM snapshot_age)::float8, extract(epoch FROM replay_lag)::float8
         FROM cluster_freshness WHERE table_name = 'kubernetes_pods' ORDER BY 1",
    )
    .fetch_all(&standby_pool)
    .await
    .unwrap();
    assert_eq!(freshness.len(), fleet.clusters().len(), "{freshness:?}");
    assert!(freshness.iter().all(|(_, age, lag)| age.is_some() && lag.is_some_and(|lag| lag >= 0.0)), "{freshness:?}");
    let on_primary: Option<f64> = sqlx::query_scalar("SELECT extract(epoch FROM kubecensus_replay_lag())::float8")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(on_primary, None, "a primary has no replay lag");

    // `scheduler report` reads the standby when told to.
    let report =
        env.scheduler(&registry, &["--output", "json", "report", "--read-database-url", &standby_url]).await.unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert!(report["replay_lag_seconds"].is_number(), "{report}");
    assert!(!report["snapshots"].as_array().unwrap().is_empty(), "{report}");
}
