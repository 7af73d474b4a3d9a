//! What a replace writes besides the data tables, in the same transaction: tables derived from
//! the rows it changed, so they agree with the snapshot at every commit and a failed,
//! rolled-back or superseded job writes none of them.
//!
//! [`write`] is called once per committed replace, after every table of the resource has its new
//! rows and before the run's outcome is recorded. It rewrites the cluster's rows of
//! `fleet_unhealthy_objects` ([`super::fleet_view`]) and the summaries ([`super::summaries`])
//! for each table whose rows changed, keeps the events a listing saw, and the gaps between
//! listings, in [`super::event_history`],
//! records a first load's baseline of the change history (the replace itself records the
//! objects that changed, [`super::changes`]), and recomputes the
//! cluster's effective permissions when its RBAC or discovery rows changed ([`super::access`]).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{access, changes, event_history, fleet_view, schema::TableShape, scope::Scope, summaries};
use crate::{Result, model::catalog::Resource, queue::job::Job, store::runs::RowCounts};

/// One committed replace of a cluster's rows of a resource, as the derived tables see it.
pub struct Swap<'a> {
    /// The cluster whose rows were replaced.
    pub cluster: &'a str,
    /// Which of the cluster's rows (all, or one custom kind's).
    pub scope: &'a Scope,
    /// The resource whose tables these are.
    pub resource: &'a Resource,
    /// The job that listed the rows.
    pub job: &'a Job,
    /// The job's run (`runs.run_id`).
    pub run_id: Uuid,
    /// The cluster's first load of this scope: there were no rows before (no snapshot).
    pub first_load: bool,
    /// When the job table's snapshot was last replaced before this swap (`snapshots.swapped_at`,
    /// the previous successful listing's commit); `None` before the first.
    pub previous_swap: Option<DateTime<Utc>>,
    /// When the job's listing began.
    pub listed_at: DateTime<Utc>,
    /// Whether object changes are recorded (the worker's `--change-history`).
    pub history: bool,
    /// Each table of the resource, job table first.
    pub tables: Vec<TableWrite<'a>>,
}

/// What a replace wrote to one table.
pub struct TableWrite<'a> {
    /// The table.
    pub shape: &'a TableShape<'a>,
    /// Rows listed, inserted and deleted.
    pub counts: RowCounts,
    /// `row_hash` of each row inserted (in the table now).
    pub inserted: Vec<Uuid>,
}

/// Writes the tables derived from `swap` in its transaction `tx`.
///
/// # Errors
/// Any SQL error: the caller's transaction then rolls back, replace and all.
pub async fn write(tx: &mut PgConnection, swap: &Swap<'_>) -> Result<()> {
    for table in &swap.tables {
        if table.counts.inserted + table.counts.deleted > 0 {
            rewrite_derived(tx, swap, table).await?;
        }
    }
    event_history::write(tx, swap).await?;
    changes::write_baseline(tx, swap).await?;
    access::on_swap(tx, swap).await
}

/// Rewrites the scope's rows, derived from the table's, of `fleet_unhealthy_objects` (its rows
/// not Current, when the table is one of `fleet_objects`': [`super::fleet_view`]) and of the
/// summaries that count the table ([`super::summaries`]).
async fn rewrite_derived(tx: &mut PgConnection, swap: &Swap<'_>, table: &TableWrite<'_>) -> Result<()> {
    let scope = swap.scope.condition(2);
    let unhealthy = fleet_view::unhealthy_rewrite(swap.resource, table.shape, &scope).into_iter().flatten();
    for sql in unhealthy.chain(summaries::rewrite(swap.resource, table.shape, &scope)) {
        sqlx::query_with(&sql, swap.scope.arguments(swap.cluster)?).execute(&mut *tx).await?;
    }
    Ok(())
}
