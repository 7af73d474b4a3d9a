//! The scheduler: parses its command line and runs one command. The cron loop is in
//! `cron_loop.rs`, publishing in `publish.rs`, what people read in `report.rs` and
//! `changes.rs`, the gauges `/metrics` samples in `gauges.rs`, the history tables' retention in
//! `retention.rs`, the start-up check of the events schedule against the clusters' event
//! lifetimes in `event_lifetimes.rs`, `scheduler access` in `access.rs`, the fleet explorer
//! (`explore`) in `explore/`.

mod access;
mod args;
mod changes;
mod cron_loop;
mod event_lifetimes;
mod explore;
mod gauges;
mod live;
mod publish;
mod report;
mod retention;

use std::{
    process::ExitCode,
    sync::{Arc, OnceLock},
    time::Duration,
};

use anyhow::Context;
use chrono::Utc;
use clap::Parser;
use kubecensus::{
    model::catalog::Catalog,
    ops::{
        admin::{self, Health},
        metrics, telemetry,
    },
    queue::job::Trigger,
    queue::{self, Queue},
    source::registry::{Registry, sources::LiveRegistry},
    store,
};

use crate::{
    args::{Args, Command},
    gauges::Gauges,
};

/// Exit status of `refresh --wait` when its deadline passed with jobs still open (1 is any
/// error, 2 a bad command line, as clap exits).
const EXIT_JOBS_OPEN: u8 = 3;
/// Beyond the longest a job can take, how long `refresh --wait` allows by default for the time a
/// job waits in the queue for a free worker.
const QUEUE_ALLOWANCE: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    // The cron loop is a service: it logs what it does. The other commands are for people: their
    // output is on stdout, and only warnings go to stderr (unless RUST_LOG says otherwise).
    let level =
        if matches!(args.command, None | Some(Command::Run { .. } | Command::Explore(_))) { "info" } else { "warn" };
    telemetry::init(args.common.log_format, level);
    run(args).await
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Args { common, admin, output, command } = args;
    let catalog = Arc::new(Catalog::load(common.custom_resources.as_deref())?);
    let command = command.unwrap_or(Command::Run {
        schedules: Vec::new(),
        tables: Vec::new(),
        prune_after: humantime::parse_duration("1h").expect("a valid duration"),
        history_retention: humantime::parse_duration("30d").expect("a valid duration"),
        runs_retention: humantime::parse_duration("14d").expect("a valid duration"),
    });
    if let Command::ImportKubeconfig { kubeconfig } = &command {
        let registry = Registry::from_kubeconfig(kubeconfig, &catalog)?;
        print!("{}", serde_norway::to_string(&registry)?);
        return Ok(ExitCode::SUCCESS);
    }
    // The cron loop is a service and serves the admin endpoint; the other commands are brief.
    let health = Health::new();
    let gauges = Arc::new(OnceLock::new());
    if let Command::Run { .. } = &command {
        let sample = Some(gauges::sampler(gauges.clone()));
        let metrics = admin::Metrics { registry: metrics::scheduler().registry(), sample };
        admin::serve(admin.admin_addr, health.clone(), metrics).await.context("serving the admin endpoint")?;
    }
    if let Command::Explore(explore) = command {
        // The explorer reads what the scheduler and workers made: no migration, no DDL.
        let pool = store::connect(explore.read.url(&common), &common.database_credentials, 16).await?;
        explore::run(explore, admin, pool).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Report { summary, read } = &command {
        let pool = store::connect(read.url(&common), &common.database_credentials, 2).await?;
        report::print(&pool, &catalog, *summary, output).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Changes { cluster, since, namespace, table, read } = &command {
        let pool = store::connect(read.url(&common), &common.database_credentials, 2).await?;
        let selection =
            changes::Selection { cluster, since: *since, namespace: namespace.as_deref(), table: table.as_deref() };
        changes::print(&pool, &selection, output).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let pool = store::connect(&common.database_url, &common.database_credentials, 4).await?;
    // Identities live in the database the scheduler and workers prepared: no registry needed.
    if let Command::Access { command } = &command {
        access::run(&pool, command, output).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let live =
        Arc::new(LiveRegistry::start(&common.registry, &common.home, common.exec_timeout, catalog.clone()).await?);
    let registry = live.current();
    store::prepare(&pool, &catalog, &registry).await?;
    store::sync_clusters(&pool, &registry).await?;
    if let Command::Prune = &command {
        anyhow::ensure!(live.complete(), "a registry source could not be read: no cluster is pruned");
        let present: Vec<String> = registry.clusters.iter().map(|c| c.name.clone()).collect();
        let pruned = store::prune::prune_absent(&pool, &catalog, &present, Duration::ZERO, "scheduler").await?;
        report::pruned(&pruned, output)?;
        return Ok(ExitCode::SUCCESS);
    }
    let nats = queue::connect(&common.nats_url, &common.nats_credentials).await?;
    let js = async_nats::jetstream::new(nats.clone());
    let queue = Queue::from(&common);
    queue.ensure_stream(&js).await?;
    match command {
        Command::Run { schedules, tables, prune_after, history_retention, runs_retention } => {
            let retention = store::retention::Retention { history: history_retention, runs: runs_retention };
            tokio::spawn(retention::run_forever(pool.clone(), retention));
            let schedules = cron_loop::schedules(&catalog, &schedules, &tables)?;
            event_lifetimes::warn_if_too_slow(&schedules, &registry);
            let sources = Gauges {
                catalog: catalog.clone(),
                pool: pool.clone(),
                js: js.clone(),
                queue: queue.clone(),
                live: live.clone(),
                schedules,
            };
            let schedules = &gauges.get_or_init(|| sources).schedules;
            health.started(&pool, &nats);
            let watch = live::Watch { catalog: &catalog, pool: &pool, live: &live, tables: Vec::new(), prune_after };
            cron_loop::run(&js, &queue, watch, common.registry_refresh, schedules, &health).await?
        }
        Command::Refresh { clusters, tables, wait, wait_timeout, summary, job } => {
            for cluster in &clusters {
                anyhow::ensure!(registry.get(cluster).is_some(), "cluster `{cluster}` is not in the registry");
            }
            let selected = registry.clusters.iter().filter(|c| clusters.is_empty() || clusters.contains(&c.name));
            let job_tables = job_tables(&catalog, &tables)?;
            let published =
                publish::publish_jobs(&js, &queue, &catalog, selected, &job_tables, Trigger::Manual, Utc::now()).await;
            nats.flush().await.context("flushing NATS")?;
            let deadline = wait.then(|| wait_timeout.unwrap_or_else(|| queue::longest_job(&job) + QUEUE_ALLOWANCE));
            let open = report::refreshed(&pool, &catalog, &published, deadline, summary, output).await?;
            anyhow::ensure!(
                published.iter().all(|p| !p.result.starts_with("failed")),
                "some jobs could not be published"
            );
            if !open.is_empty() {
                let waited = humantime::format_duration(deadline.unwrap_or_default());
                let jobs = if open.len() == 1 { "1 job".to_owned() } else { format!("{} jobs", open.len()) };
                eprintln!("refresh --wait: {jobs} still open after {waited}");
                return Ok(ExitCode::from(EXIT_JOBS_OPEN));
            }
        }
        Command::Report { .. }
        | Command::Changes { .. }
        | Command::Prune
        | Command::Access { .. }
        | Command::ImportKubeconfig { .. }
        | Command::Explore(_) => {
            unreachable!("handled above")
        }
    }
    nats.flush().await.context("flushing NATS")?;
    Ok(ExitCode::SUCCESS)
}

/// The job targets of `catalog` for `tables` (every target when empty):
/// `kubernetes_pod_containers` is filled by the `kubernetes_pods` job,
/// `kubernetes_custom_resources` by one job per kind.
fn job_tables<'a>(catalog: &'a Catalog, tables: &[String]) -> anyhow::Result<Vec<&'a str>> {
    if tables.is_empty() {
        return Ok(catalog.targets.iter().map(|t| t.name.as_str()).collect());
    }
    let mut job_tables = Vec::new();
    for table in tables {
        let targets = catalog.targets_of(table);
        anyhow::ensure!(!targets.is_empty(), "unknown table `{table}`");
        for target in targets {
            if !job_tables.contains(&target.name.as_str()) {
                job_tables.push(target.name.as_str());
            }
        }
    }
    Ok(job_tables)
}
