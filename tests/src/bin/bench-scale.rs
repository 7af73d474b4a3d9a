//! `bench-scale`: kubecensus at 1,000 clusters (BENCHMARKS.md, "At 1,000 clusters"), or in the
//! RFC's shape (`--profile rfc`: 300 clusters × 2,000 namespaces).
//!
//! On a private PostgreSQL server with default settings (autovacuum on, as on any real server;
//! `--database-url` uses an existing one instead) and the machine's NATS (`--nats-cluster`: a
//! three-node JetStream cluster of its own, whose stream leader is killed during the first
//! load): a simulated fleet (the profile's, [`Profile`]), loaded from empty by W workers, then
//! refreshed in full after churning every cluster's pods, then the pods refreshed again with
//! churn every `--pod-interval` until they have been refreshed `--pod-refreshes` times in all,
//! then, once autovacuum has caught up, fleet-wide queries, pages of unhealthy objects, the
//! README's History queries (after two deployments of every cluster changed), the explorer's API
//! and the queries as viewers. Reports wall times, jobs/s per tenth of each round, the
//! database's size and relation count, the pods table's bytes after each refresh, the queries
//! with their planning time, the API's and the viewers' times, concurrent fleet-wide readers,
//! and a row per target.
//!
//! `make bench-scale` builds the `bench-release` profile and runs it.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use kubecensus_tests::{
    bench::{
        access,
        env::{BenchEnv, EnvConfig, bin_dir},
        explorer, fleet_view, history,
        nats_failover::{self, FailoverFigures},
        refresh::{self, RoundResult, RoundSpec},
        scale::{self, Footprint, Throughput},
        scale_report::{self, Profile, ProfileKnobs, ScaleReport},
        standby::StandbyWatch,
        stats::mib,
    },
    fleet::{Fleet, FleetSpec, WorkloadChurn},
    harness::connect_nats,
    nats_cluster::NatsCluster,
    servers::TempPostgres,
};

/// kubecensus at 1,000 clusters or in the RFC's shape: first load, refresh with churn, size,
/// queries, readers.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The fleet's shape and the knobs below that say `[profile]`; a flag given overrides the
    /// profile's value.
    #[arg(long, value_enum, default_value_t = Profile::Default)]
    profile: Profile,
    /// Clusters [profile: default 1000, rfc 300].
    #[arg(long)]
    clusters: Option<usize>,
    /// Namespaces per cluster [profile: default 20, rfc 2000].
    #[arg(long)]
    namespaces: Option<usize>,
    /// Nodes per cluster [profile: default 5, rfc 40].
    #[arg(long)]
    nodes: Option<usize>,
    /// Pods per cluster, spread at random over its namespaces [profile: default 200, rfc two per
    /// namespace: 4000].
    #[arg(long)]
    pods: Option<usize>,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Jobs each worker runs at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Pods deleted and as many added in every cluster before each refresh [profile: default 10,
    /// rfc 1 % of the pods: 40].
    #[arg(long)]
    churn: Option<usize>,
    /// How many times the pods are refreshed with churn in all (the first with every table)
    /// [profile: default 20, rfc 2].
    #[arg(long)]
    pod_refreshes: Option<usize>,
    /// Seconds from the start of one pods refresh to the next (their schedule is 5 minutes;
    /// autovacuum's naptime is 1 minute) [profile: default 60, rfc 300].
    #[arg(long)]
    pod_interval: Option<u64>,
    /// The longest wait for autovacuum to catch up before the queries are timed, in seconds.
    #[arg(long, default_value_t = 300)]
    autovacuum_wait: u64,
    /// Concurrent fleet-wide readers.
    #[arg(long, default_value_t = 8)]
    readers: usize,
    /// Seconds the concurrent readers run.
    #[arg(long, default_value_t = 15)]
    reader_secs: u64,
    /// Milliseconds each standby reader (`--standby`) waits between reads, as a dashboard
    /// refreshes (0: back to back, which on one machine takes the workers' cores).
    #[arg(long, default_value_t = 0)]
    reader_pause: u64,
    /// Timed runs of each query (after one warm-up).
    #[arg(long, default_value_t = 5)]
    query_runs: usize,
    /// Give up on a round after this many seconds.
    #[arg(long, default_value_t = 1800)]
    round_timeout: u64,
    /// An existing server to use instead of a private one (the bench database is made next to
    /// the database it names).
    #[arg(long)]
    database_url: Option<String>,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Its JetStream stream.
    #[arg(long, default_value = "KC_SCALE")]
    stream: String,
    /// Its subject prefix.
    #[arg(long, default_value = "kcscale")]
    subject_prefix: String,
    /// Working folder: fleet files, worker logs, report.md and report.json.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("kubecensus-bench-scale"))]
    dir: PathBuf,
    /// Folder of the worker and scheduler binaries; default: this executable's folder.
    #[arg(long, env = "KUBECENSUS_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Attach a hot standby of the private server (`pg_basebackup -R`) for the first load and the
    /// full refresh, with `--readers` readers on it; reports replay lag and the readers'
    /// errors and cancellations. Compare with a run without it for the cost.
    #[arg(long)]
    standby: bool,
    /// The standby's processes at this nice value (with `--standby`; 19: they run on what the
    /// primary, the workers and the scheduler leave of the machine's cores). An estimate, on one
    /// machine, of the primary's cost with its standby on a machine of its own: the replay
    /// then lags, and the two servers still share the disk.
    #[arg(long, default_value_t = 0)]
    standby_nice: i32,
    /// Run on a three-node JetStream cluster of its own on loopback (`nats-server` from
    /// NATS_SERVER, 2.11 or newer) instead of --nats-url, the stream and consumer with three
    /// replicas, and kill the stream's leader once 40 % of the first load's jobs have finished
    /// (started again with its store 30 s later); reports lost jobs, jobs run twice to completion
    /// and the time until throughput is back.
    #[arg(long)]
    nats_cluster: bool,
    /// Keep the database, and the private server running, at the end (its URL is logged).
    #[arg(long)]
    keep: bool,
}

