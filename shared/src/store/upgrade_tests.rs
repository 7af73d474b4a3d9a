//! Schema upgrades while the services run, against a real PostgreSQL (`#[sqlx::test]`): DDL
//! waits for its locks a bounded time and tries again, rewrites no row, and a job whose base
//! predates a column change retries instead of mixing old and new rows; an earlier release's
//! catalog index gives way to the current one.

use std::{sync::LazyLock, time::Duration};

use sqlx::PgPool;

use super::{
    schema::{DdlLocks, ensure_tables_with},
    tests::{
        CATALOG, REGION, at, layouts_for, list_and_commit, pods, pods_of, pods_resource, pods_scope, prepared, refresh,
    },
    *,
};
use crate::store::runs::RowCounts;

/// The registry after a field `team` was added to it.
static REGION_TEAM: LazyLock<Vec<String>> = LazyLock::new(|| vec!["region".to_owned(), "team".to_owned()]);

/// DDL that waits 100 ms for a lock, `attempts` times, 50 ms between tries.
fn quick(attempts: u32) -> DdlLocks {
    DdlLocks {
        lock_timeout: Duration::from_millis(100),
        attempts,
        backoff: Duration::from_millis(50),
        backoff_cap: Duration::from_millis(50),
    }
}

/// `(pid, xact_start)` of the backend whose `ALTER TABLE` waits for a lock, if one does.
async fn waiting_alter(pool: &PgPool) -> Option<(i32, String)> {
    sqlx::query_as(
        "SELECT pid, xact_start::text FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'ALTER TABLE%'",
    )
    .fetch_optional(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn a_column_added_while_a_reader_holds_its_table_waits_a_bounded_time_and_retries(pool: PgPool) {
    prepared(&pool).await;
    let mut reader = pool.begin().await.unwrap();
    sqlx::query("SELECT count(*) FROM kubernetes_pods").execute(&mut *reader).await.unwrap();
    // The reader never lets go: the upgrade gives up after its tries instead of waiting for ever
    // (with every later reader queued behind it).
    let gave_up = tokio::time::timeout(
        Duration::from_secs(60),
        ensure_tables_with(&pool, &CATALOG, &REGION_TEAM, &[], &quick(3)),
    )
    .await
    .expect("the upgrade waits a bounded time")
    .unwrap_err()
    .to_string();
    assert!(gave_up.contains("kubernetes_pods: a lock was not granted within 100ms in 3 tries"), "{gave_up}");

    // The reader lets go after the upgrade has tried twice: it then succeeds.
    let upgrade = tokio::spawn({
        let pool = pool.clone();
        async move { ensure_tables_with(&pool, &CATALOG, &REGION_TEAM, &[], &quick(1_000)).await }
    });
    let first = loop {
        match waiting_alter(&pool).await {
            Some(waiting) => break waiting,
            None => tokio::task::yield_now().await,
        }
    };
    loop {
        match waiting_alter(&pool).await {
            Some(next) if next != first => break,
            _ => tokio::task::yield_now().await,
        }
    }
    reader.commit().await.unwrap();
    upgrade.await.unwrap().unwrap();
    let team: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'kubernetes_pods' AND column_name = 'team'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(team, 1);
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn an_added_column_rewrites_no_row_and_each_clusters_next_refresh_fills_it(pool: PgPool) {
    prepared(&pool).await;
    refresh(&pool, "c1", &pods("c1", 0..3, 1), at(10)).await;
    let versions = "SELECT string_agg(xmin::text, ',' ORDER BY uid) FROM kubernetes_pods";
    let before: String = sqlx::query_scalar(versions).fetch_one(&pool).await.unwrap();
    ensure_schema(&pool, &CATALOG, &REGION_TEAM, &[]).await.unwrap();
    let after: String = sqlx::query_scalar(versions).fetch_one(&pool).await.unwrap();
    assert_eq!(before, after, "no row was rewritten by the upgrade");

    // The same objects, listed with the new field (NULL for this cluster): every row is written
    // again, once.
    let refresh_with_team = async |scheduled| {
        let mut conn = pool.acquire().await.unwrap();
        let layouts = layouts_for(&REGION_TEAM);
        let refresh = Refresh::begin(&mut conn, "c1", pods_scope(), pods_resource(), &layouts).await.unwrap();
        list_and_commit(&pool, &mut conn, refresh, &layouts, "c1", &pods("c1", 0..3, 1), scheduled, usize::MAX)
            .await
            .unwrap()
    };
    let all = RowCounts { total: 6, inserted: 6, deleted: 6 };
    assert_eq!(refresh_with_team(at(20)).await, ReplaceOutcome::Replaced(all));
    let unchanged = RowCounts { total: 6, inserted: 0, deleted: 0 };
    assert_eq!(refresh_with_team(at(30)).await, ReplaceOutcome::Replaced(unchanged));
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn a_job_whose_base_predates_a_column_change_retries_and_leaves_one_row_per_object(pool: PgPool) {
    prepared(&pool).await;
    refresh(&pool, "c1", &pods("c1", 0..3, 1), at(10)).await;
    // A job reads its base, then the registry gains a field while it lists.
    let mut conn = pool.acquire().await.unwrap();
    let layouts = layouts_for(&REGION);
    let refresh = Refresh::begin(&mut conn, "c1", pods_scope(), pods_resource(), &layouts).await.unwrap();
    ensure_schema(&pool, &CATALOG, &REGION_TEAM, &[]).await.unwrap();
    let listed = pods("c1", 0..3, 2);
    let stale = list_and_commit(&pool, &mut conn, refresh, &layouts, "c1", &listed, at(20), usize::MAX).await;
    let err = stale.expect_err("a stale base is a conflict").to_string();
    assert!(err.contains("kubernetes_pods changed shape (a column added) while this job listed"), "{err}");
    // Its next attempt starts from the rows as they are now.
    let layouts = layouts_for(&REGION_TEAM);
    let refresh = Refresh::begin(&mut conn, "c1", pods_scope(), pods_resource(), &layouts).await.unwrap();
    let outcome = list_and_commit(&pool, &mut conn, refresh, &layouts, "c1", &listed, at(20), usize::MAX).await;
    assert!(matches!(outcome, Ok(ReplaceOutcome::Replaced(_))), "{outcome:?}");
    let objects: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT uid) FROM kubernetes_pods").fetch_one(&pool).await.unwrap();
    assert_eq!((pods_of(&pool, "c1").await, objects), (3, 3), "one row per object");
}

/// Processes that start together prepare the schema at once: each succeeds (no "tuple
/// concurrently deleted" from a GRANT on the view another is making anew), and viewers never
/// lose `SELECT` on `fleet_objects`, which each makes anew.
#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn processes_preparing_the_schema_at_once_all_succeed_and_viewers_keep_the_view(pool: PgPool) {
    ensure_schema(&pool, &CATALOG, &REGION, &[]).await.unwrap();
    let viewers_read = || async {
        sqlx::query_scalar::<_, bool>("SELECT has_table_privilege($1, 'fleet_objects', 'SELECT')")
            .bind(access::VIEWER_ROLE)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert!(viewers_read().await);
    let mut preparing = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let pool = pool.clone();
        preparing.spawn(async move { ensure_schema(&pool, &CATALOG, &REGION, &[]).await });
    }
    let mut reads = 0;
    while !preparing.is_empty() {
        assert!(viewers_read().await, "viewers may read fleet_objects while it is made anew");
        reads += 1;
        while let Some(prepared) = preparing.try_join_next() {
            prepared.unwrap().unwrap();
        }
    }
    assert!(reads > 0 && viewers_read().await);
}

/// A catalog index of an earlier release, `(image)` alone, is replaced at start-up by the one
/// whose key ends with the columns row-level security reads.
#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn a_catalog_index_of_an_earlier_release_gives_way_to_one_ending_with_cluster_and_namespace(pool: PgPool) {
    let definitions = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT regexp_replace(indexdef, '^.* USING btree ', '') FROM pg_indexes
             WHERE schemaname = 'public' AND tablename = 'kubernetes_pod_containers' AND indexdef LIKE '%(image%'",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    ensure_tables(&pool, &CATALOG, &REGION, &[]).await.unwrap();
    assert_eq!(definitions().await, vec!["(image, cluster_name, namespace)"]);
    sqlx::raw_sql("CREATE INDEX kubernetes_pod_containers_image ON kubernetes_pod_containers (image)")
        .execute(&pool)
        .await
        .unwrap();
    ensure_tables(&pool, &CATALOG, &REGION, &[]).await.unwrap();
    assert_eq!(definitions().await, vec!["(image, cluster_name, namespace)"], "the earlier index is dropped");
}
