//! The fleet view, timed as its users page through it: the first page of every object that is
//! not Current (50 rows, keyset order), and a deep page, after the key of the row at `depth`. The
//! RFC's target: each page within 50 ms.
//!
//! Each page is read from the `fleet_unhealthy_objects` table as SQL text (the README's query),
//! and from the `fleet_objects` view twice: as SQL text (planned at every run: planning 16
//! partitions of each of the view's tables is most of its time), and as a prepared statement
//! with bind parameters and a generic plan (`plan_cache_mode = force_generic_plan`), planned
//! once, as an application paging through the view would run it.

use std::time::Instant;

use kubecensus::store::sql::{keyset_sql, literal};
use sqlx::{Connection, Executor, PgConnection};

use super::env::BenchEnv;
use super::queries::{QueryTiming, timed_runs};
use super::stats::percentile;

/// The key of a row in keyset order: `cluster_name`, `namespace`, `name`, `uid`.
pub type Key = (String, String, String, String);

/// The key's columns.
const KEY_COLUMNS: [&str; 4] = ["cluster_name", "namespace", "name", "uid"];

/// The view's page query with bind parameters `$1`..`$4` (the key), as an application runs it.
fn view_page() -> String {
    let after = keyset_sql(&KEY_COLUMNS.map(str::to_owned), true, |n| format!("${}", n + 1));
    format!(
        "select cluster_name, namespace, api_group, kind, name, health, message, since from fleet_objects \
         where health <> 'Current' and {after} order by cluster_name, namespace, name, uid limit 50"
    )
}

/// One page of unhealthy objects of `source` after a key; `filter` says which are unhealthy
/// (the table holds nothing else).
pub fn page_sql(source: &str, filter: &str, after: &Key) -> String {
    let values = [after.0.clone(), after.1.clone(), after.2.clone(), after.3.clone()];
    format!(
        "select cluster_name, namespace, api_group, kind, name, health, message, since from {source} \
         where {filter}{} order by cluster_name, namespace, name, uid limit 50",
        keyset_sql(&KEY_COLUMNS.map(str::to_owned), true, |n| literal(&values[n]))
    )
}

/// Times the first page and the page after the `depth`-th unhealthy object (the last page when
/// there are fewer), from the table and from the view.
pub async fn time_pages(env: &BenchEnv, depth: i64, runs: usize) -> anyhow::Result<Vec<QueryTiming>> {
    let mut conn = PgConnection::connect(&env.database_url).await?;
    let unhealthy: i64 =
        sqlx::query_scalar("select count(*) from fleet_unhealthy_objects").fetch_one(&mut conn).await?;
    let deep: Key = sqlx::query_as(
        "select cluster_name, namespace, name, uid from fleet_unhealthy_objects \
         order by cluster_name, namespace, name, uid offset $1 limit 1",
    )
    .bind(depth.min((unhealthy - 50).max(0)))
    .fetch_optional(&mut conn)
    .await?
    .unwrap_or_default();
    let mut timings = Vec::new();
    for (page, after) in [
        (format!("first page of {unhealthy} unhealthy objects"), Key::default()),
        (format!("the page after unhealthy object {depth}"), deep),
    ] {
        for (source, filter) in [("fleet_unhealthy_objects", ""), ("fleet_objects", "health <> 'Current' and ")] {
            let (name, sql) = (format!("{source}: {page}"), page_sql(source, filter, &after));
            let rows_returned = sqlx::raw_sql(&sql).fetch_all(&mut conn).await?.len();
            let ms = timed_runs(&mut conn, &sql, runs).await?;
            timings.push(timing(name, sql, rows_returned, ms));
        }
        let ms = timed_prepared(&mut conn, &after, runs).await?;
        let name = format!("fleet_objects: {page}, prepared (generic plan)");
        timings.push(timing(name, view_page(), timings.last().map_or(0, |t| t.rows_returned), ms));
    }
    Ok(timings)
}

/// A query's timing from its sorted milliseconds (logged).
pub fn timing(name: String, sql: String, rows_returned: usize, ms: Vec<f64>) -> QueryTiming {
    tracing::info!(query = name, median_ms = percentile(&ms, 0.5), "page timed");
    QueryTiming {
        name,
        sql,
        rows_returned,
        runs: ms.len(),
        median_ms: percentile(&ms, 0.5),
        max_ms: ms.last().copied().unwrap_or_default(),
    }
}

/// Runs [`view_page`] `runs` times after one untimed run that prepares it; returns each run's
/// milliseconds, sorted.
async fn timed_prepared(conn: &mut PgConnection, after: &Key, runs: usize) -> anyhow::Result<Vec<f64>> {
    conn.execute("set plan_cache_mode = force_generic_plan").await?;
    let sql = view_page();
    let page = || sqlx::query(&sql).bind(&after.0).bind(&after.1).bind(&after.2).bind(&after.3);
    page().fetch_all(&mut *conn).await?;
    let mut ms = Vec::new();
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        page().fetch_all(&mut *conn).await?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    conn.execute("reset plan_cache_mode").await?;
    Ok(ms)
}
