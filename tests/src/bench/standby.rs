//! `bench-scale --standby`: a hot standby of the private server, attached for the first load and
//! the full refresh, with readers on it and the replay lag sampled on the primary
//! (`pg_stat_replication.replay_lag`, NULL once the standby has caught up: zero), and what the
//! standby costs the primary: the CPU time of its walsender, the one process a standby adds
//! there, against the machine's (Linux's `/proc`, proc(5)).

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
    /// CPU seconds the primary's walsender used while the readers ran (user and system).
    pub walsender_cpu_s: f64,
    /// CPU seconds the whole machine was busy meanwhile (every core, all but idle and iowait).
    pub machine_busy_cpu_s: f64,
}

/// CPU seconds from `/proc`: process `pid`'s (`/proc/<pid>/stat` fields 14 and 15, utime and
/// stime) or, with `None`, the machine's busy time (`/proc/stat`'s `cpu` line less idle and
/// iowait); both in clock ticks of `getconf CLK_TCK`. `None` where `/proc` cannot say (another
/// system, or a server on another machine).
fn cpu_seconds(pid: Option<i32>) -> Option<f64> {
    let ticks: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())?;
    let busy: u64 = match pid {
        Some(pid) => {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name, field 2, is in parentheses and may hold spaces: count after it.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?
        }
        None => {
            let stat = std::fs::read_to_string("/proc/stat").ok()?;
            let ticks: Vec<u64> =
                stat.lines().next()?.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal (guest time is counted in user).
            ticks.iter().take(8).sum::<u64>() - ticks.get(3)? - ticks.get(4)?
        }
    };
    Some(busy as f64 / ticks)
}

/// The readers and the lag sampler while they run.
pub struct StandbyWatch {
    stop: Arc<AtomicBool>,
    lag: JoinHandle<Vec<f64>>,
    readers: Vec<JoinHandle<ReaderCount>>,
    pause: Duration,
    standby_url: String,
    /// The walsender's process id, and its and the machine's CPU seconds at the start.
    walsender: Option<(i32, f64, f64)>,
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
    /// Starts `readers` readers on `standby_url`, each waiting `pause` between reads, samples
    /// the replay lag on `primary` every 100 ms, and notes the CPU time of the primary's
    /// walsender and of the machine so far.
    ///
    /// # Errors
    /// From PostgreSQL, reading `pg_stat_replication`.
    pub async fn start(primary: &PgPool, standby_url: &str, readers: usize, pause: Duration) -> anyhow::Result<Self> {
        let pid: Option<i32> =
            sqlx::query_scalar("SELECT pid FROM pg_stat_replication LIMIT 1").fetch_optional(primary).await?;
        let walsender = pid.and_then(|pid| Some((pid, cpu_seconds(Some(pid))?, cpu_seconds(None)?)));
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
        Ok(Self { stop, lag, readers, pause, standby_url: standby_url.to_owned(), walsender })
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
            walsender_cpu_s: 0.0,
            machine_busy_cpu_s: 0.0,
        };
        if let Some((pid, walsender, machine)) = self.walsender {
            figures.walsender_cpu_s = cpu_seconds(Some(pid)).map_or(0.0, |now| now - walsender);
            figures.machine_busy_cpu_s = cpu_seconds(None).map_or(0.0, |now| now - machine);
        }
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
