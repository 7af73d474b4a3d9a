//! NATS JetStream: the work-queue stream jobs flow through, and the one consumer workers share.
//!
//! The stream keeps at most one message per subject (`discard_new_per_subject`), so at most one
//! job per (cluster, table) is pending or running: a slow cluster never piles up work. Messages
//! carry a `Nats-Msg-Id` so a repeated publish of the same tick is dropped as a duplicate, which
//! also makes a publish safe to retry: on a JetStream cluster, a publish during a leader election
//! (4 to 9 s without a stream leader, nats-server's `server/raft.go`) is tried again with the same
//! id for [`PUBLISH_RETRY_FOR`], well inside the duplicate window. The stream and the consumer
//! have `--stream-replicas` copies (`stream.rs` checks an existing stream's settings).

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, PullConsumer, pull},
    context::{ConsumerInfoErrorKind, PublishErrorKind},
};

use async_nats::ConnectErrorKind;

use crate::{
    Error, Result,
    ops::{
        args::{CommonArgs, JobArgs},
        credentials::{NatsCredentials, nats_url::NatsServers},
    },
};

pub mod job;
mod stream;

use job::Job;

/// Where jobs go: a stream name and the prefix of its subjects, so that several deployments (or
/// tests) can share one NATS server.
#[derive(Debug, Clone)]
pub struct Queue {
    pub stream: String,
    pub subject_prefix: String,
    /// Copies of the stream and of the workers' consumer (`--stream-replicas`): 1 on one
    /// server, 3 on a three-node cluster (a Raft group of 3 survives the loss of one node).
    pub replicas: usize,
}

/// The name of the durable consumer every worker replica pulls from.
pub const CONSUMER: &str = "workers";
/// How long NATS remembers a `Nats-Msg-Id`.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long a publish that fails (no stream leader during an election, a reconnecting client)
/// is tried again with the same `Nats-Msg-Id`: one election and a margin, inside
/// [`DUPLICATE_WINDOW`] so a retry of a publish that was stored is dropped as a duplicate.
pub const PUBLISH_RETRY_FOR: Duration = Duration::from_secs(30);
/// A backstop against a job that is never acked nor terminated: it leaves the stream after this.
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// A job for a cluster a worker has not learned yet makes it read its registry's sources again,
/// at most this often, and is handed back to the queue for this long.
pub const UNKNOWN_CLUSTER_RETRY: Duration = Duration::from_secs(5);

/// How a failed job is tried again: up to `max_attempts` attempts in all, the delay starting at
/// `base` and doubling with each attempt up to `cap`; a cluster's `Retry-After` wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    /// The delay before the attempt after `attempt` (1-based), or `None` when `attempt` was the
    /// last.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        Some(retry_after.unwrap_or_else(|| self.base.saturating_mul(1 << (attempt.max(1) - 1).min(16)).min(self.cap)))
    }
}

/// The longest delay between attempts of a failed job.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

impl From<&JobArgs> for RetryPolicy {
    /// The attempts and delays of the command line, the delays capped at 5 minutes.
    fn from(args: &JobArgs) -> Self {
        Self { max_attempts: args.max_attempts, base: args.retry_delay, cap: MAX_RETRY_DELAY }
    }
}

/// The longest a job run as `args` says can take from its first delivery to its last outcome,
/// not counting time in the queue: every hand-back's delay ([`UNKNOWN_CLUSTER_RETRY`]), every
/// attempt's timeout, and the delays between attempts (a cluster's `Retry-After` aside).
pub fn longest_job(args: &JobArgs) -> Duration {
    let policy = RetryPolicy::from(args);
    let delays: Duration = (1..args.max_attempts).filter_map(|attempt| policy.delay(attempt, None)).sum();
    UNKNOWN_CLUSTER_RETRY.saturating_mul(args.unknown_cluster_hand_backs)
        + args.job_timeout.saturating_mul(args.max_attempts.max(1))
        + delays
}

/// What happened to a published job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    Queued,
    /// A job for the same (cluster, table) is already pending or running.
    AlreadyPending,
    /// The same tick was already published (by this or another scheduler).
    Duplicate,
}

impl Published {
    /// The `result` label of `kubecensus_jobs_published_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::AlreadyPending => "already_pending",
            Self::Duplicate => "duplicate",
        }
    }
}

/// The shared consumer's backlog (JetStream's consumer info).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Jobs in the stream not yet delivered (`num_pending`).
    pub pending: u64,
    /// Jobs delivered and not yet acked or terminated (`num_ack_pending`).
    pub ack_pending: u64,
}

