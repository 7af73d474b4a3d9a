//! PostgreSQL: the data tables, the registry as the database sees it, and the atomic replace of
//! one cluster's rows.
//!
//! [`schema`] creates and upgrades the tables (one per catalog table, hash-partitioned by
//! cluster); [`replace`] writes a job's rows (the rows of its [`Scope`], on its
//! [`JobConnection`]), and [`derived`] what the same transaction derives from them; [`sql`] is the one way names get into SQL text;
//! [`freshness`] says how old the snapshots are; [`fleet_view`] is the `fleet_objects` view of
//! every object's health and the `fleet_unhealthy_objects` table of those not Current;
//! [`summaries`] keeps `fleet_counts` and `fleet_images`, a few rows per cluster for fleet-wide
//! counts;
//! [`event_history`] keeps events past their lifetime and records the gaps between listings;
//! [`changes`] records each object's changes; [`retention`] keeps the history tables' daily
//! partitions.
//! [`access`] is access control: effective RBAC permissions and row-level security for viewers.
//! [`explore`] holds the explorer's read-only queries.

pub mod access;
pub mod changes;
#[cfg(test)]
mod changes_tests;
pub mod derived;
#[cfg(test)]
mod derived_tests;
pub mod event_history;
#[cfg(test)]
mod event_history_tests;
pub mod explore;
pub mod fleet_view;
pub mod freshness;
mod job_connection;
pub mod prune;
pub mod replace;
pub mod retention;
pub mod runs;
pub mod schema;
mod scope;
mod session_lock;
#[cfg(test)]
mod shard_tests;
pub mod sql;
pub mod summaries;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod upgrade_tests;

use std::time::Duration;

use sqlx::{PgConnection, PgPool, postgres::PgPoolOptions};

use crate::{
    Error, Result,
    model::catalog::Catalog,
    ops::credentials::{DatabaseCredentials, postgres_url},
    source::registry::Registry,
    store::runs::Status,
};

pub use job_connection::JobConnection;
pub use replace::{Refresh, ReplaceOutcome};
pub use schema::ensure_tables;
pub use scope::Scope;

/// The migrations in `migrations/`, embedded.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The schema holding every partition of the data tables.
pub const PARTITIONS_SCHEMA: &str = "kubecensus_partitions";

/// PostgreSQL 15 (`server_version_num`), the oldest release kubecensus is tested on (Debian 12's).
const MIN_SERVER_VERSION: i32 = 150_000;
/// Prepared statements a connection keeps (sqlx's default: 100, least recently used evicted).
/// A worker's jobs run several statements per table, each table's its own text (the replace's,
/// `fleet_unhealthy_objects`', the summaries'): 173 in a `bench` full load (PostgreSQL's log;
/// the summaries' statements were parsed 6,128 times with 100, 600 with this). Kept,
/// a statement is parsed once per connection, and after five runs PostgreSQL may run it on a
/// generic plan instead of planning it each time (PostgreSQL docs, `PREPARE`, `plan_cache_mode`).
const STATEMENT_CACHE: usize = 1000;
/// COPY data goes out in messages of at most this many bytes: a connection's write buffer grows
/// to its largest message and keeps that size for the pool's lifetime.
const COPY_MESSAGE_BYTES: usize = 128 * 1024;

/// Opens a pool on `url` (its TLS settings and password as [`DatabaseCredentials`] completes
/// them); `max_connections` should cover a worker's concurrency plus one. Errors show the URL
/// without its password. Each connection keeps up to [`STATEMENT_CACHE`] prepared statements.
pub async fn connect(url: &str, credentials: &DatabaseCredentials, max_connections: u32) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(credentials.connect_options(url)?.statement_cache_capacity(STATEMENT_CACHE))
        .await
        .map_err(|source| Error::DatabaseConnect { url: postgres_url::shown(url), source })
}

/// Checks the server version, applies the migrations, and creates, converts or upgrades every
/// table of `catalog` for the registry's fields.
pub async fn prepare(pool: &PgPool, catalog: &Catalog, registry: &Registry) -> Result<()> {
    let (version, shown): (i32, String) =
        sqlx::query_as("SELECT current_setting('server_version_num')::int, current_setting('server_version')")
            .fetch_one(pool)
            .await?;
    if version < MIN_SERVER_VERSION {
        return Err(Error::Schema(format!("kubecensus needs PostgreSQL 15 or later; this server is {shown}")));
    }
    MIGRATOR.run(pool).await?;
    ensure_schema(pool, catalog, &registry.field_names(), &registry.namespace_field_names()).await
}

/// Creates, converts or upgrades every table of `catalog` for the registry's `fields` and
/// `namespace_fields`, then `fleet_unhealthy_objects`, the `fleet_objects` view, the summaries
/// and `event_history`, then the row-level security policies and the viewers' grants
/// ([`access::ensure`]).
///
/// Processes that start together take turns, on a session advisory lock of a connection of its
/// own: each step assumes no other process changes its objects meanwhile (a `GRANT` on the view
/// another process is making anew fails with "tuple concurrently deleted").
pub async fn ensure_schema(
    pool: &PgPool,
    catalog: &Catalog,
    fields: &[String],
    namespace_fields: &[String],
) -> Result<()> {
    let lock = session_lock::SessionLock::acquire(pool, "kubecensus ensure_schema").await?;
    let result = async {
        ensure_tables(pool, catalog, fields, namespace_fields).await?;
        fleet_view::ensure(pool, catalog, fields, namespace_fields).await?;
        summaries::ensure(pool, catalog, fields).await?;
        event_history::ensure(pool, catalog).await?;
        access::ensure(pool, catalog).await
    }
    .await;
    lock.release().await;
    result
}

