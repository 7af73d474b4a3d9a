//! What people read: what a refresh published, waiting for its jobs (with a progress bar on a
//! terminal), and the latest run of every (cluster, table), as aligned tables or `--output json`,
//! in full or as a summary per cluster (`summary.rs`).

mod summary;

use std::time::Duration;

use comfy_table::{CellAlignment, Table, presets::NOTHING};
use indicatif::{ProgressBar, ProgressStyle};
use kubecensus::{
    model::catalog::Catalog,
    store::{prune::Pruned, runs::Status},
};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use self::summary::Summary;
use crate::{args::Output, publish::Publication};

/// The latest finished run of one (cluster, table).
#[derive(Debug, Serialize, sqlx::FromRow)]
struct LatestRun {
    cluster: String,
    table: String,
    status: String,
    rows: Option<i64>,
    inserted: Option<i64>,
    deleted: Option<i64>,
    /// Throttled answers the run waited out (`runs.throttled`).
    throttled: i32,
    millis: Option<f64>,
    error: Option<String>,
}

/// The rows one (cluster, table) holds now.
#[derive(Debug, Serialize, sqlx::FromRow)]
struct Held {
    cluster: String,
    table: String,
    rows: i64,
}

/// A job `refresh --wait` queued that had not ended by the deadline, with its latest run's
/// status and error, if it has one.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct OpenJob {
    cluster: String,
    table: String,
    job_id: Uuid,
    last_status: Option<String>,
    error: Option<String>,
}

/// The report: latest runs and the rows held now.
#[derive(Debug, Serialize)]
struct Report {
    runs: Vec<LatestRun>,
    snapshots: Vec<Held>,
}

/// The widest error shown in the report's table, in characters.
const ERROR_WIDTH: usize = 60;

/// Statuses after which a job is not tried again.
const FINAL: [Status; 5] = [Status::Succeeded, Status::Failed, Status::Skipped, Status::Superseded, Status::Rejected];

/// Prints the latest run of every (cluster, table) and the rows held now; with `summary`, their
/// [`Summary`] instead.
pub async fn print(pool: &PgPool, summary: bool, output: Output) -> anyhow::Result<()> {
    let report = load(pool, None).await?;
    match (output, summary) {
        (Output::Json, false) => println!("{}", serde_json::to_string_pretty(&report)?),
        (Output::Json, true) => println!("{}", serde_json::to_string_pretty(&Summary::of(&report))?),
        (Output::Table, false) => print_report(&report),
        (Output::Table, true) => Summary::of(&report).print(),
    }
    Ok(())
}

/// Prints what a refresh published; with a `deadline`, waits that long for the queued jobs and
/// adds the report (with `summary`, its [`Summary`], and the publications counted by result, not
/// listed) of the snapshots they write (the tables `catalog` says); returns the jobs still open
/// at the deadline (printed too).
pub async fn refreshed(
    pool: &PgPool,
    catalog: &Catalog,
    published: &[Publication],
    deadline: Option<Duration>,
    summary: bool,
    output: Output,
) -> anyhow::Result<Vec<OpenJob>> {
    match output {
        Output::Table if summary => println!("published: {}", counted_results(published)),
        Output::Table => {
            let mut table = table(&["cluster", "table", "result"]);
            for p in published {
                table.add_row(vec![p.cluster.as_str(), p.table.as_str(), p.result.as_str()]);
            }
            println!("{table}");
        }
        Output::Json => {}
    }
    let mut open = Vec::new();
    let report = if let Some(deadline) = deadline {
        let queued: Vec<&Publication> = published.iter().filter(|p| p.queued).collect();
        let ids: Vec<Uuid> = queued.iter().filter_map(|p| p.job_id).collect();
        if tokio::time::timeout(deadline, wait_for(pool, &ids)).await.is_err() {
            open = open_jobs(pool, &queued).await?;
        }
        let tables: Vec<String> = queued.iter().flat_map(|p| snapshot_names(catalog, &p.table)).collect();
        Some(load(pool, Some((&ids, &tables))).await?)
    } else {
        None
    };
    match (output, report) {
        (Output::Json, report) => {
            #[derive(Serialize)]
            struct Refreshed<'a> {
                published: &'a [Publication],
                #[serde(flatten)]
                report: Option<Report>,
                #[serde(skip_serializing_if = "Option::is_none")]
                summary: Option<Summary>,
                #[serde(skip_serializing_if = "Option::is_none")]
                open: Option<&'a [OpenJob]>,
            }
            let (report, summary) = match report {
                Some(report) if summary => (None, Some(Summary::of(&report))),
                report => (report, None),
            };
            let open = deadline.map(|_| open.as_slice());
            println!("{}", serde_json::to_string_pretty(&Refreshed { published, report, summary, open })?);
        }
        (Output::Table, Some(report)) if summary => {
            println!();
            Summary::of(&report).print();
        }
        (Output::Table, Some(report)) => {
            println!();
            print_report(&report);
        }
        (Output::Table, None) => {}
    }
    if output == Output::Table && !open.is_empty() {
        print_open(&open);
    }
    Ok(open)
}