/// Connects to NATS with `credentials`. A server that refuses the credentials or whose
/// certificate fails verification is an error at once (trying again cannot help); a server that
/// cannot be reached yet is tried again in the background, so a process may start before NATS.
/// Connection events are logged.
pub async fn connect(url: &str, credentials: &NatsCredentials) -> Result<async_nats::Client> {
    let servers = NatsServers::parse(url).map_err(Error::nats_setting)?;
    let shown = servers.shown.as_str();
    let with_events = |options: async_nats::ConnectOptions| {
        options.event_callback(|event| async move { tracing::info!(%event, "nats") })
    };
    match with_events(credentials.connect_options(&servers)?).connect(servers.addresses.clone()).await {
        Ok(client) => return Ok(client),
        Err(err) => match err.kind() {
            ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
                let what = match credentials.method(&servers) {
                    Some(method) => format!("NATS at {shown} refused the credentials ({method})"),
                    None => format!(
                        "NATS at {shown} asks for credentials and none were given (in NATS_URL, as \
                         nats://user:password@host or nats://token@host, or with a --nats-* flag)"
                    ),
                };
                return Err(Error::nats(what, err));
            }
            _ if is_tls_failure(&err) => {
                return Err(Error::nats(format!("cannot connect to NATS at {shown}"), err));
            }
            _ => tracing::warn!(url = shown, %err, "NATS cannot be reached yet; connecting in the background"),
        },
    }
    with_events(credentials.connect_options(&servers)?)
        .retry_on_initial_connect()
        .connect(servers.addresses)
        .await
        .map_err(|err| Error::nats(format!("cannot connect to NATS at {shown}"), err))
}

/// Whether a connection failed on TLS: its settings, or the server's certificate (a handshake
/// error comes as an I/O error around a `rustls::Error`) or a bad URL; trying again cannot help.
fn is_tls_failure(err: &async_nats::ConnectError) -> bool {
    matches!(err.kind(), ConnectErrorKind::Tls | ConnectErrorKind::ServerParse)
        || std::error::Error::source(err)
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<async_nats::rustls::Error>())
}

impl From<&CommonArgs> for Queue {
    /// The stream and subject prefix of the command line.
    fn from(args: &CommonArgs) -> Self {
        Self {
            stream: args.stream.clone(),
            subject_prefix: args.subject_prefix.clone(),
            replicas: args.stream_replicas,
        }
    }
}

impl Queue {
    fn subjects(&self) -> String {
        format!("{}.jobs.>", self.subject_prefix)
    }

    /// The shared durable pull consumer, created on first use. `ack_wait` is how long a delivered
    /// job may go without an ack or a progress ack before NATS redelivers it (a dead worker's
    /// jobs come back after it); it applies when the consumer is created.
    /// NATS errors are tried again for [`PUBLISH_RETRY_FOR`] (a cluster electing leaders).
    pub async fn consumer(&self, js: &jetstream::Context, ack_wait: Duration) -> Result<PullConsumer> {
        through_elections(|| self.consumer_once(js, ack_wait)).await
    }

    async fn consumer_once(&self, js: &jetstream::Context, ack_wait: Duration) -> Result<PullConsumer> {
        self.ensure_stream_once(js).await?;
        let stream =
            js.get_stream(&self.stream).await.map_err(|err| Error::nats(format!("stream {}", self.stream), err))?;
        stream
            .get_or_create_consumer(
                CONSUMER,
                pull::Config {
                    durable_name: Some(CONSUMER.to_owned()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait,
                    // Attempts are counted and ended by the worker (Nak with delay, then Term).
                    max_deliver: -1,
                    max_ack_pending: 10_000,
                    num_replicas: self.replicas,
                    ..Default::default()
                },
            )
            .await
            .map_err(|err| Error::nats(format!("consumer {CONSUMER} on {}", self.stream), err))
    }

    /// The shared consumer's backlog. Before the first worker has created the consumer, every
    /// job in the stream is pending.
    pub async fn backlog(&self, js: &jetstream::Context) -> Result<Backlog> {
        let stream =
            js.get_stream(&self.stream).await.map_err(|err| Error::nats(format!("stream {}", self.stream), err))?;
        match stream.consumer_info(CONSUMER).await {
            Ok(info) => Ok(Backlog { pending: info.num_pending, ack_pending: info.num_ack_pending as u64 }),
            Err(err) if err.kind() == ConsumerInfoErrorKind::NotFound => {
                Ok(Backlog { pending: stream.cached_info().state.messages, ack_pending: 0 })
            }
            Err(err) => Err(Error::nats(format!("consumer {CONSUMER} on {}", self.stream), err)),
        }
    }

    /// Publishes a job and waits for the stream's answer. A failed publish is tried again with
    /// the same `Nats-Msg-Id` for [`PUBLISH_RETRY_FOR`] (doubling delays from 100 ms to 2 s);
    /// when the stream is gone (a NATS server restarted with an empty store), it is created
    /// again first.
    pub async fn publish(&self, js: &jetstream::Context, job: &Job) -> Result<Published> {
        let mut backoff = Backoff::new();
        loop {
            let failure = match self.publish_once(js, job).await {
                Ok(published) => return Ok(published),
                Err(PublishFailure::StreamNotFound) => match self.ensure_stream_once(js).await {
                    Ok(()) => PublishFailure::StreamNotFound,
                    Err(err) => PublishFailure::Stream(err),
                },
                Err(failure) => failure,
            };
            if !failure.may_pass() || !backoff.wait().await {
                return Err(failure.into_error(self, job));
            }
            tracing::warn!(
                stream = self.stream,
                subject = job.subject(&self.subject_prefix),
                "publish failed; trying again"
            );
        }
    }

    async fn publish_once(&self, js: &jetstream::Context, job: &Job) -> std::result::Result<Published, PublishFailure> {
        let message =
            jetstream::message::PublishMessage::build().payload(job.to_json().into()).message_id(job.message_id());
        let subject = job.subject(&self.subject_prefix);
        let outcome = match js.send_publish(subject.clone(), message).await {
            Ok(ack) => ack.await,
            Err(err) => Err(err),
        };
        match outcome {
            Ok(ack) if ack.duplicate => Ok(Published::Duplicate),
            Ok(_) => Ok(Published::Queued),
            Err(err) if err.kind() == PublishErrorKind::Other && is_subject_full(&err) => Ok(Published::AlreadyPending),
            Err(err) if err.kind() == PublishErrorKind::StreamNotFound => Err(PublishFailure::StreamNotFound),
            Err(err) => Err(PublishFailure::Other(err)),
        }
    }
}

/// Runs `attempt` again while it fails with [`Error::Nats`] (a JetStream cluster without a leader
/// for the seconds of an election, a client reconnecting), as [`Backoff`] says; any other error
/// and the last are returned.
pub(crate) async fn through_elections<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = Backoff::new();
    loop {
        match attempt().await {
            Err(err @ Error::Nats { .. }) => {
                if !backoff.wait().await {
                    return Err(err);
                }
                tracing::warn!(%err, "NATS did not answer; trying again");
            }
            result => return result,
        }
    }
}

