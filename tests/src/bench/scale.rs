//! The figures of `bench-scale` (kubecensus at 1,000 clusters) beyond a refresh round's: jobs/s
//! over the course of a round, what the database holds (size, relations, one table's bytes),
//! planning and execution time of fleet-wide queries, and many fleet-wide readers at once.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use kubecensus::store::sql::literal;

use super::{
    env::BenchEnv,
    queries::{QUERIES, timed_runs},
    stats::percentile,
};

/// Jobs/s in each tenth of a round's runs, by the order they finished.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub tenths: Vec<f64>,
}

impl Throughput {
    /// The last tenth's rate against the first's, in percent (negative: it slowed down).
    pub fn change_percent(&self) -> f64 {
        match (self.tenths.first(), self.tenths.last()) {
            (Some(first), Some(last)) if *first > 0.0 => (last / first - 1.0) * 100.0,
            _ => 0.0,
        }
    }
}

/// Jobs/s per tenth of the runs that ended after `since`: each tenth's run count over the time
/// from the previous tenth's last finish to its own.
pub async fn throughput(env: &BenchEnv, since: DateTime<Utc>) -> anyhow::Result<Throughput> {
    let ends: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM finished_at - $1)::float8 FROM runs
         WHERE started_at >= $1 AND finished_at IS NOT NULL ORDER BY finished_at",
    )
    .bind(since)
    .fetch_all(&env.pool)
    .await?;
    let mut tenths = Vec::new();
    let mut previous = 0.0;
    for tenth in 1..=10 {
        let end = (ends.len() * tenth / 10).max(1);
        let start = ends.len() * (tenth - 1) / 10;
        let Some(&last) = ends.get(end - 1) else { break };
        let jobs = end - start;
        tenths.push(if last > previous { jobs as f64 / (last - previous) } else { 0.0 });
        previous = last;
    }
    Ok(Throughput { tenths })
}

/// Waits until autovacuum has caught up with the pods, containers and nodes partitions (none
/// past the thresholds for dead or newly inserted rows `schema.rs` sets), at most
/// `limit`; returns how long it waited. A real fleet's poll interval (5 minutes for pods) leaves
/// it that time between refreshes; a benchmark that refreshes back to back does not.
pub async fn wait_for_autovacuum(env: &BenchEnv, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_user_tables s JOIN pg_inherits i ON i.inhrelid = s.relid
             WHERE i.inhparent IN ('kubernetes_pods'::regclass, 'kubernetes_pod_containers'::regclass, 'kubernetes_nodes'::regclass)
               AND (s.n_dead_tup > 100 + 0.01 * s.n_live_tup OR s.n_ins_since_vacuum > 100 + 0.01 * s.n_live_tup)",
        )
        .fetch_one(&env.pool)
        .await?;
        if behind == 0 || started.elapsed() >= limit {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// What the database holds.
#[derive(Debug, Clone, Serialize)]
pub struct Footprint {
    pub database_bytes: i64,
    /// Entries in `pg_class`: tables, partitions, indexes, TOAST tables, ...
    pub relations: i64,
    /// `kubernetes_pods` with its partitions: heap and TOAST bytes, index bytes.
    pub pods_table_bytes: i64,
    pub pods_index_bytes: i64,
    pub pods_rows: i64,
}

/// Reads the database's footprint now.
pub async fn footprint(env: &BenchEnv) -> anyhow::Result<Footprint> {
    let (database_bytes, relations, pods_table_bytes, pods_index_bytes, pods_rows): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "WITH parts AS (
               SELECT c.oid FROM pg_class c WHERE c.relname = 'kubernetes_pods' AND c.relnamespace = 'public'::regnamespace
               UNION ALL SELECT relid FROM pg_partition_tree('public.kubernetes_pods') WHERE isleaf)
             SELECT pg_database_size(current_database()), (SELECT count(*) FROM pg_class),
                    coalesce(sum(pg_table_size(oid)), 0)::bigint, coalesce(sum(pg_indexes_size(oid)), 0)::bigint,
                    (SELECT count(*) FROM kubernetes_pods)
             FROM parts",
        )
        .fetch_one(&env.pool)
        .await?;
    Ok(Footprint { database_bytes, relations, pods_table_bytes, pods_index_bytes, pods_rows })
}

/// The fleet-wide queries `bench-scale` times, by name: the two design examples (from the
/// summaries and as the design's text, [`QUERIES`]), pods × nodes, and a point lookup of one pod
/// (picked from the loaded rows) by cluster, namespace and name.
pub async fn scale_queries(env: &BenchEnv) -> anyhow::Result<Vec<(String, String)>> {
    let (cluster, namespace, name): (String, String, String) = sqlx::query_as(
        "SELECT cluster_name, namespace, name FROM kubernetes_pods ORDER BY cluster_name DESC, name LIMIT 1",
    )
    .fetch_one(&env.pool)
    .await?;
    let design = QUERIES[..4].iter().map(|(name, sql)| (*name, (*sql).to_owned()));
    let queries = [
        (
            "pods x nodes (count)",
            "select count(*) from kubernetes_pods p join kubernetes_nodes n on n.cluster_name = p.cluster_name and n.name = p.node_name".to_owned(),
        ),
        (
            "point lookup by cluster, namespace and name",
            format!(
                "select uid, phase, node_name from kubernetes_pods where cluster_name = {} and namespace = {} and name = {}",
                literal(&cluster),
                literal(&namespace),
                literal(&name)
            ),
        ),
    ];
    Ok(design.chain(queries).map(|(name, sql)| (name.to_owned(), sql)).collect())
}