/// The jobs of `queued` without a final run, each with its latest run's status and error.
async fn open_jobs(pool: &PgPool, queued: &[&Publication]) -> anyhow::Result<Vec<OpenJob>> {
    let finals: Vec<&str> = FINAL.iter().map(|status| status.as_str()).collect();
    let with_ids: Vec<(&Publication, Uuid)> = queued.iter().filter_map(|p| Some((*p, p.job_id?))).collect();
    let clusters: Vec<&str> = with_ids.iter().map(|(p, _)| p.cluster.as_str()).collect();
    let tables: Vec<&str> = with_ids.iter().map(|(p, _)| p.table.as_str()).collect();
    let ids: Vec<Uuid> = with_ids.iter().map(|(_, id)| *id).collect();
    Ok(sqlx::query_as(
        "SELECT q.cluster, q.\"table\", q.job_id, r.status AS last_status, r.error
         FROM unnest($1::text[], $2::text[], $3::uuid[]) AS q (cluster, \"table\", job_id)
         LEFT JOIN LATERAL (SELECT status, error FROM runs WHERE job_id = q.job_id
                            ORDER BY coalesce(finished_at, started_at) DESC LIMIT 1) r ON true
         WHERE NOT EXISTS (SELECT 1 FROM runs WHERE job_id = q.job_id AND status = ANY($4))
         ORDER BY 1, 2",
    )
    .bind(&clusters)
    .bind(&tables)
    .bind(&ids)
    .bind(&finals)
    .fetch_all(pool)
    .await?)
}

/// The jobs still open at the deadline, as a table.
fn print_open(open: &[OpenJob]) {
    let mut jobs = table(&["cluster", "table", "job id", "last status", "error"]);
    for job in open {
        jobs.add_row(vec![
            job.cluster.clone(),
            job.table.clone(),
            job.job_id.to_string(),
            job.last_status.clone().unwrap_or_else(|| "(no run yet)".to_owned()),
            job.error.as_deref().map(shortened).unwrap_or_default(),
        ]);
    }
    println!("\njobs still open at the deadline (--wait-timeout):\n{jobs}");
}

/// Prints the clusters `scheduler prune` pruned and the rows deleted with each.
pub fn pruned(pruned: &[Pruned], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(pruned)?),
        Output::Table if pruned.is_empty() => println!("no cluster to prune: every cluster is in the registry"),
        Output::Table => {
            let mut table = table(&["pruned", "rows deleted"]);
            for p in pruned {
                table.add_row(vec![p.cluster.clone(), p.rows_deleted.to_string()]);
            }
            align_right(&mut table, 1..2);
            println!("{table}");
        }
    }
    Ok(())
}

/// How many publications had each result, the most frequent first: `57 queued, 3 already pending`.
fn counted_results(published: &[Publication]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for p in published {
        match counts.iter_mut().find(|(result, _)| *result == p.result) {
            Some((_, count)) => *count += 1,
            None => counts.push((&p.result, 1)),
        }
    }
    counts.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    counts.iter().map(|(result, count)| format!("{count} {result}")).collect::<Vec<_>>().join(", ")
}

/// The snapshot names a job of `target` writes: its resource's tables, or a custom kind's own.
fn snapshot_names(catalog: &Catalog, target: &str) -> Vec<String> {
    match catalog.target(target) {
        Some((resource, t)) if t.kind.is_none() => resource.tables.iter().map(|table| table.name.clone()).collect(),
        _ => vec![target.to_owned()],
    }
}