/// The waits between tries of a request NATS may fail during an election: doubling from 100 ms
/// to 2 s, for [`PUBLISH_RETRY_FOR`] in all.
struct Backoff {
    deadline: tokio::time::Instant,
    delay: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { deadline: tokio::time::Instant::now() + PUBLISH_RETRY_FOR, delay: Duration::from_millis(100) }
    }

    /// Waits the next delay; `false` (at once) when it would end past the deadline.
    async fn wait(&mut self) -> bool {
        if tokio::time::Instant::now() + self.delay > self.deadline {
            return false;
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(2));
        true
    }
}

/// Why one publish failed.
enum PublishFailure {
    /// No stream takes the subject (NATS answered "no responders").
    StreamNotFound,
    /// The stream could not be read or made again.
    Stream(Error),
    Other(jetstream::context::PublishError),
}

impl PublishFailure {
    /// Whether trying again may succeed: not for a message the stream refuses whatever happens
    /// (too large, a wrong expected sequence), nor for a stream with other settings.
    fn may_pass(&self) -> bool {
        match self {
            Self::StreamNotFound => true,
            Self::Stream(err) => matches!(err, Error::Nats { .. }),
            Self::Other(err) => !matches!(
                err.kind(),
                PublishErrorKind::MaxPayloadExceeded
                    | PublishErrorKind::WrongLastMessageId
                    | PublishErrorKind::WrongLastSequence
            ),
        }
    }

    fn into_error(self, queue: &Queue, job: &Job) -> Error {
        let subject = job.subject(&queue.subject_prefix);
        match self {
            Self::StreamNotFound => {
                Error::nats(format!("cannot publish {subject}"), format!("no stream {}", queue.stream))
            }
            Self::Stream(err) => err,
            Self::Other(err) => Error::nats(format!("cannot publish {subject}"), err),
        }
    }
}

/// Whether a publish was refused because the subject already holds a message (err_code 10077).
fn is_subject_full(err: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|js_err| js_err.error_code() == jetstream::ErrorCode::STREAM_STORE_FAILED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_the_cap_and_end_after_the_last_attempt() {
        let policy = RetryPolicy { max_attempts: 4, base: Duration::from_secs(5), cap: Duration::from_secs(12) };
        assert_eq!(policy.delay(1, None), Some(Duration::from_secs(5)));
        assert_eq!(policy.delay(2, None), Some(Duration::from_secs(10)));
        assert_eq!(policy.delay(3, None), Some(Duration::from_secs(12)));
        assert_eq!(policy.delay(3, Some(Duration::from_secs(1))), Some(Duration::from_secs(1)));
        assert_eq!(policy.delay(4, None), None);
    }

    #[test]
    fn the_longest_job_adds_hand_backs_attempts_and_the_delays_between_them() {
        let args = JobArgs {
            max_attempts: 3,
            retry_delay: Duration::from_secs(5),
            job_timeout: Duration::from_secs(60),
            unknown_cluster_hand_backs: 2,
        };
        // 2 x 5 s handed back, 3 x 60 s attempts, 5 s and 10 s between them.
        assert_eq!(longest_job(&args), Duration::from_secs(10 + 180 + 15));
    }
}
