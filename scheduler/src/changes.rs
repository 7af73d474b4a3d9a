//! `scheduler changes`: what changed in one cluster lately, from `object_changes` (README
//! "History"), newest first, as an aligned table or `--output json`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{args::Output, report::table};

/// One recorded change of one object.
#[derive(Debug, Serialize, sqlx::FromRow)]
struct Change {
    changed_at: DateTime<Utc>,
    table: String,
    namespace: Option<String>,
    name: Option<String>,
    uid: String,
    change: String,
    old_resource_version: Option<String>,
    new_resource_version: Option<String>,
    job_id: Uuid,
    run_id: Uuid,
    /// `{"column": {"old": ..., "new": ...}}` for the tables with column diffs.
    changed_columns: Option<serde_json::Value>,
}

/// What `scheduler changes` selects.
pub struct Selection<'a> {
    pub cluster: &'a str,
    /// Changes listed at most this long ago.
    pub since: Duration,
    pub namespace: Option<&'a str>,
    /// A table name (`kubernetes_deployments`).
    pub table: Option<&'a str>,
}

/// Prints the changes `selection` names, newest first; an error for a cluster `clusters` does
/// not know (a typo would otherwise read as "no changes").
pub async fn print(pool: &PgPool, selection: &Selection<'_>, output: Output) -> anyhow::Result<()> {
    let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM clusters WHERE name = $1)")
        .bind(selection.cluster)
        .fetch_one(pool)
        .await?;
    anyhow::ensure!(known, "no cluster named {} in the registry (see `scheduler report`)", selection.cluster);
    let changes: Vec<Change> = sqlx::query_as(
        "SELECT changed_at, table_name AS \"table\", namespace, name, uid, change, old_resource_version,
                new_resource_version, job_id, run_id, changed_columns
         FROM object_changes
         WHERE cluster_name = $1 AND changed_at >= now() - $2::interval
           AND ($3::text IS NULL OR namespace = $3) AND ($4::text IS NULL OR table_name = $4)
         ORDER BY changed_at DESC, table_name, namespace, name",
    )
    .bind(selection.cluster)
    .bind(format!("{} milliseconds", selection.since.as_millis()))
    .bind(selection.namespace)
    .bind(selection.table)
    .fetch_all(pool)
    .await?;
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&changes)?);
        return Ok(());
    }
    let mut shown = table(&["changed_at", "table", "namespace", "name", "change", "resource_version", "columns"]);
    for change in &changes {
        let version = match (&change.old_resource_version, &change.new_resource_version) {
            (Some(old), Some(new)) => format!("{old} → {new}"),
            (old, new) => old.clone().or(new.clone()).unwrap_or_default(),
        };
        shown.add_row(vec![
            change.changed_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            change.table.clone(),
            change.namespace.clone().unwrap_or_default(),
            change.name.clone().unwrap_or_default(),
            change.change.clone(),
            version,
            columns(change.changed_columns.as_ref()),
        ]);
    }
    println!("{shown}");
    println!(
        "{} changes in {} since {}",
        changes.len(),
        selection.cluster,
        humantime::format_duration(selection.since)
    );
    Ok(())
}

/// The changed columns' names, and the old and new value of a short one (an image list).
fn columns(changed: Option<&serde_json::Value>) -> String {
    let Some(serde_json::Value::Object(columns)) = changed else { return String::new() };
    columns
        .iter()
        .map(|(column, diff)| {
            let (old, new) = (diff["old"].to_string(), diff["new"].to_string());
            if old.len() + new.len() <= 80 { format!("{column}: {old} → {new}") } else { column.clone() }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
