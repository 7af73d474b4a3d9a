//! `bench`: kubecensus at fleet scale, on the real services, with the optimized binaries.
//!
//! One run: a simulated fleet (default 100 clusters × 1,000 pods), full refreshes with 1 then 2
//! worker processes, the physical limits for the same data (raw COPY, HTTPS fetch), readers'
//! latency with and without swaps, fleet-wide queries, the per-job overhead on empty tables,
//! and one worker's memory on a 1,000-pod and a 50,000-pod cluster. It prints progress, then a
//! Markdown report (also written with the JSON figures into `--dir`). See BENCHMARKS.md.
//!
//! `make bench` builds the `bench-release` profile and runs it; `bench --smoke` is a tiny run.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use kubecensus_tests::bench::{
    access,
    env::{BenchEnv, EnvConfig, bin_dir},
    explorer, fleet_view, history,
    limits::{self, LoadMode},
    queries, readers,
    refresh::{self, RoundSpec},
    report::{ClusterSize, Overhead, Report, Setup},
};
use kubecensus_tests::fleet::{Fleet, FleetSpec};

/// Sections of the benchmark, for `--skip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    /// Full refreshes of the default fleet with each worker count.
    Rounds,
    /// Raw COPY and HTTPS fetch of the same data.
    Limits,
    /// Readers' latency with and without swaps.
    Readers,
    /// Fleet-wide queries, unrestricted and as viewers (access control).
    Queries,
    /// Full refreshes after churn with and without change history, and the README's history queries.
    History,
    /// Per-job overhead on empty tables.
    Overhead,
    /// Worker memory on a small and a huge cluster.
    Huge,
}

/// kubecensus at fleet scale: throughput, memory, limits, readers and queries.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// A tiny run of every section (seconds), for the smoke test; other sizes are ignored.
    #[arg(long)]
    smoke: bool,
    /// Clusters in the default fleet.
    #[arg(long, default_value_t = 100)]
    clusters: usize,
    /// Namespaces per cluster.
    #[arg(long, default_value_t = 50)]
    namespaces: usize,
    /// Nodes per cluster.
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// Pods per cluster.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Custom resources (Flux, Argo CD, cert-manager) per cluster; every third cluster has none.
    #[arg(long, default_value_t = 200)]
    custom_resources: usize,
    /// Worker process counts, one refresh round each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Jobs each worker runs at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Objects per listed page.
    #[arg(long, default_value_t = 500)]
    page_size: u32,
    /// Pods of the huge cluster.
    #[arg(long, default_value_t = 50_000)]
    huge_pods: usize,
    /// Pods of the small cluster it is compared to.
    #[arg(long, default_value_t = 1000)]
    small_pods: usize,
    /// Clusters of the empty fleet the per-job overhead is measured on.
    #[arg(long, default_value_t = 5)]
    overhead_clusters: usize,
    /// Reader connections.
    #[arg(long, default_value_t = 4)]
    readers: usize,
    /// Seconds of the idle reader phase.
    #[arg(long, default_value_t = 10)]
    reader_secs: u64,
    /// Timed runs of each query (after one warm-up).
    #[arg(long, default_value_t = 5)]
    query_runs: usize,
    /// Sections to leave out (repeatable or comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    skip: Vec<Section>,
    /// Seed of the generated fleet.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Give up on a refresh round after this many seconds.
    #[arg(long, default_value_t = 900)]
    round_timeout: u64,
    /// The benchmark's database, dropped and created at the start, dropped at the end.
    #[arg(long, default_value = "kubecensus_bench")]
    database: String,
    /// Its JetStream stream.
    #[arg(long, default_value = "KC_BENCH")]
    stream: String,
    /// Its subject prefix.
    #[arg(long, default_value = "kcbench")]
    subject_prefix: String,
    /// A server URL; the bench database is created next to the database it names.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/kubecensus")]
    database_url: String,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Working folder: fleet files, worker logs, dumps, report.md and report.json.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("kubecensus-bench"))]
    dir: PathBuf,
    /// Folder of the worker and scheduler binaries; default: this executable's folder.
    #[arg(long, env = "KUBECENSUS_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Keep the database, stream and working files at the end.
    #[arg(long)]
    keep: bool,
    /// Workers and scheduler reach PostgreSQL through the Unix socket in this folder (e.g.
    /// /var/run/postgresql) instead of TCP; the bench itself still uses TCP.
    #[arg(long)]
    worker_socket: Option<PathBuf>,
    /// Server options for the workers' and scheduler's sessions, for profiling: e.g.
    /// '-c log_min_duration_statement=0' logs every statement with its duration.
    #[arg(long)]
    worker_pg_options: Option<String>,
    /// Also write the JSON figures here.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl Args {
    fn apply_smoke(&mut self) {
        if self.smoke {
            (self.clusters, self.namespaces, self.nodes, self.pods) = (2, 3, 2, 20);
            self.workers = vec![1, 2];
            self.concurrency = 2;
            (self.huge_pods, self.small_pods, self.overhead_clusters) = (300, 30, 2);
            (self.readers, self.reader_secs, self.query_runs) = (2, 1, 1);
        }
    }

    fn runs(&self, section: Section) -> bool {
        !self.skip.contains(&section)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kubecensus::ops::telemetry::init(kubecensus::ops::telemetry::LogFormat::Plain, "info");
    let mut args = Args::parse();
    args.apply_smoke();
    anyhow::ensure!(!args.workers.is_empty() && args.workers.iter().all(|&w| w > 0), "--workers needs counts above 0");
    let started = Instant::now();
    prepare_dir(&args.dir)?;
    let config = EnvConfig {
        admin_url: args.database_url.clone(),
        nats_url: args.nats_url.clone(),
        database: args.database.clone(),
        stream: args.stream.clone(),
        subject_prefix: args.subject_prefix.clone(),
        stream_replicas: 1,
        dir: args.dir.clone(),
        bin_dir: bin_dir(args.bin_dir.as_ref())?,
        keep: args.keep,
        worker_socket: args.worker_socket.clone(),
        worker_pg_options: args.worker_pg_options.clone(),
    };
    tracing::info!(bin_dir = %config.bin_dir.display(), database = config.database, "bench starting");
    let mut env = BenchEnv::new(config).await?;
    let result = run(&args, &mut env, started).await;
    env.cleanup().await;
    if !args.keep {
        let _ = std::fs::remove_dir_all(args.dir.join("dump"));
    }
    let report = result?;
    let markdown = report.markdown();
    std::fs::write(args.dir.join("report.md"), &markdown)?;
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(args.dir.join("report.json"), &json)?;
    if let Some(path) = &args.json {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{markdown}");
    tracing::info!(total_s = started.elapsed().as_secs_f64(), report = %args.dir.join("report.md").display(), "bench done");
    Ok(())
}

/// Refuses to clear a folder the bench did not make.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    let marker = dir.join(".kubecensus-bench");
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        anyhow::ensure!(
            empty || marker.exists(),
            "{} exists and is not a bench folder; pick another --dir",
            dir.display()
        );
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(marker, "")?;
    Ok(())
}