/// One query: median of the runs, and planning and execution time of one `EXPLAIN ANALYZE`.
#[derive(Debug, Clone, Serialize)]
pub struct QueryFigures {
    pub name: String,
    pub median_ms: f64,
    pub max_ms: f64,
    pub planning_ms: f64,
    pub execution_ms: f64,
    /// The median in a fresh connection (no plan or catalog caches): the first query of a session.
    pub fresh_connection_ms: f64,
}

/// Times each query: `runs` runs in one session after a warm-up, three in a fresh connection
/// each, and the planning and execution time one `EXPLAIN (ANALYZE)` reports.
pub async fn time_queries(
    env: &BenchEnv,
    queries: &[(String, String)],
    runs: usize,
) -> anyhow::Result<Vec<QueryFigures>> {
    let mut conn = PgConnection::connect(&env.database_url).await?;
    let mut figures = Vec::new();
    for (name, sql) in queries {
        sqlx::raw_sql(sql).fetch_all(&mut conn).await?;
        let ms = timed_runs(&mut conn, sql, runs).await?;
        let mut fresh = Vec::new();
        for _ in 0..3 {
            let mut new = PgConnection::connect(&env.database_url).await?;
            let started = Instant::now();
            sqlx::raw_sql(sql).fetch_all(&mut new).await?;
            fresh.push(started.elapsed().as_secs_f64() * 1000.0);
            new.close().await?;
        }
        fresh.sort_by(f64::total_cmp);
        let plan: serde_json::Value =
            sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}")).fetch_one(&mut conn).await?;
        let number = |key: &str| plan[0][key].as_f64().unwrap_or_default();
        let query = QueryFigures {
            name: name.clone(),
            median_ms: percentile(&ms, 0.5),
            max_ms: ms.last().copied().unwrap_or_default(),
            planning_ms: number("Planning Time"),
            execution_ms: number("Execution Time"),
            fresh_connection_ms: percentile(&fresh, 0.5),
        };
        tracing::info!(query = query.name, median_ms = query.median_ms, planning_ms = query.planning_ms, "query timed");
        figures.push(query);
    }
    Ok(figures)
}

/// Many readers running fleet-wide queries at once.
#[derive(Debug, Clone, Serialize)]
pub struct ConcurrentReaders {
    pub readers: usize,
    pub seconds: f64,
    pub queries: usize,
    /// Failed queries (e.g. "out of shared memory": too many locks at once), with the first error.
    pub errors: usize,
    pub first_error: Option<String>,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

/// `readers` connections, each on its own OS thread and runtime (so the simulated fleet's busy
/// threads do not show up as reader latency), run `queries` in turn for `duration`.
pub async fn concurrent_readers(
    env: &BenchEnv,
    queries: &[(String, String)],
    readers: usize,
    duration: Duration,
) -> anyhow::Result<ConcurrentReaders> {
    let started = Instant::now();
    let threads: Vec<_> = (0..readers)
        .map(|reader| {
            let url = env.database_url.clone();
            let queries: Vec<String> = queries.iter().map(|(_, sql)| sql.clone()).collect();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(read(&url, &queries, reader, started, duration))
            })
        })
        .collect();
    let (mut ms, mut errors) = (Vec::new(), Vec::new());
    for thread in threads {
        let (reader_ms, reader_errors) = thread.join().map_err(|_| anyhow::anyhow!("a reader thread panicked"))??;
        ms.extend(reader_ms);
        errors.extend(reader_errors);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ConcurrentReaders {
        readers,
        seconds: started.elapsed().as_secs_f64(),
        queries: ms.len() + errors.len(),
        errors: errors.len(),
        first_error: errors.into_iter().next(),
        p50_ms: percentile(&ms, 0.5),
        p95_ms: percentile(&ms, 0.95),
    })
}

/// One reader: the queries in turn, starting at its own, until `duration` has passed since
/// `started`; returns each query's milliseconds and the errors.
async fn read(
    url: &str,
    queries: &[String],
    reader: usize,
    started: Instant,
    duration: Duration,
) -> anyhow::Result<(Vec<f64>, Vec<String>)> {
    let mut conn = PgConnection::connect(url).await?;
    let (mut ms, mut errors) = (Vec::new(), Vec::new());
    let mut turn = reader;
    while started.elapsed() < duration {
        let sql = &queries[turn % queries.len()];
        turn += 1;
        let began = Instant::now();
        match sqlx::raw_sql(sql).fetch_all(&mut conn).await {
            Ok(_) => ms.push(began.elapsed().as_secs_f64() * 1000.0),
            Err(err) => errors.push(err.to_string()),
        }
    }
    Ok((ms, errors))
}
