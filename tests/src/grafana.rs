//! The Grafana dashboard the repository ships (`deploy/kubernetes/grafana/kubecensus-fleet.json`),
//! its panels' SQL as Grafana's PostgreSQL datasource would send it: the time macros expanded
//! as the datasource expands them for the dashboard's default range (the last 6 hours,
//! <https://grafana.com/docs/grafana/latest/datasources/postgres/query-editor/#macros>).

use sqlx::PgPool;

use crate::manifests::repo_root;

/// Every panel's title and query, macros expanded.
pub fn panel_queries() -> anyhow::Result<Vec<(String, String)>> {
    let path = repo_root().join("deploy/kubernetes/grafana/kubecensus-fleet.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let sql = target["rawSql"].as_str().unwrap_or_default();
            queries.push((panel["title"].as_str().unwrap_or_default().to_owned(), expand(sql)?));
        }
    }
    Ok(queries)
}

/// `$__timeFilter(c)` and `$__timeGroupAlias(c, 'Nm')` as the datasource writes them.
fn expand(sql: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find("$__") {
        out.push_str(&rest[..at]);
        let (name, tail) = rest[at + 3..].split_once('(').ok_or_else(|| anyhow::anyhow!("a macro without ("))?;
        let (args, tail) = tail.split_once(')').ok_or_else(|| anyhow::anyhow!("a macro without )"))?;
        let args: Vec<&str> = args.split(',').map(str::trim).collect();
        match (name, args.as_slice()) {
            ("timeFilter", [column]) => out.push_str(&format!("{column} BETWEEN now() - interval '6 hours' AND now()")),
            ("timeGroupAlias", [column, interval]) => {
                let minutes = interval.trim_matches('\'').trim_end_matches('m');
                out.push_str(&format!("date_bin('{minutes} minutes', {column}, TIMESTAMPTZ 'epoch') AS \"time\""));
            }
            _ => anyhow::bail!("macro $__{name} is not one this check expands"),
        }
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// Runs every panel's query on `pool`, as `role` when given (`SET LOCAL ROLE`); the number of
/// rows of each, by title.
pub async fn run_panels(pool: &PgPool, role: Option<&str>) -> anyhow::Result<Vec<(String, usize)>> {
    let mut counts = Vec::new();
    for (title, sql) in panel_queries()? {
        let mut tx = pool.begin().await?;
        if let Some(role) = role {
            sqlx::query("SELECT set_config('role', $1, true)").bind(role).execute(&mut *tx).await?;
        }
        let rows = sqlx::query(&sql).fetch_all(&mut *tx).await.map_err(|err| anyhow::anyhow!("{title}: {err}"))?;
        counts.push((title, rows.len()));
    }
    Ok(counts)
}
