//! Command-line arguments both binaries take: where PostgreSQL, NATS and the registry are.

use std::{path::PathBuf, time::Duration};

use crate::ops::{
    credentials::{DatabaseCredentials, NatsCredentials},
    telemetry::LogFormat,
};

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
    /// Copies of the jobs stream and of the workers' consumer on a JetStream cluster (3 on three
    /// nodes: jobs survive the loss of one); every process of a deployment needs the same value,
    /// and an existing stream with another count is an error.
    #[arg(long, global = true, env = "KUBECENSUS_STREAM_REPLICAS", default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=5))]
    pub stream_replicas: usize,
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
    /// The longest an exec credential plugin (a registry entry's `exec`, a kubeconfig user's, the
    /// home cluster's) may run; past it the plugin is killed and the cluster's job fails with
    /// the start of the plugin's stderr.
    #[arg(long, global = true, env = "KUBECENSUS_EXEC_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub exec_timeout: Duration,
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

/// Where read-only commands read (`scheduler report`, the explorer): a hot standby of the
/// database, whose copy is whole per cluster (one swap is one transaction, replayed at once).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReadArgs {
    /// PostgreSQL URL to read from instead of --database-url (a standby: CloudNativePG's `-ro`
    /// service); the same credentials flags apply. How far behind it is:
    /// `SELECT * FROM cluster_freshness`.
    #[arg(long, env = "DATABASE_READ_URL", hide_env_values = true)]
    pub read_database_url: Option<String>,
}

impl ReadArgs {
    /// The read URL, else `common`'s database URL.
    pub fn url<'a>(&'a self, common: &'a CommonArgs) -> &'a str {
        self.read_database_url.as_deref().unwrap_or(&common.database_url)
    }
}

/// Where to find clusters' Secrets, each a flag with an environment fallback.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HomeArgs {
    /// A kubeconfig reaching the home cluster; in a pod, its service account is used without it.
    #[arg(long, global = true, env = "KUBECENSUS_HOME_KUBECONFIG")]
    pub home_kubeconfig: Option<PathBuf>,
    /// The context of `--home-kubeconfig`; its current context when absent.
    #[arg(long, global = true, env = "KUBECENSUS_HOME_CONTEXT")]
    pub home_context: Option<String>,
    /// Namespaces holding Argo CD cluster Secrets (repeatable, or separated by `,`).
    #[arg(long = "argocd-namespace", global = true, env = "KUBECENSUS_ARGOCD_NAMESPACES", value_delimiter = ',')]
    pub argocd_namespaces: Vec<String>,
    /// A label selector the Argo CD Secrets must also match (`env=prod`).
    #[arg(long, global = true, env = "KUBECENSUS_ARGOCD_SELECTOR")]
    pub argocd_selector: Option<String>,
    /// Namespaces holding Cluster API `<cluster>-kubeconfig` Secrets (repeatable, or separated by `,`).
    #[arg(long = "capi-namespace", global = true, env = "KUBECENSUS_CAPI_NAMESPACES", value_delimiter = ',')]
    pub capi_namespaces: Vec<String>,
    /// A label selector the Cluster API Secrets must also match.
    #[arg(long, global = true, env = "KUBECENSUS_CAPI_SELECTOR")]
    pub capi_selector: Option<String>,
}

/// How workers run a job: its attempts, their delays and timeout, and how often a job for a
/// cluster the worker does not know is handed back. The worker's settings; `scheduler refresh
/// --wait` takes the same ones (and environment) to derive how long a job can take
/// (`queue::longest_job`).
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
