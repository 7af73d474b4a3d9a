//! The store against a real PostgreSQL (`#[sqlx::test]`: a fresh database per test): the
//! guarantees of a refresh (old or new rows, untouched neighbours, a failed job keeps the last
//! good rows, only changed rows written, bounded growth), schema upgrades and the conversion of
//! the earlier layout.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{Connection, PgPool};

use super::*;
use crate::{
    model::catalog::{Catalog, Resource},
    model::flatten::{ClusterContext, Layout},
    queue::job::{Job, Trigger},
    store::runs::{self, Outcome, RowCounts},
};

pub(super) static REGION: LazyLock<Vec<String>> = LazyLock::new(|| vec!["region".to_owned()]);
/// The catalog every test here runs on, built once for the `'static` layouts.
pub(super) static CATALOG: LazyLock<Catalog> = LazyLock::new(Catalog::builtin);

pub(super) fn pods_resource() -> &'static Resource {
    CATALOG.resource_of("kubernetes_pods").unwrap()
}

fn layouts() -> Vec<Layout<'static>> {
    layouts_for(&REGION)
}

/// The pods resource's layouts for the registry's `fields`.
pub(super) fn layouts_for(fields: &'static [String]) -> Vec<Layout<'static>> {
    pods_resource().tables.iter().map(|table| Layout { table, fields, namespace_fields: &[] }).collect()
}

pub(super) fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
}

/// Pod `i` of `cluster`, with one container; `version` changes its phase.
pub(super) fn pod(cluster: &str, i: usize, version: usize) -> Value {
    json!({"metadata": {"name": format!("p{i}"), "namespace": "ns", "uid": format!("{cluster}-{i}")},
           "spec": {"containers": [{"name": "c", "image": "nginx:1"}]},
           "status": {"phase": format!("v{version}")}})
}

/// The scope of a pods job: every pod row of the cluster.
pub(super) fn pods_scope() -> Scope {
    Scope::of(&CATALOG, CATALOG.target("kubernetes_pods").unwrap().1)
}

/// Runs a refresh of `cluster`'s pods with `pods` through the store, holding at most
/// `held_limit` bytes of new rows in memory.
async fn refresh_with(
    pool: &PgPool,
    cluster: &str,
    pods: &[Value],
    scheduled: DateTime<Utc>,
    held_limit: usize,
) -> Result<ReplaceOutcome> {
    let mut conn = pool.acquire().await.unwrap();
    let layouts = layouts();
    let refresh = Refresh::begin(&mut conn, cluster, pods_scope(), pods_resource(), &layouts).await?;
    list_and_commit(pool, &mut conn, refresh, &layouts, cluster, pods, scheduled, held_limit).await
}

/// Adds `pods` to `refresh` as a job of `layouts` would (`region` is `eu`, other fields NULL),
/// spilling past `held_limit` bytes, and commits it as a job scheduled at `scheduled`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn list_and_commit(
    pool: &PgPool,
    conn: &mut PgConnection,
    mut refresh: Refresh<'_>,
    layouts: &[Layout<'_>],
    cluster: &str,
    pods: &[Value],
    scheduled: DateTime<Utc>,
    held_limit: usize,
) -> Result<ReplaceOutcome> {
    let field_values = layouts[0].fields.iter().map(|field| (field == "region").then(|| "eu".to_owned())).collect();
    let context = ClusterContext { name: cluster.into(), uid: format!("uid-{cluster}"), field_values };
    for pod in pods {
        for (index, layout) in layouts.iter().enumerate() {
            let mut rows = Vec::new();
            layout.write_rows(pod, &context, &mut rows);
            refresh.add(index, &rows);
        }
        if refresh.held_bytes() > held_limit {
            refresh.spill(conn).await?;
        }
    }
    let job = Job::new(&CATALOG, cluster, "kubernetes_pods", Trigger::Schedule, scheduled).unwrap();
    let (run_id, _) = runs::start(pool, &job, 1, "test").await.unwrap();
    refresh.commit(conn, &job, run_id, &Outcome::succeeded()).await
}

