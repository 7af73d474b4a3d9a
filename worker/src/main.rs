//! The worker: wiring and the pull loop. One job's path is in `poll.rs`, how it ends in `settle.rs`.

mod args;
mod poll;
mod settle;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use async_nats::jetstream::consumer::PullConsumer;
use clap::Parser;
use futures::StreamExt;
use kubecensus::{
    model::catalog::Catalog,
    ops::{
        admin::{self, Health},
        metrics, telemetry,
    },
    queue::{self, Queue, RetryPolicy},
    source::registry::sources::LiveRegistry,
    store,
};
use lru::LruCache;
use tokio::{
    sync::{Mutex, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    args::Args,
    poll::{JobPolicy, Poller},
};

/// How long one pull waits for jobs before asking again.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.common.log_format, "info");
    run(args).await
}

/// Wiring: the registry, PostgreSQL, the shared consumer, the sweep; then pulls jobs until
/// SIGTERM, and gives in-flight jobs `--shutdown-grace` to finish before handing them back.
async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        common,
        admin,
        concurrency,
        worker_id,
        page_size,
        in_place_limit,
        change_history,
        cached_clients,
        job,
        ack_wait: ack_wait_flag,
        shutdown_grace,
    } = args;
    anyhow::ensure!(concurrency > 0, "--concurrency must be at least 1");
    let catalog = Arc::new(Catalog::load(common.custom_resources.as_deref())?);
    let health = Health::new();
    let metrics = admin::Metrics { registry: metrics::worker().registry(), sample: None };
    admin::serve(admin.admin_addr, health.clone(), metrics).await.context("serving the admin endpoint")?;
    let registry =
        Arc::new(LiveRegistry::start(&common.registry, &common.home, common.exec_timeout, catalog.clone()).await?);
    let worker_id = worker_id.unwrap_or_else(default_worker_id);
    let pool = store::connect(&common.database_url, &common.database_credentials, concurrency as u32 + 2).await?;
    store::prepare(&pool, &catalog, &registry.current()).await?;
    let nats = queue::connect(&common.nats_url, &common.nats_credentials).await?;
    let js = async_nats::jetstream::new(nats.clone());
    let queue = Queue::from(&common);
    let mut consumer = queue.consumer(&js, ack_wait_flag).await?;
    // The consumer keeps the ack wait it was created with: heartbeats and the sweep follow it.
    let ack_wait = consumer.info().await.context("reading the consumer's settings")?.config.ack_wait;
    if ack_wait != ack_wait_flag {
        tracing::warn!(consumer = ?ack_wait, flag = ?ack_wait_flag, "the shared consumer's ack wait is not --ack-wait; following the consumer's");
    }
    health.started(&pool, &nats);
    tracing::info!(%worker_id, concurrency, clusters = registry.current().clusters.len(), "worker started");
    tokio::spawn(
        refresh_registry_forever(registry.clone(), catalog.clone(), pool.clone(), common.registry_refresh)
            .instrument(tracing::info_span!("registry")),
    );

    let poller = Arc::new(Poller {
        catalog,
        pool: pool.clone(),
        registry,
        registry_refresh: common.registry_refresh,
        worker_id,
        queue: queue.clone(),
        policy: JobPolicy {
            page_size,
            in_place_limit,
            change_history,
            retry: RetryPolicy::from(&job),
            timeout: job.job_timeout,
            exec_timeout: common.exec_timeout,
            unknown_cluster_hand_backs: job.unknown_cluster_hand_backs,
            ack_wait,
        },
        clients: Mutex::new(LruCache::new(cached_clients)),
    });
    let stop_pulling = CancellationToken::new();
    tokio::spawn({
        let (stop, health) = (stop_pulling.clone(), health.clone());
        async move {
            telemetry::shutdown_signal().await;
            // Not ready from now on, before the drain starts.
            health.drain();
            stop.cancel();
        }
    });
    tokio::spawn(sweep_forever(pool.clone(), ack_wait).instrument(tracing::info_span!("sweep")));
    let abandon_jobs = CancellationToken::new();
    let source = JobSource { js, queue: poller.queue.clone(), ack_wait, consumer };
    let jobs = pull_until_stopped(source, &poller, concurrency, &stop_pulling, &abandon_jobs).await?;
    finish_in_flight(jobs, shutdown_grace, &abandon_jobs).await;
    nats.flush().await.context("flushing the last acks to NATS")?;
    tracing::info!("worker stopped");
    Ok(())
}

