//! The scheduler's command line.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use kubecensus::ops::{
    admin::AdminArgs,
    args::{CommonArgs, JobArgs, ReadArgs},
};

/// Publishes poll jobs to JetStream: on a cron per table, or now (`refresh`).
#[derive(Debug, Parser)]
#[command(version)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Served by `run` only: the other commands are brief.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// How `refresh`, `report` and `changes` print: aligned tables for people, or JSON for scripts.
    #[arg(long, global = true, value_enum, default_value_t)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The output format of the commands a person runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the cron loop (the default): one job per (cluster, table) at each table's tick.
    Run {
        /// Override a table's schedule: `kubernetes_pods='0 */2 * * * *'` (6 fields, seconds first).
        #[arg(long = "schedule", value_name = "TABLE=CRON", env = "KUBECENSUS_SCHEDULES", value_delimiter = ';')]
        schedules: Vec<String>,
        /// Only schedule these tables (repeatable); all by default.
        #[arg(long = "table", env = "KUBECENSUS_TABLES", value_delimiter = ',')]
        tables: Vec<String>,
        /// A cluster missing from every registry source this long is pruned: its rows deleted.
        #[arg(long, env = "KUBECENSUS_PRUNE_AFTER", default_value = "1h", value_parser = humantime::parse_duration)]
        prune_after: Duration,
        /// How long `object_changes` and `event_history` keep a row (whole days are dropped).
        #[arg(long, env = "KUBECENSUS_HISTORY_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
        history_retention: Duration,
        /// How long `runs` keeps a row (whole days are dropped).
        #[arg(long, env = "KUBECENSUS_RUNS_RETENTION", default_value = "14d", value_parser = humantime::parse_duration)]
        runs_retention: Duration,
    },
    /// Publish jobs now and say, for each, whether it was queued or one is already pending.
    Refresh {
        /// Only these clusters (repeatable); all by default.
        #[arg(long = "cluster")]
        clusters: Vec<String>,
        /// Only these tables (repeatable); all by default.
        #[arg(long = "table")]
        tables: Vec<String>,
        /// Wait until every queued job has finished, then print the report; past the deadline
        /// (`--wait-timeout`), name the jobs still open and exit with status 3.
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits. Default: the longest a job can take by the workers' job
        /// settings (`--unknown-cluster-hand-backs`, `--max-attempts`, `--job-timeout`,
        /// `--retry-delay`), plus a minute in the queue.
        #[arg(long, value_parser = humantime::parse_duration, requires = "wait")]
        wait_timeout: Option<Duration>,
        /// The workers' job settings (the same flags and environment as theirs), from which the
        /// default `--wait-timeout` is derived.
        #[command(flatten)]
        job: JobArgs,
        /// With `--wait`: print a summary per cluster and the reasons of the jobs that did not
        /// succeed, instead of a line per job.
        #[arg(long, requires = "wait")]
        summary: bool,
    },
    /// Print the latest run of every (cluster, table), pruned clusters left out: status, rows, duration.
    Report {
        /// Print a summary per cluster and the reasons of the runs that did not succeed instead.
        #[arg(long)]
        summary: bool,
        /// Where to read: a standby; its replay lag is printed with the report.
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Print what changed in one cluster lately (`object_changes`), newest first: each object
    /// created, updated or deleted, its resourceVersions and, for the tables with column diffs,
    /// which columns changed.
    Changes {
        /// The cluster.
        #[arg(long)]
        cluster: String,
        /// How far back: changes listed at most this long ago.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        since: Duration,
        /// Only this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Only this table (`kubernetes_deployments`).
        #[arg(long)]
        table: Option<String>,
        /// Where to read: a standby.
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Prune now every cluster missing from every registry source, as `run` does after
    /// `--prune-after`: its rows and snapshots deleted, a `pruned` run recorded.
    Prune,
    /// Serve the fleet explorer: one HTML page and a JSON API, read-only, each request as the
    /// database role of the user an authenticating proxy names (or `--single-user`).
    Explore(crate::explore::ExploreArgs),
    /// Access control: which PostgreSQL role is which Kubernetes user and groups, and why a
    /// role sees what it sees (row-level security, README "Access control").
    Access {
        #[command(subcommand)]
        command: AccessCommand,
    },
    /// Print a registry (YAML) with one cluster per context of a kubeconfig file.
    ImportKubeconfig {
        /// The kubeconfig file.
        kubeconfig: PathBuf,
    },
}

/// `scheduler access ...`.
#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Make a PostgreSQL role (created NOLOGIN if missing) a viewer that is this Kubernetes user
    /// and groups, fleet-wide or in one cluster; it sees what they may list there.
    Grant {
        /// The PostgreSQL role.
        #[arg(long)]
        role: String,
        /// The Kubernetes user name (`alice@example.com`, `system:serviceaccount:ns:name`).
        #[arg(long)]
        user: String,
        /// A Kubernetes group of the user (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Only in this cluster (it takes precedence there over the fleet-wide identity; the
        /// only one that applies on a cluster with `authorization: webhook`).
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Remove a role's identity, fleet-wide or in one cluster.
    Revoke {
        #[arg(long)]
        role: String,
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Print every identity.
    List,
    /// Say which binding lets a role list a resource in a namespace of a cluster, or that none does.
    Explain {
        #[arg(long)]
        role: String,
        #[arg(long)]
        cluster: String,
        /// The namespace; without it, cluster-wide (as cluster-scoped resources need).
        #[arg(long)]
        namespace: Option<String>,
        /// The resource, by its plural (`pods`, `helmreleases`).
        #[arg(long)]
        resource: String,
        /// The API group (`apps`); the core group by default.
        #[arg(long, default_value = "")]
        group: String,
    },
}
