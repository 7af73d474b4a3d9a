//! The scheduler: wiring and subcommands. The cron loop is in `cron_loop.rs`.

mod args;
mod cron_loop;
mod report;

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use clap::Parser;
use kubecensus::{
    catalog::catalog,
    job::{Job, Trigger},
    queue::{self, Published},
    registry::Registry,
    store, telemetry,
};
use uuid::Uuid;

use crate::args::{Args, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.common.log_format);
    if let Some(Command::ImportKubeconfig { kubeconfig }) = &args.command {
        let registry = Registry::from_kubeconfig(kubeconfig)?;
        print!("{}", serde_yaml::to_string(&registry)?);
        return Ok(());
    }
    let registry = Registry::load(&args.common.registry)?;
    let pool = store::connect(&args.common.database_url, 4).await?;
    if let Some(Command::Report) = &args.command {
        return report::print(&pool).await;
    }
    store::prepare(&pool, &registry).await?;
    store::sync_clusters(&pool, &registry).await?;
    let nats = queue::connect(&args.common.nats_url).await?;
    let js = async_nats::jetstream::new(nats.clone());
    let queue = args.common.queue();
    queue.ensure_stream(&js).await?;

    match args.command.unwrap_or(Command::Run { schedules: Vec::new(), tables: Vec::new() }) {
        Command::Run { schedules, tables } => cron_loop::run(&js, &queue, &registry, &schedules, &tables).await?,
        Command::Refresh { clusters, tables, wait } => {
            let job_ids = refresh(&js, &queue, &registry, &clusters, &tables).await?;
            if wait {
                report::wait_for(&pool, &job_ids).await?;
                report::print(&pool).await?;
            }
        }
        Command::Report | Command::ImportKubeconfig { .. } => unreachable!("handled above"),
    }
    nats.flush().await.context("flushing NATS")?;
    Ok(())
}

/// Publishes a manual job per selected (cluster, table); returns the ids of the queued ones.
async fn refresh(
    js: &async_nats::jetstream::Context,
    queue: &queue::Queue,
    registry: &Registry,
    clusters: &[String],
    tables: &[String],
) -> anyhow::Result<Vec<Uuid>> {
    for cluster in clusters {
        anyhow::ensure!(registry.get(cluster).is_some(), "cluster `{cluster}` is not in the registry");
    }
    let mut job_tables: Vec<&str> = Vec::new();
    for table in tables {
        let resource = catalog().resource_of(table).with_context(|| format!("unknown table `{table}`"))?;
        job_tables.push(resource.job_table());
    }
    if tables.is_empty() {
        job_tables = catalog().resources.iter().map(|r| r.job_table()).collect();
    }
    job_tables.dedup();
    let mut queued = Vec::new();
    let now = Utc::now();
    for cluster in registry.clusters.iter().filter(|c| clusters.is_empty() || clusters.contains(&c.name)) {
        for table in &job_tables {
            let job = Job::new(&cluster.name, table, Trigger::Manual, now)?;
            let published = tokio::time::timeout(Duration::from_secs(30), queue.publish(js, &job))
                .await
                .context("NATS did not answer in 30 s")??;
            let verdict = match published {
                Published::Queued => {
                    queued.push(job.id);
                    "queued"
                }
                Published::AlreadyPending => "already pending",
                Published::Duplicate => "duplicate",
            };
            println!("{:<24} {:<36} {verdict}", cluster.name, table);
        }
    }
    Ok(queued)
}