/// The latest run of every (cluster, table) and the rows held, leaving out pruned clusters; with
/// `jobs`, only the runs of those jobs and the snapshots of their clusters among the given
/// snapshot names.
async fn load(pool: &PgPool, jobs: Option<(&[Uuid], &[String])>) -> anyhow::Result<Report> {
    let runs: Vec<LatestRun> = sqlx::query_as(
        "SELECT DISTINCT ON (r.cluster_name, r.table_name)
                r.cluster_name AS cluster, coalesce(r.table_name, '(all)') AS \"table\", r.status, r.rows_written AS rows,
                r.rows_inserted AS inserted, r.rows_deleted AS deleted, r.throttled,
                extract(epoch FROM r.duration)::float8 * 1000 AS millis, r.error
         FROM runs r WHERE r.status <> $1 AND r.cluster_name IS NOT NULL AND ($2::uuid[] IS NULL OR r.job_id = ANY($2))
           AND r.cluster_name NOT IN (SELECT name FROM clusters WHERE removed_at IS NOT NULL)
         ORDER BY r.cluster_name, r.table_name, r.started_at DESC",
    )
    .bind(Status::Running.as_str())
    .bind(jobs.map(|(ids, _)| ids))
    .fetch_all(pool)
    .await?;
    let snapshots: Vec<Held> = sqlx::query_as(
        "SELECT cluster_name AS cluster, table_name AS \"table\", row_count AS rows FROM snapshots
         WHERE $1::text[] IS NULL OR (table_name = ANY($1) AND cluster_name = ANY($2)) ORDER BY 1, 2",
    )
    .bind(jobs.map(|(_, tables)| tables))
    .bind(runs.iter().map(|run| run.cluster.clone()).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?;
    Ok(Report { runs, snapshots })
}

fn print_report(report: &Report) {
    let mut runs = table(&["cluster", "table", "status", "rows", "inserted", "deleted", "throttled", "ms", "error"]);
    let number = |value: Option<i64>| value.map_or_else(|| "-".to_owned(), |n| n.to_string());
    for run in &report.runs {
        runs.add_row(vec![
            run.cluster.clone(),
            run.table.clone(),
            run.status.clone(),
            number(run.rows),
            number(run.inserted),
            number(run.deleted),
            run.throttled.to_string(),
            run.millis.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0}")),
            run.error.as_deref().map(shortened).unwrap_or_default(),
        ]);
    }
    align_right(&mut runs, 3..8);
    println!("{runs}\n\nrows held now per (cluster, table):");
    let mut held = table(&["cluster", "table", "rows"]);
    for snapshot in &report.snapshots {
        held.add_row(vec![snapshot.cluster.clone(), snapshot.table.clone(), snapshot.rows.to_string()]);
    }
    align_right(&mut held, 2..3);
    println!("{held}");
}

/// An error cut to [`ERROR_WIDTH`] characters for the table (`--output json` has it whole).
fn shortened(error: &str) -> String {
    match error.char_indices().nth(ERROR_WIDTH) {
        Some((at, _)) => format!("{}…", &error[..at]),
        None => error.to_owned(),
    }
}

/// Right-aligns the numeric `columns` of `table`.
fn align_right(table: &mut Table, columns: std::ops::Range<usize>) {
    for column in columns {
        if let Some(column) = table.column_mut(column) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// A borderless table with a header: columns aligned whatever the names' lengths.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(NOTHING).set_header(header.to_vec());
    table
}

/// Waits until every job in `job_ids` has a run that ended for good, with a progress bar on a
/// terminal (hidden when stderr is not one); for ever, unless the caller sets a deadline.
async fn wait_for(pool: &PgPool, job_ids: &[Uuid]) -> anyhow::Result<()> {
    let bar = ProgressBar::new(job_ids.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} jobs done ({elapsed})").expect("a valid template"),
    );
    let finals: Vec<&str> = FINAL.iter().map(|status| status.as_str()).collect();
    loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(DISTINCT job_id) FROM runs WHERE job_id = ANY($1) AND status = ANY($2)")
                .bind(job_ids)
                .bind(&finals)
                .fetch_one(pool)
                .await?;
        bar.set_position(done as u64);
        if done as usize >= job_ids.len() {
            bar.finish_and_clear();
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
