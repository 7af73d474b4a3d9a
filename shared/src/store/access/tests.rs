//! The RBAC replay against a real PostgreSQL: RBAC objects go through the real replace (which
//! calls the swap hook), then each case asks what an identity may list. One table-driven test
//! per rule of the authorizer, and the documentation's examples
//! (<https://kubernetes.io/docs/reference/access-authn-authz/rbac/>), each case in a cluster of
//! its own.

use serde_json::{Value, json};
use sqlx::PgPool;

use super::{identities, permissions};
use crate::{
    model::catalog::Catalog,
    model::flatten::{ClusterContext, Layout},
    queue::job::{Job, Trigger},
    store::{Refresh, Scope, ensure_schema, runs},
};

pub(super) static CATALOG: std::sync::LazyLock<Catalog> = std::sync::LazyLock::new(Catalog::builtin);

/// The role every case's identity is given to.
const ROLE: &str = "case_role";

fn meta(name: &str, namespace: Option<&str>) -> Value {
    let uid = format!("{}-{name}", namespace.unwrap_or("cluster"));
    match namespace {
        Some(namespace) => json!({"name": name, "namespace": namespace, "uid": uid}),
        None => json!({"name": name, "uid": uid}),
    }
}

pub(super) fn role(name: &str, namespace: Option<&str>, rules: Value) -> Value {
    let kind = if namespace.is_some() { "Role" } else { "ClusterRole" };
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta(name, namespace), "rules": rules})
}

pub(super) fn binding(name: &str, namespace: Option<&str>, role_kind: &str, role: &str, subjects: Value) -> Value {
    let kind = if namespace.is_some() { "RoleBinding" } else { "ClusterRoleBinding" };
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta(name, namespace),
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role}, "subjects": subjects})
}

pub(super) fn user(name: &str) -> Value {
    json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name}])
}

fn group(name: &str) -> Value {
    json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": name}])
}

fn read(groups: &[&str], resources: &[&str]) -> Value {
    json!([{"apiGroups": groups, "resources": resources, "verbs": ["get", "list", "watch"]}])
}

/// Replaces `cluster`'s rows of the resource whose job table is `job_table` with `objects` (those
/// of its kind), through the store's replace.
pub(super) async fn replace(pool: &PgPool, cluster: &str, job_table: &str, objects: &[Value]) {
    let (resource, target) = CATALOG.target(job_table).unwrap();
    let layouts: Vec<Layout> =
        resource.tables.iter().map(|table| Layout { table, fields: &[], namespace_fields: &[] }).collect();
    let mut conn = pool.acquire().await.unwrap();
    let mut refresh =
        Refresh::begin(&mut conn, cluster, Scope::of(&CATALOG, target), resource, &layouts).await.unwrap();
    let context = ClusterContext { name: cluster.into(), uid: format!("uid-{cluster}"), field_values: vec![] };
    for object in objects.iter().filter(|o| o["kind"] == resource.api.kind) {
        for (index, layout) in layouts.iter().enumerate() {
            let mut rows = Vec::new();
            layout.write_rows(object, &context, &mut rows);
            refresh.add(index, &rows);
        }
    }
    let job = Job::new(&CATALOG, cluster, job_table, Trigger::Manual, chrono::Utc::now()).unwrap();
    let (run_id, _) = runs::start(pool, &job, 1, "test").await.unwrap();
    refresh.commit(&mut conn, &job, run_id, &runs::Outcome::succeeded()).await.unwrap();
}

