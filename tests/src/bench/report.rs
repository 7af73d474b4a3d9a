//! Everything one benchmark run measured, as JSON and as a Markdown report.

use std::fmt::Write;

use serde::Serialize;

use super::limits::{CopyLatency, Dump, FetchResult, LoadMode, LoadResult};
use super::queries::QueryTiming;
use super::readers::ReaderPhase;
use super::refresh::RoundResult;
use super::stats::mib;

/// The machine and the knobs of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    pub command: String,
    pub date: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub postgres: String,
    pub nats: String,
    pub clusters: usize,
    pub namespaces: usize,
    pub nodes: usize,
    pub pods: usize,
    pub concurrency: usize,
    pub page_size: u32,
    pub catalog_resources: usize,
    pub catalog_tables: usize,
    pub fleet_build_s: f64,
}

/// Per-job overhead: refreshing empty tables one job at a time.
#[derive(Debug, Clone, Serialize)]
pub struct Overhead {
    pub clusters: usize,
    /// The round that loaded the clusters first.
    pub first_load: RoundResult,
    /// The next round, measured: every job replaces rows.
    pub round: RoundResult,
    /// Wall time divided by jobs, with one worker running one job at a time.
    pub wall_per_job_ms: f64,
}

/// The memory of one worker on one cluster of a given size.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSize {
    pub pods: usize,
    pub round: RoundResult,
}

/// One target of the issue and how the run did against it.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub target: String,
    pub measured: String,
    pub met: bool,
}

impl Verdict {
    /// The verdict as a row of the Markdown "Targets" table (target, measured, met).
    pub fn markdown_row(&self) -> String {
        format!("| {} | {} | {} |", self.target, self.measured, if self.met { "yes" } else { "**no**" })
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub setup: Option<Setup>,
    pub rounds: Vec<RoundResult>,
    pub table_rows: Vec<(String, i64)>,
    pub database_bytes: i64,
    pub dump: Option<Dump>,
    pub loads: Vec<LoadResult>,
    pub fetch: Option<FetchResult>,
    pub copy_latency: Option<CopyLatency>,
    pub readers: Vec<ReaderPhase>,
    pub readers_round: Option<RoundResult>,
    pub queries_pods: i64,
    pub queries: Vec<QueryTiming>,
    pub history: Option<super::history::HistoryCost>,
    pub overhead: Option<Overhead>,
    pub sizes: Vec<ClusterSize>,
    pub verdicts: Vec<Verdict>,
    pub total_s: f64,
}

impl Report {
    /// The round with the most workers: the one compared to the limits.
    pub fn best_round(&self) -> Option<&RoundResult> {
        self.rounds.iter().max_by_key(|r| r.workers)
    }

    /// The fastest load of `mode`.
    pub fn load_limit(&self, mode: LoadMode) -> Option<&LoadResult> {
        self.loads.iter().filter(|l| l.mode == mode).max_by(|a, b| a.rows_per_s.total_cmp(&b.rows_per_s))
    }

