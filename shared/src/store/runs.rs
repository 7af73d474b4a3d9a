//! The `runs` table: one row per attempt at a job, from `running` to its outcome.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{Result, queue::job::Job};

/// A run's status (`runs.status`): every writer and reader of `runs` goes through this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// In progress; its worker heartbeats.
    Running,
    Succeeded,
    /// Failed for good: no more attempts.
    Failed,
    /// Failed; the job goes back to the queue for another attempt.
    Retrying,
    /// The cluster does not serve the resource.
    Skipped,
    /// A later-scheduled job's rows were already in, or this job's own (a redelivery after a
    /// lost ack).
    Superseded,
    /// The job message itself was unusable (bad JSON, unknown cluster or table).
    Rejected,
    /// The worker stopped before the job ended and gave it back to the queue; it cost no attempt.
    HandedBack,
    /// The worker stopped heartbeating (it was killed); the queue redelivers the job.
    Abandoned,
    /// Not a job: the cluster was missing from every registry source for `--prune-after`, and
    /// its rows were deleted ([`crate::store::prune`]).
    Pruned,
}

impl Status {
    /// The status as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Retrying => "retrying",
            Self::Skipped => "skipped",
            Self::Superseded => "superseded",
            Self::Rejected => "rejected",
            Self::HandedBack => "handed_back",
            Self::Abandoned => "abandoned",
            Self::Pruned => "pruned",
        }
    }
}

/// Rows of a (cluster, resource) refresh, across the resource's tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCounts {
    /// Rows the cluster has after the refresh (`runs.rows_written`).
    pub total: u64,
    /// Rows written because they are new or changed.
    pub inserted: u64,
    /// Rows deleted because their object changed or is gone.
    pub deleted: u64,
}

impl std::ops::Add for RowCounts {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            total: self.total + other.total,
            inserted: self.inserted + other.inserted,
            deleted: self.deleted + other.deleted,
        }
    }
}

/// The outcome recorded when an attempt ends.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    /// Set when rows were written.
    pub rows: Option<RowCounts>,
    pub objects_skipped: u32,
    /// Throttled answers the attempt waited out (`runs.throttled`).
    pub throttled: u32,
    pub error: Option<String>,
}

impl Outcome {
    /// A success; its row counts are filled in by the transaction that writes the rows.
    pub fn succeeded() -> Self {
        Self { status: Status::Succeeded, rows: None, objects_skipped: 0, throttled: 0, error: None }
    }

    pub fn failed(status: Status, error: String) -> Self {
        Self { status, rows: None, objects_skipped: 0, throttled: 0, error: Some(error) }
    }
}

/// Records the start of an attempt; returns the run id and the attempt's number: NATS's
/// delivery count `delivered` less the deliveries that were handed back (those cost no attempt;
/// `runs.deliveries` of its `handed_back` runs).
pub async fn start(pool: &PgPool, job: &Job, delivered: u32, worker_id: &str) -> Result<(Uuid, u32)> {
    let run_id = Uuid::new_v4();
    let attempt: i32 = sqlx::query_scalar(
        "INSERT INTO runs (run_id, job_id, cluster_name, table_name, trigger, attempt, worker_id, scheduled_at, status)
         VALUES ($1, $2, $3, $4, $5,
                 greatest(1, $6 - (SELECT coalesce(sum(deliveries), 0) FROM runs WHERE job_id = $2 AND status = $9)),
                 $7, $8, $10)
         RETURNING attempt",
    )
    .bind(run_id)
    .bind(job.id)
    .bind(&job.cluster)
    .bind(&job.table)
    .bind(job.trigger.as_str())
    .bind(delivered as i32)
    .bind(worker_id)
    .bind(job.scheduled_at)
    .bind(Status::HandedBack.as_str())
    .bind(Status::Running.as_str())
    .fetch_one(pool)
    .await?;
    Ok((run_id, attempt as u32))
}

