//! What every end-to-end test needs: its own database, its own stream and subject prefix on the
//! real NATS server, its own folder, and the real `scheduler` and `worker` binaries as child
//! processes. Isolated, so tests run in parallel; cleaned up on drop.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use anyhow::Context;
use sqlx::{Connection, PgConnection, PgPool, postgres::PgPoolOptions};
use uuid::Uuid;

/// Scheduler arguments that select the three resources of the first tables (pods, nodes,
/// namespaces), for tests that need no more.
pub const BASIC_TABLES: [&str; 6] =
    ["--table", "kubernetes_pods", "--table", "kubernetes_nodes", "--table", "kubernetes_namespaces"];

/// The shared server's URL (`DATABASE_URL`); each test makes its own database next to it.
pub fn admin_database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://kubecensus@127.0.0.1:5432/kubecensus".into())
}

/// The shared NATS server's URL (`NATS_URL`).
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Connects as the binaries do ([`kubecensus::queue::connect`]), with a deadline: a refused
/// connection must fail, not retry for ever.
pub async fn connect_nats(
    url: &str,
    credentials: &kubecensus::ops::credentials::NatsCredentials,
) -> Result<async_nats::Client, String> {
    tokio::time::timeout(Duration::from_secs(20), kubecensus::queue::connect(url, credentials))
        .await
        .map_err(|_| "no answer within 20 s".to_owned())?
        .map_err(|err| err.to_string())
}