/// Registers `cluster` and loads `objects` into its four RBAC tables.
pub(super) async fn load(pool: &PgPool, cluster: &str, objects: &[Value]) {
    sqlx::query("INSERT INTO clusters (name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(cluster)
        .execute(pool)
        .await
        .unwrap();
    for table in permissions::RBAC_TABLES {
        replace(pool, cluster, table, objects).await;
    }
}

/// Makes [`ROLE`] the user and groups in `cluster` (an identity for that cluster only).
async fn identify(pool: &PgPool, cluster: &str, user: &str, groups: &[&str]) {
    sqlx::query(
        "INSERT INTO access_identities (role_name, cluster_name, k8s_user, k8s_groups) VALUES ($1, $2, $3, $4)",
    )
    .bind(ROLE)
    .bind(cluster)
    .bind(user)
    .bind(groups)
    .execute(pool)
    .await
    .unwrap();
    let mut tx = pool.begin().await.unwrap();
    permissions::recompute_role(&mut tx, ROLE).await.unwrap();
    tx.commit().await.unwrap();
}

/// Whether [`ROLE`] may list `resource` of `group` in `namespace` (`None`: cluster-wide).
async fn may_list(pool: &PgPool, cluster: &str, namespace: Option<&str>, group: &str, resource: &str) -> bool {
    !identities::explain(pool, ROLE, cluster, namespace, group, resource).await.unwrap().grants.is_empty()
}

/// One case: RBAC objects, who asks, and what it may (`true`) or may not list: (namespace,
/// group, resource).
struct Case {
    name: &'static str,
    objects: Vec<Value>,
    user: &'static str,
    groups: &'static [&'static str],
    expect: Vec<(Option<&'static str>, &'static str, &'static str, bool)>,
}

async fn run(pool: &PgPool, cases: Vec<Case>) {
    ensure_schema(pool, &CATALOG, &[], &[]).await.unwrap();
    for (index, case) in cases.iter().enumerate() {
        let cluster = format!("case-{index}");
        load(pool, &cluster, &case.objects).await;
        identify(pool, &cluster, case.user, case.groups).await;
        for (namespace, group, resource, expected) in &case.expect {
            let found = may_list(pool, &cluster, *namespace, group, resource).await;
            assert_eq!(found, *expected, "{}: list {group}/{resource} in {namespace:?}", case.name);
        }
    }
}

/// Which bindings apply where, and who a subject is (rule.go `VisitRulesFor`, `appliesToUser`).
#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn bindings_apply_where_the_authorizer_applies_them(pool: PgPool) {
    let pods = read(&[""], &["pods"]);
    run(
        &pool,
        vec![
            Case {
                name: "a RoleBinding to a ClusterRole grants in its namespace only",
                objects: vec![
                    role("view", None, pods.clone()),
                    binding("b", Some("payments"), "ClusterRole", "view", user("alice")),
                ],
                user: "alice",
                groups: &[],
                expect: vec![
                    (Some("payments"), "", "pods", true),
                    (Some("checkout"), "", "pods", false),
                    (None, "", "pods", false),
                ],
            },
            Case {
                name: "a ClusterRoleBinding grants everywhere",
                objects: vec![
                    role("view", None, pods.clone()),
                    binding("b", None, "ClusterRole", "view", group("ops")),
                ],
                user: "bob",
                groups: &["ops"],
                expect: vec![(Some("payments"), "", "pods", true), (None, "", "pods", true)],
            },
            Case {
                name: "a RoleBinding to a Role of another namespace grants nothing",
                objects: vec![
                    role("r", Some("other"), pods.clone()),
                    binding("b", Some("payments"), "Role", "r", user("alice")),
                ],
                user: "alice",
                groups: &[],
                expect: vec![(Some("payments"), "", "pods", false), (Some("other"), "", "pods", false)],
            },
            Case {
                name: "a ClusterRoleBinding to a Role grants nothing",
                objects: vec![
                    role("r", Some("payments"), pods.clone()),
                    binding("b", None, "Role", "r", user("alice")),
                ],
                user: "alice",
                groups: &[],
                expect: vec![(Some("payments"), "", "pods", false)],
            },
            Case {
                name: "another user or group is not bound",
                objects: vec![
                    role("view", None, pods.clone()),
                    binding("b", None, "ClusterRole", "view", user("alice")),
                ],
                user: "mallory",
                groups: &["alice"],
                expect: vec![(Some("payments"), "", "pods", false)],
            },
            Case {
                name: "a service account subject defaults to the RoleBinding's namespace",
                objects: vec![
                    role("view", None, pods.clone()),
                    binding(
                        "b",
                        Some("payments"),
                        "ClusterRole",
                        "view",
                        json!([{"kind": "ServiceAccount", "name": "ci"}]),
                    ),
                ],
                user: "system:serviceaccount:payments:ci",
                groups: &[],
                expect: vec![(Some("payments"), "", "pods", true), (Some("checkout"), "", "pods", false)],
            },
            Case {
                name: "a service account subject of a ClusterRoleBinding needs its namespace",
                objects: vec![
                    role("view", None, pods.clone()),
                    binding("no-ns", None, "ClusterRole", "view", json!([{"kind": "ServiceAccount", "name": "ci"}])),
                ],
                user: "system:serviceaccount:payments:ci",
                groups: &[],
                expect: vec![(Some("payments"), "", "pods", false)],
            },
            Case {
                name: "a service account gets its implicit groups",
                objects: vec![
                    role("view", None, pods.clone()),
                    binding("b", Some("payments"), "ClusterRole", "view", group("system:serviceaccounts:payments")),
                    binding("all", Some("shared"), "ClusterRole", "view", group("system:serviceaccounts")),
                ],
                user: "system:serviceaccount:payments:ci",
                groups: &[],
                expect: vec![
                    (Some("payments"), "", "pods", true),
                    (Some("shared"), "", "pods", true),
                    (Some("x"), "", "pods", false),
                ],
            },
            Case {
                name: "every identity is system:authenticated",
                objects: vec![
                    role("view", None, pods.clone()),
                    binding("b", Some("public"), "ClusterRole", "view", group("system:authenticated")),
                ],
                user: "anyone@example.com",
                groups: &[],
                expect: vec![(Some("public"), "", "pods", true)],
            },
        ],
    )
    .await;
}

