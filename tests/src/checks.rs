//! Assertions that compare what PostgreSQL holds with what the simulated fleet serves.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::Value;
use sqlx::PgPool;

use crate::fleet::Fleet;

/// (namespace, name, uid) of every pod the simulator holds for a cluster.
pub fn simulator_pods(fleet: &Fleet, cluster: &str) -> BTreeSet<(String, String, String)> {
    simulator_objects(fleet, cluster, "pods", None)
}

/// (namespace, name, uid) of the objects of `plural` the simulator holds for a cluster: all, or
/// those in `namespaces`.
pub fn simulator_objects(
    fleet: &Fleet,
    cluster: &str,
    plural: &str,
    namespaces: Option<&[&str]>,
) -> BTreeSet<(String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    fleet
        .objects(cluster, plural)
        .iter()
        .map(|object| {
            let meta = &object["metadata"];
            (text(&meta["namespace"]), text(&meta["name"]), text(&meta["uid"]))
        })
        .filter(|(namespace, _, _)| namespaces.is_none_or(|only| only.contains(&namespace.as_str())))
        .collect()
}

pub fn simulator_containers(fleet: &Fleet, cluster: &str) -> usize {
    let count = |pod: &Value, list: &str| pod["spec"][list].as_array().map_or(0, Vec::len);
    fleet
        .objects(cluster, "pods")
        .iter()
        .map(|pod| count(pod, "containers") + count(pod, "initContainers") + count(pod, "ephemeralContainers"))
        .sum()
}

pub async fn postgres_pods(pool: &PgPool, cluster: &str) -> BTreeSet<(String, String, String)> {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT namespace, name, uid FROM kubernetes_pods WHERE cluster_name = $1")
            .bind(cluster)
            .fetch_all(pool)
            .await
            .unwrap();
    let set: BTreeSet<_> = rows.iter().cloned().collect();
    assert_eq!(set.len(), rows.len(), "{cluster}: a pod row landed twice");
    set
}

pub async fn count(pool: &PgPool, table: &str, cluster: &str) -> usize {
    let sql = format!("SELECT count(*) FROM {table} WHERE cluster_name = $1");
    let n: i64 = sqlx::query_scalar(&sql).bind(cluster).fetch_one(pool).await.unwrap();
    n as usize
}

/// What the summaries hold of `cluster`: `fleet_counts`' pods, namespaces with pods, and
/// `fleet_images`' pod containers.
async fn summarized(pool: &PgPool, cluster: &str) -> (usize, usize, usize) {
    let (pods, namespaces, containers): (i64, i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(row_count), 0)::bigint, coalesce(sum(namespace_count), 0)::bigint,
                (SELECT coalesce(sum(container_count), 0)::bigint FROM fleet_images
                 WHERE cluster_name = $1 AND table_name = 'kubernetes_pod_containers')
         FROM fleet_counts WHERE cluster_name = $1 AND table_name = 'kubernetes_pods'",
    )
    .bind(cluster)
    .fetch_one(pool)
    .await
    .unwrap();
    (pods as usize, namespaces as usize, containers as usize)
}

/// PostgreSQL holds exactly what the simulator serves, for every cluster and table, and the
/// summaries count it.
pub async fn assert_postgres_equals_simulator(pool: &PgPool, fleet: &Fleet) {
    for cluster in fleet.clusters() {
        let name = &cluster.name;
        assert_same_pods(pool, fleet, name).await;
        let containers = simulator_containers(fleet, name);
        assert_eq!(count(pool, "kubernetes_pod_containers", name).await, containers, "{name}");
        let pods = simulator_pods(fleet, name);
        let namespaces = pods.iter().map(|pod| &pod.0).collect::<BTreeSet<_>>().len();
        assert_eq!(summarized(pool, name).await, (pods.len(), namespaces, containers), "{name}: the summaries");
        assert_eq!(count(pool, "kubernetes_nodes", name).await, fleet.count(name, "nodes"), "{name}");
        assert_eq!(count(pool, "kubernetes_namespaces", name).await, fleet.count(name, "namespaces"), "{name}");
        let uid: String =
            sqlx::query_scalar("SELECT DISTINCT cluster_uid FROM kubernetes_pods WHERE cluster_name = $1")
                .bind(name)
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(uid, cluster.uid, "{name}: cluster_uid is the kube-system namespace's uid");
    }
}

/// Pod counts per cluster as one reader statement sees them.
pub async fn pod_counts(pool: &PgPool) -> BTreeMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>("SELECT cluster_name, count(*) FROM kubernetes_pods GROUP BY 1")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// The cluster's pods in PostgreSQL are the simulator's; on failure, says which differ and why.
pub async fn assert_same_pods(pool: &PgPool, fleet: &Fleet, cluster: &str) {
    let (postgres, simulator) = (postgres_pods(pool, cluster).await, simulator_pods(fleet, cluster));
    if postgres != simulator {
        let runs: Vec<(String, String, String, String, Option<String>)> =
            sqlx::query_as("SELECT cluster_name, table_name, trigger, status, error FROM runs ORDER BY started_at")
                .fetch_all(pool)
                .await
                .unwrap();
        panic!(
            "{cluster}: {} pods only in PostgreSQL, {} only in the simulator; runs: {runs:#?}",
            postgres.difference(&simulator).count(),
            simulator.difference(&postgres).count()
        );
    }
}

/// Every cluster's pods in PostgreSQL are the simulator's.
pub async fn assert_every_clusters_pods_equal(pool: &PgPool, fleet: &Fleet) {
    for cluster in fleet.clusters() {
        assert_same_pods(pool, fleet, &cluster.name).await;
    }
}

/// Pod counts per cluster as the simulator holds them now.
pub fn simulator_pod_counts(fleet: &Fleet) -> BTreeMap<String, i64> {
    fleet.clusters().iter().map(|c| (c.name.clone(), fleet.count(&c.name, "pods") as i64)).collect()
}

/// Polls per-cluster pod counts until stopped; returns every observation.
pub struct Readers {
    reading: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<BTreeMap<String, i64>>>,
}

impl Readers {
    pub fn start(pool: &PgPool) -> Self {
        let (pool, reading) = (pool.clone(), Arc::new(AtomicBool::new(true)));
        let task = tokio::spawn({
            let reading = reading.clone();
            async move {
                let mut seen = Vec::new();
                while reading.load(Ordering::Relaxed) {
                    seen.push(pod_counts(&pool).await);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen
            }
        });
        Self { reading, task }
    }

    /// Stops and checks that every read saw, per cluster, the old count or the new one;
    /// returns how many reads there were.
    pub async fn assert_old_or_new(self, old: &BTreeMap<String, i64>, new: &BTreeMap<String, i64>) -> usize {
        self.reading.store(false, Ordering::Relaxed);
        let seen = self.task.await.unwrap();
        assert!(!seen.is_empty());
        for counts in &seen {
            assert_eq!(counts.len(), old.len(), "a reader saw a cluster with no pods: {counts:?}");
            for (cluster, &n) in counts {
                assert!(
                    n == old[cluster] || n == new[cluster],
                    "{cluster}: read {n}, neither {} nor {}",
                    old[cluster],
                    new[cluster]
                );
            }
        }
        seen.len()
    }
}