/// The path of one of the workspace's binaries (`make test` builds them first).
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --bins` first (make test does)", path.display());
    path
}

/// Where one test's or one benchmark's processes find the real services, and the names they
/// use there: a database, a JetStream stream and a subject prefix of their own. [`TestEnv`] and
/// the benchmark's `BenchEnv` are both built on it.
#[derive(Debug, Clone)]
pub struct Services {
    /// A URL of the server naming an existing database; the own database is made next to it.
    pub admin_url: String,
    pub nats_url: String,
    pub database: String,
    pub database_url: String,
    pub stream: String,
    pub subject_prefix: String,
    /// Copies of the stream and of the workers' consumer the processes ask for
    /// (`KUBECENSUS_STREAM_REPLICAS`): 1, [`Services::create`]'s; 3 on a three-node cluster.
    pub stream_replicas: usize,
    /// The `RUST_LOG` filter of the processes started.
    pub log_filter: String,
}

impl Services {
    /// Makes `database` afresh (dropping a leftover of the same name) and deletes a leftover
    /// `stream`; returns the services and a pool on the database.
    pub async fn create(
        admin_url: &str,
        nats_url: &str,
        database: &str,
        stream: &str,
        subject_prefix: &str,
        log_filter: &str,
    ) -> anyhow::Result<(Self, PgPool)> {
        anyhow::ensure!(
            kubecensus::model::catalog::is_identifier(database),
            "`{database}` is not a lower-case SQL identifier"
        );
        let mut admin = PgConnection::connect(admin_url).await.context("connecting to PostgreSQL")?;
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).execute(&mut admin).await?;
        sqlx::raw_sql(&format!("CREATE DATABASE {database}")).execute(&mut admin).await?;
        let database_url = with_database(admin_url, database);
        let pool = PgPoolOptions::new().max_connections(16).connect(&database_url).await?;
        let services = Self {
            admin_url: admin_url.to_owned(),
            nats_url: nats_url.to_owned(),
            database: database.to_owned(),
            database_url,
            stream: stream.to_owned(),
            subject_prefix: subject_prefix.to_owned(),
            stream_replicas: 1,
            log_filter: log_filter.to_owned(),
        };
        services.delete_stream().await;
        Ok((services, pool))
    }

    /// Sets the environment both binaries read; they reach PostgreSQL at `database_url`.
    pub fn configure(&self, command: &mut Command, database_url: &str, registry: &Path) {
        command
            .env("DATABASE_URL", database_url)
            .env("NATS_URL", &self.nats_url)
            .env("KUBECENSUS_STREAM", &self.stream)
            .env("KUBECENSUS_SUBJECT_PREFIX", &self.subject_prefix)
            .env("KUBECENSUS_STREAM_REPLICAS", self.stream_replicas.to_string())
            .env("KUBECENSUS_REGISTRY", registry)
            .env("RUST_LOG", &self.log_filter);
    }

    /// Deletes the stream and drops the database; failures are only logged.
    pub async fn remove(&self) {
        self.delete_stream().await;
        if let Ok(mut admin) = PgConnection::connect(&self.admin_url).await {
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database);
            if let Err(err) = sqlx::raw_sql(&drop).execute(&mut admin).await {
                tracing::warn!(%err, database = self.database, "cannot drop the database");
            }
        }
    }

    async fn delete_stream(&self) {
        if let Ok(client) = async_nats::connect(&self.nats_url).await {
            let _ = async_nats::jetstream::new(client).delete_stream(&self.stream).await;
        }
    }

    /// Runs the scheduler binary at `path` with `args` to completion, whatever its exit status;
    /// returns its output.
    pub async fn scheduler_output(&self, path: &Path, registry: &Path, args: &[&str]) -> anyhow::Result<Output> {
        let mut command = Command::new(path);
        self.configure(&mut command, &self.database_url, registry);
        command.env("RUST_LOG", "warn").args(args).stdin(Stdio::null());
        // A test that gives up on the scheduler (a timeout around this future) stops it.
        Ok(tokio::process::Command::from(command).kill_on_drop(true).output().await?)
    }

    /// Runs the scheduler binary at `path` with `args` to completion; returns its stdout, or
    /// fails with its output. Its logs are warnings only, as a person running it sees them.
    pub async fn scheduler(&self, path: &Path, registry: &Path, args: &[&str]) -> anyhow::Result<String> {
        let output = self.scheduler_output(path, registry, args).await?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        anyhow::ensure!(
            output.status.success(),
            "scheduler {args:?} failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(stdout)
    }
}

/// One test's private corner of the real services.
pub struct TestEnv {
    pub services: Services,
    pub pool: PgPool,
    pub dir: PathBuf,
    children: Vec<Child>,
}

impl TestEnv {
    /// An environment on the machine's shared PostgreSQL and NATS servers.
    pub async fn new() -> anyhow::Result<Self> {
        Self::on(admin_database_url(), nats_url()).await
    }

    /// An environment on the given servers (`admin_url` names an existing database there).
    pub async fn on(admin_url: String, nats_url: String) -> anyhow::Result<Self> {
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let log_filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        let (services, pool) = Services::create(
            &admin_url,
            &nats_url,
            &format!("kc_test_{id}"),
            &format!("KC_TEST_{id}"),
            &format!("kctest_{id}"),
            &log_filter,
        )
        .await?;
        let dir = std::env::temp_dir().join(format!("kubecensus-test-{id}"));
        std::fs::create_dir_all(&dir)?;
        Ok(Self { services, pool, dir, children: Vec::new() })
    }

    /// The environment both binaries read.
    fn configure(&self, command: &mut Command, registry: &Path) {
        self.services.configure(command, &self.services.database_url, registry);
    }

    /// Starts a worker process with extra arguments; its log goes to `<dir>/<name>.log`.
    pub fn spawn_worker(&mut self, name: &str, registry: &Path, extra: &[&str]) -> anyhow::Result<u32> {
        self.spawn_worker_with(name, registry, extra, &[])
    }

    /// Starts a worker logging at `level` (a `RUST_LOG` filter).
    pub fn spawn_worker_with_log_level(&mut self, name: &str, registry: &Path, level: &str) -> anyhow::Result<u32> {
        self.spawn_worker_with(name, registry, &[], &[("RUST_LOG", level)])
    }

    /// Starts a worker with extra arguments and extra environment variables (`HTTPS_PROXY`, …).
    pub fn spawn_worker_with(
        &mut self,
        name: &str,
        registry: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<u32> {
        let mut command = Command::new(binary("worker"));
        self.configure(&mut command, registry);
        command.envs(env.iter().copied());
        command.args(["--worker-id", name]).args(extra);
        self.spawn(name, command)
    }

    /// Starts `command` as a child of this environment (stopped on drop); its output goes to
    /// `<dir>/<name>.log`.
    pub fn spawn(&mut self, name: &str, mut command: Command) -> anyhow::Result<u32> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let child = command.stdout(log.try_clone()?).stderr(log).spawn()?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Starts `scheduler run` with extra arguments in the background.
    pub fn spawn_scheduler(&mut self, registry: &Path, extra: &[&str]) -> anyhow::Result<u32> {
        self.spawn_scheduler_named("scheduler", registry, extra)
    }

    /// Starts `scheduler run` logging to `<dir>/<name>.log`: replicas each with their own log.
    pub fn spawn_scheduler_named(&mut self, name: &str, registry: &Path, extra: &[&str]) -> anyhow::Result<u32> {
        let args: Vec<&str> = std::iter::once("run").chain(extra.iter().copied()).collect();
        self.spawn_scheduler_command(name, registry, &args)
    }

    /// Starts the scheduler binary with `args` (a command and its arguments: `explore ...`),
    /// logging to `<dir>/<name>.log`.
    pub fn spawn_scheduler_command(&mut self, name: &str, registry: &Path, args: &[&str]) -> anyhow::Result<u32> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let mut command = Command::new(binary("scheduler"));
        self.configure(&mut command, registry);
        command.args(args).stdout(log.try_clone()?).stderr(log);
        let child = command.spawn()?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Stops a child started by this environment (SIGKILL), at once.
    pub fn kill(&mut self, pid: u32) {
        if let Some(at) = self.children.iter().position(|c| c.id() == pid) {
            let mut child = self.children.remove(at);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs the scheduler to completion with these arguments, whatever its exit status.
    pub async fn scheduler_output(&self, registry: &Path, args: &[&str]) -> anyhow::Result<Output> {
        self.services.scheduler_output(&binary("scheduler"), registry, args).await
    }

    /// Runs the scheduler to completion with these arguments; returns its stdout.
    pub async fn scheduler(&self, registry: &Path, args: &[&str]) -> anyhow::Result<String> {
        self.services.scheduler(&binary("scheduler"), registry, args).await
    }

    /// Publishes a raw message on `<prefix>.jobs.<suffix>` with a plain NATS client, as any user
    /// could, retrying until the stream exists (a worker or scheduler creates it).
    pub async fn publish_raw(&self, suffix: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        let js = async_nats::jetstream::new(async_nats::connect(&self.services.nats_url).await?);
        let subject = format!("{}.jobs.{suffix}", self.services.subject_prefix);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match js.publish(subject.clone(), payload.clone().into()).await?.await {
                Ok(_) => return Ok(()),
                Err(err) if tokio::time::Instant::now() > deadline => {
                    anyhow::bail!("cannot publish on {subject}: {err}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Sends a signal to a child started by this environment and waits for it to exit; returns
    /// its exit code.
    pub async fn signal_and_wait(&mut self, pid: u32, signal: &str, timeout: Duration) -> anyhow::Result<Option<i32>> {
        self.signal(pid, signal)?;
        self.wait_for_exit(pid, timeout).await
    }

    /// Sends a signal (`TERM`, `KILL`, ...) to a child started by this environment.
    pub fn signal(&self, pid: u32, signal: &str) -> anyhow::Result<()> {
        anyhow::ensure!(self.children.iter().any(|c| c.id() == pid), "no such child");
        let status = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// Waits for a child started by this environment to exit; returns its exit code.
    pub async fn wait_for_exit(&mut self, pid: u32, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let at = self.children.iter().position(|c| c.id() == pid).context("no such child")?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.children[at].try_wait()? {
                // Already reaped by try_wait; wait() returns the same status at once.
                self.children.remove(at).wait()?;
                return Ok(status.code());
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "process {pid} did not exit within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the log of child `name` holds `text` (a worker's `worker started`: its
    /// stream and consumer exist), or fails after 180 s with the log.
    pub async fn wait_for_log(&self, name: &str, text: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        while !self.log(name).contains(text) {
            assert!(tokio::time::Instant::now() < deadline, "{name} did not log `{text}`: {}", self.log(name));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The log a child wrote.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits until `query` (a SQL scalar yielding bool) is true, or fails after `timeout` with
    /// the workers' logs.
    pub async fn wait_until(&self, what: &str, query: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let done: Option<bool> = sqlx::query_scalar(query).fetch_one(&self.pool).await.ok().flatten();
            if done == Some(true) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let runs: Vec<(String, String, String, Option<String>)> =
                    sqlx::query_as("SELECT cluster_name, table_name, status, error FROM runs ORDER BY started_at")
                        .fetch_all(&self.pool)
                        .await
                        .unwrap_or_default();
                anyhow::bail!("timed out waiting for {what}; runs: {runs:#?}\n{}", self.log_tails(20));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the job stream holds no message (a work-queue stream drops a job when it is
    /// acknowledged) and no run is `running`: every job published so far has ended.
    pub async fn wait_for_no_jobs(&self, timeout: Duration) -> anyhow::Result<()> {
        let jetstream = async_nats::jetstream::new(async_nats::connect(&self.services.nats_url).await?);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let queued = jetstream.get_stream(&self.services.stream).await?.info().await?.state.messages;
            let running: i64 =
                sqlx::query_scalar("SELECT count(*) FROM runs WHERE status = 'running'").fetch_one(&self.pool).await?;
            if queued == 0 && running == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("{queued} jobs queued and {running} running after {timeout:?}\n{}", self.log_tails(20));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The last `lines` lines of each process log in the test's folder, for a failure message.
    fn log_tails(&self, lines: usize) -> String {
        let mut logs: Vec<_> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
            .collect();
        logs.sort();
        logs.iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(lines).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} (last {lines} lines)\n{}", path.display(), tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Best effort: the database and the stream are named after the test, so leftovers never
        // disturb another test.
        let services = self.services.clone();
        let cleanup = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                runtime.block_on(services.remove());
            }
        });
        let _ = cleanup.join();
        if std::env::var_os("KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The same URL with another database name.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(server, _)| server);
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}
