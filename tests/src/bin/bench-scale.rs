//! `bench-scale`: kubecensus at 1,000 clusters (BENCHMARKS.md, "At 1,000 clusters").
//!
//! On a private PostgreSQL server with default settings (autovacuum on, as on any real server;
//! `--database-url` uses an existing one instead) and the machine's NATS: a simulated fleet
//! (default 1,000 clusters × 20 namespaces, 5 nodes, 200 pods), loaded from empty by W workers,
//! then refreshed in full after churning every cluster's pods, then the pods refreshed again with
//! churn every `--pod-interval` until they have been refreshed `--pod-refreshes` times in all,
//! then, once autovacuum has caught up, fleet-wide queries, the README's History queries (after
//! two deployments of every cluster changed), the explorer's API and the queries as viewers.
//! Reports wall times, jobs/s per tenth of each round, the database's size and relation count,
//! the pods table's bytes after each refresh, the queries with their planning time, the API's
//! and the viewers' times, and concurrent fleet-wide readers.
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
        explorer, history,
        queries::QueryTiming,
        refresh::{self, RoundResult, RoundSpec},
        report::Verdict,
        scale::{self, ConcurrentReaders, Footprint, QueryFigures, Throughput},
        standby::{StandbyFigures, StandbyWatch},
        stats::mib,
    },
    fleet::{Fleet, FleetSpec, WorkloadChurn},
    servers::TempPostgres,
};
use serde::Serialize;

/// kubecensus at 1,000 clusters: first load, refresh with churn, size, queries, readers.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    clusters: usize,
    #[arg(long, default_value_t = 20)]
    namespaces: usize,
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    #[arg(long, default_value_t = 200)]
    pods: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Jobs each worker runs at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Pods deleted and as many added in every cluster before each refresh.
    #[arg(long, default_value_t = 10)]
    churn: usize,
    /// How many times the pods are refreshed with churn in all (the first with every table).
    #[arg(long, default_value_t = 20)]
    pod_refreshes: usize,
    /// Seconds from the start of one pods refresh to the next (their schedule is 5 minutes;
    /// autovacuum's naptime is 1 minute).
    #[arg(long, default_value_t = 60)]
    pod_interval: u64,
    /// The longest wait for autovacuum to catch up before the queries are timed, in seconds.
    #[arg(long, default_value_t = 300)]
    autovacuum_wait: u64,
    /// Concurrent fleet-wide readers.
    #[arg(long, default_value_t = 8)]
    readers: usize,
    /// Seconds the concurrent readers run.
    #[arg(long, default_value_t = 15)]
    reader_secs: u64,
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
    /// Keep the database, and the private server running, at the end (its URL is logged).
    #[arg(long)]
    keep: bool,
}

