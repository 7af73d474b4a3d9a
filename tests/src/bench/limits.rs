//! The physical limits for the same data, measured in the same run:
//!
//! - **COPY**: the rows kubecensus loaded, dumped to files (one per cluster and table), then loaded
//!   back with `psql \copy` into plain logged tables of the same columns, by 1 and by N
//!   connections at once. No index, no partition, no
//!   fetch, no flattening: what PostgreSQL alone can ingest on this machine.
//! - **COPY with indexes**: the same into tables with the data tables' indexes, kept up to date
//!   row by row: what loading these rows into the same tables costs.
//! - **HTTP fetch**: the same lists fetched page by page over HTTPS with the same client stack
//!   (kube, rustls) and page size, bodies read and only counted, N lists at once.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use kube::core::{Request, params::ListParams};
use kubecensus::{
    model::catalog::catalog,
    source::kubeapi,
    source::registry::Registry,
    store::{
        Scope,
        sql::{Ident, literal},
    },
};
use serde::{Deserialize, Serialize, de::IgnoredAny};
use sqlx::{Connection, PgConnection};

use super::env::BenchEnv;

/// The schema the limit measurements load into.
const SCHEMA: &str = "bench_limit";

/// One dumped (cluster, table): a file of COPY text rows.
#[derive(Debug, Clone)]
pub struct DumpFile {
    pub table: String,
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
}

/// The dump of every current partition.
#[derive(Debug, Clone, Serialize)]
pub struct Dump {
    #[serde(skip)]
    pub files: Vec<DumpFile>,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// What a load writes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LoadMode {
    /// Plain tables of the same columns, without indexes.
    Plain,
    /// The same tables with the data tables' indexes, created before the COPY.
    Indexed,
}

impl LoadMode {
    fn what(self) -> &'static str {
        match self {
            Self::Plain => "COPY into plain tables (no index)",
            Self::Indexed => "COPY into tables with the data tables' indexes",
        }
    }
}

/// One load of every dumped file.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub mode: LoadMode,
    pub what: String,
    pub connections: usize,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub rows_per_s: f64,
    pub mb_per_s: f64,
}

