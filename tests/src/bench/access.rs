//! Access control, timed (issue 22): the design's two example queries, a `fleet_objects` page, a
//! point lookup and a `fleet_unhealthy_objects` page, as a viewer who sees a tenth of the
//! clusters (every namespace there), as one who sees one namespace in every cluster, and
//! unrestricted (the owner); then the recomputation of one cluster's permissions after one
//! binding change, on a cluster of 3,000 namespaces with two RoleBindings each.
//!
//! The viewers are login roles `kubecensus_bench_clusters` and `kubecensus_bench_namespace`
//! (roles are server-wide: the bench's own names), granted as `scheduler access grant` does.

use std::time::Instant;

use kubecensus::store::access::{
    identities::{self, Identity},
    permissions,
};
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};

use super::env::BenchEnv;
use super::fleet_view::{Key, page_sql, timing};
use super::queries::{QUERIES, QueryTiming, timed_runs};
use crate::fleet::rbac::{DEVELOPER, DEVELOPER_NAMESPACE, PLATFORM_GROUP};

/// The name of the timed `fleet_unhealthy_objects` page.
const UNHEALTHY_PAGE: &str = "fleet_unhealthy_objects: first page";
/// The name of the timed point lookup.
const POINT_LOOKUP: &str = "point lookup of a pod";
/// How many times more the point lookup runs than the other queries: its median, a few tenths
/// of a millisecond, is then not one scheduler tick of a 2-core machine.
const POINT_LOOKUP_RUNS: usize = 20;
/// Namespaces of the cluster whose permissions are recomputed.
const RECOMPUTE_NAMESPACES: i32 = 3_000;
/// Its name.
const RECOMPUTE_CLUSTER: &str = "bench-rbac-3000";

/// Creates the login role `name` if missing.
async fn login_role(env: &BenchEnv, name: &str) -> anyhow::Result<()> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(name)
        .fetch_one(&env.pool)
        .await?;
    if !exists {
        sqlx::raw_sql(&format!("CREATE ROLE {name} LOGIN")).execute(&env.pool).await?;
    }
    Ok(())
}

