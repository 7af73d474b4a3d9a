//! Access control on the real services (issue 22): login roles granted with `scheduler access`
//! see exactly what the simulated clusters' RBAC lets their Kubernetes user and groups list,
//! through every path to a row, and lose it after the next RBAC refresh once a binding is gone.

use kubecensus_tests::{
    fleet::{
        Fleet, FleetSpec,
        rbac::{self, DEVELOPER, DEVELOPER_NAMESPACE, PLATFORM_GROUP},
    },
    harness::TestEnv,
};
use serde_json::json;
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};

/// The tables a refresh here loads: pods (and containers), secrets, namespaces, discovery and RBAC.
const TABLES: [&str; 8] = [
    "kubernetes_pods",
    "kubernetes_secrets",
    "kubernetes_namespaces",
    "kubernetes_api_resources",
    "kubernetes_role_binding_subjects",
    "kubernetes_role_policy_rules",
    "kubernetes_cluster_role_binding_subjects",
    "kubernetes_cluster_role_policy_rules",
];

const CREATED: &str = "2024-01-01T00:00:00Z";

/// A login role of this test, unique on the server (roles are global, tests run in parallel).
struct Login {
    name: String,
}

impl Login {
    async fn create(env: &TestEnv, who: &str) -> Self {
        let name = format!("{who}_{}", env.services.database.trim_start_matches("kc_test_"));
        sqlx::raw_sql(&format!("DROP ROLE IF EXISTS {name}; CREATE ROLE {name} LOGIN"))
            .execute(&env.pool)
            .await
            .unwrap();
        Self { name }
    }

    async fn connect(&self, env: &TestEnv) -> PgConnection {
        let options: PgConnectOptions = env.services.database_url.parse().unwrap();
        PgConnection::connect_with(&options.username(&self.name)).await.unwrap()
    }

    async fn drop(self, env: &TestEnv) {
        sqlx::raw_sql(&format!("DROP ROLE {}", self.name)).execute(&env.pool).await.unwrap();
    }
}

async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
}

async fn owner_count(env: &TestEnv, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&env.pool).await.unwrap()
}

