//! What a newcomer reads first (`make demo`), on the real services: `refresh --wait --summary`
//! sums up each cluster's jobs in one line and gives each reason a job did not succeed once,
//! however many jobs share it; `scheduler prune` removes at once the clusters missing from the
//! registry, so a demo on other clusters shows only those.

use std::collections::BTreeMap;

use kubecensus_tests::{
    fleet::{Faults, Fleet, FleetSpec},
    harness::TestEnv,
};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_counts_each_clusters_jobs_and_names_a_shared_reason_once() {
    let mut env = TestEnv::new().await.unwrap();
    // sim-01 and sim-02 run Flux, Argo CD and cert-manager, sim-03 none: its custom kinds are
    // skipped. sim-02 refuses the token: every one of its jobs fails for the same reason.
    let fleet = Fleet::start(FleetSpec { clusters: 3, pods: 20, ..FleetSpec::default() }, &env.dir).await.unwrap();
    fleet.set_faults("sim-02", Faults { reject_token: true, ..Faults::default() });
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &registry, &["--max-attempts", "1"]).unwrap();
    let args = ["--output", "json", "refresh", "--wait", "--summary"];
    let tables =
        ["--table", "kubernetes_pods", "--table", "kubernetes_nodes", "--table", "kubernetes_custom_resources"];
    let out: Value =
        serde_json::from_str(&env.scheduler(&registry, &[&args[..], &tables].concat()).await.unwrap()).unwrap();
    assert!(out.get("runs").is_none(), "the summary replaces the list of runs: {out}");
    let mut jobs: BTreeMap<&str, u64> = BTreeMap::new();
    for published in out["published"].as_array().unwrap() {
        *jobs.entry(published["cluster"].as_str().unwrap()).or_default() += 1;
    }
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT cluster_name, sum(row_count)::bigint FROM snapshots GROUP BY 1 ORDER BY 1")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    let rows: BTreeMap<String, i64> = rows.into_iter().collect();
    let clusters = out["summary"]["clusters"].as_array().unwrap();
    let count = |c: &Value, key: &str| c[key].as_u64().unwrap();
    let by_name: BTreeMap<&str, &Value> = clusters.iter().map(|c| (c["cluster"].as_str().unwrap(), c)).collect();
    assert_eq!(by_name.keys().copied().collect::<Vec<_>>(), ["sim-01", "sim-02", "sim-03"]);
    for (name, c) in &by_name {
        assert_eq!(count(c, "succeeded") + count(c, "skipped") + count(c, "failed"), jobs[name], "{name}: {c}");
        assert_eq!(c["rows"].as_i64().unwrap(), rows.get(*name).copied().unwrap_or(0), "{name}: {c}");
        assert!(c["slowest"]["millis"].as_f64().unwrap() > 0.0, "{name}: {c}");
    }
    assert_eq!((count(by_name["sim-01"], "skipped"), count(by_name["sim-01"], "failed")), (0, 0));
    assert_eq!(count(by_name["sim-02"], "failed"), jobs["sim-02"]);
    let skipped_on_sim_03 = count(by_name["sim-03"], "skipped");
    assert!(skipped_on_sim_03 >= 9, "every custom kind of the catalog is skipped on sim-03: {}", by_name["sim-03"]);

    // One line per reason: sim-02's failures share theirs, sim-03's skipped kinds theirs.
    let reasons = out["summary"]["not_succeeded"].as_array().unwrap();
    let lines: Vec<(&str, u64, &Value)> =
        reasons.iter().map(|r| (r["status"].as_str().unwrap(), r["jobs"].as_u64().unwrap(), &r["clusters"])).collect();
    assert_eq!(
        lines,
        [
            ("failed", jobs["sim-02"], &serde_json::json!(["sim-02"])),
            ("skipped", skipped_on_sim_03, &serde_json::json!(["sim-03"]))
        ],
        "{reasons:#?}"
    );
    assert!(reasons[0]["reason"].as_str().unwrap().contains("401"), "{reasons:#?}");
    assert!(reasons[1]["reason"].as_str().unwrap().starts_with("cluster does not serve this resource"), "{reasons:#?}");

    // The same as aligned tables: a line per cluster and per reason, not per job.
    let text = env.scheduler(&registry, &["report", "--summary"]).await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].split_whitespace().eq(["cluster", "succeeded", "skipped", "failed", "rows", "slowest", "job"]));
    assert!(lines[3].trim_start().starts_with("sim-03"), "{text}");
    assert_eq!(lines.len(), 4 + 3 + 2, "3 clusters and 2 reasons under their headers:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_at_once_the_clusters_missing_from_the_registry() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 10, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let both = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &both, &[]).unwrap();
    env.scheduler(&both, &["refresh", "--wait", "--table", "kubernetes_pods"]).await.unwrap();
    let pods = |cluster: &'static str| {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM kubernetes_pods WHERE cluster_name = $1")
            .bind(cluster)
            .fetch_one(&env.pool)
    };
    assert_eq!((pods("sim-01").await.unwrap(), pods("sim-02").await.unwrap()), (10, 10));
    let unchanged = env.scheduler(&both, &["prune"]).await.unwrap();
    assert!(unchanged.contains("no cluster to prune"), "{unchanged}");

    // A registry of sim-01 only, as a demo on other clusters writes one.
    let sim_01 = &fleet.clusters()[0];
    let only_sim_01 = env.dir.join("sim-01.yaml");
    let yaml = format!(
        "clusters:\n- name: sim-01\n  server: {}\n  ca_file: sim-01.ca.crt\n  token_file: sim-01.token\n",
        sim_01.url
    );
    std::fs::write(&only_sim_01, yaml).unwrap();
    let pruned: Value =
        serde_json::from_str(&env.scheduler(&only_sim_01, &["--output", "json", "prune"]).await.unwrap()).unwrap();
    assert_eq!(pruned.as_array().unwrap().len(), 1, "{pruned}");
    assert_eq!(pruned[0]["cluster"], "sim-02");
    assert!(pruned[0]["rows_deleted"].as_u64().unwrap() >= 10, "{pruned}");
    assert_eq!((pods("sim-01").await.unwrap(), pods("sim-02").await.unwrap()), (10, 0));
    let removed: bool = sqlx::query_scalar("SELECT removed_at IS NOT NULL FROM clusters WHERE name = 'sim-02'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(removed, "sim-02 is marked removed");
    let report: Value =
        serde_json::from_str(&env.scheduler(&only_sim_01, &["--output", "json", "report"]).await.unwrap()).unwrap();
    let reported: Vec<&str> =
        report["runs"].as_array().unwrap().iter().map(|r| r["cluster"].as_str().unwrap()).collect();
    assert_eq!(reported, ["sim-01"], "a pruned cluster's runs are no longer reported");
}