/// Times every query for the viewers and the owner, then the recomputation; `clusters` are the
/// fleet's cluster names.
pub async fn time_viewers(env: &BenchEnv, clusters: &[String], runs: usize) -> anyhow::Result<Vec<QueryTiming>> {
    let some = clusters.len().div_ceil(10);
    let viewers = [
        ("kubecensus_bench_clusters", format!("viewer of {some} of {} clusters", clusters.len())),
        ("kubecensus_bench_namespace", "viewer of one namespace in every cluster".to_owned()),
    ];
    for (role, _) in &viewers {
        login_role(env, role).await?;
    }
    for cluster in &clusters[..some] {
        let identity = Identity {
            role_name: viewers[0].0.to_owned(),
            cluster_name: Some(cluster.clone()),
            k8s_user: "bench@example.com".to_owned(),
            k8s_groups: vec![PLATFORM_GROUP.to_owned()],
        };
        identities::grant(&env.pool, &identity).await?;
    }
    let identity = Identity {
        role_name: viewers[1].0.to_owned(),
        cluster_name: None,
        k8s_user: DEVELOPER.to_owned(),
        k8s_groups: Vec::new(),
    };
    identities::grant(&env.pool, &identity).await?;
    // As autovacuum would on a server (the bench's has it off): the grants rewrote the rows the
    // policies read.
    sqlx::raw_sql("VACUUM ANALYZE access_visible_namespaces, access_lookups").execute(&env.pool).await?;
    let pod: (String, String) = sqlx::query_as(
        "SELECT cluster_name, name FROM kubernetes_pods WHERE cluster_name = $1 AND namespace = $2 ORDER BY name LIMIT 1",
    )
    .bind(&clusters[0])
    .bind(DEVELOPER_NAMESPACE)
    .fetch_one(&env.pool)
    .await?;
    let lookup = format!(
        "select * from kubernetes_pods where cluster_name = '{}' and namespace = '{DEVELOPER_NAMESPACE}' and name = '{}'",
        pod.0, pod.1
    );
    let mut queries: Vec<(String, String)> =
        QUERIES[..4].iter().map(|(n, s)| ((*n).to_owned(), (*s).to_owned())).collect();
    queries.push((
        "fleet_objects: first page not Current".into(),
        page_sql("fleet_objects", "health <> 'Current' and ", &Key::default()),
    ));
    queries.push((POINT_LOOKUP.into(), lookup));
    queries.push((UNHEALTHY_PAGE.into(), page_sql("fleet_unhealthy_objects", "", &Key::default())));
    let options: PgConnectOptions = env.database_url.parse()?;
    // One connection each; each query's runs taken in turn, one per reader, so that a moment of
    // the machine's own (a checkpoint, a neighbour) falls on every reader alike, not on one.
    let mut readers = Vec::new();
    for (role, who) in
        viewers.iter().map(|(r, w)| (Some(*r), w.clone())).chain([(None, "unrestricted (owner)".to_owned())])
    {
        let conn = match role {
            Some(role) => PgConnection::connect_with(&options.clone().username(role)).await?,
            None => PgConnection::connect_with(&options).await?,
        };
        readers.push((who, conn));
    }
    let mut timings = Vec::new();
    for (name, sql) in &queries {
        let mut rows_returned = Vec::new();
        for (_, conn) in &mut readers {
            rows_returned.push(sqlx::raw_sql(sql).fetch_all(&mut *conn).await?.len());
        }
        let mut ms = vec![Vec::new(); readers.len()];
        for _ in 0..if name == POINT_LOOKUP { runs * POINT_LOOKUP_RUNS } else { runs } {
            for ((_, conn), ms) in readers.iter_mut().zip(&mut ms) {
                ms.extend(timed_runs(conn, sql, 1).await?);
            }
        }
        for (((who, _), rows), mut ms) in readers.iter().zip(rows_returned).zip(ms) {
            ms.sort_by(f64::total_cmp);
            timings.push(timing(format!("{who}: {name}"), sql.clone(), rows, ms));
        }
    }
    timings.push(time_recompute(env, &clusters[0], runs).await?);
    Ok(timings)
}

