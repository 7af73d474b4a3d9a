//! `bench-scale --standby`: a hot standby of the private server, attached for the first load and
//! the full refresh, with readers on it and the replay lag sampled on the primary
//! (`pg_stat_replication.replay_lag`, NULL once the standby has caught up: zero).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;

use super::stats::percentile;

/// What the standby's readers and the replay lag came to.
#[derive(Debug, Clone, Serialize)]
pub struct StandbyFigures {
    pub lag_samples: usize,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    pub readers: usize,
    /// What each reader waited between reads, in milliseconds.
    pub reader_pause_ms: u128,
    /// Reads: one REPEATABLE READ snapshot each, every cluster's pods counted against its
    /// snapshot's `row_count`.
    pub reads: usize,
    /// Reads that saw a cluster's pods differ from its snapshot (a half-replaced cluster).
    pub torn: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    /// `pg_stat_database_conflicts` on the standby, all causes: queries cancelled by replay.
    pub conflicts: i64,
}

/// The readers and the lag sampler while they run.
pub struct StandbyWatch {
    stop: Arc<AtomicBool>,
    lag: JoinHandle<Vec<f64>>,
    readers: Vec<JoinHandle<ReaderCount>>,
    pause: Duration,
    standby_url: String,
}

#[derive(Default)]
struct ReaderCount {
    reads: usize,
    torn: usize,
    errors: usize,
    first_error: Option<String>,
}

/// One reader's loop: waits for the pods table (the workers make the schema), then reads until
/// `stop`, waiting `pause` after each read.
async fn read(url: String, pause: Duration, stop: Arc<AtomicBool>) -> ReaderCount {
    let mut count = ReaderCount::default();
    let fail = |count: &mut ReaderCount, err: sqlx::Error| {
        count.errors += 1;
        count.first_error.get_or_insert_with(|| err.to_string());
    };
    let mut conn = match PgConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(err) => {
            fail(&mut count, err);
            return count;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let ready: Option<bool> = sqlx::query_scalar(
            "SELECT to_regclass('kubernetes_pods') IS NOT NULL AND to_regclass('snapshots') IS NOT NULL",
        )
        .fetch_one(&mut conn)
        .await
        .ok();
        if ready == Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while !stop.load(Ordering::Relaxed) {
        match torn_clusters(&mut conn).await {
            Ok(torn) => count.torn += usize::from(torn > 0),
            Err(err) => fail(&mut count, err),
        }
        count.reads += 1;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    count
}

/// Clusters whose pods, counted in one snapshot, differ from their snapshot's `row_count`.
async fn torn_clusters(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    let torn: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM snapshots s
         LEFT JOIN (SELECT cluster_name, count(*) AS n FROM kubernetes_pods GROUP BY 1) p USING (cluster_name)
         WHERE s.table_name = 'kubernetes_pods' AND coalesce(p.n, 0) <> s.row_count",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(torn)
}

impl StandbyWatch {
    /// Starts `readers` readers on `standby_url`, each waiting `pause` between reads, and
    /// samples the replay lag on `primary` every 100 ms.
    pub fn start(primary: &PgPool, standby_url: &str, readers: usize, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (pool, flag) = (primary.clone(), stop.clone());
        let lag = tokio::spawn(async move {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let lag: Option<f64> = sqlx::query_scalar(
                    "SELECT coalesce(extract(epoch FROM max(replay_lag)) * 1000, 0)::float8 FROM pg_stat_replication",
                )
                .fetch_one(&pool)
                .await
                .ok();
                samples.extend(lag);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        });
        let readers = (0..readers).map(|_| tokio::spawn(read(standby_url.to_owned(), pause, stop.clone()))).collect();
        Self { stop, lag, readers, pause, standby_url: standby_url.to_owned() }
    }

    /// Stops the readers and the sampler; the figures, with the standby's conflicts.
    pub async fn finish(self) -> anyhow::Result<StandbyFigures> {
        self.stop.store(true, Ordering::Relaxed);
        let mut lag = self.lag.await?;
        lag.sort_by(f64::total_cmp);
        let mut figures = StandbyFigures {
            lag_samples: lag.len(),
            lag_p50_ms: percentile(&lag, 0.5),
            lag_p99_ms: percentile(&lag, 0.99),
            lag_max_ms: lag.last().copied().unwrap_or_default(),
            readers: self.readers.len(),
            reader_pause_ms: self.pause.as_millis(),
            reads: 0,
            torn: 0,
            errors: 0,
            first_error: None,
            conflicts: 0,
        };
        for reader in self.readers {
            let count = reader.await?;
            figures.reads += count.reads;
            figures.torn += count.torn;
            figures.errors += count.errors;
            figures.first_error = figures.first_error.or(count.first_error);
        }
        let mut conn = PgConnection::connect(&self.standby_url).await?;
        figures.conflicts = sqlx::query_scalar(
            "SELECT (confl_tablespace + confl_lock + confl_snapshot + confl_bufferpin + confl_deadlock)::int8
             FROM pg_stat_database_conflicts WHERE datname = current_database()",
        )
        .fetch_one(&mut conn)
        .await?;
        Ok(figures)
    }
}