/// Adds the columns of the fields `now` declares and `before` did not (a registry read again
/// while the services run), to the data tables, `fleet_unhealthy_objects` and the summaries, and
/// recreates `fleet_objects` with them; nothing when they declare the same fields.
pub async fn ensure_new_fields(pool: &PgPool, catalog: &Catalog, before: &Registry, now: &Registry) -> Result<()> {
    let (fields, namespace_fields) = (now.field_names(), now.namespace_field_names());
    if fields == before.field_names() && namespace_fields == before.namespace_field_names() {
        return Ok(());
    }
    ensure_schema(pool, catalog, &fields, &namespace_fields).await
}

/// Runs `statement` (a `COPY ... FROM STDIN`) with `rows` in COPY text format; returns the
/// number of rows copied.
async fn copy_in(conn: &mut PgConnection, statement: &str, rows: &[u8]) -> Result<u64> {
    let mut copy = conn.copy_in_raw(statement).await?;
    for message in rows.chunks(COPY_MESSAGE_BYTES) {
        copy.send(message).await?;
    }
    Ok(copy.finish().await?)
}

/// Runs SQL text without parameters (DDL; several statements at once).
async fn execute(conn: &mut PgConnection, sql: String) -> Result<()> {
    sqlx::Executor::execute(&mut *conn, sqlx::raw_sql(&sql)).await?;
    Ok(())
}

/// Records the registry in `clusters`: names, servers (normalized the same way for every source,
/// [`ClusterConfig::location`](crate::source::registry::ClusterConfig::location)), fields and
/// event lifetimes ([`EventLifetime`](crate::source::registry::EventLifetime)), never credentials. A cluster
/// present is not absent; one that was pruned ([`prune`]) and is back starts afresh: registered
/// now, its uid and last contact unknown. A cluster whose `authorization` changed has what
/// viewers see there recomputed at once ([`access::set_authorization`]).
pub async fn sync_clusters(pool: &PgPool, registry: &Registry) -> Result<()> {
    for cluster in &registry.clusters {
        let fields = serde_json::to_value(&cluster.fields).unwrap_or_default();
        access::set_authorization(pool, &cluster.name, cluster.authorization.as_str()).await?;
        let lifetime = cluster.event_lifetime.unwrap_or_default().as_interval();
        sqlx::query(
            "INSERT INTO clusters (name, server, fields, event_lifetime, authorization_mode)
             VALUES ($1, $2, $3, $4::interval, $5)
             ON CONFLICT (name) DO UPDATE SET server = EXCLUDED.server, fields = EXCLUDED.fields,
               event_lifetime = EXCLUDED.event_lifetime, authorization_mode = EXCLUDED.authorization_mode,
               updated_at = now(),
               absent_since = NULL, removed_at = NULL,
               registered_at = CASE WHEN clusters.removed_at IS NULL THEN clusters.registered_at ELSE now() END,
               cluster_uid = CASE WHEN clusters.removed_at IS NULL THEN clusters.cluster_uid END,
               last_contact = CASE WHEN clusters.removed_at IS NULL THEN clusters.last_contact END
             WHERE (clusters.server, clusters.fields, clusters.event_lifetime, clusters.authorization_mode)
                   IS DISTINCT FROM (EXCLUDED.server, EXCLUDED.fields, EXCLUDED.event_lifetime,
                                     EXCLUDED.authorization_mode)
                OR clusters.absent_since IS NOT NULL OR clusters.removed_at IS NOT NULL",
        )
        .bind(&cluster.name)
        .bind(cluster.location())
        .bind(fields)
        .bind(lifetime)
        .bind(cluster.authorization.as_str())
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Notes a successful contact with a cluster and the uid of its `kube-system` namespace. The
/// time is kept to the second: the many jobs of one cluster that start together then write (and
/// wait for a commit to disk) once, not once each.
pub async fn record_contact(pool: &PgPool, cluster: &str, cluster_uid: &str) -> Result<()> {
    sqlx::query(
        "UPDATE clusters SET cluster_uid = $2, last_contact = now()
         WHERE name = $1
           AND (cluster_uid IS DISTINCT FROM $2 OR last_contact IS NULL OR last_contact < now() - interval '1 second')",
    )
    .bind(cluster)
    .bind(cluster_uid)
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks `abandoned` the runs whose worker stopped heartbeating more than `stale_after` ago (a
/// killed worker's); returns how many. Their rows were never written: a job writes in one
/// transaction, and its staging was temporary, gone with its session.
pub async fn sweep_runs(pool: &PgPool, stale_after: Duration) -> Result<u64> {
    let swept = sqlx::query(
        "UPDATE runs SET status = $2, finished_at = now(), error = 'the worker stopped heartbeating'
         WHERE status = $3 AND heartbeat_at < now() - $1::interval",
    )
    .bind(format!("{} milliseconds", stale_after.as_millis()))
    .bind(Status::Abandoned.as_str())
    .bind(Status::Running.as_str())
    .execute(pool)
    .await?;
    Ok(swept.rows_affected())
}