/// Dumps every (cluster, table)'s rows (as `snapshots` lists them) into `dir`.
pub async fn dump(env: &BenchEnv, dir: &Path) -> anyhow::Result<Dump> {
    let started = Instant::now();
    std::fs::create_dir_all(dir)?;
    let snapshots: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT cluster_name, table_name, row_count FROM snapshots ORDER BY row_count DESC")
            .fetch_all(&env.pool)
            .await?;
    let mut conn = env.pool.acquire().await?;
    let mut files = Vec::new();
    for (cluster, name, rows) in snapshots {
        if rows == 0 {
            continue;
        }
        // A snapshot names a table, or one custom kind's rows of a table (`store::Scope`).
        let (table, filters) = match catalog().target(&name) {
            Some((resource, target)) if target.kind.is_some() => {
                (resource.job_table().to_owned(), Scope::of(target).filters)
            }
            _ => (name.clone(), Vec::new()),
        };
        let mut condition = format!("cluster_name = {}", literal(&cluster));
        for (column, value) in &filters {
            condition.push_str(&format!(" AND {} = {}", Ident::new(column)?, literal(value)));
        }
        let path = dir.join(format!("{}.{cluster}.tsv", name.replace('/', "_")));
        let mut data = Vec::new();
        let select = format!("SELECT * FROM {} WHERE {condition}", Ident::new(&table)?);
        let mut stream = conn.copy_out_raw(&format!("COPY ({select}) TO STDOUT")).await?;
        while let Some(chunk) = stream.try_next().await? {
            data.extend_from_slice(&chunk);
        }
        drop(stream);
        std::fs::write(&path, &data).with_context(|| format!("writing {}", path.display()))?;
        files.push(DumpFile { table, path, rows: rows as u64, bytes: data.len() as u64 });
    }
    Ok(Dump {
        rows: files.iter().map(|f| f.rows).sum(),
        bytes: files.iter().map(|f| f.bytes).sum(),
        files,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Creates `bench_limit.<table>` for every catalog table: the same columns, no partitioning,
/// no index.
pub async fn prepare_tables(env: &BenchEnv) -> anyhow::Result<()> {
    let mut sql = format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA};");
    for (_, table) in catalog().tables() {
        sql.push_str(&format!("CREATE TABLE {SCHEMA}.{0} (LIKE public.{0});", table.name));
    }
    sqlx::raw_sql(&sql).execute(&env.pool).await?;
    Ok(())
}

/// Drops what the limit measurements made.
pub async fn drop_tables(env: &BenchEnv) -> anyhow::Result<()> {
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")).execute(&env.pool).await?;
    Ok(())
}

/// Loads every file with `connections` psql processes at once (`\copy`, as the research in
/// `limits.md` did; libpq, unlike sqlx 0.9, sets TCP_NODELAY), files dealt largest first to the
/// least loaded, as `mode` says.
pub async fn load(env: &BenchEnv, dump: &Dump, connections: usize, mode: LoadMode) -> anyhow::Result<LoadResult> {
    let mut truncate = String::new();
    for (_, table) in catalog().tables() {
        truncate.push_str(&format!("TRUNCATE {SCHEMA}.{};", table.name));
    }
    sqlx::raw_sql(&truncate).execute(&env.pool).await?;
    sqlx::raw_sql("CHECKPOINT").execute(&env.pool).await?;
    let mut indexes = std::collections::HashMap::new();
    if mode != LoadMode::Plain {
        for (_, table) in catalog().tables() {
            let definitions: Vec<String> =
                sqlx::query_scalar("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1")
                    .bind(&table.name)
                    .fetch_all(&env.pool)
                    .await?;
            // "CREATE INDEX name ON ONLY public.t USING btree (a, b)" → "USING btree (a, b)"
            let usings: Vec<String> =
                definitions.iter().filter_map(|d| d.find(" USING ").map(|at| d[at + 1..].to_owned())).collect();
            indexes.insert(table.name.clone(), usings);
        }
    }
    if mode == LoadMode::Indexed {
        let mut create = String::new();
        for (table, usings) in &indexes {
            for using in usings {
                create.push_str(&format!("CREATE INDEX ON {SCHEMA}.{table} {using};"));
            }
        }
        sqlx::raw_sql(&create).execute(&env.pool).await?;
    }
    let connections = connections.max(1);
    let mut scripts = vec![String::new(); connections];
    let mut loads = vec![0u64; connections];
    for file in &dump.files {
        let least = (0..connections).min_by_key(|&i| loads[i]).expect("at least one connection");
        loads[least] += file.bytes;
        let script = &mut scripts[least];
        let path = file.path.display().to_string().replace('\'', "''");
        script.push_str(&format!("\\copy {SCHEMA}.{} from '{path}'\n", file.table));
    }
    let dir =
        dump.files.first().and_then(|f| f.path.parent()).map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
    let mut paths = Vec::new();
    for (i, script) in scripts.iter().enumerate() {
        let path = dir.join(format!("load-{i}-{mode:?}.sql"));
        std::fs::write(&path, script)?;
        paths.push(path);
    }
    let started = Instant::now();
    let runs = paths.iter().map(|path| psql(&env.database_url, path));
    futures::future::try_join_all(runs).await?;
    let seconds = started.elapsed().as_secs_f64();
    if mode == LoadMode::Indexed {
        // The plain tables stay for the next load, without indexes.
        drop_listed(env, "INDEX", "SELECT quote_ident(indexname) FROM pg_indexes WHERE schemaname = $1").await?;
    }
    Ok(LoadResult {
        mode,
        what: mode.what().into(),
        connections,
        rows: dump.rows,
        bytes: dump.bytes,
        seconds,
        rows_per_s: dump.rows as f64 / seconds,
        mb_per_s: dump.bytes as f64 / 1e6 / seconds,
    })
}

/// Drops the `object`s (`INDEX`, `TABLE`) of the bench schema whose quoted names `names_sql`
/// lists (given the schema as `$1`), 200 to a statement.
async fn drop_listed(env: &BenchEnv, object: &str, names_sql: &str) -> anyhow::Result<()> {
    let names: Vec<String> = sqlx::query_scalar(names_sql).bind(SCHEMA).fetch_all(&env.pool).await?;
    for chunk in names.chunks(200) {
        let list: Vec<String> = chunk.iter().map(|n| format!("{SCHEMA}.{n}")).collect();
        sqlx::raw_sql(&format!("DROP {object} {}", list.join(", "))).execute(&env.pool).await?;
    }
    Ok(())
}

/// Runs a psql script, stopping at the first error.
async fn psql(database_url: &str, script: &Path) -> anyhow::Result<()> {
    let output = tokio::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database_url, "-f"])
        .arg(script)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running psql (the COPY limit needs the PostgreSQL client)")?;
    anyhow::ensure!(
        output.status.success(),
        "psql -f {} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The latency of one small COPY (one row), by sqlx (the worker's driver) and by psql (libpq),
/// median of `count` COPYs each. sqlx 0.9 leaves Nagle's algorithm on, so its CopyDone can wait
/// for the server's delayed ACK.
#[derive(Debug, Clone, Serialize)]
pub struct CopyLatency {
    pub count: usize,
    pub sqlx_median_ms: f64,
    pub sqlx_max_ms: f64,
    pub psql_mean_ms: f64,
}

pub async fn copy_latency(env: &BenchEnv, dir: &Path, count: usize) -> anyhow::Result<CopyLatency> {
    let mut conn = PgConnection::connect(&env.database_url).await?;
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS bench_copy_latency (a int, b text)").execute(&mut conn).await?;
    let row = "1\tsome text of a row, a little longer than the smallest one\n".repeat(40);
    let mut ms = Vec::new();
    for _ in 0..count {
        let started = Instant::now();
        let mut copy = conn.copy_in_raw("COPY bench_copy_latency FROM STDIN").await?;
        copy.send(row.as_bytes()).await?;
        copy.finish().await?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let file = dir.join("copy-latency.tsv");
    std::fs::write(&file, &row)?;
    let script = dir.join("copy-latency.sql");
    std::fs::write(&script, format!("\\copy bench_copy_latency from '{}'\n", file.display()).repeat(count))?;
    let started = Instant::now();
    psql(&env.database_url, &script).await?;
    let psql_mean_ms = started.elapsed().as_secs_f64() * 1000.0 / count as f64;
    sqlx::raw_sql("DROP TABLE bench_copy_latency").execute(&mut conn).await?;
    Ok(CopyLatency {
        count,
        sqlx_median_ms: super::stats::percentile(&ms, 0.5),
        sqlx_max_ms: ms.last().copied().unwrap_or_default(),
        psql_mean_ms,
    })
}

/// The HTTP side: every catalog resource of every cluster, listed page by page.
#[derive(Debug, Clone, Serialize)]
pub struct FetchResult {
    pub lists: usize,
    pub concurrent: usize,
    pub page_size: u32,
    pub pages: u64,
    pub objects: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub objects_per_s: f64,
    pub mb_per_s: f64,
}

#[derive(Deserialize)]
struct ListEnvelope {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Option<Vec<IgnoredAny>>,
}

#[derive(Default, Deserialize)]
struct ListMeta {
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

/// Lists every resource of every cluster of `registry`, `concurrent` lists at once.
pub async fn fetch(registry: &Path, page_size: u32, concurrent: usize) -> anyhow::Result<FetchResult> {
    let registry = Registry::load(registry)?;
    let mut clients = Vec::new();
    for cluster in &registry.clusters {
        clients.push(cluster.client().await?);
    }
    let lists: Vec<(kube::Client, String)> = clients
        .iter()
        .flat_map(|client| catalog().resources.iter().map(move |r| (client.clone(), kubeapi::list_path(&r.api, None))))
        .collect();
    let count = lists.len();
    let started = Instant::now();
    let totals: Vec<(u64, u64, u64)> = futures::stream::iter(lists)
        .map(|(client, path)| async move { list_all(&client, &path, page_size).await })
        .buffer_unordered(concurrent.max(1))
        .try_collect()
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    let (pages, objects, bytes) = totals.iter().fold((0, 0, 0), |a, t| (a.0 + t.0, a.1 + t.1, a.2 + t.2));
    Ok(FetchResult {
        lists: count,
        concurrent,
        page_size,
        pages,
        objects,
        bytes,
        seconds,
        objects_per_s: objects as f64 / seconds,
        mb_per_s: bytes as f64 / 1e6 / seconds,
    })
}

/// One list, every page: (pages, objects, bytes). A resource the cluster does not serve is empty.
async fn list_all(client: &kube::Client, path: &str, page_size: u32) -> anyhow::Result<(u64, u64, u64)> {
    let (mut pages, mut objects, mut bytes) = (0, 0, 0);
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(page_size);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let request = Request::new(path).list(&params)?;
        let response = client.send(request.map(kube::client::Body::from)).await?;
        if response.status().as_u16() == 404 {
            return Ok((pages, objects, bytes));
        }
        anyhow::ensure!(response.status().is_success(), "GET {path}: {}", response.status());
        let body = response.into_body().collect_bytes().await?;
        let list: ListEnvelope = serde_json::from_slice(&body)?;
        pages += 1;
        bytes += body.len() as u64;
        objects += list.items.map_or(0, |items| items.len() as u64);
        match list.metadata.continue_token.filter(|t| !t.is_empty()) {
            Some(next) => token = Some(next),
            None => return Ok((pages, objects, bytes)),
        }
    }
}
