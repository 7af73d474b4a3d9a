//! One object: its row of `fleet_objects`, its recent changes (`object_changes`) and events
//! (`event_history`, else the current `kubernetes_events`), each read only when its table
//! exists (`to_regclass`), and the `kubectl` command that shows it on its own cluster (the RFC
//! keeps details on the cluster's API).

use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::{Source, field_columns, list::Object};
use crate::{
    Result,
    store::{schema::table_exists, sql::Ident},
};

/// How many changes and events a detail shows, newest first.
pub const HISTORY_ROWS: i64 = 20;

/// One object with what happened to it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Detail {
    pub object: Object,
    /// `kubectl --context <cluster> get <kind>.<group> [-n <namespace>] <name> -o yaml`.
    pub kubectl: String,
    /// Rows of `object_changes` as JSON objects, newest first; `None` when the table does not exist.
    pub changes: Option<Vec<serde_json::Value>>,
    /// Events about the object as JSON objects, newest first.
    pub events: Vec<serde_json::Value>,
}

/// The object `uid` of `cluster`, or `None` when there is none the role may see.
///
/// # Errors
/// [`crate::Error::Sql`] from PostgreSQL.
pub async fn detail(conn: &mut PgConnection, cluster: &str, uid: &str) -> Result<Option<Detail>> {
    let fields = field_columns(conn, Source::All).await?;
    let mut query = QueryBuilder::<Postgres>::new(format!(
        "SELECT {} FROM {}",
        super::list::select_list(&fields)?,
        Source::All.relation()
    ));
    query.push(" WHERE cluster_name = ").push_bind(cluster).push(" AND uid = ").push_bind(uid).push(" LIMIT 1");
    let Some(row) = query.build().fetch_optional(&mut *conn).await? else { return Ok(None) };
    let object = Object::from_row(&row, &fields)?;
    let changes = if table_exists(conn, "object_changes").await? {
        Some(history(conn, "object_changes", "changed_at", "uid", cluster, uid).await?)
    } else {
        None
    };
    let events = if table_exists(conn, "event_history").await? {
        history(conn, "event_history", "last_seen", "regarding_uid", cluster, uid).await?
    } else {
        history(conn, "kubernetes_events", "time", "regarding_uid", cluster, uid).await?
    };
    Ok(Some(Detail { kubectl: kubectl(&object), object, changes, events }))
}

/// The newest [`HISTORY_ROWS`] rows of `table` about `uid` of `cluster`, as JSON.
async fn history(
    conn: &mut PgConnection,
    table: &str,
    newest: &str,
    uid_column: &str,
    cluster: &str,
    uid: &str,
) -> Result<Vec<serde_json::Value>> {
    let sql = format!(
        "SELECT to_jsonb(t) FROM {} t WHERE cluster_name = $1 AND {} = $2 ORDER BY {} DESC NULLS LAST LIMIT $3",
        Ident::derived(&[table]),
        Ident::derived(&[uid_column]),
        Ident::derived(&[newest])
    );
    Ok(sqlx::query_scalar(&sql).bind(cluster).bind(uid).bind(HISTORY_ROWS).fetch_all(conn).await?)
}

/// The command that shows `object` on its cluster, with the cluster's name as the kubeconfig
/// context (`kubectl get` takes `kind.group`: <https://kubernetes.io/docs/reference/kubectl/#resource-types>).
pub fn kubectl(object: &Object) -> String {
    let resource = if object.api_group.is_empty() {
        object.kind.to_lowercase()
    } else {
        format!("{}.{}", object.kind.to_lowercase(), object.api_group)
    };
    let namespace = if object.namespace.is_empty() { String::new() } else { format!(" -n {}", object.namespace) };
    format!(
        "kubectl --context {} get {resource}{namespace} {} -o yaml",
        object.cluster_name,
        object.name.as_deref().unwrap_or_default()
    )
}