    /// Judges the run against the targets.
    pub fn judge(&mut self) {
        let mut verdicts = Vec::new();
        if let Some(round) = self.best_round() {
            verdicts.push(Verdict {
                target: format!("default fleet refreshed in <= 30 s with {} workers", round.workers),
                measured: format!("{:.1} s", round.wall_s),
                met: round.wall_s <= 30.0,
            });
            // The same tables: the data tables' columns and indexes.
            if let Some(limit) = self.load_limit(LoadMode::Indexed) {
                let ratio = round.rows_per_s / limit.rows_per_s;
                let plain = self.load_limit(LoadMode::Plain).map_or(String::new(), |plain| {
                    format!(
                        " (into tables without indexes: {:.0} rows/s, {:.2})",
                        plain.rows_per_s,
                        round.rows_per_s / plain.rows_per_s
                    )
                });
                verdicts.push(Verdict {
                    target: "end-to-end rows/s >= 1/2 of raw COPY rows/s into the same tables (same indexes)".into(),
                    measured: format!("{:.0} / {:.0} rows/s = {:.2}{plain}", round.rows_per_s, limit.rows_per_s, ratio),
                    met: ratio >= 0.5,
                });
            }
        }
        let peak = self
            .rounds
            .iter()
            .chain(self.sizes.iter().map(|s| &s.round))
            .flat_map(|r| r.worker_peak_rss.iter().map(|p| p.1))
            .max();
        if let Some(peak) = peak {
            verdicts.push(Verdict {
                target: "worker peak RSS <= 150 MB (every run)".into(),
                measured: format!("{:.1} MiB max", mib(peak)),
                met: peak <= 150 * 1_000_000,
            });
        }
        if let [small, .., huge] = self.sizes.as_slice() {
            let (s, h) = (rss(&small.round), rss(&huge.round));
            verdicts.push(Verdict {
                target: format!("{} pods: same RSS as {} pods (within 25%)", huge.pods, small.pods),
                measured: format!("{:.1} vs {:.1} MiB", mib(h), mib(s)),
                met: (h as f64) <= s as f64 * 1.25,
            });
        }
        if let Some(overhead) = &self.overhead {
            verdicts.push(Verdict {
                target: "per-job overhead (small tables, one job at a time) <= 20 ms median".into(),
                measured: format!(
                    "{:.1} ms median wall per job (mean {:.1} ms); {:.1} ms median in the worker (runs.duration)",
                    overhead.round.finish_gap_p50_ms, overhead.wall_per_job_ms, overhead.round.all_p50_ms
                ),
                met: overhead.round.finish_gap_p50_ms <= 20.0,
            });
        }
        let without =
            self.readers.iter().filter(|p| p.phase.starts_with("baseline")).map(|p| p.p99_ms).fold(0.0, f64::max);
        if let Some(with) = self.readers.iter().find(|p| p.phase.starts_with("refresh")) {
            verdicts.push(Verdict {
                target: "readers' p99 during a refresh <= 2x without one".into(),
                measured: format!("{:.1} ms vs {:.1} ms (worst phase without swaps)", with.p99_ms, without),
                met: with.p99_ms <= 2.0 * without,
            });
            verdicts.push(Verdict {
                target: "no reader blocked > 250 ms".into(),
                measured: format!("max {:.1} ms", with.max_ms),
                met: with.max_ms <= 250.0,
            });
        }
        for query in self.queries.iter().filter(|q| q.name.contains("design example")) {
            verdicts.push(Verdict {
                target: format!("{} <= 100 ms at {} pods", query.name, self.queries_pods),
                measured: format!("{:.1} ms median", query.median_ms),
                met: query.median_ms <= 100.0,
            });
        }
        verdicts.extend(self.history.iter().flat_map(super::history::HistoryCost::verdicts));
        verdicts.extend(super::explorer::verdicts(&self.queries));
        verdicts.extend(super::access::verdicts(&self.queries));
        self.verdicts = verdicts;
    }

    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = self.write_markdown(&mut md);
        md
    }

