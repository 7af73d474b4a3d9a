//! The benchmark's private corner of the real services, like the tests' `TestEnv` but with a
//! fixed database name (`kubecensus_bench`, recreated each run), its own stream and subject
//! prefix, and the optimized binaries: the `worker` and `scheduler` next to the running `bench`
//! executable (`target/bench-release/`), or those in `KUBECENSUS_BIN_DIR`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use kubecensus::model::catalog::Catalog;
use sqlx::PgPool;

use crate::harness::Services;

/// Where the services are and what to call the benchmark's database and stream.
#[derive(Debug, Clone)]
pub struct EnvConfig {
    /// A URL of the server (any database); the benchmark's own database is made next to it.
    pub admin_url: String,
    pub nats_url: String,
    pub database: String,
    pub stream: String,
    pub subject_prefix: String,
    /// Copies of the stream and its consumer (`--stream-replicas`): 1, or 3 on a JetStream cluster.
    pub stream_replicas: usize,
    /// Folder for registries, CA and token files, worker logs, dumps and the report.
    pub dir: PathBuf,
    /// Folder of the `worker` and `scheduler` binaries.
    pub bin_dir: PathBuf,
    /// Keep the database (and the stream) at the end.
    pub keep: bool,
    /// Workers reach PostgreSQL through the Unix socket in this folder instead of TCP.
    pub worker_socket: Option<PathBuf>,
    /// Server options for the workers' sessions (`-c log_min_duration_statement=0`).
    pub worker_pg_options: Option<String>,
}

/// The folder of the binaries to run: `explicit` (a `--bin-dir` flag), else
/// `KUBECENSUS_BIN_DIR`, else the folder of this executable (cargo puts every binary of a profile
/// in the same folder).
pub fn bin_dir(explicit: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.clone());
    }
    if let Some(dir) = std::env::var_os("KUBECENSUS_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("locating the bench executable")?;
    Ok(exe.parent().context("the bench executable has no folder")?.to_path_buf())
}

/// A worker process and what it is called in `runs`.
pub struct WorkerProcess {
    pub name: String,
    pub pid: u32,
    child: Child,
}

pub struct BenchEnv {
    pub config: EnvConfig,
    /// The database, stream and subject prefix, as the tests have theirs.
    pub services: Services,
    pub database_url: String,
    /// What the worker and scheduler processes connect to.
    pub service_database_url: String,
    pub pool: PgPool,
    /// The catalog the worker and scheduler processes run on: the embedded one (no custom
    /// resources file).
    pub catalog: Catalog,
    workers: Vec<WorkerProcess>,
}

impl BenchEnv {
    /// Recreates the database, deletes a leftover stream, checks the binaries exist.
    pub async fn new(config: EnvConfig) -> anyhow::Result<Self> {
        for binary in ["worker", "scheduler"] {
            let path = config.bin_dir.join(binary);
            anyhow::ensure!(
                path.exists(),
                "{} is missing: build it with `cargo build --profile bench-release --workspace --bins` (make bench does), \
                 or point KUBECENSUS_BIN_DIR at a folder holding worker and scheduler",
                path.display()
            );
        }
        std::fs::create_dir_all(&config.dir).with_context(|| format!("creating {}", config.dir.display()))?;
        let log_filter = std::env::var("BENCH_WORKER_LOG").unwrap_or_else(|_| "info".into());
        let (mut services, pool) = Services::create(
            &config.admin_url,
            &config.nats_url,
            &config.database,
            &config.stream,
            &config.subject_prefix,
            &log_filter,
        )
        .await?;
        services.stream_replicas = config.stream_replicas;
        let database_url = services.database_url.clone();
        let mut service_database_url = match &config.worker_socket {
            Some(socket) => {
                let (path, _) = database_url.split_once('?').unwrap_or((&database_url, ""));
                format!("{path}?host={}", socket.display())
            }
            None => database_url.clone(),
        };
        if let Some(options) = &config.worker_pg_options {
            let separator = if service_database_url.contains('?') { '&' } else { '?' };
            let encoded: String = options
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                        char::from(b).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            service_database_url.push_str(&format!("{separator}options={encoded}"));
        }
        let catalog = Catalog::builtin();
        Ok(Self { config, services, database_url, service_database_url, pool, catalog, workers: Vec::new() })
    }

    /// The environment both binaries read.
    fn configure(&self, command: &mut Command, registry: &Path) {
        self.services.configure(command, &self.service_database_url, registry);
    }

    /// Starts `count` workers and waits until each has connected (its log says "worker started").
    pub async fn start_workers(
        &mut self,
        label: &str,
        count: usize,
        registry: &Path,
        extra: &[String],
    ) -> anyhow::Result<()> {
        for index in 1..=count {
            let name = format!("{label}-w{index}");
            let log_path = self.config.dir.join(format!("{name}.log"));
            let log = std::fs::File::create(&log_path)?;
            let mut command = Command::new(self.config.bin_dir.join("worker"));
            self.configure(&mut command, registry);
            command.args(["--worker-id", &name]).args(extra).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
            let child = command.spawn().context("starting a worker")?;
            self.workers.push(WorkerProcess { name, pid: child.id(), child });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for worker in &mut self.workers {
            let log_path = self.config.dir.join(format!("{}.log", worker.name));
            loop {
                if std::fs::read_to_string(&log_path).unwrap_or_default().contains("worker started") {
                    break;
                }
                if let Some(status) = worker.child.try_wait()? {
                    anyhow::bail!("worker {} exited ({status}); see {}", worker.name, log_path.display());
                }
                anyhow::ensure!(Instant::now() < deadline, "worker {} did not start in 60 s", worker.name);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Peak resident set (VmHWM) of every running worker, in bytes, by worker name.
    pub fn worker_peaks(&self) -> Vec<(String, u64)> {
        self.workers.iter().map(|w| (w.name.clone(), peak_rss(w.pid).unwrap_or(0))).collect()
    }

    /// Stops every worker with SIGTERM (they finish in-flight jobs) and waits for them.
    pub async fn stop_workers(&mut self) -> anyhow::Result<()> {
        for worker in &self.workers {
            let _ = Command::new("kill").args(["-TERM", &worker.pid.to_string()]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(40);
        for mut worker in std::mem::take(&mut self.workers) {
            loop {
                if worker.child.try_wait()?.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    tracing::warn!(worker = worker.name, "worker did not stop after SIGTERM; killing it");
                    let _ = worker.child.kill();
                    let _ = worker.child.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Runs the scheduler with `args` to completion; returns its stdout.
    pub async fn scheduler(&self, registry: &Path, args: &[&str]) -> anyhow::Result<String> {
        self.services.scheduler(&self.config.bin_dir.join("scheduler"), registry, args).await
    }

    /// Messages still in the job stream (pending, or delivered and not yet acked).
    pub async fn pending_jobs(&self, js: &async_nats::jetstream::Context) -> anyhow::Result<u64> {
        let mut stream = js.get_stream(&self.config.stream).await?;
        Ok(stream.info().await?.state.messages)
    }

    /// Kills what is left, deletes the stream and drops the database (unless `keep`).
    pub async fn cleanup(mut self) {
        let _ = self.stop_workers().await;
        self.pool.close().await;
        if self.config.keep {
            tracing::info!(database = self.config.database, "kept the database (--keep)");
            return;
        }
        self.services.remove().await;
    }
}

impl Drop for BenchEnv {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            let _ = worker.child.kill();
            let _ = worker.child.wait();
        }
    }
}

/// A process's peak resident set size (`VmHWM` in `/proc/<pid>/status`), in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