async fn refresh(env: &TestEnv, registry: &std::path::Path, tables: &[&str]) {
    let mut args = vec!["refresh", "--wait"];
    for table in tables {
        args.extend(["--table", table]);
    }
    env.scheduler(registry, &args).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_see_exactly_what_their_rbac_lets_them_list() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 60, namespaces: 6, ..FleetSpec::default() }, &env.dir)
        .await
        .unwrap();
    let registry = env.dir.join("clusters.yaml");
    // sim-01: alice may view team-a-payments; carol has a rule with resourceNames only; the
    // service accounts of team-b-checkout may view there.
    let bind = |name: &str, namespace: &str, role: &str, subjects| {
        rbac::binding("sim-01", name, Some(namespace), role, subjects, CREATED)
    };
    fleet
        .put_rbac("sim-01", bind("alice-view", "team-a-payments", "view", rbac::subject("User", "alice@example.com")))
        .unwrap();
    let named = rbac::cluster_role(
        "sim-01",
        "one-pod",
        json!(null),
        vec![json!({"apiGroups": [""], "resources": ["pods"], "resourceNames": ["web-1"], "verbs": ["get", "list"]})],
        CREATED,
    );
    fleet.put_rbac("sim-01", named).unwrap();
    fleet
        .put_rbac(
            "sim-01",
            bind("carol-one-pod", "team-a-payments", "one-pod", rbac::subject("User", "carol@example.com")),
        )
        .unwrap();
    fleet
        .put_rbac(
            "sim-01",
            bind(
                "ci-view",
                "team-b-checkout",
                "view",
                rbac::subject("Group", "system:serviceaccounts:team-b-checkout"),
            ),
        )
        .unwrap();
    env.spawn_worker("worker", &registry, &[]).unwrap();
    refresh(&env, &registry, &TABLES).await;

    let (alice, bob, carol, ci, dev) = (
        Login::create(&env, "alice").await,
        Login::create(&env, "bob").await,
        Login::create(&env, "carol").await,
        Login::create(&env, "ci").await,
        Login::create(&env, "dev").await,
    );
    let grant = |role: &str, user: &str, extra: &[&str]| {
        let mut args = vec!["access", "grant", "--role", role, "--user", user];
        args.extend(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    for args in [
        grant(&alice.name, "alice@example.com", &[]),
        grant(&bob.name, "bob@example.com", &["--group", PLATFORM_GROUP, "--cluster", "sim-01"]),
        grant(&carol.name, "carol@example.com", &[]),
        grant(&ci.name, "system:serviceaccount:team-b-checkout:ci", &[]),
        grant(&dev.name, DEVELOPER, &[]),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        env.scheduler(&registry, &args).await.unwrap();
    }

    // alice: exactly sim-01's team-a-payments pods and containers, nothing of sim-02, no secrets.
    let mut conn = alice.connect(&env).await;
    let payments = "cluster_name = 'sim-01' AND namespace = 'team-a-payments'";
    let expected_pods = owner_count(&env, &format!("SELECT count(*) FROM kubernetes_pods WHERE {payments}")).await;
    assert!(expected_pods > 0);
    assert_eq!(count(&mut conn, "SELECT count(*) FROM kubernetes_pods").await, expected_pods);
    assert_eq!(
        count(&mut conn, &format!("SELECT count(*) FROM kubernetes_pods WHERE {payments}")).await,
        expected_pods
    );
    let containers =
        owner_count(&env, &format!("SELECT count(*) FROM kubernetes_pod_containers WHERE {payments}")).await;
    assert_eq!(count(&mut conn, "SELECT count(*) FROM kubernetes_pod_containers").await, containers);
    assert_eq!(count(&mut conn, "SELECT count(*) FROM kubernetes_secrets").await, 0, "view grants no secrets");
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM kubernetes_namespaces").await,
        0,
        "namespaces need a cluster-wide grant"
    );
    assert_eq!(count(&mut conn, "SELECT count(*) FROM clusters").await, 1, "only the clusters it sees something in");
    assert_eq!(count(&mut conn, "SELECT count(*) FROM snapshots WHERE cluster_name <> 'sim-01'").await, 0);
    assert_eq!(count(&mut conn, "SELECT count(*) FROM runs WHERE cluster_name <> 'sim-01'").await, 0);
    // Every other path: the view, a partition, any setting.
    let in_view = count(&mut conn, "SELECT count(*) FROM fleet_objects WHERE kind = 'Pod'").await;
    assert_eq!(in_view, expected_pods);
    assert_eq!(count(&mut conn, "SELECT count(*) FROM fleet_objects WHERE cluster_name = 'sim-02'").await, 0);
    let partition =
        sqlx::query("SELECT count(*) FROM kubecensus_partitions.kubernetes_pods_p00").execute(&mut conn).await;
    assert!(partition.unwrap_err().to_string().contains("permission denied"), "partitions are not readable");
    sqlx::raw_sql(
        "SET kubecensus.role = 'postgres'; SET search_path = kubecensus_partitions, public; SET row_security = on",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(count(&mut conn, "SELECT count(*) FROM kubernetes_pods").await, expected_pods);
    sqlx::raw_sql("SET row_security = off").execute(&mut conn).await.unwrap();
    let refused = sqlx::query("SELECT count(*) FROM kubernetes_pods").execute(&mut conn).await;
    assert!(
        refused.unwrap_err().to_string().contains("row-level security"),
        "row_security = off is refused, not obeyed"
    );
    let others = sqlx::query("SELECT count(*) FROM access_identities").execute(&mut conn).await;
    assert!(others.is_err(), "a viewer does not read the identities");
    drop(conn);

    // bob, in group `platform` (bound to `view` cluster-wide) in sim-01 only: all of sim-01's
    // pods and namespaces, nothing of sim-02.
    let mut conn = bob.connect(&env).await;
    let all_01 = owner_count(&env, "SELECT count(*) FROM kubernetes_pods WHERE cluster_name = 'sim-01'").await;
    assert_eq!(count(&mut conn, "SELECT count(*) FROM kubernetes_pods").await, all_01);
    let namespaces =
        owner_count(&env, "SELECT count(*) FROM kubernetes_namespaces WHERE cluster_name = 'sim-01'").await;
    assert_eq!(count(&mut conn, "SELECT count(*) FROM kubernetes_namespaces").await, namespaces);
    assert_eq!(count(&mut conn, "SELECT count(*) FROM kubernetes_secrets").await, 0);
    drop(conn);

    // carol: a resourceNames rule grants no list, so no rows.
    let mut conn = carol.connect(&env).await;
    assert_eq!(count(&mut conn, "SELECT count(*) FROM kubernetes_pods").await, 0);
    drop(conn);

    // ci, a service account: what its group system:serviceaccounts:team-b-checkout is granted.
    let mut conn = ci.connect(&env).await;
    let checkout = owner_count(
        &env,
        "SELECT count(*) FROM kubernetes_pods WHERE cluster_name = 'sim-01' AND namespace = 'team-b-checkout'",
    )
    .await;
    assert!(checkout > 0);
    assert_eq!(count(&mut conn, "SELECT count(*) FROM kubernetes_pods").await, checkout);
    drop(conn);

    // The developer, bound to `edit` (which aggregates view's rules and secrets) in
    // team-a-payments of every cluster: its secrets there, in both clusters.
    let mut conn = dev.connect(&env).await;
    let secrets = owner_count(
        &env,
        &format!("SELECT count(*) FROM kubernetes_secrets WHERE namespace = '{DEVELOPER_NAMESPACE}'"),
    )
    .await;
    assert!(secrets > 0);
    assert_eq!(count(&mut conn, "SELECT count(*) FROM kubernetes_secrets").await, secrets);
    assert_eq!(count(&mut conn, "SELECT count(DISTINCT cluster_name) FROM kubernetes_pods").await, 2);
    drop(conn);

    // explain names the binding that grants, or says none does.
    let (env_ref, registry_ref) = (&env, &registry);
    let explain = |resource: &'static str| {
        let args = ["access", "explain", "--role", &alice.name, "--cluster", "sim-01"];
        let args: Vec<String> = args
            .iter()
            .chain(&["--namespace", "team-a-payments", "--resource", resource])
            .map(|a| a.to_string())
            .collect();
        async move { env_ref.scheduler(registry_ref, &args.iter().map(String::as_str).collect::<Vec<_>>()).await.unwrap() }
    };
    let explained = explain("pods").await;
    assert!(
        explained.contains("RoleBinding team-a-payments/alice-view") && explained.contains("ClusterRole view"),
        "{explained}"
    );
    let none = explain("secrets").await;
    assert!(none.starts_with("no binding lets alice@example.com"), "{none}");
    let listed = env.scheduler(&registry, &["access", "list", "--output", "json"]).await.unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&listed).unwrap().as_array().unwrap().len(), 5);

    // Removing alice's binding in the cluster hides the rows after the next RBAC refresh.
    assert!(fleet.remove_rbac("sim-01", "RoleBinding", "team-a-payments", "alice-view").unwrap());
    refresh(&env, &registry, &["kubernetes_role_binding_subjects"]).await;
    let mut conn = alice.connect(&env).await;
    assert_eq!(count(&mut conn, "SELECT count(*) FROM kubernetes_pods").await, 0);
    assert_eq!(count(&mut conn, "SELECT count(*) FROM clusters").await, 0);
    drop(conn);

    for login in [alice, bob, carol, ci, dev] {
        login.drop(&env).await;
    }
    env.services.remove().await;
}
