//! `bench-scale --nats-cluster`: the first load on a three-node JetStream cluster on loopback
//! ([`NatsCluster`]), the jobs stream and the workers' consumer with three replicas, and the
//! stream's leader killed (SIGKILL) once [`KILL_AT`] of the round's jobs have finished, then
//! started again with its store kept [`OUTAGE`] later. Measured from `runs`: what became of every
//! job ([`JobOutcomes`]: none lost, none run twice to completion) and how long throughput took
//! to come back ([`FailoverFigures::throughput_back_s`]).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use kubecensus::queue::CONSUMER;

use super::{refresh::PublishedRound, report::Verdict};
use crate::nats_cluster::{JobOutcomes, NatsCluster, job_outcomes};

/// Copies of the stream and of the consumer: one per node.
pub const REPLICAS: usize = 3;

/// The share of the round's jobs finished (a run of theirs ended) when the leader is killed.
pub const KILL_AT: f64 = 0.4;

/// The target: throughput back within this many seconds of the kill.
const BACK_WITHIN_S: f64 = 15.0;

/// How long the killed node stays down: about the time Kubernetes takes to start a crashed pod
/// again (its restart back-off begins at 10 s), longer than an election (4 to 9 s).
pub const OUTAGE: Duration = Duration::from_secs(30);

/// How long to wait for the cluster to heal after the node is back.
const HEAL_WITHIN: Duration = Duration::from_secs(120);

/// What was done to the cluster during the round, and when (the database's clock).
#[derive(Debug, Clone)]
pub struct Kill {
    round: PublishedRound,
    node: String,
    consumer_leader: String,
    at: DateTime<Utc>,
    jobs_done: i64,
    restarted_at: DateTime<Utc>,
    healed_s: Option<f64>,
}

/// What the round came to through the kill.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverFigures {
    pub replicas: usize,
    /// The node killed: the stream's leader at the time; and the consumer's leader then (when
    /// another node, the workers' fetches and acks went on through it).
    pub killed_node: String,
    pub consumer_leader: String,
    pub jobs_published: usize,
    /// Jobs finished when the leader was killed, and seconds from the round's publish to the kill.
    pub jobs_done_at_kill: i64,
    pub killed_after_s: f64,
    pub outcomes: JobOutcomes,
    /// Runs succeeded before the kill over the time from the first of them to the kill.
    pub pre_kill_jobs_per_s: f64,
    /// From the kill to the end of the first run started after it that succeeded: jobs flow again
    /// (the fault tests' criterion).
    pub first_run_after_kill_s: Option<f64>,
    /// From the kill to the end of the first whole second after it (windows `[kill + k s, kill +
    /// k + 1 s)`) in which runs started after the kill succeeded at half `pre_kill_jobs_per_s` or
    /// more; runs started before the kill (in flight when it came) do not count. None: not
    /// before the round's last run ended.
    pub throughput_back_s: Option<f64>,
    /// From the kill to the node's restart (store kept), and from the restart until the stream
    /// and the consumer had a leader and every replica current (None: not within 120 s).
    pub restarted_after_s: f64,
    pub healed_after_restart_s: Option<f64>,
}

/// The database's clock now.
async fn now(pool: &PgPool) -> anyhow::Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(pool).await?)
}

/// Beside the round: kills `stream`'s leader once [`KILL_AT`] of `round`'s jobs have finished,
/// starts it again with its store [`OUTAGE`] later (the round going on meanwhile), and waits up
/// to 120 s for the cluster to heal.
pub async fn kill_stream_leader(
    nats: &mut NatsCluster,
    pool: &PgPool,
    stream: &str,
    round: PublishedRound,
) -> anyhow::Result<Kill> {
    let threshold = (round.jobs.len() as f64 * KILL_AT).ceil() as i64;
    let jobs_done = loop {
        // Jobs with a run ended, whatever its outcome: every job gets there, so this ends.
        let done: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT job_id) FROM runs WHERE started_at >= $1 AND finished_at IS NOT NULL",
        )
        .bind(round.since)
        .fetch_one(pool)
        .await?;
        if done >= threshold {
            break done;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let consumer_leader = nats.leader(stream, Some(CONSUMER)).await?;
    let node = nats.leader(stream, None).await?;
    let at = now(pool).await?;
    nats.kill(&node)?;
    tracing::info!(node, consumer_leader, jobs_done, jobs = round.jobs.len(), "killed the stream's leader");
    tokio::time::sleep(OUTAGE).await;
    nats.start_node(&node, false).await?;
    let restarted_at = now(pool).await?;
    let restarted = Instant::now();
    let healed_s = match nats.wait_healed(stream, CONSUMER, HEAL_WITHIN).await {
        Ok(()) => Some(restarted.elapsed().as_secs_f64()),
        Err(err) => {
            tracing::warn!(%err, "the cluster did not heal");
            None
        }
    };
    tracing::info!(node, healed_s, "the node is back, its store kept");
    Ok(Kill { round, node, consumer_leader, at, jobs_done, restarted_at, healed_s })
}

