//! A private three-node NATS JetStream cluster on loopback, for the tests that kill and restart
//! its nodes: each node the real `nats-server` ([`programs::nats_server`], 2.11 or newer) with
//! its own client, cluster and monitoring ports and its own store folder, routes to the other
//! two, as nats-by-example's `jetstream/leader-failure` runs one. Only the processes started here
//! are signalled; all are killed and their folders removed on drop. [`job_outcomes`] reads what
//! became of a refresh's jobs through a node's loss, as the fault tests and `bench-scale
//! --nats-cluster` judge it.

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    process::{Child, Command},
    time::Duration,
};

use anyhow::Context;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    programs,
    servers::{free_port, run, wait_for_port},
};

/// One node: its name (`n1`..), ports, folder and process while it runs.
struct Node {
    name: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// Three nodes of one cluster (`kc`).
pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

/// The oldest nats-server whose JetStream clustering fixes the tests rely on (README, "Scaling
/// out": redeliveries after a consumer leader change, nats-server PR #6566, in 2.11).
const OLDEST: (u32, u32) = (2, 11);

impl NatsCluster {
    /// Starts three nodes and waits until JetStream has a meta leader.
    ///
    /// # Errors
    /// An older nats-server (the message says to run the tests through `deploy/test-deps.sh`),
    /// or a node that does not start.
    pub async fn start() -> anyhow::Result<Self> {
        check_version()?;
        let dir = std::env::temp_dir().join(format!("kubecensus-natscluster-{}", uuid::Uuid::new_v4().simple()));
        let ports: Vec<(u16, u16, u16)> =
            (0..3).map(|_| Ok((free_port()?, free_port()?, free_port()?))).collect::<anyhow::Result<_>>()?;
        let routes: Vec<String> = ports.iter().map(|(_, route, _)| format!("nats-route://127.0.0.1:{route}")).collect();
        let mut nodes = Vec::new();
        for (index, (port, route, monitor)) in ports.iter().enumerate() {
            let name = format!("n{}", index + 1);
            let node_dir = dir.join(&name);
            std::fs::create_dir_all(&node_dir)?;
            let config = format!(
                "server_name: {name}\nhost: 127.0.0.1\nport: {port}\nhttp: \"127.0.0.1:{monitor}\"\n\
                 jetstream {{\n  store_dir: {:?}\n}}\n\
                 cluster {{\n  name: kc\n  host: 127.0.0.1\n  port: {route}\n  routes: [{}]\n}}\n",
                node_dir.join("store"),
                routes.join(", ")
            );
            std::fs::write(node_dir.join("nats.conf"), config)?;
            nodes.push(Node { name, port: *port, dir: node_dir, child: None });
        }
        let mut cluster = Self { nodes, dir };
        for index in 0..3 {
            cluster.spawn(index).await?;
        }
        cluster.wait_for_jetstream().await?;
        Ok(cluster)
    }

    /// Every node's URL, comma-separated, as `NATS_URL` lists them.
    pub fn url(&self) -> String {
        self.nodes.iter().map(|node| format!("nats://127.0.0.1:{}", node.port)).collect::<Vec<_>>().join(",")
    }

    /// The names of the nodes (`n1`, `n2`, `n3`), as JetStream's cluster info names leaders.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.name.clone()).collect()
    }