/// Where jobs are pulled from: the shared consumer, and what it takes to create it again.
struct JobSource {
    js: async_nats::jetstream::Context,
    queue: Queue,
    ack_wait: Duration,
    consumer: PullConsumer,
}

impl JobSource {
    /// Checks that the consumer still exists (a NATS server restarted with an empty store has
    /// lost it, and its stream), and creates both again if not.
    async fn ensure_consumer(&mut self) {
        if self.consumer.info().await.is_ok() {
            return;
        }
        match self.queue.consumer(&self.js, self.ack_wait).await {
            Ok(consumer) => {
                tracing::warn!(stream = self.queue.stream, "the job consumer was gone; created it again");
                self.consumer = consumer;
            }
            Err(err) => tracing::warn!(%err, "cannot create the job consumer; retrying"),
        }
    }
}

/// Pulls jobs while `stop` is not cancelled, each only when a slot is free (at most
/// `concurrency` at once), and runs each on its own task; returns the tasks still running.
/// After a pull that failed or brought nothing, it checks that the consumer still exists.
async fn pull_until_stopped(
    mut source: JobSource,
    poller: &Arc<Poller>,
    concurrency: usize,
    stop: &CancellationToken,
    abandon: &CancellationToken,
) -> anyhow::Result<JoinSet<()>> {
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut jobs = JoinSet::new();
    while !stop.is_cancelled() {
        // Wait for one free slot, then take every other free one: pull that many jobs.
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => permit?,
            () = stop.cancelled() => break,
        };
        let mut permits = vec![first];
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        let batch = source.consumer.fetch().max_messages(permits.len()).expires(PULL_EXPIRES).messages().await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(err) => {
                tracing::warn!(%err, "cannot pull jobs; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                source.ensure_consumer().await;
                continue;
            }
        };
        let mut pulled = 0;
        while let Some(message) = tokio::select! {
            message = batch.next() => message,
            () = stop.cancelled() => None,
        } {
            match message {
                Ok(message) => {
                    pulled += 1;
                    let permit = permits.pop().context("more jobs than free slots")?;
                    let (poller, abandon) = (poller.clone(), abandon.clone());
                    jobs.spawn(async move {
                        poller.handle(message, abandon).await;
                        drop(permit);
                    });
                }
                Err(err) => tracing::warn!(%err, "pull error"),
            }
        }
        if pulled == 0 && !stop.is_cancelled() {
            source.ensure_consumer().await;
        }
        while jobs.try_join_next().is_some() {}
    }
    Ok(jobs)
}

/// Lets in-flight `jobs` finish for `grace`, then cancels `abandon`: the rest are handed back.
async fn finish_in_flight(mut jobs: JoinSet<()>, grace: Duration, abandon: &CancellationToken) {
    tracing::info!(in_flight = jobs.len(), ?grace, "stopping: no more pulls; finishing in-flight jobs");
    if tokio::time::timeout(grace, async { while jobs.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!(in_flight = jobs.len(), "grace period over; handing unfinished jobs back to the queue");
        abandon.cancel();
        while jobs.join_next().await.is_some() {}
    }
}

fn default_worker_id() -> String {
    let host =
        std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// Reads the registry's sources again every `every`; adds the columns of new fields, again at
/// each reading until that succeeds (DDL that could not take its locks in time). A job for a
/// cluster the worker has not learned yet reads them again sooner (`poll.rs`).
async fn refresh_registry_forever(live: Arc<LiveRegistry>, catalog: Arc<Catalog>, pool: sqlx::PgPool, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    // The registry whose fields have their columns.
    let mut ensured = live.current();
    loop {
        ticks.tick().await;
        live.refresh().await;
        let now = live.current();
        match store::ensure_new_fields(&pool, &catalog, &ensured, &now).await {
            Ok(()) => ensured = now,
            Err(err) => tracing::error!(%err, "cannot add the columns of new registry fields; trying again next time"),
        }
    }
}

/// Marks `abandoned` the runs of dead workers, now and every ack wait. A run whose worker has
/// not heartbeated for three ack waits (nine heartbeats) is dead.
async fn sweep_forever(pool: sqlx::PgPool, ack_wait: Duration) {
    let mut ticks = tokio::time::interval(ack_wait);
    loop {
        ticks.tick().await;
        match store::sweep_runs(&pool, 3 * ack_wait).await {
            Ok(0) => {}
            Ok(swept) => tracing::info!(swept, "runs of dead workers marked abandoned"),
            Err(err) => tracing::warn!(%err, "sweep failed"),
        }
    }
}
