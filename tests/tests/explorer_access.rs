//! The fleet explorer behind a proxy with access control: two users with different bindings in
//! the simulated clusters (a developer who may edit one namespace, a platform group that may
//! view everything) each get exactly the rows, totals and facets their PostgreSQL role sees
//! (compared with SQL run as that role), through the explorer's own login role, a member of
//! `kubecensus_explorer` only; the Grafana dashboard's panels run as an administrator and as
//! each viewer, filtered.

use std::collections::BTreeSet;

use kubecensus_tests::{
    explorer::{Explorer, Viewers, as_role, fleet_with_worker},
    fleet::rbac::DEVELOPER_NAMESPACE,
    grafana,
};

fn keys(objects: &[serde_json::Value]) -> Vec<(String, String)> {
    objects
        .iter()
        .map(|o| (o["cluster_name"].as_str().unwrap().to_owned(), o["uid"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_see_exactly_the_rows_their_roles_may_list() {
    let (mut env, _fleet, registry) = fleet_with_worker().await.unwrap();
    env.scheduler(&registry, &["refresh", "--wait"]).await.unwrap();

    let viewers = Viewers::grant(&env, &registry).await.unwrap();
    let explorer = Explorer::start(&mut env, "explore", &registry, &[&viewers.database_url_arg]).await.unwrap();

    let mut seen = Vec::new();
    for (user, role) in &viewers.users {
        let user = user.as_str();
        let who = explorer.ok("/api/v1/whoami", Some(user)).await.unwrap();
        assert_eq!(who["role"].as_str(), Some(role.as_str()), "{who}");
        for (query, relation, condition) in [
            ("source=all", "fleet_objects", "true"),
            ("", "fleet_unhealthy_objects", "true"),
            ("source=all&kind=Pod", "fleet_objects", "kind = 'Pod'"),
            ("source=all&cluster=sim-02", "fleet_objects", "cluster_name = 'sim-02'"),
        ] {
            let expected = as_role(&env.pool, role, relation, condition).await.unwrap();
            let listed = explorer.all_pages(query, 7, Some(user)).await.unwrap();
            assert_eq!(keys(&listed), expected, "{user} {query}: the rows {role} sees, each once, in order");
            let facets = explorer.ok(&format!("/api/v1/facets?{query}"), Some(user)).await.unwrap();
            let clusters: BTreeSet<String> = facets["clusters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["value"].as_str().unwrap().to_owned())
                .collect();
            let expected_clusters: BTreeSet<String> = expected.iter().map(|(c, _)| c.clone()).collect();
            assert_eq!(clusters, expected_clusters, "{user} {query}: facets name only visible clusters");
        }
        seen.push(as_role(&env.pool, role, "fleet_objects", "true").await.unwrap());
        let page = kubecensus_tests::probes::get_with(explorer.addr, "/", &[("X-Forwarded-User", user)]).await.unwrap();
        assert_eq!(page.status, 200);
        assert!(page.body.contains(&format!("database role {role}")), "the page names the role");
    }
    let (developer_rows, platform_rows) = (&seen[0], &seen[1]);
    assert!(
        !developer_rows.is_empty() && developer_rows.len() < platform_rows.len(),
        "different bindings, different rows"
    );
    let namespaces: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT namespace FROM fleet_objects WHERE (cluster_name, uid) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
    )
    .bind(developer_rows.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
    .bind(developer_rows.iter().map(|k| k.1.clone()).collect::<Vec<_>>())
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(namespaces, [DEVELOPER_NAMESPACE], "the developer sees its namespace only");

    // The Grafana dashboard's panels run as an administrator and as each viewer, filtered.
    let admin = grafana::run_panels(&env.pool, None).await.unwrap();
    for (title, rows) in &admin {
        assert!(*rows > 0 || title.starts_with("Failing"), "{title}: no rows on the demo data");
    }
    let [(_, developer), (_, platform)] = &viewers.users;
    for role in [developer, platform] {
        let viewer = grafana::run_panels(&env.pool, Some(role)).await.unwrap();
        for ((title, all), (_, seen)) in admin.iter().zip(&viewer) {
            assert!(seen <= all, "{title}: {role} sees {seen} rows, the administrator {all}");
        }
    }
    let developer_panels = grafana::run_panels(&env.pool, Some(developer)).await.unwrap();
    assert!(
        developer_panels[0].1 < admin[0].1,
        "health by cluster and kind is filtered: {developer_panels:?} {admin:?}"
    );

    let (status, body) = explorer.get("/api/v1/objects", Some("nobody@example.com")).await.unwrap();
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{body}");
    viewers.drop_roles(&env.pool).await;
}