    /// A JetStream client on the nodes that run.
    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        let addresses: Vec<async_nats::ServerAddr> = self
            .nodes
            .iter()
            .filter(|node| node.child.is_some())
            .map(|node| format!("nats://127.0.0.1:{}", node.port).parse())
            .collect::<Result<_, _>>()?;
        let client = async_nats::ConnectOptions::new().connect(addresses).await?;
        Ok(async_nats::jetstream::new(client))
    }

    /// The node leading `stream`'s Raft group, or with `consumer`, that consumer's.
    pub async fn leader(&self, stream: &str, consumer: Option<&str>) -> anyhow::Result<String> {
        let js = self.jetstream().await?;
        let mut stream = js.get_stream(stream).await?;
        let cluster = match consumer {
            Some(consumer) => stream.consumer_info(consumer).await?.cluster.clone(),
            None => stream.info().await?.cluster.clone(),
        };
        cluster.and_then(|cluster| cluster.leader).context("no leader")
    }

    /// Waits up to `timeout` until `stream` and its `consumer` each have a leader and their
    /// other replicas are all current (caught up), on every node: the cluster healed.
    pub async fn wait_healed(&self, stream: &str, consumer: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            match self.healed(stream, consumer).await {
                Ok(None) => return Ok(()),
                Ok(Some(why)) => last = why,
                Err(err) => last = err.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::bail!("the cluster did not heal within {timeout:?}: {last}")
    }

    /// `None` when healed, else why not.
    async fn healed(&self, stream: &str, consumer: &str) -> anyhow::Result<Option<String>> {
        let js = self.jetstream().await?;
        let mut stream = js.get_stream(stream).await?;
        let groups = [
            ("stream", stream.info().await?.cluster.clone()),
            ("consumer", stream.consumer_info(consumer).await?.cluster.clone()),
        ];
        for (what, cluster) in groups {
            let Some(cluster) = cluster.filter(|cluster| cluster.leader.is_some()) else {
                return Ok(Some(format!("the {what} has no leader")));
            };
            let current = cluster.replicas.iter().filter(|peer| peer.current && !peer.offline).count();
            if current != self.nodes.len() - 1 {
                return Ok(Some(format!("the {what}'s replicas: {:?}", cluster.replicas)));
            }
        }
        Ok(None)
    }

    /// SIGKILL to node `name`: a crash, its store left as it was.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let node = self.node(name)?;
        let mut child = node.child.take().with_context(|| format!("node {name} is not running"))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts node `name` again (after [`Self::kill`] or [`Self::stop`]); with `wipe`, its store
    /// is deleted first (a replaced volume): it rejoins empty and catches up from the others.
    pub async fn start_node(&mut self, name: &str, wipe: bool) -> anyhow::Result<()> {
        let index = self.nodes.iter().position(|node| node.name == name).context("no such node")?;
        anyhow::ensure!(self.nodes[index].child.is_none(), "node {name} runs");
        if wipe {
            let store = self.nodes[index].dir.join("store");
            if store.exists() {
                std::fs::remove_dir_all(store)?;
            }
        }
        self.spawn(index).await
    }

    /// SIGTERM to node `name` (it flushes its store and leaves the cluster cleanly), waited for.
    pub fn stop(&mut self, name: &str) -> anyhow::Result<()> {
        let node = self.node(name)?;
        let mut child = node.child.take().with_context(|| format!("node {name} is not running"))?;
        run(Command::new("kill").args(["-TERM", &child.id().to_string()]))?;
        child.wait()?;
        Ok(())
    }

    /// Node `name`'s log.
    pub fn log(&self, name: &str) -> String {
        self.nodes
            .iter()
            .find(|node| node.name == name)
            .and_then(|node| std::fs::read_to_string(node.dir.join("nats.log")).ok())
            .unwrap_or_default()
    }

    fn node(&mut self, name: &str) -> anyhow::Result<&mut Node> {
        self.nodes.iter_mut().find(|node| node.name == name).with_context(|| format!("no node {name}"))
    }

    async fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[index];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(node.dir.join("nats.log"))?;
        let child = Command::new(programs::nats_server())
            .arg("-c")
            .arg(node.dir.join("nats.conf"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting nats-server")?;
        node.child = Some(child);
        let (port, name) = (node.port, node.name.clone());
        wait_for_port(port, "nats-server").await.with_context(|| self.log(&name))
    }

    /// Waits until JetStream answers (a meta leader is elected), for up to 60 s.
    async fn wait_for_jetstream(&self) -> anyhow::Result<()> {
        let js = self.jetstream().await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match js.query_account().await {
                Ok(_) => return Ok(()),
                Err(err) if tokio::time::Instant::now() > deadline => {
                    anyhow::bail!("the JetStream cluster has no meta leader: {err}\n{}", self.log("n1"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::env::var_os("KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What became of a refresh's jobs (one per (cluster, table)), from `runs`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobOutcomes {
    pub jobs: usize,
    /// Jobs by the status of their last run (by finish; a run still going counts as last):
    /// `succeeded`, `superseded` (a redelivery whose rows were already in) or `skipped` (a
    /// resource the cluster does not serve) when all is well; `no run` for a job never started.
    pub final_statuses: BTreeMap<String, i64>,
    /// Jobs none of whose runs ended `succeeded`, `superseded` or `skipped`: lost.
    pub lost: Vec<Uuid>,
    /// Jobs run to completion (`succeeded`) more than once, with how many times: applied twice.
    pub twice: Vec<(Uuid, i64)>,
}

impl JobOutcomes {
    /// Jobs whose last run ended otherwise than `succeeded`, `superseded` or `skipped`.
    pub fn not_ended_well(&self) -> i64 {
        self.final_statuses
            .iter()
            .filter(|(status, _)| !ENDED_WELL.contains(&status.as_str()))
            .map(|(_, count)| count)
            .sum()
    }
}

/// The statuses a job may end with and not be lost ([`JobOutcomes::lost`]).
const ENDED_WELL: [&str; 3] = ["succeeded", "superseded", "skipped"];

/// Reads the outcomes of `jobs` (their ids) from `runs` now.
///
/// # Errors
/// The database's.
pub async fn job_outcomes(pool: &PgPool, jobs: &[Uuid]) -> anyhow::Result<JobOutcomes> {
    let last: Vec<(Uuid, String, bool)> = sqlx::query_as(
        "SELECT DISTINCT ON (job_id) job_id, status, bool_or(status = ANY($2)) OVER (PARTITION BY job_id)
         FROM runs JOIN unnest($1::uuid[]) j(job_id) USING (job_id)
         ORDER BY job_id, finished_at DESC NULLS FIRST, started_at DESC",
    )
    .bind(jobs)
    .bind(&ENDED_WELL[..])
    .fetch_all(pool)
    .await?;
    let mut final_statuses = BTreeMap::new();
    for (_, status, _) in &last {
        *final_statuses.entry(status.clone()).or_default() += 1;
    }
    let never_run = jobs.len().saturating_sub(last.len());
    if never_run > 0 {
        final_statuses.insert("no run".to_owned(), never_run as i64);
    }
    let ended: HashSet<Uuid> = last.iter().filter(|(_, _, ended_well)| *ended_well).map(|(job, _, _)| *job).collect();
    let twice = sqlx::query_as(
        "SELECT job_id, count(*) FROM runs JOIN unnest($1::uuid[]) j(job_id) USING (job_id)
         WHERE status = 'succeeded' GROUP BY job_id HAVING count(*) > 1 ORDER BY job_id",
    )
    .bind(jobs)
    .fetch_all(pool)
    .await?;
    Ok(JobOutcomes {
        jobs: jobs.len(),
        final_statuses,
        lost: jobs.iter().filter(|job| !ended.contains(job)).copied().collect(),
        twice,
    })
}

/// Fails unless [`programs::nats_server`] is [`OLDEST`] or newer.
fn check_version() -> anyhow::Result<()> {
    let program = programs::nats_server();
    let output = Command::new(&program).arg("--version").output().with_context(|| format!("running {program:?}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.trim().rsplit('v').next().unwrap_or_default();
    let mut parts = version.split('.').map(|part| part.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    anyhow::ensure!(
        found >= OLDEST,
        "{program:?} is nats-server {version}, older than {}.{}: run the tests through deploy/test.sh (make test), or \
         set NATS_SERVER to the nats-server deploy/test-deps.sh installs",
        OLDEST.0,
        OLDEST.1
    );
    Ok(())
}
