//! The fleet explorer (`scheduler explore`) on the real services and a simulated fleet: each
//! filter, the cursor in every sort, the exact total and the facets agree with SQL over the same
//! rows; paging during a refresh visits each object once; requests without identity headers get
//! 401, users without a role 403, and a listener that could be reached from elsewhere without
//! mutual TLS is refused; with mutual TLS on every interface, only a peer with a client
//! certificate of the proxy's CA gets an answer, and its identity headers are believed.

use std::{collections::BTreeSet, net::Ipv4Addr, path::PathBuf};

use kubecensus_tests::{
    certs::TestCa,
    explorer::{Explorer, USER_HEADER, Viewers, as_role, fleet_with_worker},
    fleet::Fleet,
    harness::TestEnv,
    probes,
};
use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
use rustls::version::{TLS12, TLS13};
use serde_json::{Value, json};
use sqlx::PgPool;

/// The tables the explorer's rows come from in these tests.
const TABLES: [&str; 6] = [
    "kubernetes_pods",
    "kubernetes_deployments",
    "kubernetes_nodes",
    "kubernetes_namespaces",
    "kubernetes_custom_resources",
    "kubernetes_replica_sets",
];

/// A private environment with a simulated fleet of 3 clusters loaded by one refresh.
async fn loaded_fleet() -> (TestEnv, Fleet, PathBuf) {
    let (env, fleet, registry) = fleet_with_worker().await.unwrap();
    let mut args = vec!["refresh", "--wait"];
    for table in TABLES {
        args.extend(["--table", table]);
    }
    env.scheduler(&registry, &args).await.unwrap();
    (env, fleet, registry)
}