async fn run(args: &Args, env: &mut BenchEnv, started: Instant) -> anyhow::Result<Report> {
    let js = async_nats::jetstream::new(async_nats::connect(&args.nats_url).await?);
    let timeout = Duration::from_secs(args.round_timeout);
    let max_workers = *args.workers.iter().max().expect("checked above");
    let mut report = Report::default();

    let spec = FleetSpec {
        clusters: args.clusters,
        namespaces: args.namespaces,
        nodes: args.nodes,
        pods: args.pods,
        custom_resources: args.custom_resources,
        seed: args.seed,
        name_prefix: "sim".into(),
        ..FleetSpec::default()
    };
    tracing::info!(clusters = spec.clusters, pods = spec.pods, "generating the default fleet");
    let fleet_started = Instant::now();
    let fleet_dir = args.dir.join("fleet");
    let fleet = Fleet::start(spec, &fleet_dir).await?;
    let fleet_build_s = fleet_started.elapsed().as_secs_f64();
    let registry = fleet_dir.join("clusters.yaml");
    report.setup = Some(setup(args, env, fleet_build_s).await?);
    tracing::info!(fleet_build_s, "fleet ready");

    // Also creates the tables (the scheduler prepares the database): every later section needs them.
    if args.runs(Section::Rounds)
        || args.runs(Section::Limits)
        || args.runs(Section::Readers)
        || args.runs(Section::Queries)
        || args.runs(Section::History)
    {
        for &workers in &args.workers {
            tracing::info!(workers, concurrency = args.concurrency, "refresh round");
            let round =
                refresh::run_round(env, &js, &round_spec(args, format!("round{workers}"), &registry, workers, timeout))
                    .await?;
            tracing::info!(
                workers,
                wall_s = round.wall_s,
                rows = round.rows,
                rows_per_s = round.rows_per_s,
                "round done"
            );
            report.rounds.push(round);
            if !args.runs(Section::Rounds) {
                break;
            }
        }
        report.database_bytes = refresh::database_size(env).await?;
        report.table_rows = refresh::table_rows(env).await?;
    }

    if args.runs(Section::History) {
        tracing::info!("change history: churned refreshes with and without it");
        let spec = round_spec(args, "history".into(), &registry, max_workers, timeout);
        let cost = history::measure(env, &js, &fleet, spec, args.pods, args.query_runs).await?;
        tracing::info!(changes = cost.changes_written, unchanged = cost.changes_unchanged, "change history done");
        report.history = Some(cost);
    }

    let mut dump = None;
    if args.runs(Section::Limits) || args.runs(Section::Readers) {
        tracing::info!("dumping the loaded rows for the COPY limit");
        let dumped = limits::dump(env, &args.dir.join("dump")).await?;
        tracing::info!(rows = dumped.rows, mib = dumped.bytes as f64 / 1048576.0, seconds = dumped.seconds, "dumped");
        limits::prepare_tables(env).await?;
        dump = Some(dumped);
    }
    if args.runs(Section::Limits) {
        let dumped = dump.as_ref().expect("dumped above");
        let mut connections: Vec<usize> = vec![1, max_workers];
        connections.dedup();
        for &n in &connections {
            tracing::info!(connections = n, "raw COPY");
            let load = limits::load(env, dumped, n, LoadMode::Plain).await?;
            tracing::info!(connections = n, seconds = load.seconds, rows_per_s = load.rows_per_s, "raw COPY done");
            report.loads.push(load);
        }
        tracing::info!(connections = max_workers, "COPY into tables with indexes");
        let load = limits::load(env, dumped, max_workers, LoadMode::Indexed).await?;
        tracing::info!(seconds = load.seconds, rows_per_s = load.rows_per_s, "COPY with indexes done");
        report.loads.push(load);
        report.copy_latency = Some(limits::copy_latency(env, &args.dir, 50).await?);
        tracing::info!(latency = ?report.copy_latency, "small COPY latency, sqlx vs psql");
        let concurrent = max_workers * args.concurrency;
        tracing::info!(concurrent, "HTTPS fetch of every list");
        let fetch = limits::fetch(&env.catalog, &registry, args.page_size, concurrent).await?;
        tracing::info!(seconds = fetch.seconds, objects = fetch.objects, "fetch done");
        report.fetch = Some(fetch);
    }

    if args.runs(Section::Readers) {
        let pods = readers::sample_pods(env, 2000).await?;
        let reader_secs = Duration::from_secs(args.reader_secs);
        tracing::info!(readers = args.readers, seconds = args.reader_secs, "readers, idle");
        let url = env.database_url.clone();
        let (idle, ()) =
            readers::measure(&url, "baseline: idle", args.readers, &pods, readers::idle(reader_secs)).await?;
        report.readers.push(idle);
        let dumped = dump.as_ref().expect("dumped above");
        tracing::info!(connections = max_workers, "readers during a raw COPY of the same rows");
        let (copying, _) = readers::measure(
            &url,
            "baseline: during a raw COPY of the same rows",
            args.readers,
            &pods,
            limits::load(env, dumped, max_workers, LoadMode::Plain),
        )
        .await?;
        report.readers.push(copying);
        // Only the pods jobs, after churning every cluster's pods (10 %): the refresh writes
        // and deletes the rows that changed in the table the readers read.
        for cluster in fleet.clusters() {
            fleet.churn(&cluster.name, args.pods / 10, args.pods / 10);
        }
        let mut spec = round_spec(args, "readers".into(), &registry, max_workers, timeout);
        spec.tables = vec!["kubernetes_pods".into()];
        let phase = "refresh: during a kubecensus refresh of every cluster's pods, 10 % churned";
        tracing::info!(workers = max_workers, phase, "readers");
        let (readings, round) =
            readers::measure(&url, phase, args.readers, &pods, refresh::run_round(env, &js, &spec)).await?;
        report.readers.push(readings);
        report.readers_round = Some(round);
    }
    if dump.is_some() {
        limits::drop_tables(env).await?;
    }

    if args.runs(Section::Queries) {
        // kubecensus leaves statistics and the visibility map (which index-only scans need) to
        // autovacuum; a server without it (as this machine's CI server) has neither: do what it
        // would have done, and say so in the log.
        let autovacuum: String =
            sqlx::query_scalar("SELECT current_setting('autovacuum')").fetch_one(&env.pool).await?;
        if autovacuum == "off" {
            tracing::info!("autovacuum is off on this server: VACUUM (ANALYZE) before the queries, as it would have");
            sqlx::raw_sql("VACUUM (ANALYZE)").execute(&env.pool).await?;
        }
        report.queries_pods = queries::pod_count(env).await?;
        tracing::info!(pods = report.queries_pods, "timing queries");
        report.queries = queries::time_all(env, args.query_runs).await?;
        let pages = fleet_view::time_pages(env, 5_000, args.query_runs).await?;
        let mut plans = Vec::new();
        for (name, sql) in queries::QUERIES
            .iter()
            .map(|(n, s)| (*n, *s))
            .chain(pages.iter().filter(|p| !p.sql.contains("$1")).map(|p| (p.name.as_str(), p.sql.as_str())))
        {
            plans.push(format!("-- {name}\n{sql}\n{}\n", queries::explain(env, sql).await?));
        }
        report.queries.extend(pages);
        report.queries.extend(explorer::time_api(env, &registry, args.query_runs).await?);
        std::fs::write(args.dir.join("plans.txt"), plans.join("\n"))?;
        let names: Vec<String> = fleet.clusters().into_iter().map(|c| c.name).collect();
        report.queries.extend(access::time_viewers(env, &names, args.query_runs).await?);
    }
    drop(fleet);

    if args.runs(Section::Overhead) {
        let spec = FleetSpec {
            clusters: args.overhead_clusters,
            namespaces: 2,
            nodes: 0,
            pods: 0,
            seed: args.seed,
            name_prefix: "empty".into(),
            ..FleetSpec::default()
        };
        let dir = args.dir.join("fleet-empty");
        let fleet = Fleet::start(spec, &dir).await?;
        tracing::info!(clusters = args.overhead_clusters, "per-job overhead: empty tables, 1 worker, 1 job at a time");
        let registry = dir.join("clusters.yaml");
        let mut spec = round_spec(args, "overhead".into(), &registry, 1, timeout);
        spec.concurrency = 1;
        // The first round loads the clusters (staging, new partitions); the second is the
        // steady state that is measured.
        let first_load = refresh::run_round(env, &js, &spec).await?;
        let round = refresh::run_round(env, &js, &spec).await?;
        let wall_per_job_ms = round.wall_s * 1000.0 / round.jobs.max(1) as f64;
        tracing::info!(jobs = round.jobs, wall_per_job_ms, median_ms = round.finish_gap_p50_ms, "overhead done");
        report.overhead = Some(Overhead { clusters: args.overhead_clusters, first_load, round, wall_per_job_ms });
        drop(fleet);
    }

    if args.runs(Section::Huge) {
        for (label, pods) in [("small", args.small_pods), ("huge", args.huge_pods)] {
            let spec = FleetSpec {
                clusters: 1,
                namespaces: args.namespaces,
                nodes: args.nodes,
                pods,
                seed: args.seed,
                name_prefix: label.into(),
                ..FleetSpec::default()
            };
            let dir = args.dir.join(format!("fleet-{label}"));
            tracing::info!(pods, "one cluster, one worker: memory");
            let fleet = Fleet::start(spec, &dir).await?;
            let registry = dir.join("clusters.yaml");
            let round = refresh::run_round(env, &js, &round_spec(args, label.into(), &registry, 1, timeout)).await?;
            tracing::info!(pods, wall_s = round.wall_s, peak_rss = ?round.worker_peak_rss, "cluster done");
            report.sizes.push(ClusterSize { pods, round });
            drop(fleet);
        }
    }

    report.total_s = started.elapsed().as_secs_f64();
    report.judge();
    Ok(report)
}