/// Records that a running attempt is alive (the sweep spares it).
pub async fn heartbeat(pool: &PgPool, run_id: Uuid) -> Result<()> {
    sqlx::query("UPDATE runs SET heartbeat_at = now() WHERE run_id = $1 AND status = $2")
        .bind(run_id)
        .bind(Status::Running.as_str())
        .execute(pool)
        .await?;
    Ok(())
}

/// Records how an attempt ended. Called inside the swap transaction on success. A run's final
/// status is written once, and only over `running`: a later call (an error after the rows were
/// committed) or a run the sweep already marked `abandoned` is left as it is.
pub async fn finish(conn: &mut PgConnection, run_id: Uuid, outcome: &Outcome) -> Result<()> {
    sqlx::query(
        "UPDATE runs SET status = $2, rows_written = $3, objects_skipped = objects_skipped + $4, error = $5,
                rows_inserted = $6, rows_deleted = $7, throttled = $9, finished_at = clock_timestamp(),
                heartbeat_at = clock_timestamp()
         WHERE run_id = $1 AND status = $8",
    )
    .bind(run_id)
    .bind(outcome.status.as_str())
    .bind(outcome.rows.map(|rows| rows.total as i64))
    .bind(outcome.objects_skipped as i32)
    .bind(&outcome.error)
    .bind(outcome.rows.map(|rows| rows.inserted as i64))
    .bind(outcome.rows.map(|rows| rows.deleted as i64))
    .bind(Status::Running.as_str())
    .bind(outcome.throttled as i32)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records a job message that was rejected before any attempt could start (not JSON, an
/// unknown cluster or table, the wrong subject, a time too far ahead): a finished run with what
/// could be read of it.
pub async fn record_rejected(
    pool: &PgPool,
    job: Option<&Job>,
    subject: &str,
    worker_id: &str,
    error: &str,
) -> Result<()> {
    record_unstarted(pool, Uuid::new_v4(), job, subject, worker_id, Status::Rejected, error).await
}

/// Records a job handed back before any attempt could start (its cluster is not in this
/// worker's registry yet): one finished `handed_back` run per job, however often it is handed
/// back, whose `deliveries` counts the hand-backs and whose `error`, `worker_id` and
/// `finished_at` are the last one's. It costs the job no attempt.
pub async fn record_handed_back(pool: &PgPool, job: &Job, subject: &str, worker_id: &str, why: &str) -> Result<()> {
    let run_id = Uuid::new_v5(&job.id, b"handed back: unknown cluster");
    record_unstarted(pool, run_id, Some(job), subject, worker_id, Status::HandedBack, why).await
}

/// Inserts a finished run `run_id`; when it exists, counts one more delivery in it instead. A
/// `handed_back` run starts at its job's `scheduled_at`, so the run it adds to is found by its
/// whole key (`runs` is partitioned by `started_at`, which its primary key includes).
async fn record_unstarted(
    pool: &PgPool,
    run_id: Uuid,
    job: Option<&Job>,
    subject: &str,
    worker_id: &str,
    status: Status,
    error: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO runs (run_id, job_id, cluster_name, table_name, trigger, attempt, worker_id, scheduled_at,
                           started_at, finished_at, status, error)
         VALUES ($1, $2, $3, $4, $5, 1, $6, coalesce($7, now()), coalesce($10, now()), now(), $9, $8)
         ON CONFLICT (run_id, started_at) DO UPDATE SET deliveries = runs.deliveries + 1, worker_id = EXCLUDED.worker_id,
           finished_at = EXCLUDED.finished_at, error = EXCLUDED.error",
    )
    .bind(run_id)
    .bind(job.map(|job| job.id))
    .bind(job.map(|job| &job.cluster))
    .bind(job.map(|job| &job.table))
    .bind(job.map(|job| job.trigger.as_str()))
    .bind(worker_id)
    .bind(job.map(|job| job.scheduled_at))
    .bind(format!("{error} (subject {subject})"))
    .bind(status.as_str())
    .bind((status == Status::HandedBack).then(|| job.map(|job| job.scheduled_at)).flatten())
    .execute(pool)
    .await?;
    Ok(())
}
