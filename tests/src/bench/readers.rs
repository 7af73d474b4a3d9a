//! Readers during a refresh: a few connections run short read-committed queries back to back
//! (a point lookup by namespace and name, and one cluster's pod count) while something else
//! runs; every query's latency is recorded. The same readers run with no refresh going on
//! (idle, and during a raw COPY load of the same rows: CPU pressure alone), then during a
//! kubecensus refresh of churned pods, which deletes and inserts the changed rows.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use sqlx::{Connection, PgConnection};

use super::env::BenchEnv;
use super::stats::percentile;

/// Latencies of the readers during one phase.
#[derive(Debug, Clone, Serialize)]
pub struct ReaderPhase {
    pub phase: String,
    pub queries: usize,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Queries slower than 250 ms.
    pub over_250ms: usize,
    pub errors: usize,
}

/// What readers look up: (cluster, namespace, name) of sampled pods.
pub async fn sample_pods(env: &BenchEnv, count: i64) -> anyhow::Result<Vec<(String, String, String)>> {
    Ok(sqlx::query_as("SELECT cluster_name, namespace, name FROM kubernetes_pods ORDER BY random() LIMIT $1")
        .bind(count)
        .fetch_all(&env.pool)
        .await?)
}

/// Runs `readers` reader connections on `database_url` while `during` runs, and returns their
/// latencies; `during`'s own result is returned beside.
pub async fn measure<F, T>(
    database_url: &str,
    phase: &str,
    readers: usize,
    pods: &[(String, String, String)],
    during: F,
) -> anyhow::Result<(ReaderPhase, T)>
where
    F: Future<Output = anyhow::Result<T>>,
{
    anyhow::ensure!(!pods.is_empty(), "no pods to read");
    let running = Arc::new(AtomicBool::new(true));
    let pods = Arc::new(pods.to_vec());
    // Each reader on its own thread and runtime: the bench's runtime also serves the simulated
    // fleet, whose busy threads would otherwise show up as reader latency.
    let threads: Vec<_> = (0..readers)
        .map(|reader| {
            let (running, pods, url) = (running.clone(), pods.clone(), database_url.to_owned());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(read_until_stopped(&url, reader, readers, &pods, &running))
            })
        })
        .collect();
    let started = Instant::now();
    let outcome = during.await;
    running.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for thread in threads {
        let (mine, my_errors) = tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("a reader thread panicked"))??;
        latencies.extend(mine);
        errors += my_errors;
    }
    let outcome = outcome?;
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let phase = ReaderPhase {
        phase: phase.to_owned(),
        queries: ms.len(),
        seconds,
        p50_ms: percentile(&ms, 0.50),
        p99_ms: percentile(&ms, 0.99),
        max_ms: ms.last().copied().unwrap_or_default(),
        over_250ms: ms.iter().filter(|&&l| l > 250.0).count(),
        errors,
    };
    tracing::info!(
        phase = phase.phase,
        queries = phase.queries,
        p99_ms = phase.p99_ms,
        max_ms = phase.max_ms,
        "readers"
    );
    Ok((phase, outcome))
}

/// One reader: queries back to back until `running` is cleared; returns every query's latency
/// and the number of failed queries.
async fn read_until_stopped(
    url: &str,
    reader: usize,
    readers: usize,
    pods: &[(String, String, String)],
    running: &AtomicBool,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut conn = PgConnection::connect(url).await?;
    let (mut latencies, mut errors) = (Vec::new(), 0usize);
    let mut i = reader;
    while running.load(Ordering::Relaxed) {
        let (cluster, namespace, name) = &pods[i % pods.len()];
        let started = Instant::now();
        let result = if i.is_multiple_of(2) {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM kubernetes_pods WHERE cluster_name = $1 AND namespace = $2 AND name = $3",
            )
            .bind(cluster)
            .bind(namespace)
            .bind(name)
            .fetch_one(&mut conn)
            .await
        } else {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM kubernetes_pods WHERE cluster_name = $1")
                .bind(cluster)
                .fetch_one(&mut conn)
                .await
        };
        latencies.push(started.elapsed());
        if result.is_err() {
            errors += 1;
        }
        i += readers;
    }
    Ok((latencies, errors))
}

/// A phase with nothing else going on.
pub async fn idle(duration: Duration) -> anyhow::Result<()> {
    tokio::time::sleep(duration).await;
    Ok(())
}
