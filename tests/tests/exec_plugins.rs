//! Exec credential plugins that hang (issue 20, item 4), on the real services: a registry entry's
//! `exec` and a kubeconfig user's `exec` (which kube would run itself, blocking) whose plugins
//! never finish. Their jobs fail within `--exec-timeout` with the plugin's name and stderr while
//! another cluster's jobs on the same worker succeed, and no plugin process is left running; a
//! job cancelled by `--job-timeout` while its plugin runs kills the plugin too.

use std::{path::Path, time::Duration};

use kubecensus_tests::{
    fleet::{Fleet, FleetSpec},
    harness::TestEnv,
};

/// A plugin that adds its pid and its child's to the file named by its first argument, says on
/// stderr what it waits for, and waits forever.
const HANGING_PLUGIN: &str = "#!/bin/sh\necho $$ >> \"$1\"\necho 'waiting for the browser login' >&2\n\
                              sleep 100000 &\necho $! >> \"$1\"\nwait\n";

/// The pids every run of a hanging plugin noted.
fn noted_pids(file: &Path) -> Vec<u32> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines().filter_map(|line| line.trim().parse().ok()).collect()
}

/// Whether a process runs: it exists and is not a zombie (exited, waiting to be reaped).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// Kills what the plugins noted when the test ends, passed or failed (on main they hang forever).
struct Leftovers(Vec<std::path::PathBuf>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for pid in self.0.iter().flat_map(|file| noted_pids(file)) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Waits for `query`, or fails the test with the worker's log: the test's own deadline, so a
/// worker stalled by a plugin fails it instead of hanging the suite.
async fn wait(env: &TestEnv, what: &str, query: &str) {
    if let Err(err) = env.wait_until(what, query, Duration::from_secs(120)).await {
        panic!("{err}\nworker log:\n{}", env.log("worker"));
    }
}

fn run_error(cluster: &str) -> String {
    format!("SELECT error FROM runs WHERE cluster_name = '{cluster}' AND status = 'failed'")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_exec_plugin_fails_its_job_within_the_exec_timeout_and_is_killed() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 3, pods: 5, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let clusters = fleet.clusters();
    let plugin = env.dir.join("hang.sh");
    std::fs::write(&plugin, HANGING_PLUGIN).unwrap();
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (entry_pids, kubeconfig_pids) = (env.dir.join("entry.pids"), env.dir.join("kubeconfig.pids"));
    let _leftovers = Leftovers(vec![entry_pids.clone(), kubeconfig_pids.clone()]);
    // sim-02 through a kubeconfig whose user runs the plugin (kube would run it itself).
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: sim-02\n\
         clusters: [{{name: sim-02, cluster: {{server: '{}', certificate-authority: sim-02.ca.crt}}}}]\n\
         users: [{{name: sim-02, user: {{exec: {{apiVersion: client.authentication.k8s.io/v1, command: ./hang.sh, \
         args: ['{}'], interactiveMode: Never}}}}}}]\n\
         contexts: [{{name: sim-02, context: {{cluster: sim-02, user: sim-02}}}}]\n",
        clusters[1].url,
        kubeconfig_pids.display()
    );
    std::fs::write(env.dir.join("hang.kubeconfig"), kubeconfig).unwrap();
    let registry = env.dir.join("exec.yaml");
    std::fs::write(
        &registry,
        format!(
            "clusters:\n\
             - name: sim-01\n  server: {}\n  ca_file: sim-01.ca.crt\n  exec: {{command: ./hang.sh, args: ['{}']}}\n\
             - name: sim-02\n  kubeconfig: hang.kubeconfig\n\
             - name: sim-03\n  server: {}\n  ca_file: sim-03.ca.crt\n  token_file: sim-03.token\n",
            clusters[0].url,
            entry_pids.display(),
            clusters[2].url
        ),
    )
    .unwrap();
    env.spawn_worker("worker", &registry, &["--exec-timeout", "2s", "--max-attempts", "1", "--concurrency", "4"])
        .unwrap();
    env.scheduler(&registry, &["refresh", "--table", "kubernetes_namespaces", "--table", "kubernetes_pods"])
        .await
        .unwrap();

    // sim-03's jobs succeed on the worker whose other slots wait for the plugins.
    wait(
        &env,
        "sim-03's jobs to succeed",
        "SELECT count(*) = 2 FROM runs WHERE cluster_name = 'sim-03' AND status = 'succeeded'",
    )
    .await;
    for cluster in ["sim-01", "sim-02"] {
        wait(&env, "the plugin's jobs to fail", &format!("SELECT count(*) = 2 FROM ({}) failed", run_error(cluster)))
            .await;
        let error: String =
            sqlx::query_scalar(&format!("{} LIMIT 1", run_error(cluster))).fetch_one(&env.pool).await.unwrap();
        assert!(
            error.contains("hang.sh")
                && error.contains("2s (--exec-timeout)")
                && error.contains("waiting for the browser"),
            "{cluster}: the error names the plugin, the timeout and its stderr: {error}"
        );
    }
    for file in [&entry_pids, &kubeconfig_pids] {
        let pids = noted_pids(file);
        assert!(pids.len() >= 2, "the plugin ran: {pids:?}");
        assert!(!pids.iter().any(|pid| running(*pid)), "no plugin process is left: {pids:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_by_its_timeout_kills_its_running_plugin() {
    let mut env = TestEnv::new().await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 5, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let plugin = env.dir.join("hang.sh");
    std::fs::write(&plugin, HANGING_PLUGIN).unwrap();
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pids_file = env.dir.join("entry.pids");
    let _leftovers = Leftovers(vec![pids_file.clone()]);
    let registry = env.dir.join("exec.yaml");
    std::fs::write(
        &registry,
        format!(
            "clusters:\n- name: sim-01\n  server: {}\n  ca_file: sim-01.ca.crt\n  exec: {{command: ./hang.sh, args: ['{}']}}\n",
            fleet.clusters()[0].url,
            pids_file.display()
        ),
    )
    .unwrap();
    // The job's own timeout comes first: the job is cancelled while its plugin runs.
    let args = ["--exec-timeout", "1h", "--job-timeout", "3s", "--max-attempts", "1"];
    env.spawn_worker("worker", &registry, &args).unwrap();
    env.scheduler(&registry, &["refresh", "--table", "kubernetes_namespaces"]).await.unwrap();
    wait(&env, "the job to time out", "SELECT count(*) = 1 FROM runs WHERE status = 'failed'").await;
    let pids = noted_pids(&pids_file);
    assert!(!pids.is_empty(), "the plugin ran");
    // The kill is sent as the job's future is dropped, before its run is recorded.
    assert!(!pids.iter().any(|pid| running(*pid)), "the cancelled job's plugin is killed: {pids:?}");
}