    fn write_markdown(&self, md: &mut String) -> std::fmt::Result {
        if let Some(s) = &self.setup {
            writeln!(md, "## Run\n")?;
            writeln!(md, "`{}`  ", s.command)?;
            writeln!(md, "{}; {} CPUs ({}); {}; {}  ", s.date, s.cpus, s.cpu_model, s.postgres, s.nats)?;
            writeln!(
                md,
                "Fleet: {} clusters × ({} namespaces, {} nodes, {} pods); catalog: {} resources, {} tables; \
                 worker concurrency {}, page size {}. Fleet generated in {:.1} s. Whole run: {:.0} s.\n",
                s.clusters,
                s.namespaces,
                s.nodes,
                s.pods,
                s.catalog_resources,
                s.catalog_tables,
                s.concurrency,
                s.page_size,
                s.fleet_build_s,
                self.total_s
            )?;
        }
        if !self.verdicts.is_empty() {
            writeln!(md, "## Targets\n\n| target | measured | met |\n|---|---|---|")?;
            for v in &self.verdicts {
                writeln!(md, "{}", v.markdown_row())?;
            }
            writeln!(md)?;
        }
        if !self.rounds.is_empty() {
            writeln!(md, "## Default fleet, full refresh\n")?;
            writeln!(
                md,
                "| workers × concurrency | jobs | rows | wall | rows/s | jobs/s | job p50 / p95 | worker peak RSS |"
            )?;
            writeln!(md, "|---|---|---|---|---|---|---|---|")?;
            for r in &self.rounds {
                writeln!(
                    md,
                    "| {} × {} | {} | {} | {:.1} s | {:.0} | {:.1} | {:.0} / {:.0} ms | {} |",
                    r.workers,
                    r.concurrency,
                    r.jobs,
                    r.rows,
                    r.wall_s,
                    r.rows_per_s,
                    r.jobs_per_s,
                    r.all_p50_ms,
                    r.all_p95_ms,
                    rss_list(r)
                )?;
            }
            writeln!(md)?;
            for r in &self.rounds {
                let not_ok: Vec<String> =
                    r.statuses.iter().filter(|(s, _)| *s != "succeeded").map(|(s, n)| format!("{n} {s}")).collect();
                if !not_ok.is_empty() {
                    writeln!(md, "Round {}: runs not succeeded: {}.\n", r.label, not_ok.join(", "))?;
                }
            }
            if let Some(r) = self.best_round() {
                writeln!(
                    md,
                    "Per table, {} workers (`runs.duration`: from the run's start to its swap transaction):\n",
                    r.workers
                )?;
                writeln!(
                    md,
                    "| job table | jobs | rows (every table of the resource) | p50 | p95 | max |\n|---|---|---|---|---|---|"
                )?;
                for t in &r.tables {
                    writeln!(
                        md,
                        "| {} | {} | {} | {:.0} ms | {:.0} ms | {:.0} ms |",
                        t.table, t.jobs, t.rows, t.p50_ms, t.p95_ms, t.max_ms
                    )?;
                }
                writeln!(md)?;
            }
            writeln!(md, "Database size after the rounds: {:.0} MiB.\n", mib(self.database_bytes as u64))?;
        }
        if !self.loads.is_empty() || self.fetch.is_some() {
            writeln!(md, "## Physical limits for the same data\n")?;
            if let Some(d) = &self.dump {
                writeln!(
                    md,
                    "The rows kubecensus loaded, dumped: {} rows, {:.0} MiB of COPY text, {} files (one per cluster and table).\n",
                    d.rows,
                    mib(d.bytes),
                    d.files.len()
                )?;
            }
            writeln!(md, "| what | connections | time | rows/s | MB/s |\n|---|---|---|---|---|")?;
            for l in &self.loads {
                writeln!(
                    md,
                    "| {} | {} | {:.1} s | {:.0} | {:.1} |",
                    l.what, l.connections, l.seconds, l.rows_per_s, l.mb_per_s
                )?;
            }
            if let Some(f) = &self.fetch {
                writeln!(
                    md,
                    "| HTTPS list fetch of every resource of every cluster, page size {}, {} lists at once ({} pages, {} objects, {:.0} MiB) | – | {:.1} s | {:.0} objects/s | {:.1} |",
                    f.page_size,
                    f.concurrent,
                    f.pages,
                    f.objects,
                    mib(f.bytes),
                    f.seconds,
                    f.objects_per_s,
                    f.mb_per_s
                )?;
            }
            writeln!(md)?;
            if let Some(c) = &self.copy_latency {
                writeln!(
                    md,
                    "One small COPY (40 rows), {} times: sqlx (the worker's driver) median {:.1} ms, max {:.1} ms; psql (libpq) {:.2} ms on average.\n",
                    c.count, c.sqlx_median_ms, c.sqlx_max_ms, c.psql_mean_ms
                )?;
            }
            if let Some(r) = self.best_round() {
                writeln!(
                    md,
                    "kubecensus end to end ({} workers): {:.1} s, {:.0} rows/s.\n",
                    r.workers, r.wall_s, r.rows_per_s
                )?;
                for mode in [LoadMode::Plain, LoadMode::Indexed] {
                    if let Some(l) = self.load_limit(mode) {
                        writeln!(
                            md,
                            "- vs {} ({} connections): **{:.2}× the time**, {:.0}% of its rows/s",
                            l.what,
                            l.connections,
                            r.wall_s / l.seconds,
                            100.0 * r.rows_per_s / l.rows_per_s
                        )?;
                    }
                }
                if let Some(f) = &self.fetch {
                    writeln!(md, "- vs the HTTPS fetch alone: {:.2}× the time", r.wall_s / f.seconds)?;
                }
                writeln!(md)?;
            }
        }
        if !self.readers.is_empty() {
            writeln!(md, "## Readers during a refresh\n")?;
            writeln!(md, "Reader connections running a point lookup and a per-cluster count back to back.\n")?;
            writeln!(md, "| phase | queries | p50 | p99 | max | > 250 ms | errors |\n|---|---|---|---|---|---|---|")?;
            for p in &self.readers {
                writeln!(
                    md,
                    "| {} | {} | {:.2} ms | {:.2} ms | {:.1} ms | {} | {} |",
                    p.phase, p.queries, p.p50_ms, p.p99_ms, p.max_ms, p.over_250ms, p.errors
                )?;
            }
            if let Some(r) = &self.readers_round {
                writeln!(
                    md,
                    "\nThe refresh under readers (every cluster's pods): {} jobs in {:.1} s ({:.0} rows/s).",
                    r.jobs, r.wall_s, r.rows_per_s
                )?;
            }
            writeln!(md)?;
        }
        if let Some(history) = &self.history {
            history.write_markdown(md)?;
        }
        if !self.queries.is_empty() {
            writeln!(md, "## Queries at {} pods\n", self.queries_pods)?;
            writeln!(md, "| query | rows | median | max |\n|---|---|---|---|")?;
            for q in &self.queries {
                writeln!(md, "| {} | {} | {:.1} ms | {:.1} ms |", q.name, q.rows_returned, q.median_ms, q.max_ms)?;
            }
            writeln!(md)?;
        }
        if let Some(o) = &self.overhead {
            writeln!(md, "## Per-job overhead (small tables)\n")?;
            writeln!(
                md,
                "{} clusters with no nodes and no pods (every other resource has 0 to a few objects), every resource \
                 refreshed by 1 worker running 1 job at a time: \
                 {} jobs in {:.1} s = {:.1} ms per job on average; **{:.1} ms median** wall per job (from one run's end \
                 to the next one's: queue, kube-system lookup, list, write, `runs`, ack). \
                 In the worker (`runs.duration`): p50 {:.1} ms, p95 {:.1} ms. The round before it, the clusters' \
                 first load (staging, indexes, new partitions): {:.1} ms median wall per job.\n",
                o.clusters,
                o.round.jobs,
                o.round.wall_s,
                o.wall_per_job_ms,
                o.round.finish_gap_p50_ms,
                o.round.all_p50_ms,
                o.round.all_p95_ms,
                o.first_load.finish_gap_p50_ms
            )?;
        }
        if !self.sizes.is_empty() {
            writeln!(md, "## Memory: one worker, one cluster\n")?;
            writeln!(md, "| pods in the cluster | rows | wall | rows/s | worker peak RSS |\n|---|---|---|---|---|")?;
            for s in &self.sizes {
                writeln!(
                    md,
                    "| {} | {} | {:.1} s | {:.0} | {:.1} MiB |",
                    s.pods,
                    s.round.rows,
                    s.round.wall_s,
                    s.round.rows_per_s,
                    mib(rss(&s.round))
                )?;
            }
            writeln!(md)?;
        }
        Ok(())
    }
}

fn rss(round: &RoundResult) -> u64 {
    round.worker_peak_rss.iter().map(|p| p.1).max().unwrap_or(0)
}

fn rss_list(round: &RoundResult) -> String {
    round.worker_peak_rss.iter().map(|p| format!("{:.1} MiB", mib(p.1))).collect::<Vec<_>>().join(", ")
}