impl Kill {
    /// The figures, read from `runs` once the round has ended.
    pub async fn figures(&self, pool: &PgPool) -> anyhow::Result<FailoverFigures> {
        let outcomes = job_outcomes(pool, &self.round.jobs).await?;
        let seconds = |sql: &'static str| sqlx::query_scalar::<_, f64>(sql).bind(self.at).bind(&self.round.jobs[..]);
        // Runs of the round's jobs that succeeded: before the kill, seconds from their end to the
        // kill; after, for runs started after the kill, seconds from the kill to their end.
        let before: Vec<f64> = seconds(
            "SELECT extract(epoch FROM $1 - finished_at)::float8 FROM runs JOIN unnest($2::uuid[]) j(job_id) USING (job_id)
             WHERE status = 'succeeded' AND finished_at < $1",
        )
        .fetch_all(pool)
        .await?;
        let after: Vec<f64> = seconds(
            "SELECT extract(epoch FROM finished_at - $1)::float8 FROM runs JOIN unnest($2::uuid[]) j(job_id) USING (job_id)
             WHERE started_at > $1 AND status = 'succeeded' ORDER BY finished_at",
        )
        .fetch_all(pool)
        .await?;
        let span = before.iter().copied().fold(0.0, f64::max);
        let pre_kill_jobs_per_s = if span > 0.0 { before.len() as f64 / span } else { 0.0 };
        let elapsed = |later: DateTime<Utc>| (later - self.at).as_seconds_f64();
        Ok(FailoverFigures {
            replicas: REPLICAS,
            killed_node: self.node.clone(),
            consumer_leader: self.consumer_leader.clone(),
            jobs_published: self.round.jobs.len(),
            jobs_done_at_kill: self.jobs_done,
            killed_after_s: (self.at - self.round.since).as_seconds_f64(),
            outcomes,
            pre_kill_jobs_per_s,
            first_run_after_kill_s: after.first().copied(),
            throughput_back_s: throughput_back(&after, pre_kill_jobs_per_s / 2.0),
            restarted_after_s: elapsed(self.restarted_at),
            healed_after_restart_s: self.healed_s,
        })
    }
}

/// The end of the first 1 s window from 0 (the kill) in which at least `rate` of `ends` (seconds
/// after the kill, sorted) fall, in seconds; None if no window before the last end has.
pub fn throughput_back(ends: &[f64], rate: f64) -> Option<f64> {
    let last = ends.last()?;
    (0..=last.floor() as usize).find_map(|k| {
        let (from, to) = (k as f64, k as f64 + 1.0);
        let count = ends.iter().filter(|end| (from..to).contains(*end)).count();
        (count as f64 >= rate).then_some(to)
    })
}

/// The targets for the run: no job lost (every (cluster, table) ended `succeeded`,
/// `superseded`, or `skipped` where the cluster does not serve the resource), none run twice to
/// completion, throughput back within 15 s of the kill.
pub fn verdicts(figures: &FailoverFigures) -> Vec<Verdict> {
    let outcomes = &figures.outcomes;
    vec![
        Verdict {
            target: "JetStream cluster, stream leader killed once: no lost job".into(),
            measured: format!(
                "{} lost of {} jobs; final statuses {:?}",
                outcomes.lost.len(),
                outcomes.jobs,
                outcomes.final_statuses
            ),
            met: outcomes.lost.is_empty() && outcomes.not_ended_well() == 0,
        },
        Verdict {
            target: "JetStream cluster, stream leader killed once: no job run twice to completion".into(),
            measured: format!("{} jobs succeeded twice or more", outcomes.twice.len()),
            met: outcomes.twice.is_empty(),
        },
        Verdict {
            target: format!("JetStream cluster: throughput back within {BACK_WITHIN_S:.0} s of the kill"),
            measured: match figures.throughput_back_s {
                Some(back) => format!("{back:.0} s (half the pre-kill {:.1} jobs/s)", figures.pre_kill_jobs_per_s),
                None => "not before the round ended".into(),
            },
            met: figures.throughput_back_s.is_some_and(|back| back <= BACK_WITHIN_S),
        },
    ]
}

/// The figures as a Markdown paragraph.
pub fn markdown(figures: &FailoverFigures) -> String {
    let outcomes = &figures.outcomes;
    let optional = |s: Option<f64>| s.map_or_else(|| "–".to_owned(), |s| format!("{s:.1} s"));
    format!(
        "\nOn a three-node JetStream cluster (stream and consumer with {} replicas), the first load's stream \
         leader ({}; the consumer's: {}) killed {:.1} s in, with {} of {} jobs finished ({:.1} jobs/s before): final statuses \
         {:?}, **{} lost**, **{} run twice to completion**; the first job run start to end after the kill \
         ended {} after it, throughput back (a 1 s window at half the pre-kill rate, runs started after the \
         kill) {} after it; the node restarted with its store {:.1} s after the kill, the cluster healed {} \
         later.\n",
        figures.replicas,
        figures.killed_node,
        figures.consumer_leader,
        figures.killed_after_s,
        figures.jobs_done_at_kill,
        figures.jobs_published,
        figures.pre_kill_jobs_per_s,
        outcomes.final_statuses,
        outcomes.lost.len(),
        outcomes.twice.len(),
        optional(figures.first_run_after_kill_s),
        optional(figures.throughput_back_s),
        figures.restarted_after_s,
        optional(figures.healed_after_restart_s),
    )
}

#[cfg(test)]
mod tests {
    use super::throughput_back;

    #[test]
    fn throughput_is_back_at_the_end_of_the_first_window_reaching_the_rate() {
        let ends = [0.2, 3.1, 5.0, 5.5, 5.9, 6.2];
        assert_eq!(throughput_back(&ends, 3.0), Some(6.0));
        assert_eq!(throughput_back(&ends, 1.0), Some(1.0));
        assert_eq!(throughput_back(&ends, 4.0), None);
        assert_eq!(throughput_back(&[], 1.0), None);
    }
}
