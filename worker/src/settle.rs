//! How a job ends: its outcome recorded in `runs` (and in its metrics timer) and the queue told
//! what to do with its message: ack, nak with a delay (retry, hand back) or term (skip, reject,
//! fail), as [`kubecensus::Error::disposition`] decides from the error's cause.

use async_nats::jetstream::{AckKind, Message};
use kubecensus::{
    Error, Result,
    error::Disposition,
    ops::metrics::{self, JobTimer},
    queue::{UNKNOWN_CLUSTER_RETRY, job::Job},
    store::ReplaceOutcome,
    store::runs::{self, Outcome, Status},
};
use uuid::Uuid;

use crate::poll::Poller;

impl Poller {
    /// Records the outcome (in `runs` and in `timer`) of the run's `attempt`, which was
    /// `throttled` that many times, and tells the queue what to do with the message. A replace
    /// has already recorded its run in its own transaction (`store::replace`), so it is only
    /// acked.
    pub(crate) async fn settle(
        &self,
        message: &Message,
        job: &Job,
        (attempt, throttled): (u32, u32),
        run_id: Uuid,
        result: Result<ReplaceOutcome>,
        mut timer: JobTimer,
    ) {
        let (mut outcome, ack_kind) = match result {
            Ok(ReplaceOutcome::Replaced(rows)) => {
                tracing::info!(rows = rows.total, inserted = rows.inserted, deleted = rows.deleted, "replaced");
                timer.set_outcome(Status::Succeeded.as_str());
                return ack(message, AckKind::Ack).await;
            }
            Ok(ReplaceOutcome::Superseded { current }) => {
                let why = format!("rows of a job scheduled later ({current}) were already in");
                tracing::info!("{why}");
                (Outcome::failed(Status::Superseded, why), AckKind::Ack)
            }
            Ok(ReplaceOutcome::AlreadyIn) => {
                let why = "this job's rows were already in (an earlier delivery committed them; its ack was lost)";
                tracing::info!("{why}");
                (Outcome::failed(Status::Superseded, why.to_owned()), AckKind::Ack)
            }
            Err(err) => {
                if err.came_from_cluster()
                    && let Some((_, _, entry)) = self.clients.lock().await.pop(&job.cluster)
                {
                    entry.forget_kept_credentials();
                }
                metrics::worker().job_error(self.catalog.metric_table(&job.table), err.metric_label());
                self.disposition_of(&err, attempt)
            }
        };
        outcome.throttled = throttled;
        timer.set_outcome(outcome.status.as_str());
        let recorded = match self.pool.acquire().await {
            Ok(mut conn) => runs::finish(&mut conn, run_id, &outcome).await,
            Err(err) => Err(err.into()),
        };
        if let Err(err) = recorded {
            tracing::error!(%err, "cannot record the run's outcome");
        }
        ack(message, ack_kind).await;
    }

    /// What to record and tell the queue for a job that failed with `err` on `attempt`.
    pub(crate) fn disposition_of(&self, err: &Error, attempt: u32) -> (Outcome, AckKind) {
        let why = err.to_string();
        match err.disposition() {
            Disposition::HandBack => {
                tracing::info!(%why, "handing the job back to the queue");
                (Outcome::failed(Status::HandedBack, why), AckKind::Nak(None))
            }
            Disposition::Skip => {
                tracing::info!(%why, "skipped");
                (Outcome::failed(Status::Skipped, why), AckKind::Term)
            }
            Disposition::Fail => {
                tracing::error!(%why, error = err.metric_label(), "job failed; another attempt would get the same answer");
                (Outcome::failed(Status::Failed, why), AckKind::Term)
            }
            Disposition::Reject => {
                tracing::warn!(%why, "rejected");
                (Outcome::failed(Status::Rejected, why), AckKind::Term)
            }
            Disposition::Retry { after } => match self.policy.retry.delay(attempt, after) {
                Some(delay) => {
                    tracing::warn!(%why, error = err.metric_label(), ?delay, "attempt failed; retrying");
                    (Outcome::failed(Status::Retrying, why), AckKind::Nak(Some(delay)))
                }
                None => {
                    tracing::error!(%why, error = err.metric_label(), "job failed after its last attempt");
                    (Outcome::failed(Status::Failed, why), AckKind::Term)
                }
            },
        }
    }

    /// A job for a cluster this worker does not know: a cluster just added to a source reaches
    /// every worker within one `--registry-refresh`, so a job scheduled less than two of them
    /// ago is handed back (it costs no attempt) and comes again shortly, at most
    /// `--unknown-cluster-hand-backs` times (its `delivered` count); past either bound it names
    /// a cluster that is not coming and is rejected. Every hand-back of one job is recorded in
    /// the same `runs` row ([`runs::record_handed_back`]).
    pub(crate) async fn unknown_cluster(&self, message: &Message, job: &Job, delivered: u32, mut timer: JobTimer) {
        let age = (chrono::Utc::now() - job.scheduled_at).to_std().unwrap_or_default();
        let why = format!("cluster `{}` is not in this worker's registry", job.cluster);
        let hand_backs = self.policy.unknown_cluster_hand_backs;
        if age > 2 * self.registry_refresh {
            return self.reject(message, Some(job), why, timer).await;
        }
        if delivered > hand_backs {
            let why = format!("{why} after {hand_backs} hand-backs (--unknown-cluster-hand-backs)");
            return self.reject(message, Some(job), why, timer).await;
        }
        timer.set_outcome(Status::HandedBack.as_str());
        tracing::info!(%why, cluster = %job.cluster, delivered, "handing the job back until the registry has its cluster");
        let recorded = runs::record_handed_back(&self.pool, job, &message.subject, &self.worker_id, &why).await;
        if let Err(err) = recorded {
            tracing::error!(%err, "cannot record the handed-back job");
        }
        ack(message, AckKind::Nak(Some(UNKNOWN_CLUSTER_RETRY))).await;
    }

    /// A message that can never succeed: logged, recorded, terminated at once.
    pub(crate) async fn reject(&self, message: &Message, job: Option<&Job>, why: String, mut timer: JobTimer) {
        timer.set_outcome(Status::Rejected.as_str());
        tracing::warn!(subject = %message.subject, %why, "rejected a malformed job message");
        if let Err(err) = runs::record_rejected(&self.pool, job, &message.subject, &self.worker_id, &why).await {
            tracing::error!(%err, "cannot record the rejected job");
        }
        ack(message, AckKind::Term).await;
    }
}

/// Sends an ack of any kind; a failure only means NATS will redeliver, so it is logged.
pub(crate) async fn ack(message: &Message, kind: AckKind) {
    let result = match kind {
        AckKind::Ack => message.double_ack().await,
        kind => message.ack_with(kind).await,
    };
    if let Err(err) = result {
        tracing::warn!(%err, ?kind, "cannot ack the job message; NATS will redeliver it");
    }
}