/// Everything measured.
#[derive(Debug, Serialize)]
struct ScaleReport {
    command: String,
    postgres: String,
    first_load: RoundResult,
    first_load_throughput: Throughput,
    after_first_load: Footprint,
    refresh: RoundResult,
    refresh_throughput: Throughput,
    after_refresh: Footprint,
    /// Pods table and index bytes after each pods refresh (the first is the full refresh).
    pod_refreshes: Vec<Footprint>,
    /// Seconds waited for autovacuum before the queries.
    autovacuum_wait_s: f64,
    queries: Vec<QueryFigures>,
    /// The explorer's API as an unrestricted user and as a viewer of one cluster, then the
    /// queries as viewers of a tenth of the clusters and of one namespace in each.
    viewers: Vec<QueryTiming>,
    readers: ConcurrentReaders,
    /// With `--standby`: replay lag and the standby's readers over the first load and refresh.
    #[serde(skip_serializing_if = "Option::is_none")]
    standby: Option<StandbyFigures>,
    total_s: f64,
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
    let config = EnvConfig {
        admin_url,
        nats_url: args.nats_url.clone(),
        database: "kubecensus_scale".into(),
        stream: args.stream.clone(),
        subject_prefix: args.subject_prefix.clone(),
        dir: args.dir.clone(),
        bin_dir: bin_dir(args.bin_dir.as_ref())?,
        keep: args.keep,
        worker_socket: None,
        worker_pg_options: None,
    };
    let mut env = BenchEnv::new(config).await?;
    let standby = match (&private, args.standby) {
        (Some(server), true) => Some(server.standby().await.context("starting a hot standby")?),
        (None, true) => anyhow::bail!("--standby needs the private server (no --database-url)"),
        (_, false) => None,
    };
    let standby_url = standby.as_ref().map(|server| server.url("kubecensus_scale"));
    let result = run(&args, &mut env, started, standby_url.as_deref()).await;
    drop(standby);
    env.cleanup().await;
    match private {
        Some(server) if args.keep => {
            tracing::info!(url = server.url("kubecensus_scale"), "kept the private server running (--keep)");
            std::mem::forget(server);
        }
        server => drop(server),
    }
    let report = result?;
    let markdown = markdown(&report);
    std::fs::write(args.dir.join("report.md"), &markdown)?;
    std::fs::write(args.dir.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    println!("{markdown}");
    Ok(())
}

async fn run(args: &Args, env: &mut BenchEnv, started: Instant, standby: Option<&str>) -> anyhow::Result<ScaleReport> {
    let js = async_nats::jetstream::new(async_nats::connect(&args.nats_url).await?);
    let spec = FleetSpec {
        clusters: args.clusters,
        namespaces: args.namespaces,
        nodes: args.nodes,
        pods: args.pods,
        name_prefix: "sim".into(),
        ..FleetSpec::default()
    };
    tracing::info!(clusters = spec.clusters, pods = spec.pods, "generating the fleet");
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

    let watch = standby.map(|url| StandbyWatch::start(&env.pool, url, args.readers));
    tracing::info!("first load, from empty");
    let since = now(env).await?;
    let first_load = refresh::run_round(env, &js, &round("load", Vec::new())).await?;
    let first_load_throughput = scale::throughput(env, since).await?;
    let after_first_load = scale::footprint(env).await?;
    log_round(&first_load, &first_load_throughput, &after_first_load);

    churn(&fleet, args.churn);
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
    while pod_refreshes.len() < args.pod_refreshes {
        tokio::time::sleep(Duration::from_secs(args.pod_interval).saturating_sub(round_started.elapsed())).await;
        round_started = Instant::now();
        churn(&fleet, args.churn);
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
    let readers =
        scale::concurrent_readers(env, &queries[..3], args.readers, Duration::from_secs(args.reader_secs)).await?;
    drop(fleet);
    Ok(ScaleReport {
        command: std::iter::once("bench-scale".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        postgres,
        first_load,
        first_load_throughput,
        after_first_load,
        refresh: refreshed,
        refresh_throughput,
        after_refresh,
        pod_refreshes,
        autovacuum_wait_s: autovacuum_wait.as_secs_f64(),
        queries: figures,
        viewers,
        readers,
        standby,
        total_s: started.elapsed().as_secs_f64(),
    })
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

/// The report, as Markdown.
fn markdown(report: &ScaleReport) -> String {
    let mut out = format!("# bench-scale\n\n`{}`\n\n{}\n\n", report.command, report.postgres);
    out.push_str("| round | jobs | statuses | wall s | jobs/s | jobs/s first → last tenth | change | database MiB | relations |\n|---|---|---|---|---|---|---|---|---|\n");
    for (round, throughput, footprint) in [
        (&report.first_load, &report.first_load_throughput, &report.after_first_load),
        (&report.refresh, &report.refresh_throughput, &report.after_refresh),
    ] {
        out.push_str(&format!(
            "| {} | {} | {:?} | {:.1} | {:.1} | {:.1} → {:.1} | {:+.0} % | {:.0} | {} |\n",
            round.label,
            round.jobs,
            round.statuses,
            round.wall_s,
            round.jobs_per_s,
            throughput.tenths.first().copied().unwrap_or_default(),
            throughput.tenths.last().copied().unwrap_or_default(),
            throughput.change_percent(),
            mib(footprint.database_bytes as u64),
            footprint.relations
        ));
    }
    out.push_str("\n`kubernetes_pods` after each pods refresh with churn (heap + TOAST, indexes):\n\n| refresh | rows | table MiB | index MiB |\n|---|---|---|---|\n");
    out.push_str(&format!(
        "| first load | {} | {:.1} | {:.1} |\n",
        report.after_first_load.pods_rows,
        mib(report.after_first_load.pods_table_bytes as u64),
        mib(report.after_first_load.pods_index_bytes as u64)
    ));
    for (n, footprint) in report.pod_refreshes.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} |\n",
            n + 1,
            footprint.pods_rows,
            mib(footprint.pods_table_bytes as u64),
            mib(footprint.pods_index_bytes as u64)
        ));
    }
    out.push_str(&format!("\nQueries after waiting {:.0} s for autovacuum to catch up:\n", report.autovacuum_wait_s));
    out.push_str("\n| query | median ms | max ms | planning ms | execution ms | fresh connection ms |\n|---|---|---|---|---|---|\n");
    for query in &report.queries {
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} |\n",
            query.name, query.median_ms, query.max_ms, query.planning_ms, query.execution_ms, query.fresh_connection_ms
        ));
    }
    out.push_str("\nTargets:\n\n| target | measured | met |\n|---|---|---|\n");
    let queries = report.queries.iter().filter(|q| q.name.contains("design example") || q.name.contains("chang"));
    let mut verdicts: Vec<Verdict> = queries
        .map(|q| Verdict {
            target: format!("{} <= 100 ms", q.name),
            measured: format!("{:.1} ms median", q.median_ms),
            met: q.median_ms <= 100.0,
        })
        .collect();
    verdicts.extend(explorer::verdicts(&report.viewers));
    verdicts.extend(access::verdicts(&report.viewers));
    for v in &verdicts {
        out.push_str(&format!("{}\n", v.markdown_row()));
    }
    out.push_str("\nThe explorer's API (round trips on loopback) and the queries as viewers (access control):\n");
    out.push_str("\n| request or query | rows | median ms | max ms |\n|---|---|---|---|\n");
    for timing in &report.viewers {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} |\n",
            timing.name, timing.rows_returned, timing.median_ms, timing.max_ms
        ));
    }
    let readers = &report.readers;
    out.push_str(&format!(
        "\n{} concurrent fleet-wide readers for {:.0} s: {} queries, {} errors{}, p50 {:.0} ms, p95 {:.0} ms.\n\nTotal {:.0} s.\n",
        readers.readers,
        readers.seconds,
        readers.queries,
        readers.errors,
        readers.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
        readers.p50_ms,
        readers.p95_ms,
        report.total_s
    ));
    if let Some(standby) = &report.standby {
        out.push_str(&format!(
            "\nWith a hot standby attached for the first load and the refresh: replay lag p50 {:.0} ms, p99 {:.0} ms, \
             max {:.0} ms ({} samples); {} readers on it, {} reads, {} torn, {} errors{}, {} conflicts (cancelled queries).\n",
            standby.lag_p50_ms,
            standby.lag_p99_ms,
            standby.lag_max_ms,
            standby.lag_samples,
            standby.readers,
            standby.reads,
            standby.torn,
            standby.errors,
            standby.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
            standby.conflicts
        ));
    }
    out
}