/// What a rule allows (`RuleAllows`: verbs, groups, resources, resourceNames).
#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn rules_allow_a_list_as_rule_allows_says(pool: PgPool) {
    let bound = |rules: Value| vec![role("r", None, rules), binding("b", None, "ClusterRole", "r", user("alice"))];
    let case = |name, rules, expect| Case { name, objects: bound(rules), user: "alice", groups: &[], expect };
    run(&pool, vec![
        case("`*` in verbs, groups and resources", json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
            vec![(None, "", "secrets", true), (Some("a"), "apps", "deployments", true), (None, "example.com", "widgets", true)]),
        case("a subresource does not grant its resource", read(&[""], &["pods/log", "pods/exec"]), vec![(Some("a"), "", "pods", false)]),
        case("`*/scale` grants no resource", read(&["*"], &["*/scale"]), vec![(Some("a"), "apps", "deployments", false)]),
        case("resourceNames grant no list",
            json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["tls"], "verbs": ["get", "list"]}]),
            vec![(Some("a"), "", "secrets", false)]),
        case("an empty resourceNames is no restriction",
            json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [], "verbs": ["list"]}]),
            vec![(Some("a"), "", "secrets", true)]),
        case("get without list grants no list", json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "watch"]}]),
            vec![(Some("a"), "", "pods", false)]),
        case("the group must match", read(&["apps"], &["pods", "deployments"]),
            vec![(Some("a"), "", "pods", false), (Some("a"), "apps", "deployments", true)]),
        case("groups and resources combine", read(&["", "apps"], &["pods", "deployments"]),
            vec![(Some("a"), "", "pods", true), (Some("a"), "apps", "pods", true), (Some("a"), "", "deployments", true)]),
        case("non-resource URLs grant no resource", json!([{"nonResourceURLs": ["*"], "verbs": ["*"]}]),
            vec![(None, "", "pods", false)]),
    ])
    .await;
}