fn round_spec<'a>(args: &Args, label: String, registry: &'a Path, workers: usize, timeout: Duration) -> RoundSpec<'a> {
    RoundSpec {
        label,
        registry,
        workers,
        concurrency: args.concurrency,
        page_size: args.page_size,
        timeout,
        tables: Vec::new(),
        worker_args: Vec::new(),
    }
}

async fn setup(args: &Args, env: &BenchEnv, fleet_build_s: f64) -> anyhow::Result<Setup> {
    // With the settings that change what a refresh costs (this machine's server runs without
    // autovacuum, which a default server runs).
    let postgres: String = sqlx::query_scalar(
        "SELECT format('%s (autovacuum %s, synchronous_commit %s, shared_buffers %s)', split_part(version(), ' on ', 1),
                current_setting('autovacuum'), current_setting('synchronous_commit'), current_setting('shared_buffers'))",
    )
    .fetch_one(&env.pool)
    .await?;
    let nats = async_nats::connect(&args.nats_url).await?;
    let nats_version = format!("NATS {}", nats.server_info().version);
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_default();
    let command = std::iter::once("bench".to_owned()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ");
    Ok(Setup {
        command,
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        postgres,
        nats: nats_version,
        clusters: args.clusters,
        namespaces: args.namespaces,
        nodes: args.nodes,
        pods: args.pods,
        concurrency: args.concurrency,
        page_size: args.page_size,
        catalog_resources: env.catalog.resources.len(),
        catalog_tables: env.catalog.tables().count(),
        fleet_build_s,
    })
}