pub(super) async fn refresh(pool: &PgPool, cluster: &str, pods: &[Value], scheduled: DateTime<Utc>) -> ReplaceOutcome {
    refresh_with(pool, cluster, pods, scheduled, usize::MAX).await.unwrap()
}

pub(super) fn pods(cluster: &str, range: std::ops::Range<usize>, version: usize) -> Vec<Value> {
    range.map(|i| pod(cluster, i, version)).collect()
}

pub(super) async fn count(pool: &PgPool, sql: &str, cluster: &str) -> i64 {
    sqlx::query_scalar(sql).bind(cluster).fetch_one(pool).await.unwrap()
}

pub(super) async fn pods_of(pool: &PgPool, cluster: &str) -> i64 {
    count(pool, "SELECT count(*) FROM kubernetes_pods WHERE cluster_name = $1", cluster).await
}

pub(super) async fn prepared(pool: &PgPool) {
    ensure_schema(pool, &CATALOG, &REGION, &[]).await.unwrap();
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn tables_are_created_once_with_fields_after_cluster_name_and_extended_later(pool: PgPool) {
    ensure_tables(&pool, &CATALOG, &["region".into()], &[]).await.unwrap();
    ensure_tables(&pool, &CATALOG, &["region".into()], &[]).await.unwrap();
    ensure_tables(&pool, &CATALOG, &["region".into(), "team".into()], &[]).await.unwrap();
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'kubernetes_pods' ORDER BY ordinal_position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(columns[..4], ["uid", "cluster_name", "region", "cluster_uid"]);
    assert_eq!(columns.last().unwrap(), "team", "a field added later goes last");
    let partitions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_inherits WHERE inhparent = 'kubernetes_pods'::regclass")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(partitions, i64::from(schema::HASH_PARTITIONS));
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn a_refresh_replaces_one_clusters_rows_and_an_older_job_is_superseded(pool: PgPool) {
    prepared(&pool).await;
    let first = refresh(&pool, "c1", &pods("c1", 0..5, 1), at(10)).await;
    assert_eq!(first, ReplaceOutcome::Replaced(RowCounts { total: 10, inserted: 10, deleted: 0 }));
    refresh(&pool, "c2", &pods("c2", 0..7, 1), at(10)).await;
    // Pods 0..3 unchanged, 3 and 4 gone, 5 new: one pod and its container in, two of each out.
    let second = refresh(&pool, "c1", &[pods("c1", 0..3, 1), pods("c1", 5..6, 1)].concat(), at(20)).await;
    assert_eq!(second, ReplaceOutcome::Replaced(RowCounts { total: 8, inserted: 2, deleted: 4 }));
    assert_eq!((pods_of(&pool, "c1").await, pods_of(&pool, "c2").await), (4, 7));
    assert_eq!(
        refresh(&pool, "c1", &pods("c1", 0..9, 1), at(15)).await,
        ReplaceOutcome::Superseded { current: at(20) }
    );
    assert_eq!(pods_of(&pool, "c1").await, 4, "the older job changed nothing");
    let region: String =
        sqlx::query_scalar("SELECT DISTINCT region FROM kubernetes_pod_containers").fetch_one(&pool).await.unwrap();
    assert_eq!(region, "eu");
    let (rows, inserted, deleted): (i64, i64, i64) = sqlx::query_as(
        "SELECT rows_written, rows_inserted, rows_deleted FROM runs WHERE status = 'succeeded' ORDER BY finished_at DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rows, inserted, deleted), (8, 2, 4));
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn a_snapshot_scheduled_in_the_future_supersedes_no_job_scheduled_after_its_commit(pool: PgPool) {
    prepared(&pool).await;
    refresh(&pool, "c1", &pods("c1", 0..2, 1), at(10)).await;
    // As a job from the future left it, before workers refused such jobs.
    sqlx::query("UPDATE snapshots SET scheduled_at = now() + interval '1 year'").execute(&pool).await.unwrap();
    let outcome = refresh(&pool, "c1", &pods("c1", 0..3, 1), Utc::now()).await;
    assert!(matches!(outcome, ReplaceOutcome::Replaced(_)), "{outcome:?}");
    assert_eq!(pods_of(&pool, "c1").await, 3);
    let older = refresh(&pool, "c1", &pods("c1", 0..4, 1), at(20)).await;
    assert!(matches!(older, ReplaceOutcome::Superseded { .. }), "an older job still is: {older:?}");
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn unchanged_rows_are_not_rewritten_and_identical_rows_are_kept_apart(pool: PgPool) {
    prepared(&pool).await;
    refresh(&pool, "c1", &pods("c1", 0..4, 1), at(10)).await;
    let xmin = "SELECT xmin::text FROM kubernetes_pods WHERE cluster_name = $1 AND name = 'p0'";
    let before: String = sqlx::query_scalar(xmin).bind("c1").fetch_one(&pool).await.unwrap();
    // p3 changes phase; p0..p2 are the same rows as before.
    let changed = [pods("c1", 0..3, 1), pods("c1", 3..4, 2)].concat();
    let outcome = refresh(&pool, "c1", &changed, at(20)).await;
    assert_eq!(outcome, ReplaceOutcome::Replaced(RowCounts { total: 8, inserted: 1, deleted: 1 }), "only p3's pod row");
    let after: String = sqlx::query_scalar(xmin).bind("c1").fetch_one(&pool).await.unwrap();
    assert_eq!(before, after, "p0's row was not rewritten");
    // Two objects that flatten to the same row (the same pod listed twice) stay two rows.
    let twice = [pods("c1", 0..1, 1), pods("c1", 0..1, 1)].concat();
    refresh(&pool, "c1", &twice, at(30)).await;
    assert_eq!(pods_of(&pool, "c1").await, 2);
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn rows_past_the_memory_limit_go_through_staging_with_the_same_result(pool: PgPool) {
    prepared(&pool).await;
    let outcome = refresh_with(&pool, "c1", &pods("c1", 0..50, 1), at(10), 1).await.unwrap();
    assert_eq!(outcome, ReplaceOutcome::Replaced(RowCounts { total: 100, inserted: 100, deleted: 0 }));
    let outcome = refresh_with(&pool, "c1", &pods("c1", 10..60, 1), at(20), 1).await.unwrap();
    assert_eq!(outcome, ReplaceOutcome::Replaced(RowCounts { total: 100, inserted: 20, deleted: 20 }));
    assert_eq!(pods_of(&pool, "c1").await, 50);
    let staging: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_class WHERE relpersistence = 't' AND relname LIKE '%staging'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(staging, 0, "staging is dropped once the rows are in");
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn a_failed_write_keeps_the_last_good_rows(pool: PgPool) {
    prepared(&pool).await;
    refresh(&pool, "c1", &pods("c1", 0..5, 1), at(10)).await;
    // A row PostgreSQL refuses (creation_timestamp is bigint) fails the COPY mid-transaction,
    // after the DELETE of the rows that changed.
    let mut broken = pods("c1", 0..2, 2);
    let mut conn = pool.acquire().await.unwrap();
    let layouts = layouts();
    let mut refresh = Refresh::begin(&mut conn, "c1", pods_scope(), pods_resource(), &layouts).await.unwrap();
    refresh.add(0, b"u\tc1\teu\tuid\tbad\tns\tnot-a-number\n");
    let context = ClusterContext { name: "c1".into(), uid: "uid-c1".into(), field_values: vec![Some("eu".into())] };
    for pod in broken.drain(..) {
        let mut rows = Vec::new();
        layouts[1].write_rows(&pod, &context, &mut rows);
        refresh.add(1, &rows);
    }
    let job = Job::new(&CATALOG, "c1", "kubernetes_pods", Trigger::Schedule, at(20)).unwrap();
    let (run_id, _) = runs::start(&pool, &job, 1, "test").await.unwrap();
    assert!(refresh.commit(&mut conn, &job, run_id, &Outcome::succeeded()).await.is_err());
    drop(conn);
    assert_eq!(pods_of(&pool, "c1").await, 5);
    assert_eq!(count(&pool, "SELECT count(*) FROM kubernetes_pod_containers WHERE cluster_name = $1", "c1").await, 5);
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn concurrent_refreshes_of_one_cluster_never_interleave(pool: PgPool) {
    prepared(&pool).await;
    refresh(&pool, "c1", &pods("c1", 0..2, 1), at(5)).await;
    let (four, six) = (pods("c1", 0..4, 1), pods("c1", 0..6, 1));
    let (a, b) = tokio::join!(
        refresh_with(&pool, "c1", &four, at(10), usize::MAX),
        refresh_with(&pool, "c1", &six, at(20), usize::MAX),
    );
    let swapped = [&a, &b].iter().filter(|r| matches!(r, Ok(ReplaceOutcome::Replaced(_)))).count();
    assert!(swapped >= 1, "{a:?} {b:?}");
    let (pods, containers) = (
        pods_of(&pool, "c1").await,
        count(&pool, "SELECT count(*) FROM kubernetes_pod_containers WHERE cluster_name = $1", "c1").await,
    );
    assert!(pods == 4 || pods == 6, "one job's rows, whole: {pods}");
    assert_eq!(pods, containers, "pods and their containers come from the same job");
    if let (Ok(_), Ok(_)) = (&a, &b) {
        assert_eq!(pods, 6, "when both went through, the later-scheduled one is what stays");
    }
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn a_refresh_neither_waits_for_nor_blocks_a_reader(pool: PgPool) {
    prepared(&pool).await;
    refresh(&pool, "c1", &pods("c1", 0..3, 1), at(10)).await;
    // A reader in an open REPEATABLE READ transaction: it holds its locks and its snapshot.
    let mut reader = pool.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *reader).await.unwrap();
    let read = "SELECT count(*) FROM kubernetes_pods WHERE cluster_name = 'c1'";
    let new_pods = pods("c1", 0..7, 1);
    assert_eq!(sqlx::query_scalar::<_, i64>(read).fetch_one(&mut *reader).await.unwrap(), 3);
    let refreshed = tokio::time::timeout(Duration::from_secs(10), refresh(&pool, "c1", &new_pods, at(20))).await;
    assert!(matches!(refreshed, Ok(ReplaceOutcome::Replaced(_))), "the refresh waited for the reader");
    assert_eq!(sqlx::query_scalar::<_, i64>(read).fetch_one(&mut *reader).await.unwrap(), 3, "the reader's snapshot");
    reader.commit().await.unwrap();
    assert_eq!(pods_of(&pool, "c1").await, 7);
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn twenty_refreshes_with_churn_grow_tables_by_the_churn_not_by_their_size(pool: PgPool) {
    prepared(&pool).await;
    let size = "SELECT sum(pg_total_relation_size(inhrelid))::bigint FROM pg_inherits WHERE inhparent = 'kubernetes_pods'::regclass";
    refresh(&pool, "c1", &pods("c1", 0..400, 1), at(0)).await;
    let fresh: i64 = sqlx::query_scalar(size).fetch_one(&pool).await.unwrap();
    // Every round: 10 pods gone, 10 new, 20 with a new phase (7.5 % of the rows change).
    for round in 1..=20 {
        let start = round * 10;
        let mut listing = pods("c1", start..start + 380, 1);
        listing.extend(pods("c1", start + 380..start + 400, round + 1));
        refresh(&pool, "c1", &listing, at(round as i64)).await;
    }
    let grown: i64 = sqlx::query_scalar(size).fetch_one(&pool).await.unwrap();
    assert_eq!(pods_of(&pool, "c1").await, 400);
    // Rewriting every row at every refresh would leave 20 dead copies of the table (21 x).
    assert!(grown < 3 * fresh, "without any vacuum: {fresh} -> {grown} bytes");
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn a_column_missing_from_an_existing_table_is_added_and_a_changed_type_is_refused(pool: PgPool) {
    prepared(&pool).await;
    refresh(&pool, "c1", &pods("c1", 0..3, 1), at(10)).await;
    // As if `qos_class` were new in this release's catalog.
    sqlx::query("ALTER TABLE kubernetes_pods DROP COLUMN qos_class").execute(&pool).await.unwrap();
    prepared(&pool).await;
    assert_eq!(pods_of(&pool, "c1").await, 3, "the rows are kept");
    let added: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'kubernetes_pods' AND column_name = 'qos_class'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(added, 1);
    sqlx::query("ALTER TABLE kubernetes_pods ALTER COLUMN priority TYPE text").execute(&pool).await.unwrap();
    let err = ensure_tables(&pool, &CATALOG, &REGION, &[]).await.unwrap_err().to_string();
    assert!(err.contains("kubernetes_pods.priority is text in the database but integer"), "{err}");
}

/// A database the previous release made (LIST partition per cluster, two clusters loaded):
/// `tests/fixtures/previous-release.sql`, whose header says how it was made.
#[sqlx::test(migrations = false)]
async fn a_database_of_the_previous_release_is_converted_in_place_and_keeps_its_rows(pool: PgPool) {
    let dump = include_str!("../../../tests/fixtures/previous-release.sql");
    // The dump empties search_path for its session: load it on a connection of its own.
    let mut loader = pool.acquire().await.unwrap().detach();
    sqlx::Executor::execute(&mut loader, sqlx::raw_sql(dump)).await.unwrap();
    loader.close().await.unwrap();
    let before: Vec<(String, i64)> =
        sqlx::query_as("SELECT cluster_name, count(*) FROM kubernetes_pod_containers GROUP BY 1 ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(before.len(), 2, "{before:?}");
    let other_pods = pods_of(&pool, &before[1].0).await;
    MIGRATOR.run(&pool).await.unwrap();
    prepared(&pool).await;
    let after: Vec<(String, i64)> =
        sqlx::query_as("SELECT cluster_name, count(*) FROM kubernetes_pod_containers GROUP BY 1 ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(before, after, "every row is kept");
    let strategy: String = sqlx::query_scalar(
        "SELECT partstrat::text FROM pg_partitioned_table WHERE partrelid = 'kubernetes_pods'::regclass",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(strategy, "h");
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'kubecensus_partitions' AND c.relkind IN ('r', 'p') AND c.relname LIKE '%\\_\\_cluster\\_%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(leftovers, 0, "the per-cluster tables are gone");
    // The next refresh of a cluster replaces all of its converted rows at once.
    let cluster = &after[0].0;
    let outcome = refresh(&pool, cluster, &pods(cluster, 0..2, 1), Utc::now()).await;
    let ReplaceOutcome::Replaced(counts) = outcome else { panic!("{outcome:?}") };
    assert_eq!((counts.total, counts.inserted), (4, 4));
    assert_eq!(pods_of(&pool, cluster).await, 2);
    assert_eq!(pods_of(&pool, &after[1].0).await, other_pods, "the other cluster is untouched");
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn two_long_field_names_sharing_a_prefix_each_get_their_index(pool: PgPool) {
    // `kubernetes_cluster_role_binding_subjects_field_` is 47 bytes: cut at PostgreSQL's 63,
    // both index names would end in `business_unit_ow` and the second index be silently skipped.
    let fields = ["business_unit_owner_primary".to_owned(), "business_unit_owner_secondary".to_owned()];
    ensure_tables(&pool, &CATALOG, &fields, &[]).await.unwrap();
    for field in &fields {
        let indexed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'
               AND tablename = 'kubernetes_cluster_role_binding_subjects' AND indexdef LIKE '%(' || $1 || ', cluster_name)%'",
        )
        .bind(field)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(indexed, 1, "{field}");
    }
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn a_job_that_lists_while_its_cluster_is_pruned_writes_nothing(pool: PgPool) {
    prepared(&pool).await;
    sqlx::query("INSERT INTO clusters (name) VALUES ('c1')").execute(&pool).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let layouts = layouts();
    let mut refresh = Refresh::begin(&mut conn, "c1", pods_scope(), pods_resource(), &layouts).await.unwrap();
    add_three_pods(&mut refresh, &layouts);
    // The cluster leaves every source and is pruned while the job is still listing.
    crate::store::prune::prune_absent(&pool, &CATALOG, &[], Duration::ZERO, "test").await.unwrap();
    let pruned = crate::store::prune::prune_absent(&pool, &CATALOG, &[], Duration::ZERO, "test").await.unwrap();
    let removed: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT removed_at FROM clusters WHERE name = 'c1'").fetch_one(&pool).await.unwrap();
    assert!(removed.is_some(), "c1 pruned ({pruned:?})");
    let job = Job::new(&CATALOG, "c1", "kubernetes_pods", Trigger::Schedule, at(20)).unwrap();
    let (run_id, _) = runs::start(&pool, &job, 1, "test").await.unwrap();
    let err = refresh.commit(&mut conn, &job, run_id, &Outcome::succeeded()).await.unwrap_err();
    assert!(err.to_string().contains("was pruned"), "{err}");
    assert_eq!(pods_of(&pool, "c1").await, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM snapshots WHERE cluster_name = $1", "c1").await, 0);
}

/// Adds three pods of `c1` to `refresh`'s first table.
fn add_three_pods(refresh: &mut Refresh<'_>, layouts: &[Layout<'_>]) {
    let context = ClusterContext { name: "c1".into(), uid: "uid-c1".into(), field_values: vec![Some("eu".into())] };
    for pod in pods("c1", 0..3, 1) {
        let mut rows = Vec::new();
        layouts[0].write_rows(&pod, &context, &mut rows);
        refresh.add(0, &rows);
    }
}

/// Temporary staging tables of the asking session.
async fn own_staging(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema() AND relname LIKE '%\\_staging'",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn a_job_cancelled_after_staging_leaves_no_staging_for_the_next_job_on_its_connection(pool: PgPool) {
    prepared(&pool).await;
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let layouts = layouts();
    let (staged_tx, staged) = tokio::sync::oneshot::channel();
    let job = async {
        let mut conn = JobConnection::acquire(&one).await.unwrap();
        let mut refresh = Refresh::begin(&mut conn, "c1", pods_scope(), pods_resource(), &layouts).await.unwrap();
        add_three_pods(&mut refresh, &layouts);
        refresh.spill(&mut conn).await.unwrap();
        assert_eq!(own_staging(&mut conn).await, 1, "the rows are staged");
        staged_tx.send(()).unwrap();
        // Listing on until cancelled, as a job past its --job-timeout.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = job => unreachable!("the job never ends on its own"),
        _ = staged => {}
    }
    // The job's future is dropped: the next job gets the pool's one connection.
    let mut next = one.acquire().await.unwrap();
    assert_eq!(own_staging(&mut next).await, 0, "a cancelled job's staging went with its session");
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn a_run_finished_as_succeeded_is_not_overwritten_by_a_later_finish(pool: PgPool) {
    prepared(&pool).await;
    let job = Job::new(&CATALOG, "c1", "kubernetes_pods", Trigger::Schedule, at(0)).unwrap();
    let (run_id, _) = runs::start(&pool, &job, 1, "test").await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    runs::finish(&mut conn, run_id, &Outcome::succeeded()).await.unwrap();
    let late = Outcome::failed(runs::Status::Retrying, "cannot drop the job's staging".into());
    runs::finish(&mut conn, run_id, &late).await.unwrap();
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM runs WHERE run_id = $1").bind(run_id).fetch_one(&pool).await.unwrap();
    assert_eq!((status.as_str(), error), ("succeeded", None));
}