impl Args {
    /// The profile's knobs, with the flags given instead. The RFC profile's pods follow
    /// `--namespaces` (two per namespace) and its churn the pods (1 %), unless given.
    fn knobs(&self) -> ProfileKnobs {
        let mut knobs = self.profile.knobs();
        let fleet = &mut knobs.fleet;
        fleet.clusters = self.clusters.unwrap_or(fleet.clusters);
        fleet.namespaces = self.namespaces.unwrap_or(fleet.namespaces);
        if self.profile == Profile::Rfc {
            fleet.pods = 2 * fleet.namespaces;
        }
        fleet.pods = self.pods.unwrap_or(fleet.pods);
        fleet.nodes = self.nodes.unwrap_or(fleet.nodes);
        if self.profile == Profile::Rfc {
            knobs.churn = (knobs.fleet.pods / 100).max(1);
        }
        knobs.churn = self.churn.unwrap_or(knobs.churn);
        knobs.pod_refreshes = self.pod_refreshes.unwrap_or(knobs.pod_refreshes);
        knobs.pod_interval_s = self.pod_interval.unwrap_or(knobs.pod_interval_s);
        knobs
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kubecensus::ops::telemetry::init(kubecensus::ops::telemetry::LogFormat::Plain, "info");
    let args = Args::parse();
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let private = match &args.database_url {
        Some(_) => None,
        None => Some(TempPostgres::start().await.context("starting a private PostgreSQL")?),
    };
    let admin_url = match (&args.database_url, &private) {
        (Some(url), _) => url.clone(),
        (None, Some(server)) => server.url("postgres"),
        (None, None) => unreachable!("a private server was started"),
    };
    let mut nats = match args.nats_cluster {
        true => Some(NatsCluster::start().await.context("starting a three-node JetStream cluster")?),
        false => None,
    };
    let config = EnvConfig {
        admin_url,
        nats_url: nats.as_ref().map_or_else(|| args.nats_url.clone(), NatsCluster::url),
        database: "kubecensus_scale".into(),
        stream: args.stream.clone(),
        subject_prefix: args.subject_prefix.clone(),
        stream_replicas: if nats.is_some() { nats_failover::REPLICAS } else { 1 },
        dir: args.dir.clone(),
        bin_dir: bin_dir(args.bin_dir.as_ref())?,
        keep: args.keep,
        worker_socket: None,
        worker_pg_options: None,
    };
    let mut env = BenchEnv::new(config).await?;
    let standby = match (&private, args.standby) {
        (Some(server), true) => {
            let standby = server.standby().await.context("starting a hot standby")?;
            if args.standby_nice != 0 {
                standby.renice(args.standby_nice).context("renicing the standby")?;
            }
            Some(standby)
        }
        (None, true) => anyhow::bail!("--standby needs the private server (no --database-url)"),
        (_, false) => None,
    };
    let standby_url = standby.as_ref().map(|server| server.url("kubecensus_scale"));
    let result = run(&args, &mut env, started, standby_url.as_deref(), nats.as_mut()).await;
    drop(standby);
    env.cleanup().await;
    drop(nats);
    match private {
        Some(server) if args.keep => {
            tracing::info!(url = server.url("kubecensus_scale"), "kept the private server running (--keep)");
            std::mem::forget(server);
        }
        server => drop(server),
    }
    let mut report = result?;
    report.verdicts = scale_report::verdicts(&report);
    let markdown = scale_report::markdown(&report);
    std::fs::write(args.dir.join("report.md"), &markdown)?;
    std::fs::write(args.dir.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    println!("{markdown}");
    Ok(())
}

async fn run(
    args: &Args,
    env: &mut BenchEnv,
    started: Instant,
    standby: Option<&str>,
    nats: Option<&mut NatsCluster>,
) -> anyhow::Result<ScaleReport> {
    let client = connect_nats(&env.services.nats_url, &Default::default()).await.map_err(anyhow::Error::msg)?;
    let js = async_nats::jetstream::new(client);
    let knobs = args.knobs();
    let spec = FleetSpec { name_prefix: "sim".into(), ..knobs.fleet.clone() };
    tracing::info!(profile = ?args.profile, clusters = spec.clusters, namespaces = spec.namespaces, pods = spec.pods, "generating the fleet");
    let fleet_dir = args.dir.join("fleet");
    let fleet = Fleet::start(spec, &fleet_dir).await?;
    let registry = fleet_dir.join("clusters.yaml");
    let postgres: String = sqlx::query_scalar(
        "SELECT format('%s (autovacuum %s, shared_buffers %s, max_locks_per_transaction %s)', split_part(version(), ' on ', 1),
                current_setting('autovacuum'), current_setting('shared_buffers'), current_setting('max_locks_per_transaction'))",
    )
    .fetch_one(&env.pool)
    .await?;
    let round = |label: &str, tables: Vec<String>| RoundSpec {
        label: label.into(),
        registry: &registry,
        workers: args.workers,
        concurrency: args.concurrency,
        page_size: 500,
        timeout: Duration::from_secs(args.round_timeout),
        tables,
        worker_args: Vec::new(),
    };

    let watch = match standby {
        Some(url) => {
            Some(StandbyWatch::start(&env.pool, url, args.readers, Duration::from_millis(args.reader_pause)).await?)
        }
        None => None,
    };
    tracing::info!("first load, from empty");
    let since = now(env).await?;
    let (first_load, nats_cluster) = first_load(env, &js, &round("load", Vec::new()), nats).await?;
    let first_load_throughput = scale::throughput(env, since).await?;
    let after_first_load = scale::footprint(env).await?;
    log_round(&first_load, &first_load_throughput, &after_first_load);
    // The design examples at once, before autovacuum has caught up with the load: the moment
    // the rows' visibility map is not set yet.
    let design = scale::scale_queries(env).await?;
    let mut just_loaded = scale::time_queries(env, &design[..4], args.query_runs).await?;
    for figures in &mut just_loaded {
        figures.name.push_str(", right after the first load");
    }

    churn(&fleet, knobs.churn);
    tracing::info!("full refresh after churn");
    let since = now(env).await?;
    let refreshed = refresh::run_round(env, &js, &round("refresh", Vec::new())).await?;
    let refresh_throughput = scale::throughput(env, since).await?;
    let after_refresh = scale::footprint(env).await?;
    log_round(&refreshed, &refresh_throughput, &after_refresh);
    let standby = match watch {
        Some(watch) => Some(watch.finish().await?),
        None => None,
    };

    let mut pod_refreshes = vec![after_refresh.clone()];
    let mut round_started = Instant::now();
    while pod_refreshes.len() < knobs.pod_refreshes {
        tokio::time::sleep(Duration::from_secs(knobs.pod_interval_s).saturating_sub(round_started.elapsed())).await;
        round_started = Instant::now();
        churn(&fleet, knobs.churn);
        refresh::run_round(env, &js, &round("pods", vec!["kubernetes_pods".into()])).await?;
        let footprint = scale::footprint(env).await?;
        tracing::info!(
            refreshes = pod_refreshes.len() + 1,
            pods_mib = mib(footprint.pods_table_bytes as u64),
            "pods refreshed"
        );
        pod_refreshes.push(footprint);
    }

    tracing::info!("waiting for autovacuum to catch up");
    let autovacuum_wait = scale::wait_for_autovacuum(env, Duration::from_secs(args.autovacuum_wait)).await?;
    tracing::info!(waited_s = autovacuum_wait.as_secs_f64(), "autovacuum caught up (or the wait ended)");
    let queries = scale::scale_queries(env).await?;
    let mut figures = scale::time_queries(env, &queries, args.query_runs).await?;
    let pages = fleet_view::time_pages(env, 5_000, args.query_runs).await?;
    // Two deployments of every cluster get a new image, so that the README's History queries
    // (which read `object_changes` by cluster and by object) find a deployment's changes; the
    // pods' changes are already there, from every churned refresh.
    tracing::info!("deployments changed and refreshed, for the history queries");
    for cluster in fleet.clusters() {
        fleet.churn_workloads(&cluster.name, &WorkloadChurn { deployments: 2, ..WorkloadChurn::default() });
    }
    refresh::run_round(env, &js, &round("deployments", vec!["kubernetes_deployments".into()])).await?;
    let history = history::readme_history_queries_on(&env.pool).await?;
    figures.extend(scale::time_queries(env, &history, args.query_runs).await?);
    tracing::info!("the explorer's API and the viewers' queries");
    let mut viewers = explorer::time_api(env, &registry, args.query_runs).await?;
    let names: Vec<String> = fleet.clusters().into_iter().map(|c| c.name).collect();
    viewers.extend(access::time_viewers(env, &names, args.query_runs).await?);
    tracing::info!(readers = args.readers, "concurrent fleet-wide readers");
    // The readers run the heavy ones: the design's text over every row, and pods × nodes.
    let readers =
        scale::concurrent_readers(env, &queries[2..5], args.readers, Duration::from_secs(args.reader_secs)).await?;
    drop(fleet);
    Ok(ScaleReport {
        command: std::iter::once("bench-scale".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        profile: args.profile,
        refresh_target_s: knobs.refresh_target_s,
        postgres,
        first_load,
        first_load_throughput,
        after_first_load,
        refresh: refreshed,
        refresh_throughput,
        after_refresh,
        pod_refreshes,
        autovacuum_wait_s: autovacuum_wait.as_secs_f64(),
        queries: just_loaded.into_iter().chain(figures).collect(),
        pages,
        viewers,
        readers,
        standby,
        nats_cluster,
        verdicts: Vec::new(),
        total_s: started.elapsed().as_secs_f64(),
    })
}

/// The first load; on a JetStream cluster (`nats`), with its stream leader killed during it
/// ([`nats_failover::kill_stream_leader`]), and what that did.
async fn first_load(
    env: &mut BenchEnv,
    js: &async_nats::jetstream::Context,
    spec: &RoundSpec<'_>,
    nats: Option<&mut NatsCluster>,
) -> anyhow::Result<(RoundResult, Option<FailoverFigures>)> {
    let Some(nats) = nats else {
        return Ok((refresh::run_round(env, js, spec).await?, None));
    };
    let (pool, stream) = (env.pool.clone(), env.config.stream.clone());
    let (round, kill) = refresh::run_round_with(env, js, spec, |published| async move {
        nats_failover::kill_stream_leader(nats, &pool, &stream, published).await
    })
    .await?;
    let figures = kill.figures(&env.pool).await?;
    tracing::info!(
        lost = figures.outcomes.lost.len(),
        twice = figures.outcomes.twice.len(),
        final_statuses = ?figures.outcomes.final_statuses,
        throughput_back_s = figures.throughput_back_s,
        "the first load through the stream leader's kill"
    );
    Ok((round, Some(figures)))
}

async fn now(env: &BenchEnv) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    Ok(sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(&env.pool).await?)
}

fn churn(fleet: &Fleet, pods: usize) {
    for cluster in fleet.clusters() {
        fleet.churn(&cluster.name, pods, pods);
    }
}

fn log_round(round: &RoundResult, throughput: &Throughput, footprint: &Footprint) {
    tracing::info!(
        round = round.label,
        wall_s = round.wall_s,
        jobs = round.jobs,
        jobs_per_s = round.jobs_per_s,
        first_tenth = throughput.tenths.first().copied().unwrap_or_default(),
        last_tenth = throughput.tenths.last().copied().unwrap_or_default(),
        database_mib = mib(footprint.database_bytes as u64),
        relations = footprint.relations,
        "round done"
    );
}