/// Builds [`RECOMPUTE_CLUSTER`] (the ClusterRoles of `like`, and in each of its namespaces a
/// RoleBinding of `edit` to a user of its own and one of `view` to [`DEVELOPER`]) and its
/// permissions, then times the recomputation after deleting one of [`DEVELOPER`]'s bindings (so
/// the lookups of the viewer of one namespace everywhere, who sees every namespace there, are
/// rebuilt), in a transaction rolled back each time.
async fn time_recompute(env: &BenchEnv, like: &str, runs: usize) -> anyhow::Result<QueryTiming> {
    sqlx::query("INSERT INTO clusters (name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(RECOMPUTE_CLUSTER)
        .execute(&env.pool)
        .await?;
    sqlx::query("DELETE FROM kubernetes_cluster_role_policy_rules WHERE cluster_name = $1")
        .bind(RECOMPUTE_CLUSTER)
        .execute(&env.pool)
        .await?;
    sqlx::query("DELETE FROM kubernetes_role_binding_subjects WHERE cluster_name = $1")
        .bind(RECOMPUTE_CLUSTER)
        .execute(&env.pool)
        .await?;
    sqlx::query(
        "INSERT INTO kubernetes_cluster_role_policy_rules (cluster_name, name, uid, verbs, api_groups, resources, resource_names, row_hash)
         SELECT $1, name, uid, verbs, api_groups, resources, resource_names, gen_random_uuid()
         FROM kubernetes_cluster_role_policy_rules WHERE cluster_name = $2",
    )
    .bind(RECOMPUTE_CLUSTER)
    .bind(like)
    .execute(&env.pool)
    .await?;
    sqlx::query(
        "INSERT INTO kubernetes_role_binding_subjects (cluster_name, namespace, name, uid, role_kind, role_name, subject_kind, subject_name, row_hash)
         SELECT $1, 'ns-' || i, b.name, b.name || i, 'ClusterRole', b.role, 'User', b.subject || i, gen_random_uuid()
         FROM generate_series(1, $2) i,
              (VALUES ('editors', 'edit', 'dev-'), ('developers', 'view', $3)) b(name, role, subject)",
    )
    .bind(RECOMPUTE_CLUSTER)
    .bind(RECOMPUTE_NAMESPACES)
    .bind(DEVELOPER)
    .execute(&env.pool)
    .await?;
    // The developer's bindings name it exactly, not with a suffix.
    sqlx::query(
        "UPDATE kubernetes_role_binding_subjects SET subject_name = $2 WHERE cluster_name = $1 AND name = 'developers'",
    )
    .bind(RECOMPUTE_CLUSTER)
    .bind(DEVELOPER)
    .execute(&env.pool)
    .await?;
    let mut conn = env.pool.acquire().await?;
    let mut tx = conn.begin().await?;
    permissions::recompute_cluster(&mut tx, RECOMPUTE_CLUSTER, true).await?;
    tx.commit().await?;
    let (mut ms, mut rows) = (Vec::new(), 0);
    for _ in 0..runs.max(1) {
        let mut tx = conn.begin().await?;
        sqlx::query("DELETE FROM kubernetes_role_binding_subjects WHERE cluster_name = $1 AND namespace = 'ns-1' AND name = 'developers'")
            .bind(RECOMPUTE_CLUSTER)
            .execute(&mut *tx)
            .await?;
        let started = Instant::now();
        rows = permissions::recompute_cluster(&mut tx, RECOMPUTE_CLUSTER, true).await?.unwrap_or_default();
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        tx.rollback().await?;
    }
    ms.sort_by(f64::total_cmp);
    let name = format!(
        "recompute one cluster's permissions after one binding change ({RECOMPUTE_NAMESPACES} namespaces, {rows} binding rows)"
    );
    Ok(timing(name, "permissions::recompute_cluster".to_owned(), rows as usize, ms))
}

/// `ms` for the report: two decimals below 10 ms (a point lookup's tenths of a millisecond), one
/// above.
fn shown_ms(ms: f64) -> String {
    if ms < 10.0 { format!("{ms:.2}") } else { format!("{ms:.1}") }
}

/// The targets for the viewers' timings among `timings` ([`time_viewers`]'s names): each
/// query as a viewer within 1.5× its unrestricted time, a `fleet_unhealthy_objects` page in at
/// most 10 ms as anyone, the recompute in at most 1 s.
pub fn verdicts(timings: &[QueryTiming]) -> Vec<super::report::Verdict> {
    const OWNER: &str = "unrestricted (owner): ";
    let mut verdicts = Vec::new();
    // The unhealthy page has a target of its own (10 ms), below.
    for timing in timings.iter().filter(|t| t.name.starts_with("viewer of ") && !t.name.ends_with(UNHEALTHY_PAGE)) {
        let Some((_, query)) = timing.name.split_once(": ") else { continue };
        let Some(owner) = timings.iter().find(|t| t.name == format!("{OWNER}{query}")) else { continue };
        let ratio = timing.median_ms / owner.median_ms.max(f64::EPSILON);
        verdicts.push(super::report::Verdict {
            target: format!("{}: <= 1.5x unrestricted", timing.name),
            measured: format!("{} vs {} ms ({ratio:.1}x)", shown_ms(timing.median_ms), shown_ms(owner.median_ms)),
            met: ratio <= 1.5,
        });
    }
    for timing in timings.iter().filter(|t| t.name.ends_with(UNHEALTHY_PAGE)) {
        verdicts.push(super::report::Verdict {
            target: format!("{}: <= 10 ms", timing.name),
            measured: format!("{:.1} ms median", timing.median_ms),
            met: timing.median_ms <= 10.0,
        });
    }
    for timing in timings.iter().filter(|t| t.name.starts_with("recompute one cluster's permissions")) {
        verdicts.push(super::report::Verdict {
            target: format!("{}: <= 1 s", timing.name),
            measured: format!("{:.1} ms median", timing.median_ms),
            met: timing.median_ms <= 1000.0,
        });
    }
    verdicts
}
