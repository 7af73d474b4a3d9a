//! Command-line arguments both binaries take: where PostgreSQL, NATS and the registry are.

use std::{path::PathBuf, time::Duration};

use crate::{
    model::catalog,
    ops::{
        credentials::{DatabaseCredentials, NatsCredentials},
        telemetry::LogFormat,
    },
    queue::{Queue, RetryPolicy, UNKNOWN_CLUSTER_RETRY},
    source::registry::home::HomeArgs,
};

/// The longest delay between attempts of a failed job.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// Connections and the registry, each with an environment fallback.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// PostgreSQL URL, with libpq's TLS settings (`?sslmode=verify-full&sslrootcert=FILE`). A
    /// password is better given in a file (--database-password-file) or PGPASSWORD than here.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://kubecensus@127.0.0.1:5432/kubecensus"
    )]
    pub database_url: String,
    #[command(flatten)]
    pub database_credentials: DatabaseCredentials,
    /// NATS URL.
    #[arg(long, global = true, env = "NATS_URL", hide_env_values = true, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    #[command(flatten)]
    pub nats_credentials: NatsCredentials,
    /// JetStream stream that holds the jobs.
    #[arg(long, global = true, env = "KUBECENSUS_STREAM", default_value = "KUBECENSUS_JOBS")]
    pub stream: String,
    /// Prefix of the job subjects: `<prefix>.jobs.<cluster>.<table>`.
    #[arg(long, global = true, env = "KUBECENSUS_SUBJECT_PREFIX", default_value = "kubecensus")]
    pub subject_prefix: String,
    /// The cluster registry file (YAML). Optional when clusters come from a home cluster's Secrets.
    #[arg(long, global = true, env = "KUBECENSUS_REGISTRY", default_value = "clusters.yaml")]
    pub registry: PathBuf,
    /// Clusters from Secrets of a home cluster (Argo CD, Cluster API).
    #[command(flatten)]
    pub home: HomeArgs,
    /// How often the registry's sources (the file, the home cluster's Secrets) are read again.
    #[arg(long, global = true, env = "KUBECENSUS_REGISTRY_REFRESH", default_value = "60s", value_parser = humantime::parse_duration)]
    pub registry_refresh: Duration,
    /// Custom resource kinds to collect besides the catalog's: a YAML file listing `{group,
    /// kind}` with an optional `version`, `schedule` and `limit` (objects per kind); a kind of the
    /// catalog's takes the file's settings; `{group: '*', kind: '*'}` is every other kind a
    /// cluster's CRDs define. The scheduler and every worker need the same file.
    #[arg(long, global = true, env = "KUBECENSUS_CUSTOM_RESOURCES")]
    pub custom_resources: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, env = "KUBECENSUS_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
}

impl CommonArgs {
    /// Adds the `--custom-resources` file's kinds to the catalog; first thing, before anything
    /// reads the catalog.
    ///
    /// # Errors
    /// The file cannot be read or holds an invalid kind ([`crate::Error::Catalog`]).
    pub fn configure_catalog(&self) -> crate::Result<()> {
        let Some(path) = &self.custom_resources else { return Ok(()) };
        catalog::configure(&catalog::read_kinds(path)?).map_err(|err| match err {
            crate::Error::Catalog(why) => {
                crate::Error::Catalog(format!("custom resources file {}: {why}", path.display()))
            }
            other => other,
        })
    }

    pub fn queue(&self) -> Queue {
        Queue { stream: self.stream.clone(), subject_prefix: self.subject_prefix.clone() }
    }
}

/// How workers run a job: its attempts, their delays and timeout, and how often a job for a
/// cluster the worker does not know is handed back. The worker's settings; `scheduler refresh
/// --wait` takes the same ones (and environment) to derive how long a job can take.
#[derive(Debug, Clone, clap::Args)]
pub struct JobArgs {
    /// Attempts per job before its failure is final.
    #[arg(long, env = "KUBECENSUS_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,
    /// Delay before the second attempt; it doubles for each further one (capped at 5 minutes).
    #[arg(long, env = "KUBECENSUS_RETRY_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    pub retry_delay: Duration,
    /// The longest a job may run (listing, loading, swapping); a cluster that is too slow fails
    /// its job with this error instead of holding a slot.
    #[arg(long, env = "KUBECENSUS_JOB_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub job_timeout: Duration,
    /// Times a job for a cluster missing from the worker's registry is handed back (every 5 s,
    /// costing no attempt) before it is rejected; the default covers two `--registry-refresh`
    /// intervals of 60 s.
    #[arg(long, env = "KUBECENSUS_UNKNOWN_CLUSTER_HAND_BACKS", default_value_t = 24)]
    pub unknown_cluster_hand_backs: u32,
}

impl JobArgs {
    /// Attempts and delays of failed jobs.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy { max_attempts: self.max_attempts, base: self.retry_delay, cap: MAX_RETRY_DELAY }
    }

    /// The longest a job can take from its first delivery to its last outcome, not counting
    /// time in the queue: every hand-back's delay, every attempt's timeout, and the delays
    /// between attempts (a cluster's `Retry-After` aside).
    pub fn longest_job(&self) -> Duration {
        let policy = self.retry_policy();
        let delays: Duration = (1..self.max_attempts).filter_map(|attempt| policy.delay(attempt, None)).sum();
        UNKNOWN_CLUSTER_RETRY.saturating_mul(self.unknown_cluster_hand_backs)
            + self.job_timeout.saturating_mul(self.max_attempts.max(1))
            + delays
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_job_adds_hand_backs_attempts_and_the_delays_between_them() {
        let args = JobArgs {
            max_attempts: 3,
            retry_delay: Duration::from_secs(5),
            job_timeout: Duration::from_secs(60),
            unknown_cluster_hand_backs: 2,
        };
        // 2 x 5 s handed back, 3 x 60 s attempts, 5 s and 10 s between them.
        assert_eq!(args.longest_job(), Duration::from_secs(10 + 180 + 15));
    }
}