/// `(cluster_name, uid)` of objects as the API lists them.
fn keys(objects: &[Value]) -> Vec<(String, String)> {
    objects
        .iter()
        .map(|o| (o["cluster_name"].as_str().unwrap().to_owned(), o["uid"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// `(cluster_name, uid)` of the rows of `relation` where `condition` holds, in `order`.
async fn sql_keys(pool: &PgPool, relation: &str, condition: &str, order: &str) -> Vec<(String, String)> {
    sqlx::query_as(&format!(
        "SELECT cluster_name, coalesce(uid, '') FROM {relation} WHERE {condition} ORDER BY {order}"
    ))
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_sort_page_and_facet_agrees_with_sql_and_identity_is_required() {
    let (mut env, _fleet, registry) = loaded_fleet().await;
    let explorer = Explorer::start(&mut env, "explore", &registry, &["--single-user"]).await.unwrap();
    let pool = env.pool.clone();
    let app: String = sqlx::query_scalar(
        "SELECT labels->>'app' FROM fleet_objects WHERE labels ? 'app' GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let cases: Vec<(String, String)> = vec![
        ("source=all".into(), "true".into()),
        ("".into(), "health <> 'Current'".into()),
        ("source=all&cluster=sim-01&cluster=sim-03".into(), "cluster_name IN ('sim-01', 'sim-03')".into()),
        ("source=all&field.region=eu-west".into(), "region = 'eu-west'".into()),
        ("source=all&namespace=kube-system".into(), "namespace = 'kube-system'".into()),
        ("source=all&group=apps".into(), "api_group = 'apps'".into()),
        ("source=all&group=core&kind=Pod".into(), "api_group = '' AND kind = 'Pod'".into()),
        ("source=all&health=InProgress&health=Failed".into(), "health IN ('InProgress', 'Failed')".into()),
        ("source=all&name=a".into(), "name LIKE 'a%'".into()),
        ("source=all&selector=app".into(), "labels ? 'app'".into()),
        ("source=all&selector=!app".into(), "NOT coalesce(labels ? 'app', false)".into()),
        (format!("source=all&selector=app%3D{app}"), format!("labels->>'app' = '{app}'")),
        (format!("source=all&selector=app%3D%3D{app}"), format!("labels->>'app' = '{app}'")),
        (format!("source=all&selector=app!%3D{app}"), format!("labels->>'app' IS DISTINCT FROM '{app}'")),
        (format!("source=all&selector=app%20in%20({app},x)"), format!("labels->>'app' IN ('{app}', 'x')")),
        (format!("source=all&selector=app%20notin%20({app})"), format!("labels->>'app' IS DISTINCT FROM '{app}'")),
        (
            format!("source=all&kind=Pod&selector=app%3D{app},pod-template-hash"),
            format!("kind = 'Pod' AND labels->>'app' = '{app}' AND labels ? 'pod-template-hash'"),
        ),
    ];
    for (query, condition) in &cases {
        let relation = if query.contains("source=all") { "fleet_objects" } else { "fleet_unhealthy_objects" };
        let expected = sql_keys(&pool, relation, condition, "cluster_name, namespace, name, uid").await;
        assert!(!expected.is_empty(), "{query}: the fleet has rows for every case");
        let listed = explorer.all_pages(query, 500, None).await.unwrap();
        assert_eq!(keys(&listed), expected, "{query} lists exactly the rows of {condition}");
        let first = explorer.ok(&format!("/api/v1/objects?{query}&limit=1"), None).await.unwrap();
        assert_eq!(first["total"].as_u64(), Some(expected.len() as u64), "{query}: the exact total");
    }

    // Every sort, pages of 13, forward and back.
    for (sort, order) in [
        ("cluster", "cluster_name, namespace, name, uid"),
        ("namespace", "namespace, cluster_name, name, uid"),
        ("kind", "kind, cluster_name, namespace, name, uid"),
        ("name", "name, cluster_name, namespace, uid"),
    ] {
        let query = format!("source=all&sort={sort}");
        let expected = sql_keys(&pool, "fleet_objects", "true", order).await;
        assert!(expected.len() > 3 * 13, "several pages");
        assert_eq!(keys(&explorer.all_pages(&query, 13, None).await.unwrap()), expected, "sort {sort}");
        let page = |cursor: Option<&str>| {
            let path = format!(
                "/api/v1/objects?{query}&limit=13{}",
                cursor.map(|c| format!("&cursor={c}")).unwrap_or_default()
            );
            async move { explorer.ok(&path, None).await.unwrap() }
        };
        let first = page(None).await;
        assert!(first["prev"].is_null(), "the first page has no previous page");
        let second = page(first["next"].as_str()).await;
        let third = page(second["next"].as_str()).await;
        let back = page(third["prev"].as_str()).await;
        assert_eq!(back["objects"], second["objects"], "sort {sort}: previous of the third page is the second");
        assert_eq!(page(back["prev"].as_str()).await["objects"], first["objects"]);
    }

    // Facets under a filter: every value with its count, as GROUP BY says.
    let facets = explorer.ok("/api/v1/facets?source=all&cluster=sim-01&cluster=sim-02", None).await.unwrap();
    for (facet, expression) in [
        ("clusters", "cluster_name"),
        ("namespaces", "namespace"),
        ("kinds", "CASE WHEN api_group = '' THEN kind ELSE api_group || '/' || kind END"),
        ("health", "health"),
    ] {
        let expected: BTreeSet<(String, i64)> = sqlx::query_as(&format!(
            "SELECT {expression}, count(*) FROM fleet_objects WHERE cluster_name IN ('sim-01', 'sim-02') GROUP BY 1"
        ))
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
        let got: BTreeSet<(String, i64)> = facets[facet]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["value"].as_str().unwrap().to_owned(), c["count"].as_i64().unwrap()))
            .collect();
        assert_eq!(got, expected, "facet {facet}");
    }

    // One object, and how fresh the fleet is.
    let object = &explorer.all_pages("kind=Kustomization", 500, None).await.unwrap()[0];
    let (cluster, uid) = (object["cluster_name"].as_str().unwrap(), object["uid"].as_str().unwrap());
    let detail = explorer.ok(&format!("/api/v1/objects/{cluster}/{uid}"), None).await.unwrap();
    assert_eq!(detail["object"]["uid"], uid);
    let kubectl = detail["kubectl"].as_str().unwrap();
    assert!(
        kubectl.starts_with(&format!("kubectl --context {cluster} get kustomization.kustomize.toolkit.fluxcd.io -n ")),
        "{kubectl}"
    );
    assert!(detail["events"].is_array());
    let (status, missing) = explorer.get(&format!("/api/v1/objects/{cluster}/no-such-uid"), None).await.unwrap();
    assert_eq!((status, missing["error"].as_str()), (404, Some("not_found")));
    let freshness = explorer.ok("/api/v1/freshness?cluster=sim-01", None).await.unwrap();
    assert_eq!((freshness["clusters"].as_i64(), freshness["loaded"].as_i64()), (Some(3), Some(3)), "{freshness}");
    assert!(freshness["tables"].as_array().unwrap().iter().any(|t| t["table_name"] == "kubernetes_pods"));

    // Errors are JSON with a reason.
    for (query, needle) in [
        ("limit=501", "limit 501"),
        ("selector=a%20in%20x", "label selector"),
        ("field.nope=x", "`nope`"),
        ("cursor=zz", "cursor"),
        ("sort=size", "sort"),
    ] {
        let (status, body) = explorer.get(&format!("/api/v1/objects?{query}"), None).await.unwrap();
        assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{query}: {body}");
        assert!(body["reason"].as_str().unwrap().contains(needle), "{query}: {body}");
    }

    // Behind a proxy: no identity header is 401, a user without a role 403, on the API and the page.
    let proxied = Explorer::start(&mut env, "explore-proxy", &registry, &[]).await.unwrap();
    for path in ["/api/v1/objects", "/api/v1/facets", "/api/v1/freshness", "/"] {
        let (status, body) = proxied.get(path, None).await.unwrap();
        assert_eq!((status, body["error"].as_str()), (401, Some("unauthenticated")), "{path}: {body}");
        assert!(body["reason"].as_str().unwrap().contains("x-forwarded-user"), "{body}");
        let (status, body) = proxied.get(path, Some("mallory@example.com")).await.unwrap();
        assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{path}: {body}");
    }
    let who = explorer.ok("/api/v1/whoami", None).await.unwrap();
    assert_eq!(who["single_user"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_during_a_refresh_visits_each_unhealthy_object_once() {
    let (mut env, _fleet, registry) = loaded_fleet().await;
    let explorer = Explorer::start(&mut env, "explore", &registry, &["--single-user"]).await.unwrap();
    let before = sql_keys(&env.pool, "fleet_unhealthy_objects", "true", "1, 2").await;
    let refresh = env.scheduler(
        &registry,
        &["refresh", "--wait", "--table", "kubernetes_pods", "--table", "kubernetes_custom_resources"],
    );
    let paging = async {
        let mut visits = Vec::new();
        // Page until the refresh has ended at least once during a full pass.
        for _ in 0..3 {
            visits.push(keys(&explorer.all_pages("", 4, None).await.unwrap()));
        }
        visits
    };
    let (refreshed, visits) = tokio::join!(refresh, paging);
    refreshed.unwrap();
    let after = sql_keys(&env.pool, "fleet_unhealthy_objects", "true", "1, 2").await;
    let stable: BTreeSet<_> = before.iter().filter(|k| after.contains(k)).cloned().collect();
    for pass in visits {
        let seen: BTreeSet<_> = pass.iter().cloned().collect();
        assert_eq!(seen.len(), pass.len(), "no object twice in one pass");
        assert!(stable.is_subset(&seen), "every object unhealthy throughout is visited");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_others_could_reach_needs_mutual_tls() {
    let env = TestEnv::new().await.unwrap();
    let registry = env.dir.join("clusters.yaml");
    std::fs::write(&registry, "clusters: []\n").unwrap();
    for args in [vec!["explore", "--listen", "0.0.0.0:0"], vec!["explore", "--single-user", "--listen", "0.0.0.0:0"]] {
        let output = env.scheduler_output(&registry, &args).await.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(stderr.contains("loopback"), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mutual_tls_only_the_proxys_client_certificate_is_answered() {
    // Every table: the viewers' rows follow the clusters' role bindings.
    let (mut env, _fleet, registry) = fleet_with_worker().await.unwrap();
    env.scheduler(&registry, &["refresh", "--wait"]).await.unwrap();
    let viewers = Viewers::grant(&env, &registry).await.unwrap();
    let [server_ca, proxy_ca, other_ca] = ["server-ca", "proxy-ca", "other-ca"].map(|name| TestCa::new(name).unwrap());
    let server = server_ca.issue("explorer", ServerAuth).unwrap();
    let proxy = proxy_ca.issue("oauth2-proxy", ClientAuth).unwrap();
    let other = other_ca.issue("oauth2-proxy", ClientAuth).unwrap();
    // The server's CA signs servers only: a client certificate of it is no proxy's either.
    let server_signed = server_ca.issue("oauth2-proxy", ClientAuth).unwrap();
    let file = |name: &str| env.dir.join(name);
    proxy_ca.write(&file("proxy-ca.pem")).unwrap();
    server.write(&file("server.pem"), &file("server-key.pem")).unwrap();
    // The clients' certificates too, to retry a failure by hand (curl --cacert server-ca.pem --cert ...).
    server_ca.write(&file("server-ca.pem")).unwrap();
    proxy.write(&file("proxy.pem"), &file("proxy-key.pem")).unwrap();
    other.write(&file("other.pem"), &file("other-key.pem")).unwrap();
    let tls_args = [("--client-ca", "proxy-ca.pem"), ("--tls-cert", "server.pem"), ("--tls-key", "server-key.pem")]
        .map(|(flag, name)| format!("{flag}={}", file(name).display()));
    let mut args = vec![viewers.database_url_arg.as_str()];
    args.extend(tls_args.iter().map(String::as_str));
    let explorer =
        Explorer::start_on(&mut env, "explore-tls", &registry, Ipv4Addr::UNSPECIFIED.into(), &args).await.unwrap();
    assert!(env.log("explore-tls").contains("https (mutual TLS)"), "{}", env.log("explore-tls"));

    let as_proxy = probes::tls_client(&server_ca.certificate, Some(&proxy), rustls::DEFAULT_VERSIONS).unwrap();
    for (user, role) in &viewers.users {
        let (status, who) = explorer.get_tls("/api/v1/whoami", Some(user), &as_proxy).await.unwrap();
        assert_eq!((status, &who["user"], &who["role"]), (200, &json!(user), &json!(role)), "{who}");
        let (status, page) =
            explorer.get_tls("/api/v1/objects?source=all&limit=500", Some(user), &as_proxy).await.unwrap();
        let expected = as_role(&env.pool, role, "fleet_objects", "true").await.unwrap();
        let listed = keys(page["objects"].as_array().unwrap());
        assert_eq!((status, page["total"].as_u64()), (200, Some(expected.len() as u64)), "{user}: {page}");
        assert!(!listed.is_empty() && listed == expected[..listed.len()], "{user}: the rows {role} sees, in order");
    }
    let (status, body) = explorer.get_tls("/api/v1/whoami", None, &as_proxy).await.unwrap();
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthenticated")), "the proxy still names the user");

    // Under TLS 1.3 a client's side of the handshake ends before the server has checked its
    // certificate, so the refusal (an alert) meets the request; under TLS 1.2 the handshake fails.
    let user = [(USER_HEADER, viewers.users[0].0.as_str())];
    let versions = [("TLS 1.3", [&TLS13]), ("TLS 1.2", [&TLS12])];
    for (peer, identity) in
        [("no client certificate", None), ("another CA's", Some(&other)), ("the server CA's", Some(&server_signed))]
    {
        for (version, only) in &versions {
            let client = probes::tls_client(&server_ca.certificate, identity, only).unwrap();
            let refused = probes::get_tls(explorer.addr, "/api/v1/whoami", &user, &client).await;
            let err = format!("{:#}", refused.expect_err(&format!("{peer}, {version}: no HTTP answer")));
            let expected = if only == &[&TLS13] { "no HTTP answer" } else { "the TLS handshake: received fatal alert" };
            assert!(err.starts_with(expected), "{peer}, {version}: {err}");
        }
    }
    let plain = probes::get_with(explorer.addr, "/api/v1/whoami", &user).await;
    assert!(!matches!(&plain, Ok(answer) if answer.status == 200), "plain HTTP to the TLS port: {plain:?}");
    for (version, only) in &versions {
        let client = probes::tls_client(&server_ca.certificate, Some(&proxy), only).unwrap();
        let answer = probes::get_tls(explorer.addr, "/api/v1/whoami", &user, &client).await.unwrap();
        assert_eq!(answer.status, 200, "{version}: refused peers leave the server serving the proxy");
    }
    viewers.drop_roles(&env.pool).await;
}
