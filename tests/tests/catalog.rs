//! The catalog against kubequery and real objects: every kubequery table and column exists in
//! PostgreSQL; every fixture object goes through the pipeline, and the objects that set every
//! field land with every column right; a simulated fleet fills every table of every cluster,
//! with the namespace fields resolved; the README lists the catalog's tables.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use kubecensus::{
    model::catalog::{Catalog, ColumnType, Function, Resource, Source, Step, Table},
    model::flatten::{image_repo, ready, volume_type},
    model::namespace_fields::NamespaceRule,
    model::redact::without_data,
    model::{health, quantity},
    source::registry::{ClusterConfig, Registry},
    store,
};
use kubecensus_tests::{
    fleet::{Fleet, FleetSpec, cluster_runs_custom_resources, served_resources},
    harness::TestEnv,
};
use serde_json::{Map, Value, json};
use sqlx::PgPool;

/// A file or folder of `tests/fixtures` (where each comes from: `tests/fixtures/SOURCES.md`).
fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(path)
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// kubequery's tables and columns (with their kubequery types): the reference plus the 1.1.x
/// variant's additions.
fn kubequery_schema() -> BTreeMap<String, BTreeMap<String, String>> {
    let text = std::fs::read_to_string(fixture("reference/kubequery-schema.json")).expect("the kubequery reference");
    let reference: Value = serde_json::from_str(&text).unwrap();
    let mut tables: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for table in reference["tables"].as_array().unwrap() {
        let columns = table["columns"].as_array().unwrap();
        tables.insert(
            table["name"].as_str().unwrap().to_owned(),
            columns
                .iter()
                .map(|c| (c["name"].as_str().unwrap().to_owned(), c["type"].as_str().unwrap().to_owned()))
                .collect(),
        );
    }
    for variant in reference["variants"].as_object().unwrap().values() {
        for change in variant["changes"].as_array().unwrap() {
            if let Some(add) = change.get("add") {
                tables
                    .get_mut(change["table"].as_str().unwrap())
                    .unwrap()
                    .insert(add["name"].as_str().unwrap().to_owned(), add["type"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(tables.len(), 51);
    tables
}

/// Whether a PostgreSQL type stores a kubequery type: TEXT as text or jsonb, the integers alike.
fn compatible(kubequery: &str, postgres: &str) -> bool {
    match kubequery {
        "TEXT" => postgres == "text" || postgres == "jsonb",
        "INTEGER" => postgres == "integer",
        "BIGINT" => postgres == "bigint",
        _ => false,
    }
}

fn registry_with_fields() -> Registry {
    Registry {
        namespace_fields: BTreeMap::from([(
            "team".to_owned(),
            vec![NamespaceRule { label: Some("team".into()), ..Default::default() }],
        )]),
        clusters: vec![ClusterConfig {
            name: "c1".into(),
            kubeconfig: Some("k".into()),
            fields: BTreeMap::from([("region".to_owned(), "eu".to_owned())]),
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_has_every_kubequery_table_and_column_and_the_readme_names_the_extras() {
    let env = TestEnv::new().await.unwrap();
    store::prepare(&env.pool, &Catalog::builtin(), &registry_with_fields()).await.unwrap();
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns WHERE table_schema = 'public'",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let mut live: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (table, column, ty) in rows {
        live.entry(table).or_default().insert(column, ty);
    }
    let mut missing = Vec::new();
    let mut mistyped = Vec::new();
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let mut undocumented = BTreeSet::new();
    for (table, columns) in kubequery_schema() {
        let Some(have) = live.get(&table) else {
            missing.push(table);
            continue;
        };
        for (column, ty) in &columns {
            match have.get(column) {
                None => missing.push(format!("{table}.{column}")),
                Some(pg) if !compatible(ty, pg) => {
                    mistyped.push(format!("{table}.{column}: kubequery {ty}, PostgreSQL {pg}"))
                }
                Some(_) => {}
            }
        }
        for extra in have.keys().filter(|c| !columns.contains_key(*c)) {
            if !readme.contains(&format!("`{extra}`")) {
                undocumented.insert(format!("{table}.{extra}"));
            }
        }
    }
    assert!(missing.is_empty(), "missing from PostgreSQL: {missing:#?}");
    assert!(mistyped.is_empty(), "{mistyped:#?}");
    assert!(undocumented.is_empty(), "columns beyond kubequery's that the README does not name: {undocumented:#?}");
    // The registry's fields: cluster fields after cluster_name, namespace fields after namespace.
    let order: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'kubernetes_pods' ORDER BY ordinal_position",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(&order[..7], ["uid", "cluster_name", "region", "cluster_uid", "name", "namespace", "team"]);
    assert!(!live["kubernetes_nodes"].contains_key("team"), "cluster-scoped tables have no namespace fields");
    assert!(live["kubernetes_namespaces"].contains_key("team"));
}

#[test]
fn the_readme_lists_every_table_of_the_catalog() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let tables = Catalog::builtin().markdown_tables();
    assert!(
        readme.contains(&tables),
        "README.md's table list (section Tables) is not the catalog's; replace it with:\n\n{tables}"
    );
}

/// One job per resource for every cluster, all run: returns the latest run of each
/// (cluster, job table) as (status, objects_skipped, error).
async fn refresh_everything(
    env: &mut TestEnv,
    registry: &Path,
) -> BTreeMap<(String, String), (String, i32, Option<String>)> {
    env.spawn_worker("worker", registry, &["--page-size", "50"]).unwrap();
    env.scheduler(registry, &["refresh", "--wait"]).await.unwrap();
    let runs: Vec<(String, String, String, i32, Option<String>)> = sqlx::query_as(
        "SELECT DISTINCT ON (cluster_name, table_name) cluster_name, table_name, status, coalesce(objects_skipped, 0)::int, error
         FROM runs ORDER BY cluster_name, table_name, started_at DESC",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    runs.into_iter().map(|(c, t, s, n, e)| ((c, t), (s, n, e))).collect()
}

/// Every (cluster, job target) ran: succeeded without skipping an object, or, for a resource
/// the simulated cluster does not serve (custom kinds on a cluster without them), skipped with
/// the 404 as the reason. `clusters` are in fleet order.
fn assert_every_job_finished(runs: &BTreeMap<(String, String), (String, i32, Option<String>)>, clusters: &[String]) {
    let catalog = Catalog::builtin();
    for (index, cluster) in clusters.iter().enumerate() {
        for target in &catalog.targets {
            let (resource, _) = catalog.target(&target.name).unwrap();
            let key = (cluster.clone(), target.name.clone());
            let (status, skipped, error) = runs.get(&key).unwrap_or_else(|| panic!("no run of {key:?}"));
            let served = match target.kind {
                Some(_) => cluster_runs_custom_resources(index),
                None => {
                    served_resources(&catalog).any(|r| std::ptr::eq(r, resource))
                        || resource.source != kubecensus::model::catalog::ResourceSource::List
                }
            };
            if served {
                assert_eq!((status.as_str(), *skipped), ("succeeded", 0), "{key:?}: {error:?}");
            } else {
                assert_eq!(status, "skipped", "{key:?}: {error:?}");
                assert!(
                    error.as_deref().is_some_and(|e| e.contains("404")),
                    "{key:?}: the reason is the 404: {error:?}"
                );
            }
        }
    }
}

/// Every row of a table for a cluster, as JSON objects.
async fn table_rows(pool: &PgPool, table: &str, cluster: &str) -> Vec<Map<String, Value>> {
    let sql = format!("SELECT to_jsonb(t) FROM public.{table} t WHERE cluster_name = $1");
    let rows: Vec<Value> = sqlx::query_scalar(&sql).bind(cluster).fetch_all(pool).await.unwrap();
    rows.into_iter().map(|row| row.as_object().unwrap().clone()).collect()
}

/// The value at a catalog path, walked here independently of the flattener.
fn at<'a>(value: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut current = value;
    for step in path {
        current = match step {
            Step::Key(key) => current.get(key)?,
            Step::Find { key, path, value } => current.get(key)?.as_array()?.iter().find(|element| {
                let mut field = *element;
                for key in path {
                    match field.get(key) {
                        Some(next) => field = next,
                        None => return false,
                    }
                }
                field.as_str() == Some(value.as_str())
            })?,
        };
    }
    (!current.is_null()).then_some(current)
}

/// What one row's inputs are.
struct Inputs<'a> {
    object: &'a Value,
    item: Option<&'a Value>,
    status: Option<&'a Value>,
    tag: Option<&'a str>,
}

/// The source's JSON value in the object, when set.
fn source_value(source: &Source, row: &Inputs) -> Option<Value> {
    match source {
        Source::Object(path) => at(row.object, path).cloned(),
        Source::Item(path) => at(row.item?, path).cloned(),
        Source::StatusItem(path) => at(row.status?, path).cloned(),
        Source::Tag => row.tag.map(|t| json!(t)),
        Source::Const(text) => Some(json!(text)),
        Source::FirstOf(sources) => sources.iter().find_map(|s| source_value(s, row)),
        Source::Call(function, inner) => {
            let value = source_value(inner, row)?;
            let text = || value.as_str().map(str::to_owned).or_else(|| value.as_number().map(ToString::to_string));
            match function {
                Function::ImageRepo => Some(json!(image_repo(value.as_str()?))),
                Function::VolumeType => volume_type(&value).map(|v| json!(v)),
                Function::Ready => ready(&value).map(|b| json!(b)),
                Function::Cores => quantity::cores(&text()?).map(|c| json!(c)),
                Function::Bytes => quantity::bytes(&text()?).map(|b| json!(b)),
                Function::WithoutData => without_data(row.object, &value),
                Function::ApiGroup => Some(json!(value.as_str()?.rsplit_once('/').map_or("", |(group, _)| group))),
                Function::ApiVersion => Some(json!(value.as_str()?.rsplit('/').next()?)),
                Function::Health => Some(json!(health::compute(&value).status.as_str())),
                Function::HealthMessage => Some(json!(health::compute(&value).message)),
                Function::HealthSince => health::compute(&value).since.map(|since| json!(since)),
                Function::ContainerImages => {
                    Some(Value::Array(value.as_array()?.iter().filter_map(|c| c.get("image").cloned()).collect()))
                }
            }
        }
        Source::ClusterName | Source::ClusterUid => None,
    }
}

/// The JSON `to_jsonb` gives a column holding `value` as kubequery represents it; `None` when
/// the value cannot be stored in that type (stored as NULL by design).
fn stored(ty: ColumnType, value: &Value) -> Option<Value> {
    let int = |v: &Value| {
        v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).or_else(|| v.as_bool().map(i64::from))
    };
    Some(match ty {
        ColumnType::Text => match value {
            Value::String(s) => json!(s),
            Value::Number(_) | Value::Bool(_) => json!(value.to_string()),
            _ => json!(value.to_string()),
        },
        ColumnType::Json => value.clone(),
        ColumnType::Int => json!(i32::try_from(int(value)?).ok()?),
        ColumnType::BigInt => json!(int(value)?),
        ColumnType::Bool => json!(i32::from(value.as_bool()?)),
        ColumnType::Time => json!(chrono::DateTime::parse_from_rfc3339(value.as_str()?).ok()?.timestamp()),
        ColumnType::Double => json!(value.as_f64()?),
    })
}

/// Each row's inputs for an object: the object, or each item of each row list.
fn inputs<'a>(table: &'a Table, object: &'a Value) -> Vec<Inputs<'a>> {
    if table.rows.is_empty() {
        return vec![Inputs { object, item: None, status: None, tag: None }];
    }
    let path = |p: &str| p.split('.').map(|k| Step::Key(k.to_owned())).collect::<Vec<_>>();
    let mut rows = Vec::new();
    for list in &table.rows {
        let items = at(object, &path(&list.items)).and_then(Value::as_array).cloned().unwrap_or_default();
        let statuses = list.status.as_deref().and_then(|p| at(object, &path(p))).and_then(Value::as_array);
        for i in 0..items.len() {
            let item = at(object, &path(&list.items)).and_then(|v| v.get(i));
            // The API keys a container's status by its name, not its position.
            let name = item.and_then(|item| item.get("name"));
            let status = statuses.and_then(|s| s.iter().find(|status| name.is_some() && status.get("name") == name));
            rows.push(Inputs { object, item, status, tag: list.tag.as_deref() });
        }
    }
    rows
}

/// For every object of `resource` the cluster serves, every table's rows hold, column by column,
/// the value at the column's source wherever the source is set. Returns how many values were
/// compared.
async fn assert_columns_hold_the_sources(pool: &PgPool, fleet: &Fleet, cluster: &str, resource: &Resource) -> usize {
    let objects = fleet.objects(cluster, &resource.api.plural);
    let mut compared = 0;
    for table in &resource.tables {
        let rows = table_rows(pool, &table.name, cluster).await;
        let expected_rows: usize = objects.iter().map(|o| inputs(table, o).len()).sum();
        assert_eq!(rows.len(), expected_rows, "{cluster}: rows of {}", table.name);
        for object in &objects {
            for input in inputs(table, object) {
                let expected: Vec<(&str, Value)> = table
                    .columns
                    .iter()
                    .filter_map(|column| {
                        let value = source_value(&column.source, &input)?;
                        Some((column.name.as_str(), stored(column.ty, &value).unwrap_or(Value::Null)))
                    })
                    .collect();
                let matches = |row: &Map<String, Value>| expected.iter().all(|(name, value)| same(&row[*name], value));
                if !rows.iter().any(matches) {
                    let closest = rows
                        .iter()
                        .max_by_key(|row| expected.iter().filter(|(n, v)| same(&row[*n], v)).count())
                        .unwrap();
                    let wrong: Vec<_> = expected
                        .iter()
                        .filter(|(n, v)| !same(&closest[*n], v))
                        .map(|(n, v)| (n, v, &closest[*n]))
                        .collect();
                    panic!(
                        "{}: no row holds the object's values; closest row differs in (column, expected, stored): {wrong:#?}",
                        table.name
                    );
                }
                compared += expected.len();
            }
        }
    }
    compared
}

/// Equal as stored: numbers compared as numbers (a double may print differently).
fn same(stored: &Value, expected: &Value) -> bool {
    match (stored.as_f64(), expected.as_f64()) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-9,
        _ => stored == expected,
    }
}

async fn fixture_fleet(env: &mut TestEnv, folder: &str) -> (Fleet, PathBuf) {
    let spec =
        FleetSpec { clusters: 1, objects: Some(fixture(folder)), name_prefix: "fx".into(), ..FleetSpec::default() };
    let fleet = Fleet::start(spec, &env.dir).await.unwrap();
    (fleet, env.dir.join("clusters.yaml"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_of_the_api_testdata_objects_lands_in_its_column() {
    let mut env = TestEnv::new().await.unwrap();
    let (fleet, registry) = fixture_fleet(&mut env, "api-testdata").await;
    let runs = refresh_everything(&mut env, &registry).await;
    let cluster = fleet.clusters()[0].name.clone();
    assert_every_job_finished(&runs, std::slice::from_ref(&cluster));
    let catalog = Catalog::builtin();
    let mut compared = 0;
    let mut covered = Vec::new();
    for resource in served_resources(&catalog) {
        if fleet.count(&cluster, &resource.api.plural) > 0 {
            compared += assert_columns_hold_the_sources(&env.pool, &fleet, &cluster, resource).await;
            covered.push(resource.api.kind.as_str());
        }
    }
    // Every listed kind but PodSecurityPolicy (removed from Kubernetes) has a fixture.
    assert_eq!(covered.len(), served_resources(&catalog).count(), "kinds with fixtures: {covered:?}");
    assert!(compared > 1500, "only {compared} values compared");
    // The fixtures set every field, so every kubequery column of a listed table is filled.
    let nulls: Vec<(String, String)> = {
        let mut nulls = Vec::new();
        for resource in served_resources(&catalog) {
            for table in &resource.tables {
                for row in table_rows(&env.pool, &table.name, &cluster).await {
                    nulls.extend(row.iter().filter(|(_, v)| v.is_null()).map(|(c, _)| (table.name.clone(), c.clone())));
                }
            }
        }
        nulls.sort();
        nulls.dedup();
        nulls
    };
    // The only kubequery columns left NULL: ephemeral-only fields on other containers, the CPU
    // metric the fixture does not have (its metric is named `nameValue`), a field Kubernetes
    // removed, and the kube-system namespace the simulator adds.
    let kubequery = kubequery_schema();
    let explained = |table: &str, column: &str| {
        column == "target_container_name"
            || column.ends_with("_cpu_utilization_percentage")
            || (table, column) == ("kubernetes_services", "topology_keys")
            || table == "kubernetes_namespaces"
    };
    let unexplained: Vec<_> = nulls
        .iter()
        .filter(|(table, column)| kubequery[table].contains_key(column) && !explained(table, column))
        .collect();
    assert!(unexplained.is_empty(), "kubequery columns NULL although the fixtures set every field: {unexplained:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_real_object_goes_through_the_pipeline() {
    let mut env = TestEnv::new().await.unwrap();
    let (fleet, registry) = fixture_fleet(&mut env, "real").await;
    let runs = refresh_everything(&mut env, &registry).await;
    let cluster = fleet.clusters()[0].name.clone();
    assert_every_job_finished(&runs, std::slice::from_ref(&cluster));
    for resource in served_resources(&Catalog::builtin()) {
        if fleet.count(&cluster, &resource.api.plural) > 0 {
            assert_columns_hold_the_sources(&env.pool, &fleet, &cluster, resource).await;
        }
    }
    for plural in ["pods", "nodes", "events", "replicasets", "clusterroles", "deployments", "services"] {
        assert!(fleet.count(&cluster, plural) > 0, "the real fixtures hold {plural}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_fills_every_table_of_every_cluster_with_namespace_fields() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 30, namespaces: 6, ..FleetSpec::default() }, &env.dir)
        .await
        .unwrap();
    let registry = env.dir.join("clusters.yaml");
    // Namespace fields: the team label where a namespace has one, platform-* by pattern, and
    // one cluster's kube-system by name.
    let mut text = std::fs::read_to_string(&registry).unwrap();
    text = format!(
        "namespace_fields:\n  team:\n  - {{label: team}}\n  - {{namespace: 'platform-*', value: platform}}\n{}",
        text.replacen(
            "- name: sim-01\n",
            "- name: sim-01\n  namespace_fields:\n    team:\n    - {namespace: kube-system, value: sre}\n",
            1
        )
    );
    assert!(text.contains("value: sre"), "{text}");
    std::fs::write(&registry, text).unwrap();
    let runs = refresh_everything(&mut env, &registry).await;
    let clusters: Vec<String> = fleet.clusters().into_iter().map(|c| c.name).collect();
    assert_every_job_finished(&runs, &clusters);
    let catalog = Catalog::builtin();
    for cluster in &clusters {
        for resource in &catalog.resources {
            let served = served_resources(&catalog).any(|r| std::ptr::eq(r, resource));
            for table in &resource.tables {
                let rows = table_rows(&env.pool, &table.name, cluster).await.len();
                if served || resource.source != kubecensus::model::catalog::ResourceSource::List {
                    assert!(rows > 0, "{cluster}: {} is empty", table.name);
                } else {
                    assert_eq!(rows, 0, "{cluster}: {}", table.name);
                }
            }
        }
    }
    let team = |sql: &'static str| {
        let pool = env.pool.clone();
        async move { sqlx::query_as::<_, (String, String, Option<String>)>(sql).fetch_all(&pool).await.unwrap() }
    };
    for (cluster, namespace, team) in team("SELECT DISTINCT cluster_name, namespace, team FROM kubernetes_pods").await {
        // The generated team namespaces (`team-a-payments`) carry a `team` label (`payments`).
        let label = namespace.strip_prefix("team-").and_then(|rest| rest.split_once('-')).map(|(_, team)| team);
        let expected = match namespace.as_str() {
            _ if label.is_some() => label,
            "platform-monitoring" | "platform-ingress" => Some("platform"),
            "kube-system" if cluster == "sim-01" => Some("sre"),
            _ => None,
        };
        assert_eq!(team.as_deref(), expected, "{cluster}/{namespace}");
    }
    let namespaces =
        team("SELECT cluster_name, name, team FROM kubernetes_namespaces WHERE name = 'team-a-payments'").await;
    assert!(
        namespaces.iter().all(|row| row.2.as_deref() == Some("payments")) && namespaces.len() == 2,
        "{namespaces:?}"
    );

    // Secrets keep their other annotations, but never a value of the last applied configuration.
    const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
    let annotations: Vec<Value> =
        sqlx::query_scalar("SELECT annotations FROM kubernetes_secrets").fetch_all(&env.pool).await.unwrap();
    assert!(!annotations.is_empty());
    for annotations in &annotations {
        assert!(
            annotations.get(LAST_APPLIED).is_none_or(Value::is_null) && annotations["owner"] == "platform",
            "{annotations}"
        );
    }
    // The parsed quantities and readiness.
    let (cores, bytes): (f64, i64) =
        sqlx::query_as("SELECT cpu_request_cores, memory_request_bytes FROM kubernetes_deployments_containers LIMIT 1")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((cores, bytes), (0.25, 256 * 1024 * 1024));
    let not_ready: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM kubernetes_nodes WHERE ready IS DISTINCT FROM 1 OR capacity_cpu_cores < 1",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(not_ready, 0);
    let ready_pods: i64 =
        sqlx::query_scalar("SELECT count(*) FROM kubernetes_pods WHERE ready = 1").fetch_one(&env.pool).await.unwrap();
    assert!(ready_pods > 0);
    let info: Vec<(String, String)> =
        sqlx::query_as("SELECT cluster_name, git_version FROM kubernetes_info").fetch_all(&env.pool).await.unwrap();
    assert_eq!(info.len(), 2);
    let resources: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM kubernetes_api_resources WHERE \"group\" = 'apps' AND name = 'deployments'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(resources, 2);
}