/// The documentation's examples: `pod-reader` bound to jane in `default`, `secret-reader` bound
/// to dave in `development` and to the group `manager` cluster-wide.
#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn the_documentations_examples(pool: PgPool) {
    let objects = vec![
        role("pod-reader", Some("default"), read(&[""], &["pods"])),
        binding("read-pods", Some("default"), "Role", "pod-reader", user("jane")),
        role("secret-reader", None, read(&[""], &["secrets"])),
        binding("read-secrets", Some("development"), "ClusterRole", "secret-reader", user("dave")),
        binding("read-secrets-global", None, "ClusterRole", "secret-reader", group("manager")),
    ];
    let with = |name, user, groups, expect| Case { name, objects: objects.clone(), user, groups, expect };
    run(
        &pool,
        vec![
            with(
                "jane reads pods in default",
                "jane",
                &[],
                vec![
                    (Some("default"), "", "pods", true),
                    (Some("development"), "", "pods", false),
                    (Some("default"), "", "secrets", false),
                ],
            ),
            with(
                "dave reads secrets in development",
                "dave",
                &[],
                vec![
                    (Some("development"), "", "secrets", true),
                    (Some("default"), "", "secrets", false),
                    (None, "", "secrets", false),
                ],
            ),
            with(
                "a manager reads secrets everywhere",
                "carol",
                &["manager"],
                vec![(Some("default"), "", "secrets", true), (None, "", "secrets", true)],
            ),
        ],
    )
    .await;
}

/// `access_visible`: kinds from the catalog and from the cluster's discovery (a custom
/// resource by its group and plural); a cluster-scoped kind only from a cluster-wide grant; a
/// fleet-wide identity not on a `webhook` cluster; a binding removed by the next replace.
#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn visible_kinds_come_from_discovery_and_follow_each_replace(pool: PgPool) {
    ensure_schema(&pool, &CATALOG, &[], &[]).await.unwrap();
    let rules = json!([{"apiGroups": ["", "helm.toolkit.fluxcd.io"], "resources": ["nodes", "pods", "helmreleases"], "verbs": ["list"]}]);
    let objects = vec![role("r", None, rules), binding("b", Some("payments"), "ClusterRole", "r", user("alice"))];
    load(&pool, "a", &objects).await;
    sqlx::query("INSERT INTO access_identities (role_name, k8s_user) VALUES ($1, 'alice')")
        .bind(ROLE)
        .execute(&pool)
        .await
        .unwrap();
    let discovery = json!({"kind": "APIResourceList", "groupVersion": "helm.toolkit.fluxcd.io/v2", "group": "helm.toolkit.fluxcd.io", "version": "v2",
        "resources": [{"name": "helmreleases", "kind": "HelmRelease", "namespaced": true, "verbs": ["list"]},
                      {"name": "helmreleases/status", "kind": "HelmRelease", "namespaced": true, "verbs": ["get"]}]});
    replace(&pool, "a", permissions::DISCOVERY_TABLE, &[discovery]).await;
    let visible = || async {
        sqlx::query_as::<_, (String, String, String)>(
            "SELECT api_group, kind, namespace FROM access_visible WHERE role_name = $1 AND cluster_name = 'a' ORDER BY 1, 2",
        )
        .bind(ROLE)
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let payments = |group: &str, kind: &str| (group.to_owned(), kind.to_owned(), "payments".to_owned());
    assert_eq!(visible().await, vec![payments("", "Pod"), payments("helm.toolkit.fluxcd.io", "HelmRelease")]);

    sqlx::query("UPDATE clusters SET authorization_mode = 'webhook' WHERE name = 'a'").execute(&pool).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    permissions::recompute_role(&mut tx, ROLE).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(visible().await, vec![], "a fleet-wide identity does not apply on a webhook cluster");
    identify(&pool, "a", "alice", &[]).await;
    assert_eq!(visible().await.len(), 2, "the identity given for the cluster does");

    load(&pool, "a", &objects[..1]).await;
    assert_eq!(visible().await, vec![], "the binding's removal is applied by the replace");
}
